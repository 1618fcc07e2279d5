#include "mgmt/control_block.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace portcullis::mgmt {
namespace {

// Every payload word is an atomic, so a reader racing the supervisor reads
// stale or mixed values that its sequence re-check throws away, never a data
// race. The orders are all plain MOVs on x86 (release stores, acquire loads).
template <typename T>
void put(std::atomic<T>& word, T value) {
    word.store(value, std::memory_order_release);
}

template <typename T>
T get(const std::atomic<T>& word) {
    return word.load(std::memory_order_acquire);
}

// The writer's own previous value (one writer, so no read-modify-write).
template <typename T>
void bump(std::atomic<T>& word) {
    put(word, static_cast<T>(word.load(std::memory_order_relaxed) + 1));
}

// Bytes (configuration text, keys, an error message) as atomic words.
template <std::size_t Bytes>
class AtomicBytes {
  public:
    static constexpr std::size_t capacity = Bytes;

    void store(const void* data, std::size_t n) {  // n <= capacity
        const auto* in = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i * word_bytes < n; ++i) {
            std::uint64_t word = 0;
            std::memcpy(&word, in + i * word_bytes, std::min(word_bytes, n - i * word_bytes));
            put(words_[i], word);
        }
    }

    void load(void* out, std::size_t n) const {  // n <= capacity
        auto* to = static_cast<unsigned char*>(out);
        for (std::size_t i = 0; i * word_bytes < n; ++i) {
            const std::uint64_t word = get(words_[i]);
            std::memcpy(to + i * word_bytes, &word, std::min(word_bytes, n - i * word_bytes));
        }
    }

  private:
    static constexpr std::size_t word_bytes = sizeof(std::uint64_t);
    std::array<std::atomic<std::uint64_t>, (Bytes + word_bytes - 1) / word_bytes> words_{};
};

}  // namespace

// Each region has its own sequence number: odd while the supervisor writes.
// Readers retry until they copied a stable even sequence.
struct ControlBlock::Layout {
    std::atomic<std::uint64_t> config_sequence{0};
    std::atomic<std::uint64_t> config_generation{0};
    std::atomic<std::size_t> config_length{0};
    AtomicBytes<max_config_bytes> config_text;

    std::atomic<std::uint64_t> ticket_sequence{0};
    std::atomic<std::uint64_t> ticket_generation{0};
    std::atomic<std::size_t> ticket_count{0};
    std::array<AtomicBytes<crypto::ticket_key_bytes>, max_ticket_keys> ticket_keys;
    std::atomic<std::int64_t> ticket_current_created{0};
    std::atomic<std::uint64_t> ticket_rotations{0};

    std::atomic<std::uint64_t> reload_sequence{0};
    std::atomic<std::uint64_t> reload_attempts{0};
    std::atomic<std::uint64_t> reload_successes{0};
    std::atomic<std::uint64_t> reload_failures{0};
    std::atomic<bool> reload_last_ok{true};
    std::atomic<std::int64_t> reload_last_unix{0};
    std::atomic<std::size_t> reload_error_length{0};
    AtomicBytes<2048> reload_error;

    std::atomic<pid_t> supervisor_pid{0};
    std::array<std::atomic<bool>, max_workers_tracked> worker_ready{};
};

namespace {

// One writer (the supervisor's thread): sequence odd (relaxed), payload
// (release stores), sequence even (release).
template <typename Write>
void write_locked(std::atomic<std::uint64_t>& sequence, Write write) {
    const auto start = sequence.load(std::memory_order_relaxed);
    sequence.store(start + 1, std::memory_order_relaxed);
    write();
    sequence.store(start + 2, std::memory_order_release);
}

// Sequence (acquire), payload (acquire loads), sequence again (relaxed).
// Why the relaxed re-check suffices: a payload word that a newer write
// section stored was stored with release after that section's odd sequence
// store; the acquire load that read it makes the odd store happen before the
// re-check, which by coherence cannot then return the older even value.
template <typename Read>
void read_locked(const std::atomic<std::uint64_t>& sequence, Read read) {
    while (true) {
        const auto before = sequence.load(std::memory_order_acquire);
        if (before % 2 == 0) {
            read();
            if (sequence.load(std::memory_order_relaxed) == before) return;
        }
    }
}

std::int64_t unix_now() {
    return static_cast<std::int64_t>(::time(nullptr));
}

}  // namespace

ControlBlock::ControlBlock() {
    void* memory =
        ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "mmap control block");
    layout_ = std::construct_at(static_cast<Layout*>(memory));
}

ControlBlock::~ControlBlock() {
    std::destroy_at(layout_);
    ::munmap(layout_, sizeof(Layout));
}

