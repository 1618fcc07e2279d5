// The per-connection log bucket: a burst passes, then one line per 1/rate
// seconds, and each line that passes after refusals learns how many there were.
#include "dataplane/log_limiter.hpp"

#include <gtest/gtest.h>

namespace portcullis::dataplane {
namespace {

using namespace std::chrono_literals;

int allowed_of(LogLimiter& limiter, LogLimiter::Clock::time_point at, int attempts) {
    int allowed = 0;
    for (int i = 0; i < attempts; ++i) allowed += limiter.allow(at) ? 1 : 0;
    return allowed;
}

TEST(LogLimiter, PassesABurstThenRefusesUntilTokensReturn) {
    LogLimiter limiter(20.0, 50.0);
    const auto start = LogLimiter::Clock::now();
    EXPECT_EQ(allowed_of(limiter, start, 80), 50);
    EXPECT_EQ(limiter.take_suppressed(), 30u);
    EXPECT_EQ(limiter.take_suppressed(), 0u) << "the count restarts once taken";
    // 20 lines a second: 100 ms gives two more lines, not three.
    EXPECT_EQ(allowed_of(limiter, start + 100ms, 3), 2);
    EXPECT_EQ(limiter.take_suppressed(), 1u);
}

TEST(LogLimiter, IdleTimeRefillsNoFurtherThanTheBurst) {
    LogLimiter limiter(1.0, 3.0);
    const auto start = LogLimiter::Clock::now();
    EXPECT_EQ(allowed_of(limiter, start, 3), 3);
    EXPECT_EQ(allowed_of(limiter, start + 1h, 10), 3);
}

TEST(LogLimiter, ALargeBucketLogsEveryLine) {
    LogLimiter limiter(1'000'000.0, 1'000'000.0);
    EXPECT_EQ(allowed_of(limiter, LogLimiter::Clock::now(), 10'000), 10'000);
    EXPECT_EQ(limiter.take_suppressed(), 0u);
}

TEST(LogLimiter, AResizeStartsFullAndKeepsTheRefusedCount) {
    LogLimiter limiter(1.0, 1.0);
    const auto start = LogLimiter::Clock::now();
    EXPECT_EQ(allowed_of(limiter, start, 4), 1);
    limiter.resize(1.0, 5.0);
    EXPECT_EQ(allowed_of(limiter, start, 6), 5);
    EXPECT_EQ(limiter.take_suppressed(), 4u) << "3 refused before the resize, 1 after";
}

TEST(LogLimiter, AnOlderTimeThanTheLastCallCostsNoTokens) {
    LogLimiter limiter(1.0, 1.0);
    const auto start = LogLimiter::Clock::now();
    EXPECT_TRUE(limiter.allow(start + 1s));
    EXPECT_FALSE(limiter.allow(start)) << "the bucket is empty";
    EXPECT_TRUE(limiter.allow(start + 2s)) << "one second after the last line, not two";
    EXPECT_FALSE(limiter.allow(start + 2s));
}

}  // namespace
}  // namespace portcullis::dataplane
