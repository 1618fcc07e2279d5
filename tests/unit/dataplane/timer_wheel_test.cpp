// The DPDK stack's timer wheel on its own: timers fire once, at their
// deadline and in deadline order; cancel and reschedule take effect at once;
// deadlines beyond one revolution and clock jumps longer than one keep
// their exact times.
#include "dataplane/timer_wheel.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace portcullis::dataplane {
namespace {

struct Named : TimerWheel::Timer {
    explicit Named(int n) : id(n) {}
    int id;
};

struct Fired {
    int id;
    std::uint64_t at;  // the wheel's time when it fired
};

// Advances one millisecond at a time, as a poll loop would, recording what fires.
std::vector<Fired> run_until(TimerWheel& wheel, std::uint64_t until) {
    std::vector<Fired> fired;
    for (std::uint64_t t = wheel.now() + 1; t <= until; ++t)
        wheel.advance(t, [&](TimerWheel::Timer& timer) {
            fired.push_back({static_cast<Named&>(timer).id, t});
        });
    return fired;
}

TEST(TimerWheel, FiresOnceAtItsDeadline) {
    TimerWheel wheel;
    wheel.advance(1000, [](TimerWheel::Timer&) { FAIL() << "nothing is scheduled"; });
    Named timer(1);
    wheel.schedule(timer, 1005);
    EXPECT_TRUE(timer.scheduled());
    EXPECT_EQ(timer.deadline(), 1005u);
    const auto fired = run_until(wheel, 1100);
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_EQ(fired[0].at, 1005u);
    EXPECT_FALSE(timer.scheduled());
    EXPECT_EQ(timer.deadline(), TimerWheel::never);
}

TEST(TimerWheel, FiresInDeadlineOrderWhateverTheOrderOfScheduling) {
    TimerWheel wheel;
    wheel.advance(50, [](TimerWheel::Timer&) {});
    Named a(1), b(2), c(3), d(4);
    wheel.schedule(c, 80);
    wheel.schedule(a, 60);
    wheel.schedule(d, 80);  // same millisecond as c, scheduled after it
    wheel.schedule(b, 70);
    std::vector<int> order;
    // One advance covering all four deadlines.
    wheel.advance(100, [&](TimerWheel::Timer& t) { order.push_back(static_cast<Named&>(t).id); });
    EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4}));
}

TEST(TimerWheel, CancelledTimerNeverFires) {
    TimerWheel wheel;
    wheel.advance(10, [](TimerWheel::Timer&) {});
    Named kept(1), cancelled(2), also_kept(3);
    wheel.schedule(kept, 20);
    wheel.schedule(cancelled, 20);
    wheel.schedule(also_kept, 20);
    TimerWheel::cancel(cancelled);
    EXPECT_FALSE(cancelled.scheduled());
    const auto fired = run_until(wheel, 3000);
    ASSERT_EQ(fired.size(), 2u);
    EXPECT_EQ(fired[0].id, 1);
    EXPECT_EQ(fired[1].id, 3);
}

TEST(TimerWheel, RescheduleMovesTheTimerEarlierOrLater) {
    TimerWheel wheel;
    wheel.advance(1, [](TimerWheel::Timer&) {});
    Named later(1), earlier(2);
    wheel.schedule(later, 10);
    wheel.schedule(later, 40);
    wheel.schedule(earlier, 30);
    wheel.schedule(earlier, 5);
    const auto fired = run_until(wheel, 100);
    ASSERT_EQ(fired.size(), 2u);
    EXPECT_EQ(fired[0].id, 2);
    EXPECT_EQ(fired[0].at, 5u);
    EXPECT_EQ(fired[1].id, 1);
    EXPECT_EQ(fired[1].at, 40u);
}

TEST(TimerWheel, DeadlineBeyondOneRevolutionKeepsItsExactTime) {
    TimerWheel wheel;
    wheel.advance(7, [](TimerWheel::Timer&) {});
    Named near(1), far(2), farther(3);
    // All three share a slot: the far ones are passed over until their revolution.
    wheel.schedule(near, 7 + 100);
    wheel.schedule(far, 7 + 100 + TimerWheel::slots);
    wheel.schedule(farther, 7 + 100 + 3 * TimerWheel::slots);
    const auto fired = run_until(wheel, 7 + 5 * TimerWheel::slots);
    ASSERT_EQ(fired.size(), 3u);
    EXPECT_EQ(fired[0].at, 7 + 100u);
    EXPECT_EQ(fired[1].at, 7 + 100 + TimerWheel::slots);
    EXPECT_EQ(fired[2].at, 7 + 100 + 3 * TimerWheel::slots);
}

