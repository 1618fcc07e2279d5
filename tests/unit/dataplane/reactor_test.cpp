// The reactor's two loop shapes with real descriptors (eventfds): dispatch
// to the registered handler with its tag, and in poll mode the poller on
// every turn but the descriptors only once per interval.
#include "dataplane/reactor.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace portcullis::dataplane {
namespace {

base::UniqueFd ready_eventfd() {
    base::UniqueFd fd(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));  // readable at once
    EXPECT_TRUE(fd);
    return fd;
}

struct Recorder final : Reactor::Handler {
    void on_ready(unsigned tag, std::uint32_t events) override {
        tags.push_back(tag);
        EXPECT_TRUE(events & EPOLLIN);
    }
    std::vector<unsigned> tags;
};

struct SpinningPoller final : Reactor::Poller {
    bool poll(Reactor::Clock::time_point now) override {
        ++calls;
        // Work that takes measurable time, waited for on the clock itself.
        while (Reactor::Clock::now() == now) {
        }
        return true;
    }
    int calls = 0;
};

TEST(Reactor, SleepModeDispatchesEachDescriptorToItsHandlerWithItsTag) {
    Reactor::Clock::time_point now{};
    base::Counter busy;
    Reactor reactor(now, busy);
    Recorder first, second;
    auto a = ready_eventfd(), b = ready_eventfd(), c = base::UniqueFd(::eventfd(0, EFD_NONBLOCK));
    reactor.add(a.get(), EPOLLIN, first, 2);
    reactor.add(b.get(), EPOLLIN, second, 3);
    reactor.add(c.get(), EPOLLIN, second, 1);  // never ready
    EXPECT_FALSE(reactor.polls());
    const auto before = Reactor::Clock::now();
    const auto turn = reactor.turn(1000);
    EXPECT_TRUE(turn.looked);
    EXPECT_EQ(turn.dispatched, 2);
    EXPECT_GE(now, before) << "the loop's clock was not refreshed";
    EXPECT_EQ(first.tags, std::vector<unsigned>{2});
    EXPECT_EQ(second.tags, std::vector<unsigned>{3});
    EXPECT_EQ(busy.get(), 0u) << "sleep mode leaves busy time to the worker";
}

TEST(Reactor, PollModeRunsThePollerEveryTurnAndLooksAtDescriptorsPerInterval) {
    Reactor::Clock::time_point now{};
    base::Counter busy;
    Reactor reactor(now, busy);
    SpinningPoller poller;
    reactor.set_poller(poller);
    Recorder handler;
    auto fd = ready_eventfd();
    reactor.add(fd.get(), EPOLLIN, handler);
    ASSERT_TRUE(reactor.polls());

    const auto first = reactor.turn(1000);
    EXPECT_TRUE(first.looked) << "the first turn looks at the descriptors";
    EXPECT_EQ(first.dispatched, 1);
    auto last_look = now;
    int looks = 1;
    const auto until = now + 20 * Reactor::poll_mode_descriptor_interval;
    while (now < until) {
        const auto turn = reactor.turn(1000);
        if (turn.looked) {
            EXPECT_GE(now - last_look, Reactor::poll_mode_descriptor_interval);
            last_look = now;
            ++looks;
        } else {
            EXPECT_LT(now - last_look, Reactor::poll_mode_descriptor_interval);
        }
    }
    EXPECT_GT(poller.calls, looks) << "descriptors were looked at on every turn";
    EXPECT_EQ(handler.tags.size(), static_cast<std::size_t>(looks))
        << "a level-triggered ready descriptor is dispatched on each look";
    EXPECT_GT(busy.get(), 0u) << "the poller's work was not counted as busy time";
}

}  // namespace
}  // namespace portcullis::dataplane
