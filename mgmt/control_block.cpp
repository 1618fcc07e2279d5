#include "mgmt/control_block.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace portcullis::mgmt {

// Each region has its own sequence number: odd while the supervisor writes.
// Readers retry until they copied a stable even sequence.
struct ControlBlock::Layout {
    std::atomic<std::uint64_t> config_sequence{0};
    std::uint64_t config_generation = 0;
    std::size_t config_length = 0;
    char config_text[max_config_bytes];

    std::atomic<std::uint64_t> ticket_sequence{0};
    std::uint64_t ticket_generation = 0;
    std::size_t ticket_count = 0;
    std::array<std::array<std::uint8_t, crypto::ticket_key_bytes>, max_ticket_keys> ticket_keys{};
    std::int64_t ticket_current_created = 0;
    std::uint64_t ticket_rotations = 0;

    std::atomic<std::uint64_t> reload_sequence{0};
    std::uint64_t reload_attempts = 0;
    std::uint64_t reload_successes = 0;
    std::uint64_t reload_failures = 0;
    bool reload_last_ok = true;
    std::int64_t reload_last_unix = 0;
    std::size_t reload_error_length = 0;
    char reload_error[2048];

    std::atomic<pid_t> supervisor_pid{0};
    std::array<std::atomic<bool>, max_workers_tracked> worker_ready{};
};

namespace {

template <typename Write>
void write_locked(std::atomic<std::uint64_t>& sequence, Write write) {
    sequence.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    write();
    std::atomic_thread_fence(std::memory_order_release);
    sequence.fetch_add(1, std::memory_order_relaxed);
}

template <typename Read>
void read_locked(const std::atomic<std::uint64_t>& sequence, Read read) {
    while (true) {
        const auto before = sequence.load(std::memory_order_acquire);
        if (before % 2 == 0) {
            read();
            std::atomic_thread_fence(std::memory_order_acquire);
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
    write_locked(layout_->config_sequence, [&] {
        std::memcpy(layout_->config_text, text.data(), text.size());
        layout_->config_length = text.size();
        ++layout_->config_generation;
    });
}

void ControlBlock::publish_ticket_keys(const std::vector<crypto::TicketKey>& keys,
                                       std::int64_t current_created_unix, bool rotated) {
    write_locked(layout_->ticket_sequence, [&] {
        layout_->ticket_count = std::min(keys.size(), max_ticket_keys);
        for (std::size_t i = 0; i < layout_->ticket_count; ++i)
            layout_->ticket_keys[i] = keys[i].bytes();
        layout_->ticket_current_created = current_created_unix;
        if (rotated) ++layout_->ticket_rotations;
        ++layout_->ticket_generation;
    });
}

void ControlBlock::publish_reload(bool ok, std::string_view error) {
    write_locked(layout_->reload_sequence, [&] {
        ++layout_->reload_attempts;
        ++(ok ? layout_->reload_successes : layout_->reload_failures);
        layout_->reload_last_ok = ok;
        layout_->reload_last_unix = unix_now();
        const auto n = std::min(error.size(), sizeof layout_->reload_error);
        std::memcpy(layout_->reload_error, error.data(), n);
        layout_->reload_error_length = n;
    });
}

void ControlBlock::set_worker_ready(std::size_t index, bool ready) {
    if (index < max_workers_tracked)
        layout_->worker_ready[index].store(ready, std::memory_order_relaxed);
}

void ControlBlock::set_supervisor_pid(pid_t pid) {
    layout_->supervisor_pid.store(pid);
}

ConfigSnapshot ControlBlock::config() const {
    ConfigSnapshot snapshot;
    read_locked(layout_->config_sequence, [&] {
        snapshot.generation = layout_->config_generation;
        const auto n = std::min(layout_->config_length, max_config_bytes);
        snapshot.text.assign(layout_->config_text, n);
    });
    return snapshot;
}

std::uint64_t ControlBlock::config_generation() const {
    std::uint64_t generation = 0;
    read_locked(layout_->config_sequence, [&] { generation = layout_->config_generation; });
    return generation;
}

TicketKeySnapshot ControlBlock::ticket_keys() const {
    TicketKeySnapshot snapshot;
    read_locked(layout_->ticket_sequence, [&] {
        snapshot.generation = layout_->ticket_generation;
        snapshot.keys.clear();
        const auto n = std::min(layout_->ticket_count, max_ticket_keys);
        for (std::size_t i = 0; i < n; ++i)
            snapshot.keys.push_back(crypto::TicketKey::from_bytes(layout_->ticket_keys[i]));
        snapshot.current_created_unix = layout_->ticket_current_created;
        snapshot.rotations = layout_->ticket_rotations;
    });
    return snapshot;
}

std::uint64_t ControlBlock::ticket_generation() const {
    std::uint64_t generation = 0;
    read_locked(layout_->ticket_sequence, [&] { generation = layout_->ticket_generation; });
    return generation;
}

ReloadStatus ControlBlock::reload_status() const {
    ReloadStatus status;
    read_locked(layout_->reload_sequence, [&] {
        status.attempts = layout_->reload_attempts;
        status.successes = layout_->reload_successes;
        status.failures = layout_->reload_failures;
        status.last_ok = layout_->reload_last_ok;
        status.last_unix = layout_->reload_last_unix;
        status.last_error.assign(layout_->reload_error, std::min(layout_->reload_error_length,
                                                                 sizeof layout_->reload_error));
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
