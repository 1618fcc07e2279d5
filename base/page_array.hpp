// A fixed-length array of trivially copyable values in anonymous pages of
// its own (mmap), zero-filled, unmapped when destroyed. Move-only.
//
// Why not the heap: a table that outlives the allocations around it (the
// DPDK stack's TIME_WAIT entries outlive the connections they came from by
// a minute) pins every heap page it shares with them, and malloc_trim()
// cannot return those pages. Pages of its own go back to the kernel the
// moment the array is destroyed, whatever the heap holds.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace portcullis::base {

template <typename T>
class PageArray {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

  public:
    PageArray() = default;
    // std::bad_alloc when the pages cannot be mapped.
    explicit PageArray(std::size_t length) : length_(length) {
        if (length == 0) return;
        void* p =
            ::mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        data_ = static_cast<T*>(p);
    }
    ~PageArray() { unmap(); }
    PageArray(PageArray&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), length_(std::exchange(other.length_, 0)) {}
    PageArray& operator=(PageArray&& other) noexcept {
        if (this != &other) {
            unmap();
            data_ = std::exchange(other.data_, nullptr);
            length_ = std::exchange(other.length_, 0);
        }
        return *this;
    }
    PageArray(const PageArray&) = delete;
    PageArray& operator=(const PageArray&) = delete;

    std::size_t size() const { return length_; }
    // Bytes asked for (the kernel maps whole pages).
    std::size_t bytes() const { return length_ * sizeof(T); }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }

  private:
    void unmap() {
        if (data_ != nullptr) ::munmap(data_, bytes());
        data_ = nullptr;
        length_ = 0;
    }
    T* data_ = nullptr;
    std::size_t length_ = 0;
};

}  // namespace portcullis::base
