// When a worker gives its spare memory back to the kernel. Checked once per
// trim interval with what the worker sees then; nothing here allocates or
// makes a system call, so the rule is tested on its own.
//
// Under load the heap keeps its pages (base/heap_policy.hpp): returning them
// costs a page fault per page the next connections touch. A return is due
// once the load has gone:
// - the accepts of the interval fell to half of the interval before;
// - a quarter of the connections went since the last return;
// - the heap's free bytes grew, since their low point after the last
//   return, by a quarter of what the heap still holds in use (at least
//   `min_slack_bytes`). Memory is also freed well after the connections that
//   held it: sessions expire from the cache, and the DPDK stack's flows did
//   leave TIME_WAIT a minute after their close (9000 flows of ~1 KiB kept
//   87 MiB resident; they are compact entries off the heap now,
//   tcp/time_wait_table.hpp). Then neither of the first two sees anything,
//   yet the few bytes freed can unpin most of the heap's pages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace portcullis::dataplane {

class MemoryReturn {
  public:
    static constexpr std::size_t default_min_slack_bytes = std::size_t{1} << 20;

    explicit MemoryReturn(std::size_t min_slack_bytes = default_min_slack_bytes)
        : min_slack_bytes_(min_slack_bytes) {}

    // `accepted`: the worker's accepts so far; `open`: its connections now;
    // `free_heap` and `heap_in_use`: the heap now (base::heap_usage()).
    bool due(std::uint64_t accepted, std::size_t open, std::size_t free_heap,
             std::size_t heap_in_use) {
        const std::uint64_t window = accepted - accepted_at_check_;
        accepted_at_check_ = accepted;
        peak_connections_ = std::max(peak_connections_, open);
        free_heap_low_ = std::min(free_heap_low_, free_heap);
        const bool load_fell = window * 2 <= previous_window_ && previous_window_ > 0;
        const bool connections_left = open * 4 < peak_connections_ * 3;
        const bool heap_freed =
            free_heap - free_heap_low_ >= std::max(min_slack_bytes_, heap_in_use / 4);
        previous_window_ = window;
        return load_fell || connections_left || heap_freed;
    }

    // After the return: pages handed back still count as free in the heap's
    // lists, so `free_heap` is measured again after it.
    void returned(std::size_t open, std::size_t free_heap) {
        peak_connections_ = open;
        free_heap_low_ = free_heap;
    }

  private:
    std::size_t min_slack_bytes_;
    std::uint64_t accepted_at_check_ = 0;
    std::uint64_t previous_window_ = 0;
    std::size_t peak_connections_ = 0;
    std::size_t free_heap_low_ = std::numeric_limits<std::size_t>::max();
};

}  // namespace portcullis::dataplane