TEST(TimerWheel, SlotIndexWrapsAroundTheEndOfTheWheel) {
    TimerWheel wheel;
    const std::uint64_t start = 10 * TimerWheel::slots - 3;  // three slots before the wrap
    wheel.advance(start, [](TimerWheel::Timer&) {});
    Named before(1), on(2), after(3);
    wheel.schedule(after, start + 6);
    wheel.schedule(on, start + 3);  // slot 0
    wheel.schedule(before, start + 1);
    const auto fired = run_until(wheel, start + 10);
    ASSERT_EQ(fired.size(), 3u);
    EXPECT_EQ(fired[0].id, 1);
    EXPECT_EQ(fired[1].id, 2);
    EXPECT_EQ(fired[2].id, 3);
    EXPECT_EQ(fired[1].at, start + 3);
}

TEST(TimerWheel, ClockJumpLongerThanARevolutionFiresEverythingDueAndNothingElse) {
    TimerWheel wheel;
    wheel.advance(100, [](TimerWheel::Timer&) {});
    Named due1(1), due2(2), not_yet(3);
    wheel.schedule(due1, 150);
    wheel.schedule(due2, 100 + 2 * TimerWheel::slots);
    wheel.schedule(not_yet, 100 + 5 * TimerWheel::slots);
    std::vector<int> fired;
    wheel.advance(100 + 3 * TimerWheel::slots,
                  [&](TimerWheel::Timer& t) { fired.push_back(static_cast<Named&>(t).id); });
    EXPECT_EQ(fired.size(), 2u);
    EXPECT_TRUE(not_yet.scheduled());
    EXPECT_FALSE(due1.scheduled());
    EXPECT_FALSE(due2.scheduled());
    const auto rest = run_until(wheel, 100 + 6 * TimerWheel::slots);
    ASSERT_EQ(rest.size(), 1u);
    EXPECT_EQ(rest[0].id, 3);
    EXPECT_EQ(rest[0].at, 100 + 5 * TimerWheel::slots);
}

TEST(TimerWheel, PastDeadlineFiresAtTheNextAdvance) {
    TimerWheel wheel;
    wheel.advance(500, [](TimerWheel::Timer&) {});
    Named late(1);
    wheel.schedule(late, 200);
    EXPECT_EQ(late.deadline(), 200u);
    const auto fired = run_until(wheel, 501);
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_EQ(fired[0].at, 501u);
}

TEST(TimerWheel, CancellingAnAlreadyFiredTimerIsHarmless) {
    TimerWheel wheel;
    wheel.advance(1, [](TimerWheel::Timer&) {});
    Named timer(1), other(2);
    wheel.schedule(timer, 3);
    wheel.schedule(other, 9);
    ASSERT_EQ(run_until(wheel, 5).size(), 1u);
    TimerWheel::cancel(timer);
    TimerWheel::cancel(timer);
    EXPECT_FALSE(timer.scheduled());
    const auto fired = run_until(wheel, 20);
    ASSERT_EQ(fired.size(), 1u) << "the other timer's list survived the cancel";
    EXPECT_EQ(fired[0].id, 2);
}

TEST(TimerWheel, ExpiryMayRearmItselfAndCancelAnotherDueTimer) {
    TimerWheel wheel;
    wheel.advance(1, [](TimerWheel::Timer&) {});
    Named periodic(1), victim(2);
    wheel.schedule(periodic, 10);
    wheel.schedule(victim, 10);
    std::vector<Fired> fired;
    for (std::uint64_t t = 2; t <= 45; ++t) {
        wheel.advance(t, [&](TimerWheel::Timer& timer) {
            auto& named = static_cast<Named&>(timer);
            fired.push_back({named.id, t});
            if (named.id == 1) {
                TimerWheel::cancel(victim);  // due in this same advance
                wheel.schedule(named, t + 10);
            }
        });
    }
    ASSERT_EQ(fired.size(), 4u);
    for (const auto& f : fired) EXPECT_EQ(f.id, 1);
    EXPECT_EQ(fired[0].at, 10u);
    EXPECT_EQ(fired[3].at, 40u);
}

TEST(TimerWheel, DestroyedTimerLeavesTheWheel) {
    TimerWheel wheel;
    wheel.advance(1, [](TimerWheel::Timer&) {});
    Named survivor(1);
    {
        Named gone(2);
        wheel.schedule(gone, 5);
        wheel.schedule(survivor, 5);
    }
    const auto fired = run_until(wheel, 10);
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_EQ(fired[0].id, 1);
}

}  // namespace
}  // namespace portcullis::dataplane
