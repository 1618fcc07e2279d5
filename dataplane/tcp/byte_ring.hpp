// A fixed-capacity byte FIFO (the send and receive buffers of a TCP
// connection): allocated once at connection setup, never grown, and not
// zeroed (a connection's 2 x 256 KiB would otherwise cost a memset each).
// Copies are at most two memcpy calls around the wrap.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace portcullis::dataplane::tcp {

class ByteRing {
  public:
    explicit ByteRing(std::size_t capacity = 0)
        : data_(capacity ? std::make_unique_for_overwrite<std::uint8_t[]>(capacity) : nullptr),
          capacity_(capacity) {}

    std::size_t size() const { return size_; }
    std::size_t capacity() const { return capacity_; }
    std::size_t space() const { return capacity_ - size_; }

    std::size_t push(std::span<const std::uint8_t> bytes) {
        const std::size_t n = std::min(bytes.size(), space());
        if (n == 0) return 0;
        const std::size_t tail = (head_ + size_) % capacity_;
        const std::size_t first = std::min(n, capacity_ - tail);
        std::memcpy(data_.get() + tail, bytes.data(), first);
        std::memcpy(data_.get(), bytes.data() + first, n - first);
        size_ += n;
        return n;
    }
    // Copies `out.size()` bytes starting `offset` bytes after the head.
    void peek(std::size_t offset, std::span<std::uint8_t> out) const {
        if (out.empty()) return;
        const std::size_t start = (head_ + offset) % capacity_;
        const std::size_t first = std::min(out.size(), capacity_ - start);
        std::memcpy(out.data(), data_.get() + start, first);
        std::memcpy(out.data() + first, data_.get(), out.size() - first);
    }
    void drop(std::size_t n) {
        n = std::min(n, size_);
        head_ = capacity_ == 0 ? 0 : (head_ + n) % capacity_;
        size_ -= n;
    }
    std::size_t pop(std::span<std::uint8_t> out) {
        const std::size_t n = std::min(out.size(), size_);
        peek(0, out.first(n));
        drop(n);
        return n;
    }

  private:
    std::unique_ptr<std::uint8_t[]> data_;
    std::size_t capacity_ = 0;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

}  // namespace portcullis::dataplane::tcp
