// A fixed-capacity byte FIFO (the send and receive buffers of a TCP
// connection): allocated once at connection setup, never grown.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace portcullis::dataplane::tcp {

class ByteRing {
  public:
    explicit ByteRing(std::size_t capacity = 0) : data_(capacity) {}

    std::size_t size() const { return size_; }
    std::size_t capacity() const { return data_.size(); }
    std::size_t space() const { return data_.size() - size_; }

    std::size_t push(std::span<const std::uint8_t> bytes) {
        const std::size_t n = std::min(bytes.size(), space());
        for (std::size_t i = 0; i < n; ++i) data_[(head_ + size_ + i) % data_.size()] = bytes[i];
        size_ += n;
        return n;
    }
    // Copies `out.size()` bytes starting `offset` bytes after the head.
    void peek(std::size_t offset, std::span<std::uint8_t> out) const {
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = data_[(head_ + offset + i) % data_.size()];
    }
    void drop(std::size_t n) {
        n = std::min(n, size_);
        head_ = data_.empty() ? 0 : (head_ + n) % data_.size();
        size_ -= n;
    }
    std::size_t pop(std::span<std::uint8_t> out) {
        const std::size_t n = std::min(out.size(), size_);
        peek(0, out.first(n));
        drop(n);
        return n;
    }

  private:
    std::vector<std::uint8_t> data_;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

}  // namespace portcullis::dataplane::tcp
