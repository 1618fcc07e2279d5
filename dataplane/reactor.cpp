#include "dataplane/reactor.hpp"

#include <cerrno>

#include "base/os_error.hpp"

namespace portcullis::dataplane {
namespace {

constexpr std::uint64_t tag_mask = Reactor::max_tag;
static_assert(alignof(Reactor::Handler) > tag_mask, "the tag lives in the address's low bits");

std::uint64_t elapsed_ns(Reactor::Clock::time_point since) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Reactor::Clock::now() - since)
            .count());
}

}  // namespace

Reactor::Reactor(Clock::time_point& now, base::Counter& busy_ns)
    : now_(now), busy_ns_(busy_ns), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (!epoll_) throw base::os_error("epoll_create1");
}

void Reactor::add(int fd, std::uint32_t events, Handler& handler, unsigned tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = reinterpret_cast<std::uintptr_t>(&handler) | (tag & tag_mask);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
        throw base::os_error("epoll_ctl add");
}

Reactor::Turn Reactor::turn(int timeout_ms) {
    int n = 0;
    if (poller_ != nullptr) {
        now_ = Clock::now();
        if (poller_->poll(now_)) busy_ns_.add(elapsed_ns(now_));
        if (now_ < next_look_) return {};
        next_look_ = now_ + poll_mode_descriptor_interval;
        n = ::epoll_wait(epoll_.get(), events_.data(), event_batch, 0);
    } else {
        n = ::epoll_wait(epoll_.get(), events_.data(), event_batch, timeout_ms);
        now_ = Clock::now();
    }
    if (n < 0) {
        if (errno != EINTR) throw base::os_error("epoll_wait");
        n = 0;
    }
    for (int i = 0; i < n; ++i) {
        const auto& event = events_[static_cast<std::size_t>(i)];
        auto* handler = reinterpret_cast<Handler*>(event.data.u64 & ~tag_mask);
        handler->on_ready(static_cast<unsigned>(event.data.u64 & tag_mask), event.events);
    }
    return {true, n, now_};
}

}  // namespace portcullis::dataplane
