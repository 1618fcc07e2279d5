#include "dataplane/upstream/backend_pool.hpp"

#include <gtest/gtest.h>

namespace portcullis::dataplane {
namespace {

using std::chrono::milliseconds;

UpstreamSettings three_backends() {
    UpstreamSettings s;
    for (const char* a : {"192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80"})
        s.backends.push_back(*SocketAddress::parse(a));
    s.fail_threshold = 2;
    s.retry_after_ms = 1000;
    return s;
}

TEST(BackendPool, RoundRobinOverUpBackends) {
    BackendPool pool(three_backends());
    const auto now = BackendPool::Clock::now();
    EXPECT_EQ(pool.pick(now), 0u);
    EXPECT_EQ(pool.pick(now), 1u);
    EXPECT_EQ(pool.pick(now), 2u);
    EXPECT_EQ(pool.pick(now), 0u);
}

TEST(BackendPool, DownAfterConsecutiveFailuresOnly) {
    BackendPool pool(three_backends());
    const auto now = BackendPool::Clock::now();
    pool.report_failure(1, now);
    pool.report_success(1);  // resets the streak
    pool.report_failure(1, now);
    EXPECT_TRUE(pool.is_up(1));
    pool.report_failure(1, now);
    EXPECT_FALSE(pool.is_up(1));
    EXPECT_EQ(pool.up_count(), 2u);
    for (int i = 0; i < 6; ++i) EXPECT_NE(pool.pick(now), 1u);
}

TEST(BackendPool, DownBackendGetsOneTrialPerRetryPeriod) {
    UpstreamSettings s = three_backends();
    s.backends.resize(1);
    BackendPool pool(s);
    const auto t0 = BackendPool::Clock::now();
    pool.report_failure(0, t0);
    pool.report_failure(0, t0);
    EXPECT_FALSE(pool.pick(t0 + milliseconds(500))) << "too early for a trial";
    EXPECT_EQ(pool.pick(t0 + milliseconds(1000)), 0u) << "the trial";
    EXPECT_FALSE(pool.pick(t0 + milliseconds(1001))) << "only one trial per period";
    pool.report_success(0);
    EXPECT_TRUE(pool.is_up(0));
    EXPECT_EQ(pool.pick(t0 + milliseconds(1002)), 0u);
}

TEST(BackendPool, ExcludeSkipsBackendsTheConnectionAlreadyTried) {
    BackendPool pool(three_backends());
    const auto now = BackendPool::Clock::now();
    EXPECT_EQ(pool.pick(now, {0, 1}), 2u);
    EXPECT_FALSE(pool.pick(now, {0, 1, 2}));
}

TEST(BackendPool, AllDownMeansNothingToPick) {
    BackendPool pool(three_backends());
    const auto now = BackendPool::Clock::now();
    for (std::size_t i = 0; i < 3; ++i) {
        pool.report_failure(i, now);
        pool.report_failure(i, now);
    }
    EXPECT_EQ(pool.up_count(), 0u);
    EXPECT_FALSE(pool.pick(now));
}

}  // namespace
}  // namespace portcullis::dataplane
