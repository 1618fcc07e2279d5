// Process-wide allocator settings for a worker, on either transport: the heap
// keeps the pages it has instead of handing them back to the kernel between
// connections.
//
// glibc's defaults trim the top of the heap once more than the (dynamic) trim
// threshold is free there, and serve large blocks with fresh mmap()s. A
// worker that opens and closes connections all the time then shrinks and
// regrows the heap on every few connections, and each regrown page costs a
// page fault when the next connection's buffers touch it (measured on the
// DPDK probe: ~0.6 faults per connection in some runs and none in others,
// depending on where the heap's top happened to sit; on the kernel
// transport, perf/syscalls_per_connection.py counted 0.5 to 3.3 brk() calls
// per full handshake from one run to the next, and none with these settings).
//
// keep_heap_resident() fixes both thresholds, so the behaviour no longer
// depends on the allocation history.
#pragma once

#include <malloc.h>

#include <cstddef>

namespace portcullis::base {

struct HeapPolicy {
    std::size_t mmap_threshold = std::size_t{4} << 20;   // blocks below this come from the heap
    std::size_t trim_threshold = std::size_t{64} << 20;  // free bytes at the top kept mapped
};

inline void keep_heap_resident(const HeapPolicy& policy = {}) {
    ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(policy.mmap_threshold));
    ::mallopt(M_TRIM_THRESHOLD, static_cast<int>(policy.trim_threshold));
}

// Hands every free page of every arena back to the kernel (the top of the
// heap and, with madvise, the free pages inside it): what a worker calls
// once a burst is over, since the thresholds above keep them otherwise.
inline void return_free_heap() {
    ::malloc_trim(0);
}

// What the heap holds, over every arena: bytes free (pages already handed
// back included) and bytes in use. It walks the free lists, so once per trim
// interval, not per connection.
struct HeapUsage {
    std::size_t free_bytes = 0;
    std::size_t in_use_bytes = 0;
};

inline HeapUsage heap_usage() {
    const auto info = ::mallinfo2();
    return {info.fordblks, info.uordblks + info.hblkhd};
}

}  // namespace portcullis::base
