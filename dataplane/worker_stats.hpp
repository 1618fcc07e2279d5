// Counters of one worker, living in a shared-memory slot that the supervisor
// maps before fork. Exactly one writer (the worker) per slot, so updates are
// relaxed load+store, never a locked read-modify-write; readers sum the slots
// (the supervisor's summary today, the /metrics scrape later).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "crypto/reject_reason.hpp"

namespace portcullis::dataplane {

class Counter {
  public:
    void add(std::uint64_t n = 1) {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void set(std::uint64_t v) { value_.store(v, std::memory_order_relaxed); }
    std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

struct WorkerStats {
    Counter connections_accepted;
    Counter connections_refused;  // over workers.max_connections
    Counter connections_active;   // gauge
    Counter handshakes_full;
    Counter handshakes_resumed;
    std::array<Counter, crypto::reject_reason_count> handshakes_rejected;  // by RejectReason
    Counter handshakes_abandoned;  // client closed mid-handshake (scans, impatient clients)
    Counter upstream_connect_failures;
    Counter upstream_unavailable;  // no backend could take the connection
    Counter bytes_from_clients;    // plaintext
    Counter bytes_to_clients;      // plaintext
    Counter restarts;              // times this slot's worker was started again
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace portcullis::dataplane
