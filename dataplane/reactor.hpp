// The event loop of a worker, on the worker's one thread: one epoll instance
// whose ready descriptors are dispatched straight to the handler registered
// with them (the handler's address and a 2-bit tag ride in epoll_event.data,
// so dispatch is one indirect call, with no lookup and nothing allocated),
// and optionally a poller spun in a loop (a DPDK lcore).
//
// Two shapes, chosen by whether a poller is set:
// - sleep mode: each turn waits in epoll_wait (up to a timeout) and dispatches;
// - poll mode: each turn runs the poller once, and only every 100 µs looks at
//   the descriptors (epoll_wait without waiting), so descriptors cost one
//   syscall per interval, never one per packet.
// Transports register what they need (the kernel transport its sockets, the
// DPDK transport its poller); the worker its control descriptors. Handlers
// and the poller are not owned: they stay registered until their descriptor
// closes (the kernel drops it from the epoll set) or the reactor is destroyed,
// so a handler must outlive its descriptor.
#pragma once

#include <sys/epoll.h>

#include <array>
#include <chrono>
#include <cstdint>

#include "base/counter.hpp"
#include "base/unique_fd.hpp"

namespace portcullis::dataplane {

class Reactor {
  public:
    using Clock = std::chrono::steady_clock;

    // Told when its descriptor is ready; `tag` is the one it was registered
    // with (one handler may own several descriptors).
    class Handler {
      public:
        virtual void on_ready(unsigned tag, std::uint32_t events) = 0;

      protected:
        ~Handler() = default;
    };

    // One poll-mode iteration; true when it did work (the busy fraction).
    class Poller {
      public:
        virtual bool poll(Clock::time_point now) = 0;

      protected:
        ~Poller() = default;
    };

    static constexpr unsigned max_tag = 3;  // the low bits of an 8-byte aligned address
    // A polling worker looks at its descriptors this often.
    static constexpr auto poll_mode_descriptor_interval = std::chrono::microseconds(100);

    // `now` is the loop's clock, refreshed once per turn before anything is
    // dispatched; `busy_ns` gets the time the poller spent on iterations that
    // did work (a polling core is always at 100% on top).
    Reactor(Clock::time_point& now, base::Counter& busy_ns);

    // Throws os_error when epoll_ctl refuses.
    void add(int fd, std::uint32_t events, Handler& handler, unsigned tag = 0);
    void set_poller(Poller& poller) { poller_ = &poller; }
    bool polls() const { return poller_ != nullptr; }

    struct Turn {
        // Whether the descriptors were looked at (always in sleep mode): only
        // such turns run the worker's periodic work.
        bool looked = false;
        int dispatched = 0;
        Clock::time_point started;  // when the descriptors' work began
    };
    // One turn of the loop (see the top of this file); throws on epoll failure.
    Turn turn(int timeout_ms);

  private:
    static constexpr int event_batch = 256;

    Clock::time_point& now_;
    base::Counter& busy_ns_;
    base::UniqueFd epoll_;
    Poller* poller_ = nullptr;
    Clock::time_point next_look_{};
    std::array<epoll_event, event_batch> events_{};
};

}  // namespace portcullis::dataplane
