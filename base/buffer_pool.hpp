// A worker's pool of fixed-size blocks for connection buffers (ciphertext
// and plaintext queues, base/byte_queue.hpp). One thread owns it: no locks.
//
// Contract:
// - take(use) hands out a block of block_bytes, or null: for bytes read from
//   the network (Use::ingress) once the blocks in use reach the budget less a
//   reserve of an eighth, for bytes made from bytes already held (decrypted
//   or encrypted: Use::transform) once they reach the budget itself. The
//   blocks in use never exceed the budget, and the reserve lets connections
//   turn what they hold into what their peers can take, so a spent budget
//   pauses reading without wedging the bytes already read. A refused caller
//   stops (backpressure) and tries again after blocks came back (denials()
//   changing while it tried tells it it was refused, not full; returns()
//   changing tells it blocks came back);
// - give() takes a block back; up to keep_free_bytes of returned blocks are
//   kept for the next take(), the rest goes back to the allocator at once;
// - charge(bytes, use) counts memory held elsewhere (a TCP out-of-order
//   segment) against the same budget, by the same rule; the Charge gives it
//   back when destroyed;
// - release_free() hands every kept block back (after a burst, so resident
//   memory can shrink);
// - the counters are what /metrics shows: bytes in use, their high-water
//   mark, refusals.
// Every block and charge must be given back before the pool is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <utility>

namespace portcullis::base {

struct BufferPoolLimits {
    // One whole TLS record (16 KiB of plaintext, up to 16,645 bytes on the
    // wire) fits a block with its queue link.
    std::size_t block_bytes = 17 * 1024;
    std::size_t budget_bytes = std::size_t{64} << 20;
    std::size_t keep_free_bytes = std::size_t{1} << 20;
};

class BufferPool {
  public:
    enum class Use { ingress, transform };

    // Bytes counted against the budget until destroyed (move-only).
    class Charge {
      public:
        Charge() = default;
        Charge(BufferPool* pool, std::size_t bytes) : pool_(pool), bytes_(bytes) {}
        Charge(Charge&& other) noexcept
            : pool_(std::exchange(other.pool_, nullptr)), bytes_(other.bytes_) {}
        Charge& operator=(Charge&& other) noexcept {
            if (this != &other) {
                reset();
                pool_ = std::exchange(other.pool_, nullptr);
                bytes_ = other.bytes_;
            }
            return *this;
        }
        ~Charge() { reset(); }
        void reset() {
            if (pool_ != nullptr) pool_->in_use_ -= bytes_;
            pool_ = nullptr;
        }

      private:
        BufferPool* pool_ = nullptr;
        std::size_t bytes_ = 0;
    };

    explicit BufferPool(const BufferPoolLimits& limits = {})
        : block_bytes_(limits.block_bytes),
          budget_(limits.budget_bytes / limits.block_bytes * limits.block_bytes),
          ingress_budget_(budget_ - budget_ / 8),
          keep_free_blocks_(limits.keep_free_bytes / limits.block_bytes) {}
    ~BufferPool() { release_free(); }
    BufferPool(const BufferPool&) = delete;
    BufferPool& operator=(const BufferPool&) = delete;

    // Unbounded, for code that owns no worker (tests, tools): one per thread.
    static BufferPool& thread_default() {
        thread_local BufferPool pool(
            BufferPoolLimits{.budget_bytes = ~std::size_t{0} / 2, .keep_free_bytes = 1 << 20});
        return pool;
    }

    std::size_t block_bytes() const { return block_bytes_; }

    std::uint8_t* take(Use use) {
        if (!admits(block_bytes_, use)) {
            ++denials_;
            return nullptr;
        }
        std::uint8_t* block = nullptr;
        if (free_ != nullptr) {
            block = reinterpret_cast<std::uint8_t*>(free_);
            free_ = free_->next;
            --free_count_;
        } else {
            block = static_cast<std::uint8_t*>(::operator new(block_bytes_));
        }
        count(block_bytes_);
        return block;
    }

    std::optional<Charge> charge(std::size_t bytes, Use use) {
        if (!admits(bytes, use)) {
            ++denials_;
            return std::nullopt;
        }
        count(bytes);
        return Charge(this, bytes);
    }

    void give(std::uint8_t* block) {
        in_use_ -= block_bytes_;
        ++returns_;
        if (free_count_ < keep_free_blocks_) {
            free_ = new (block) FreeBlock{free_};
            ++free_count_;
        } else {
            ::operator delete(block);
        }
    }

    void release_free() {
        while (free_ != nullptr) {
            FreeBlock* next = free_->next;
            ::operator delete(static_cast<void*>(free_));
            free_ = next;
        }
        free_count_ = 0;
    }

    // Room for one more block of this use right now.
    bool available(Use use) const { return admits(block_bytes_, use); }
    std::size_t bytes_in_use() const { return in_use_; }
    std::size_t high_water_bytes() const { return high_water_; }
    std::size_t free_bytes() const { return free_count_ * block_bytes_; }
    std::size_t budget_bytes() const { return budget_; }
    std::uint64_t denials() const { return denials_; }
    std::uint64_t returns() const { return returns_; }

  private:
    struct FreeBlock {
        FreeBlock* next;
    };

    bool admits(std::size_t bytes, Use use) const {
        return in_use_ + bytes <= (use == Use::ingress ? ingress_budget_ : budget_);
    }
    void count(std::size_t bytes) {
        in_use_ += bytes;
        if (in_use_ > high_water_) high_water_ = in_use_;
    }

    std::size_t block_bytes_;
    std::size_t budget_;  // bytes, whole blocks
    std::size_t ingress_budget_;
    std::size_t keep_free_blocks_;
    FreeBlock* free_ = nullptr;
    std::size_t free_count_ = 0;
    std::size_t in_use_ = 0;  // bytes
    std::size_t high_water_ = 0;
    std::uint64_t denials_ = 0;
    std::uint64_t returns_ = 0;
};

}  // namespace portcullis::base
