// Counters that live in shared memory and are summed by a reader in another
// process (the /metrics scrape). Two kinds, by who writes:
// - Counter: exactly one writer (the worker that owns the slot), so an update
//   is a relaxed load + store, never a locked read-modify-write;
// - SharedCounter: several writer threads (HSM session threads), real atomic
//   adds, used where an update happens per signature, never per packet.
#pragma once

#include <atomic>
#include <cstdint>

namespace portcullis::base {

class Counter {
  public:
    void add(std::uint64_t n = 1) {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void sub(std::uint64_t n = 1) {
        value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
    }
    void set(std::uint64_t v) { value_.store(v, std::memory_order_relaxed); }
    std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

class SharedCounter {
  public:
    void add(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    void sub(std::uint64_t n = 1) { value_.fetch_sub(n, std::memory_order_relaxed); }
    void set(std::uint64_t v) { value_.store(v, std::memory_order_relaxed); }
    std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

}  // namespace portcullis::base
