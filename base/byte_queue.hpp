// A bounded FIFO of bytes for one direction of one connection, made of
// blocks from the worker's BufferPool taken only while bytes are queued: an
// empty queue holds no memory. Capacity bounds what the queue holds (a full
// queue stops the producer, it never grows); the pool's budget bounds what
// all queues of a worker hold together (writable() is then empty too).
//
// A queue takes its blocks for one use (BufferPool::Use): what it carries
// was read from the network, or made from bytes the connection holds.
//
// Contract: writable() gives free space (taking a block when it needs one),
// commit(n) makes n bytes of it readable; readable() gives the oldest
// contiguous bytes, consume(n) drops them. A block is given back as soon as
// everything in it is consumed; release_unused() gives back a block that
// writable() took but nothing was committed to (a read that found nothing).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>

#include "base/buffer_pool.hpp"

namespace portcullis::base {

class ByteQueue {
  public:
    ByteQueue(BufferPool& pool, BufferPool::Use use, std::size_t capacity)
        : pool_(&pool), use_(use), capacity_(capacity) {}
    ~ByteQueue() { clear(); }
    ByteQueue(const ByteQueue&) = delete;
    ByteQueue& operator=(const ByteQueue&) = delete;
    ByteQueue(ByteQueue&& other) noexcept { steal(other); }
    ByteQueue& operator=(ByteQueue&& other) noexcept {
        if (this != &other) {
            clear();
            steal(other);
        }
        return *this;
    }

    bool empty() const { return size_ == 0; }
    std::size_t size() const { return size_; }
    std::size_t capacity() const { return capacity_; }
    // Blocks held (what this queue costs in memory).
    std::size_t blocks() const { return blocks_; }
    void set_capacity(std::size_t capacity) { capacity_ = capacity; }

    std::span<const std::uint8_t> readable() const {
        if (head_ == nullptr) return {};
        const std::size_t end = head_ == tail_ ? tail_fill_ : payload();
        return {head_->data() + head_offset_, end - head_offset_};
    }

    void consume(std::size_t n) {
        size_ -= n;
        while (n > 0) {
            const std::size_t end = head_ == tail_ ? tail_fill_ : payload();
            const std::size_t here = std::min(n, end - head_offset_);
            head_offset_ += here;
            n -= here;
            if (head_offset_ == end) {
                if (head_ == tail_) {
                    // Drained: the last block goes back too.
                    give(head_);
                    head_ = tail_ = nullptr;
                    head_offset_ = tail_fill_ = 0;
                    return;
                }
                Block* next = head_->next;
                give(head_);
                head_ = next;
                head_offset_ = 0;
            }
        }
    }

    std::span<std::uint8_t> writable() {
        if (size_ >= capacity_) return {};
        const std::size_t room = capacity_ - size_;
        if (tail_ != nullptr && tail_fill_ < payload()) {
            return {tail_->data() + tail_fill_, std::min(room, payload() - tail_fill_)};
        }
        std::uint8_t* raw = pool_->take(use_);
        if (raw == nullptr) return {};  // the worker's budget is spent
        Block* block = new (raw) Block{};
        ++blocks_;
        if (tail_ == nullptr) {
            head_ = tail_ = block;
            head_offset_ = 0;
        } else {
            tail_->next = block;
            tail_ = block;
        }
        tail_fill_ = 0;
        return {block->data(), std::min(room, payload())};
    }

    void commit(std::size_t n) {
        tail_fill_ += n;
        size_ += n;
    }

    // Copies as much of `in` as fits; returns how much did.
    std::size_t append(std::span<const std::uint8_t> in) {
        std::size_t done = 0;
        while (done < in.size()) {
            const auto space = writable();
            if (space.empty()) break;
            const std::size_t n = std::min(space.size(), in.size() - done);
            std::memcpy(space.data(), in.data() + done, n);
            commit(n);
            done += n;
        }
        return done;
    }

    // Copies out.size() bytes starting `offset` bytes after the oldest,
    // consuming nothing (a TCP retransmission reads its segment again).
    void peek(std::size_t offset, std::span<std::uint8_t> out) const {
        const Block* block = head_;
        std::size_t at = head_offset_ + offset;
        std::size_t done = 0;
        while (done < out.size() && block != nullptr) {
            const std::size_t end = block == tail_ ? tail_fill_ : payload();
            if (at >= end) {
                at -= end;
                block = block->next;
                continue;
            }
            const std::size_t n = std::min(end - at, out.size() - done);
            std::memcpy(out.data() + done, block->bytes() + at, n);
            done += n;
            at = 0;
            block = block->next;
        }
    }

    // Copies out and consumes up to out.size() bytes; returns how many.
    std::size_t take(std::span<std::uint8_t> out) {
        std::size_t done = 0;
        while (done < out.size() && !empty()) {
            const auto data = readable();
            const std::size_t n = std::min(data.size(), out.size() - done);
            std::memcpy(out.data() + done, data.data(), n);
            consume(n);
            done += n;
        }
        return done;
    }

    void release_unused() {
        if (size_ == 0 && head_ != nullptr) {
            give(head_);
            head_ = tail_ = nullptr;
            head_offset_ = tail_fill_ = 0;
        }
    }

    void clear() {
        while (head_ != nullptr) {
            Block* next = head_->next;
            give(head_);
            head_ = next;
        }
        tail_ = nullptr;
        head_offset_ = tail_fill_ = size_ = 0;
    }

  private:
    struct Block {
        Block* next = nullptr;
        std::uint8_t* data() { return reinterpret_cast<std::uint8_t*>(this + 1); }
        const std::uint8_t* bytes() const {
            return reinterpret_cast<const std::uint8_t*>(this + 1);
        }
    };

    void steal(ByteQueue& other) {
        pool_ = other.pool_;
        use_ = other.use_;
        capacity_ = other.capacity_;
        head_ = std::exchange(other.head_, nullptr);
        tail_ = std::exchange(other.tail_, nullptr);
        head_offset_ = std::exchange(other.head_offset_, 0);
        tail_fill_ = std::exchange(other.tail_fill_, 0);
        size_ = std::exchange(other.size_, 0);
        blocks_ = std::exchange(other.blocks_, 0);
    }

    std::size_t payload() const { return pool_->block_bytes() - sizeof(Block); }

    void give(Block* block) {
        --blocks_;
        block->~Block();
        pool_->give(reinterpret_cast<std::uint8_t*>(block));
    }

    BufferPool* pool_;
    BufferPool::Use use_;
    std::size_t capacity_;
    Block* head_ = nullptr;
    Block* tail_ = nullptr;
    std::size_t head_offset_ = 0;  // first unread byte in head_
    std::size_t tail_fill_ = 0;    // bytes written into tail_
    std::size_t size_ = 0;
    std::size_t blocks_ = 0;
};

}  // namespace portcullis::base
