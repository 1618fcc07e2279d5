// A first-in first-out list of objects that carry their own links: push_back,
// pop_front and remove are O(1), never allocate and never search. What a
// worker keeps its starved connections in: when 100 000 clients close at
// once most of them can wait for a buffer block together, and each one that
// ends must leave the list without a walk over the others.
//
// T holds a public `FifoLink<T> fifo_link`; an object is in at most one such
// list at a time, and must be removed before it is destroyed. One thread.
#pragma once

#include <cstddef>

namespace portcullis::base {

template <class T>
struct FifoLink {
    T* prev = nullptr;
    T* next = nullptr;
    bool listed = false;
};

template <class T>
class IntrusiveFifo {
  public:
    IntrusiveFifo() = default;
    IntrusiveFifo(const IntrusiveFifo&) = delete;
    IntrusiveFifo& operator=(const IntrusiveFifo&) = delete;

    bool empty() const { return head_ == nullptr; }
    std::size_t size() const { return size_; }
    static bool contains(const T& item) { return item.fifo_link.listed; }

    // At the back; an object already listed keeps its place.
    void push_back(T& item) {
        auto& link = item.fifo_link;
        if (link.listed) return;
        link = {tail_, nullptr, true};
        if (tail_ != nullptr)
            tail_->fifo_link.next = &item;
        else
            head_ = &item;
        tail_ = &item;
        ++size_;
    }

    // Unlisted, wherever it is; nothing for an object not listed.
    void remove(T& item) {
        auto& link = item.fifo_link;
        if (!link.listed) return;
        (link.prev != nullptr ? link.prev->fifo_link.next : head_) = link.next;
        (link.next != nullptr ? link.next->fifo_link.prev : tail_) = link.prev;
        link = {};
        --size_;
    }

    // The oldest, unlisted; null when empty.
    T* pop_front() {
        T* front = head_;
        if (front != nullptr) remove(*front);
        return front;
    }

  private:
    T* head_ = nullptr;
    T* tail_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace portcullis::base
