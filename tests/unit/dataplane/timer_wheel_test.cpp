// The DPDK stack's timer wheel on its own: timers fire once, at their
// deadline and in deadline order; cancel and reschedule take effect at once;
// deadlines beyond one revolution (on the second wheel) and clock jumps
// longer than one keep their exact times, checked against a plain list.
#include "dataplane/timer_wheel.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <random>
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

// `fired` is exactly `expected`: the same timers, in order, at those times.
void expect_fired(const std::vector<Fired>& fired, const std::vector<Fired>& expected) {
    ASSERT_EQ(fired.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        EXPECT_EQ(fired[i].id, expected[i].id) << i;
        EXPECT_EQ(fired[i].at, expected[i].at) << i;
    }
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
    expect_fired(run_until(wheel, 100), {{2, 5}, {1, 40}});
}

TEST(TimerWheel, DeadlineBeyondOneRevolutionKeepsItsExactTime) {
    TimerWheel wheel;
    wheel.advance(7, [](TimerWheel::Timer&) {});
    Named near(1), far(2), farther(3);
    // All three have the same slot: the far ones wait on the second wheel.
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

// Keepalive-like timers a minute ahead, and one beyond the second wheel's
// 17.5 minutes: each fires at its exact millisecond.
TEST(TimerWheel, TimersManyRevolutionsAheadFireAtTheirExactTime) {
    TimerWheel wheel;
    const std::uint64_t start = 3 * TimerWheel::slots + 17;
    wheel.advance(start, [](TimerWheel::Timer&) {});
    std::deque<Named> timers;  // timers stay where they are
    std::vector<std::uint64_t> deadlines;
    for (int i = 0; i < 60; ++i)
        deadlines.push_back(start + 60000 + static_cast<std::uint64_t>(i) * 997);
    deadlines.push_back(start + TimerWheel::slots);      // just a revolution ahead
    deadlines.push_back(start + TimerWheel::slots - 1);  // just within it
    deadlines.push_back(start + TimerWheel::slots * TimerWheel::slots +
                        5);  // beyond the second wheel
    for (std::size_t i = 0; i < deadlines.size(); ++i) timers.emplace_back(static_cast<int>(i));
    for (std::size_t i = 0; i < deadlines.size(); ++i) wheel.schedule(timers[i], deadlines[i]);
    const auto fired = run_until(wheel, deadlines.back() + 10);
    ASSERT_EQ(fired.size(), deadlines.size());
    for (const auto& f : fired) EXPECT_EQ(f.at, deadlines[static_cast<std::size_t>(f.id)]) << f.id;
}

TEST(TimerWheel, FarTimersMoveCancelAndSurviveAClockJump) {
    TimerWheel wheel;
    wheel.advance(100, [](TimerWheel::Timer&) {});
    Named due(1), soon_after(2), later(3), cancelled(4), brought_near(5);
    wheel.schedule(due, 3000);
    wheel.schedule(soon_after, 5500);
    wheel.schedule(later, 100000);
    wheel.schedule(cancelled, 4000);
    wheel.schedule(brought_near, 90000);
    TimerWheel::cancel(cancelled);
    wheel.schedule(brought_near, 150);  // from the second wheel to the first
    std::vector<int> fired;
    wheel.advance(5000, [&](TimerWheel::Timer& t) { fired.push_back(static_cast<Named&>(t).id); });
    EXPECT_EQ(fired, (std::vector<int>{5, 1}));
    EXPECT_TRUE(soon_after.scheduled());
    EXPECT_TRUE(later.scheduled());
    EXPECT_FALSE(cancelled.scheduled());
    expect_fired(run_until(wheel, 100010), {{2, 5500}, {3, 100000}});
}

// Random deadlines up to 50 minutes ahead, random reschedules and cancels,
// advances of 1 to 40 ms with a jump of seconds now and then: every timer
// fires at the first advance at or after its deadline, and only once.
TEST(TimerWheel, AgreesWithAPlainListOfDeadlines) {
    TimerWheel wheel;
    std::mt19937_64 random(11);
    std::deque<Named> timers;
    std::vector<std::uint64_t> deadline;  // 0: not armed
    for (int i = 0; i < 3000; ++i) {
        timers.emplace_back(i);
        deadline.push_back(0);
    }
    auto arm = [&](std::size_t i, std::uint64_t now) {
        const std::uint64_t ahead = 1 + (random() % 4 == 0 ? random() % 3000000 : random() % 70000);
        deadline[i] = now + ahead;
        wheel.schedule(timers[i], deadline[i]);
    };
    for (std::size_t i = 0; i < timers.size(); ++i) arm(i, 0);
    std::uint64_t now = 0, fired = 0;
    while (now < 3200000) {
        const std::uint64_t step = random() % 500 == 0 ? 1000 + random() % 9000 : 1 + random() % 40;
        const std::uint64_t previous = now;
        now += step;
        wheel.advance(now, [&](TimerWheel::Timer& t) {
            const auto i = static_cast<std::size_t>(static_cast<Named&>(t).id);
            ASSERT_NE(deadline[i], 0u) << "fired twice or after a cancel: " << i;
            ASSERT_LE(deadline[i], now) << i;
            ASSERT_GT(deadline[i], previous) << "late: " << i;
            deadline[i] = 0;
            ++fired;
        });
        for (int k = 0; k < 3; ++k) {  // some churn, as connections make
            const auto i = static_cast<std::size_t>(random() % timers.size());
            if (random() % 3 == 0) {
                TimerWheel::cancel(timers[i]);
                deadline[i] = 0;
            } else {
                arm(i, now);
            }
        }
    }
    for (std::size_t i = 0; i < timers.size(); ++i) {
        if (deadline[i] != 0) {
            EXPECT_GT(deadline[i], now) << "missed: " << i;
        }
    }
    EXPECT_GT(fired, 3000u);
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
