#include "dataplane/tcp/time_wait_table.hpp"

#include <algorithm>

namespace portcullis::dataplane::tcp {

namespace {

TcpSegment ack_of(const TimeWaitEntry& entry, std::uint64_t now) {
    TcpSegment ack;
    ack.seq = entry.snd_nxt;
    ack.ack = entry.rcv_nxt;
    ack.flags = flag::ack;
    ack.window = entry.window_field;
    if (entry.timestamps) {
        ack.options.timestamps = true;
        ack.options.ts_value = static_cast<std::uint32_t>(now + 1) + entry.ts_offset;
        ack.options.ts_echo = entry.ts_recent;
    }
    return ack;
}

}  // namespace

std::size_t TimeWaitTable::home(std::uint64_t key) const {
    std::uint64_t h = key * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return static_cast<std::size_t>(h) & (slots_.size() - 1);
}

std::size_t TimeWaitTable::index_of(std::uint64_t key) const {
    if (size_ == 0) return slots_.size();
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = home(key);; i = (i + 1) & mask) {
        if (slots_[i].key == key) return i;
        if (slots_[i].key == 0) return slots_.size();
    }
}

const TimeWaitEntry* TimeWaitTable::find(std::uint64_t key) const {
    const std::size_t i = index_of(key);
    return i == slots_.size() ? nullptr : &slots_[i];
}

void TimeWaitTable::place(const TimeWaitEntry& entry) {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = home(entry.key);
    while (slots_[i].key != 0) i = (i + 1) & mask;
    slots_[i] = entry;
}

void TimeWaitTable::rehash(std::size_t capacity) {
    base::PageArray<TimeWaitEntry> old = std::move(slots_);
    slots_ = base::PageArray<TimeWaitEntry>(capacity);
    for (std::size_t i = 0; i < old.size(); ++i)
        if (old[i].key != 0) place(old[i]);
}

void TimeWaitTable::insert(const TimeWaitEntry& entry) {
    const std::size_t i = index_of(entry.key);
    if (i != slots_.size()) {
        slots_[i] = entry;
    } else {
        // At most three quarters full, so a probe always ends at a free slot.
        if ((size_ + 1) * 4 > slots_.size() * 3) rehash(std::max(min_capacity, slots_.size() * 2));
        place(entry);
        ++size_;
    }
    push_due({entry.key, entry.deadline_ms});
}

bool TimeWaitTable::erase(std::uint64_t key) {
    std::size_t hole = index_of(key);
    if (hole == slots_.size()) return false;
    // Backward-shift deletion: later entries of the probe run move into the
    // hole unless that would put them before their home slot.
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t j = (hole + 1) & mask; slots_[j].key != 0; j = (j + 1) & mask) {
        const std::size_t k = home(slots_[j].key);
        const bool movable = hole <= j ? (k <= hole || k > j) : (k <= hole && k > j);
        if (movable) {
            slots_[hole] = slots_[j];
            hole = j;
        }
    }
    slots_[hole] = TimeWaitEntry{};
    --size_;
    if (size_ == 0) {
        // Whatever is still due names entries that are gone.
        slots_ = {};
        due_ = {};
        due_head_ = due_count_ = 0;
    } else if (slots_.size() > min_capacity && size_ * 8 < slots_.size()) {
        rehash(slots_.size() / 2);
    }
    return true;
}

void TimeWaitTable::push_due(const Due& due) {
    if (due_count_ == due_.size()) {
        base::PageArray<Due> grown(std::max(min_capacity, due_.size() * 2));
        for (std::size_t i = 0; i < due_count_; ++i) grown[i] = due_[(due_head_ + i) % due_.size()];
        due_ = std::move(grown);
        due_head_ = 0;
    }
    due_[(due_head_ + due_count_) % due_.size()] = due;
    ++due_count_;
}

void TimeWaitTable::pop_due() {
    due_head_ = (due_head_ + 1) % due_.size();
    --due_count_;
    if (due_.size() > min_capacity && due_count_ * 8 < due_.size()) {
        base::PageArray<Due> shrunk(due_.size() / 2);
        for (std::size_t i = 0; i < due_count_; ++i)
            shrunk[i] = due_[(due_head_ + i) % due_.size()];
        due_ = std::move(shrunk);
        due_head_ = 0;
    }
}

void TimeWaitTable::expire(Millis now) {
    while (due_count_ > 0 && due_[due_head_].deadline_ms <= now) {
        const Due due = due_[due_head_];
        pop_due();
        const std::size_t i = index_of(due.key);
        if (i == slots_.size()) continue;  // ended early, by a RST or a new connection
        if (slots_[i].deadline_ms <= now) {
            erase(due.key);
        } else if (slots_[i].deadline_ms != due.deadline_ms) {
            push_due({due.key, slots_[i].deadline_ms});  // its 2 MSL started over
        }
    }
}

std::optional<TcpSegment> TimeWaitTable::answer(std::uint64_t key, const TcpSegment& segment,
                                                Millis now) {
    const std::size_t i = index_of(key);
    if (i == slots_.size()) return std::nullopt;
    TimeWaitEntry& entry = slots_[i];
    const std::uint32_t rcv_nxt = entry.rcv_nxt;
    const bool in_window =
        entry.window_bytes == 0
            ? segment.seq == rcv_nxt
            : seq_le(rcv_nxt, segment.seq) && seq_lt(segment.seq, rcv_nxt + entry.window_bytes);
    if (segment.has(flag::rst)) {
        if (segment.seq == rcv_nxt) {
            erase(key);
            return std::nullopt;
        }
        if (in_window) return ack_of(entry, now);
        return std::nullopt;
    }
    if (segment.has(flag::fin) && segment.seq + segment.length() == rcv_nxt) {
        entry.deadline_ms = now + time_wait_ms_;
        return ack_of(entry, now);
    }
    if (segment.has(flag::syn) || !segment.payload.empty() || segment.has(flag::fin) || !in_window)
        return ack_of(entry, now);
    return std::nullopt;
}

}  // namespace portcullis::dataplane::tcp
