// A hashed timer wheel of one-millisecond slots: schedule, cancel and
// reschedule are O(1) (a timer is an intrusive node of a doubly linked list
// per slot, so cancelling needs no search), and advancing the clock costs
// one visit per elapsed slot plus one per timer found there.
//
// A deadline any distance ahead is kept exactly. One a revolution (1024 ms)
// or more ahead waits on a second wheel of 1024 slots of a revolution each
// (17.5 minutes), and moves to its millisecond slot when the revolution it
// is due in begins. So a timer costs one visit to move and one to fire,
// however far ahead it was set: a hundred thousand idle connections' 60 s
// keepalive timers are not passed over once per revolution each. Only a
// deadline beyond the second wheel's 17.5 minutes is passed over, once per
// 17.5 minutes. A deadline at or before the wheel's time fires at the next
// advance. Within one advance that covers less than a revolution, timers
// fire in deadline order; after a longer gap every due timer fires, in slot
// order.
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
        for (auto& head : outer_) head.prev = head.next = &head;
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
        // Within the coming revolution its slot is next visited at `at`;
        // further ahead, its revolution starts after now_.
        append(at - now_ < slots ? slot_[at % slots] : outer_[(at / slots) % slots], timer);
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
        if (now - now_ < slots) {
            for (std::uint64_t t = now_ + 1; t <= now; ++t) {
                if (t % slots == 0) bring_in(t / slots);
                collect(slot_[t % slots], now);
            }
        } else {
            // Every millisecond slot holds timers due by now; the second
            // wheel's are due, or due within a revolution, or stay.
            for (auto& head : slot_) collect(head, now);
            for (auto& head : outer_) {
                for (Link* link = head.next; link != &head;) {
                    auto* timer = static_cast<Timer*>(link);
                    link = link->next;
                    if (timer->deadline_ <= now) {
                        move(*timer, expired_);
                    } else if (timer->deadline_ - now < slots) {
                        move(*timer, slot_[timer->deadline_ % slots]);
                    }
                }
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
    // Due timers of a millisecond slot to the expired list; others stay.
    void collect(Link& head, std::uint64_t now) {
        for (Link* link = head.next; link != &head;) {
            auto* timer = static_cast<Timer*>(link);
            link = link->next;
            if (timer->deadline_ <= now) move(*timer, expired_);
        }
    }
    // Revolution `revolution` begins: its timers move to their millisecond
    // slots (a timer whose due revolution is a later one stays).
    void bring_in(std::uint64_t revolution) {
        Link& head = outer_[revolution % slots];
        for (Link* link = head.next; link != &head;) {
            auto* timer = static_cast<Timer*>(link);
            link = link->next;
            if (timer->deadline_ / slots == revolution)
                move(*timer, slot_[timer->deadline_ % slots]);
        }
    }
    static void move(Timer& timer, Link& head) {
        const std::uint64_t deadline = timer.deadline_;
        timer.unlink();
        append(head, timer);
        timer.deadline_ = deadline;
    }
    static void append(Link& head, Timer& timer) {
        Link& link = timer;
        link.prev = head.prev;
        link.next = &head;
        head.prev->next = &link;
        head.prev = &link;
    }

    std::array<Link, slots> slot_;   // a millisecond each
    std::array<Link, slots> outer_;  // a revolution each
    Link expired_;                   // due in the advance under way, in firing order
    std::uint64_t now_ = 0;
};

}  // namespace portcullis::dataplane
