// A hashed timer wheel of one-millisecond slots: schedule, cancel and
// reschedule are O(1) (a timer is an intrusive node of a doubly linked list
// per slot, so cancelling needs no search), and advancing the clock costs
// one visit per elapsed slot plus one per timer found there.
//
// A deadline any distance ahead is kept exactly: a timer beyond one
// revolution sits in its slot and is passed over (one comparison) until the
// revolution it is due in. A deadline at or before the wheel's time fires
// at the next advance. Within one advance that covers less than a
// revolution, timers fire in deadline order (FIFO within a millisecond);
// after a longer gap every due timer fires, in slot order.
//
// The wheel owns no timer: a Timer is embedded in (or a base of) its user's
// object, and unlinks itself when destroyed. One thread owns a wheel and its
// timers; nothing here allocates or makes a system call, and nothing depends
// on a transport, so the DPDK stack and its unit tests use it alike.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace portcullis::dataplane {

class TimerWheel {
    struct Link {
        Link* prev = nullptr;
        Link* next = nullptr;
    };

  public:
    static constexpr std::size_t slots = 1024;
    static constexpr std::uint64_t never = std::numeric_limits<std::uint64_t>::max();

    class Timer : private Link {
      public:
        Timer() = default;
        ~Timer() { unlink(); }
        Timer(const Timer&) = delete;
        Timer& operator=(const Timer&) = delete;

        bool scheduled() const { return next != nullptr; }
        // The deadline it was scheduled for; `never` when not scheduled.
        std::uint64_t deadline() const { return deadline_; }

      private:
        friend class TimerWheel;
        void unlink() {
            if (next == nullptr) return;
            prev->next = next;
            next->prev = prev;
            prev = next = nullptr;
            deadline_ = never;
        }
        std::uint64_t deadline_ = never;
    };

    TimerWheel() {
        for (auto& head : slot_) head.prev = head.next = &head;
        expired_.prev = expired_.next = &expired_;
    }
    // Timers point into the wheel's slot heads.
    TimerWheel(const TimerWheel&) = delete;
    TimerWheel& operator=(const TimerWheel&) = delete;

    // The time of the last advance (0 before the first).
    std::uint64_t now() const { return now_; }

    // (Re)arms `timer` for `deadline`; a timer already scheduled moves.
    void schedule(Timer& timer, std::uint64_t deadline) {
        timer.unlink();
        const std::uint64_t at = deadline > now_ ? deadline : now_ + 1;
        append(slot_[at % slots], timer);
        timer.deadline_ = deadline;
    }

    // Disarms `timer`; a timer not scheduled (never armed, cancelled, or
    // already fired) is left as it is.
    static void cancel(Timer& timer) { timer.unlink(); }

    // Moves the clock to `now` (never backwards) and calls `expire(timer)`
    // for every timer due by then, each already unscheduled, so `expire` may
    // schedule it again or schedule and cancel any other timer. A due timer
    // cancelled by an earlier `expire` of the same advance does not fire.
    template <typename Expire>
    void advance(std::uint64_t now, Expire&& expire) {
        if (now <= now_) return;
        const std::uint64_t steps = now - now_ < slots ? now - now_ : slots;
        for (std::uint64_t i = 1; i <= steps; ++i) {
            Link& head = slot_[(now_ + i) % slots];
            for (Link* link = head.next; link != &head;) {
                auto* timer = static_cast<Timer*>(link);
                link = link->next;
                if (timer->deadline_ > now) continue;  // a later revolution's
                const std::uint64_t deadline = timer->deadline_;
                timer->unlink();
                append(expired_, *timer);
                timer->deadline_ = deadline;
            }
        }
        now_ = now;
        while (expired_.next != &expired_) {
            auto* timer = static_cast<Timer*>(expired_.next);
            timer->unlink();
            expire(*timer);
        }
    }

  private:
    static void append(Link& head, Timer& timer) {
        Link& link = timer;
        link.prev = head.prev;
        link.next = &head;
        head.prev->next = &link;
        head.prev = &link;
    }

    std::array<Link, slots> slot_;
    Link expired_;  // due in the advance under way, in firing order
    std::uint64_t now_ = 0;
};

}  // namespace portcullis::dataplane
