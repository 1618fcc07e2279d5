// What the supervisor publishes to its children (workers and the admin
// process) through one shared mapping made before fork: the configuration
// text of the current generation, the ticket keys, readiness and the reload
// outcome. Only the supervisor writes; readers copy under a sequence lock, so
// a reader never waits and the supervisor never blocks on a child.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/ticket_keys.hpp"

namespace portcullis::mgmt {

inline constexpr std::size_t max_config_bytes = 1 << 20;
inline constexpr std::size_t max_ticket_keys = 8;
inline constexpr std::size_t max_workers_tracked = 1024;

struct ConfigSnapshot {
    std::uint64_t generation = 0;
    std::string text;
};

struct TicketKeySnapshot {
    std::uint64_t generation = 0;
    std::vector<crypto::TicketKey> keys;  // current first
    std::int64_t current_created_unix = 0;
    std::uint64_t rotations = 0;
};

struct ReloadStatus {
    std::uint64_t attempts = 0;
    std::uint64_t successes = 0;
    std::uint64_t failures = 0;
    bool last_ok = true;
    std::int64_t last_unix = 0;  // 0 = never reloaded
    std::string last_error;
};

class ControlBlock {
  public:
    ControlBlock();
    ~ControlBlock();
    ControlBlock(const ControlBlock&) = delete;
    ControlBlock& operator=(const ControlBlock&) = delete;

    // Supervisor side.
    void publish_config(std::string_view text);  // throws std::length_error over max_config_bytes
    void publish_ticket_keys(const std::vector<crypto::TicketKey>& keys,
                             std::int64_t current_created_unix, bool rotated);
    void publish_reload(bool ok, std::string_view error);
    void set_worker_ready(std::size_t index, bool ready);
    void set_supervisor_pid(pid_t pid);

    // Reader side (any process).
    ConfigSnapshot config() const;
    std::uint64_t config_generation() const;
    TicketKeySnapshot ticket_keys() const;
    std::uint64_t ticket_generation() const;
    ReloadStatus reload_status() const;
    bool worker_ready(std::size_t index) const;
    pid_t supervisor_pid() const;

    struct Layout;

  private:
    Layout* layout_;
};

}  // namespace portcullis::mgmt
