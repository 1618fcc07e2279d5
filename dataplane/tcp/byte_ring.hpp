// The send and receive buffers of a TCP connection: a bounded FIFO whose
// memory is blocks of the worker's pool (base/byte_queue.hpp), held only
// while bytes are queued, so an idle connection's 2 x 256 KiB windows cost
// nothing and what they hold counts in the worker's buffer budget. When the
// budget is spent push() takes less than was offered: the receive side then
// keeps only what fits (the peer retransmits the rest, as after any drop),
// the send side reports less written (backpressure on the TLS core).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "base/buffer_pool.hpp"
#include "base/byte_queue.hpp"

namespace portcullis::dataplane::tcp {

class ByteRing {
  public:
    ByteRing(base::BufferPool& pool, base::BufferPool::Use use, std::size_t capacity)
        : queue_(pool, use, capacity) {}

    std::size_t size() const { return queue_.size(); }
    std::size_t capacity() const { return queue_.capacity(); }
    std::size_t space() const { return queue_.capacity() - queue_.size(); }
    std::size_t blocks() const { return queue_.blocks(); }

    std::size_t push(std::span<const std::uint8_t> bytes) { return queue_.append(bytes); }
    // Copies `out.size()` bytes starting `offset` bytes after the head.
    void peek(std::size_t offset, std::span<std::uint8_t> out) const { queue_.peek(offset, out); }
    void drop(std::size_t n) { queue_.consume(std::min(n, queue_.size())); }
    std::size_t pop(std::span<std::uint8_t> out) { return queue_.take(out); }

  private:
    base::ByteQueue queue_;
};

}  // namespace portcullis::dataplane::tcp
