// Fixed-capacity byte queue for one direction of one connection. Allocated
// once when the connection is established; a full buffer stops reading from
// the producer side (backpressure), it never grows.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace portcullis::dataplane {

class ByteBuffer {
  public:
    ByteBuffer() = default;
    explicit ByteBuffer(std::size_t capacity)
        : data_(std::make_unique_for_overwrite<std::uint8_t[]>(capacity)), capacity_(capacity) {}

    bool allocated() const { return capacity_ != 0; }
    bool empty() const { return head_ == tail_; }
    std::size_t size() const { return tail_ - head_; }

    std::span<const std::uint8_t> readable() const { return {data_.get() + head_, tail_ - head_}; }
    void consume(std::size_t n) {
        head_ += n;
        if (head_ == tail_) head_ = tail_ = 0;
    }

    // Free space at the end; compacts first when that makes more room.
    std::span<std::uint8_t> writable() {
        if (head_ != 0 && tail_ == capacity_) {
            std::memmove(data_.get(), data_.get() + head_, tail_ - head_);
            tail_ -= head_;
            head_ = 0;
        }
        return {data_.get() + tail_, capacity_ - tail_};
    }
    void commit(std::size_t n) { tail_ += n; }

  private:
    std::unique_ptr<std::uint8_t[]> data_;
    std::size_t capacity_ = 0;
    std::size_t head_ = 0;
    std::size_t tail_ = 0;
};

}  // namespace portcullis::dataplane