void ControlBlock::publish_config(std::string_view text) {
    if (text.size() > max_config_bytes)
        throw std::length_error("configuration is larger than " + std::to_string(max_config_bytes) +
                                " bytes");
    auto& l = *layout_;
    write_locked(l.config_sequence, [&] {
        l.config_text.store(text.data(), text.size());
        put(l.config_length, text.size());
        bump(l.config_generation);
    });
}

void ControlBlock::publish_ticket_keys(const std::vector<crypto::TicketKey>& keys,
                                       std::int64_t current_created_unix, bool rotated) {
    auto& l = *layout_;
    write_locked(l.ticket_sequence, [&] {
        const auto count = std::min(keys.size(), max_ticket_keys);
        for (std::size_t i = 0; i < count; ++i) {
            const auto bytes = keys[i].bytes();
            l.ticket_keys[i].store(bytes.data(), bytes.size());
        }
        put(l.ticket_count, count);
        put(l.ticket_current_created, current_created_unix);
        if (rotated) bump(l.ticket_rotations);
        bump(l.ticket_generation);
    });
}

void ControlBlock::publish_reload(bool ok, std::string_view error) {
    auto& l = *layout_;
    write_locked(l.reload_sequence, [&] {
        bump(l.reload_attempts);
        bump(ok ? l.reload_successes : l.reload_failures);
        put(l.reload_last_ok, ok);
        put(l.reload_last_unix, unix_now());
        const auto n = std::min(error.size(), l.reload_error.capacity);
        l.reload_error.store(error.data(), n);
        put(l.reload_error_length, n);
    });
}

void ControlBlock::set_worker_ready(std::size_t index, bool ready) {
    if (index < max_workers_tracked)
        layout_->worker_ready[index].store(ready, std::memory_order_relaxed);
}

void ControlBlock::set_supervisor_pid(pid_t pid) {
    layout_->supervisor_pid.store(pid);
}

// A reader may see a length from a newer write than the bytes it then copies
// (the re-check discards that copy), so lengths are clamped before use.
ConfigSnapshot ControlBlock::config() const {
    const auto& l = *layout_;
    ConfigSnapshot snapshot;
    read_locked(l.config_sequence, [&] {
        snapshot.generation = get(l.config_generation);
        snapshot.text.resize(std::min(get(l.config_length), max_config_bytes));
        l.config_text.load(snapshot.text.data(), snapshot.text.size());
    });
    return snapshot;
}

std::uint64_t ControlBlock::config_generation() const {
    std::uint64_t generation = 0;
    read_locked(layout_->config_sequence, [&] { generation = get(layout_->config_generation); });
    return generation;
}

TicketKeySnapshot ControlBlock::ticket_keys() const {
    const auto& l = *layout_;
    TicketKeySnapshot snapshot;
    read_locked(l.ticket_sequence, [&] {
        snapshot.generation = get(l.ticket_generation);
        snapshot.keys.clear();
        const auto n = std::min(get(l.ticket_count), max_ticket_keys);
        for (std::size_t i = 0; i < n; ++i) {
            std::array<std::uint8_t, crypto::ticket_key_bytes> bytes{};
            l.ticket_keys[i].load(bytes.data(), bytes.size());
            snapshot.keys.push_back(crypto::TicketKey::from_bytes(bytes));
        }
        snapshot.current_created_unix = get(l.ticket_current_created);
        snapshot.rotations = get(l.ticket_rotations);
    });
    return snapshot;
}

std::uint64_t ControlBlock::ticket_generation() const {
    std::uint64_t generation = 0;
    read_locked(layout_->ticket_sequence, [&] { generation = get(layout_->ticket_generation); });
    return generation;
}

ReloadStatus ControlBlock::reload_status() const {
    const auto& l = *layout_;
    ReloadStatus status;
    read_locked(l.reload_sequence, [&] {
        status.attempts = get(l.reload_attempts);
        status.successes = get(l.reload_successes);
        status.failures = get(l.reload_failures);
        status.last_ok = get(l.reload_last_ok);
        status.last_unix = get(l.reload_last_unix);
        status.last_error.resize(std::min(get(l.reload_error_length), l.reload_error.capacity));
        l.reload_error.load(status.last_error.data(), status.last_error.size());
    });
    return status;
}

bool ControlBlock::worker_ready(std::size_t index) const {
    return index < max_workers_tracked &&
           layout_->worker_ready[index].load(std::memory_order_relaxed);
}

pid_t ControlBlock::supervisor_pid() const {
    return layout_->supervisor_pid.load();
}

}  // namespace portcullis::mgmt
