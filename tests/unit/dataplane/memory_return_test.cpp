// When a worker gives its memory back: not while the load holds, once its
// accepts halve or a quarter of its connections go, and once memory freed
// after its connections (the heap's free bytes growing) reaches the slack.
#include "dataplane/memory_return.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

namespace portcullis::dataplane {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

TEST(MemoryReturn, SteadyLoadKeepsTheHeap) {
    MemoryReturn rule;
    std::uint64_t accepted = 0;
    for (int interval = 0; interval < 20; ++interval) {
        accepted += 1000;
        // The free bytes wander within the slack, as under steady churn.
        const std::size_t free_heap = (interval % 2 ? 30 : 20) * MiB;
        EXPECT_FALSE(rule.due(accepted, 500, free_heap)) << "interval " << interval;
    }
}

TEST(MemoryReturn, AcceptsFallingToHalfReturnOnce) {
    MemoryReturn rule;
    EXPECT_FALSE(rule.due(1000, 100, 4 * MiB));
    EXPECT_FALSE(rule.due(2000, 100, 4 * MiB));
    EXPECT_TRUE(rule.due(2500, 100, 4 * MiB));
    rule.returned(100, 4 * MiB);
    // Accepts stay low: the window is compared with the one before, which
    // was already low.
    EXPECT_FALSE(rule.due(3000, 100, 4 * MiB));
}

TEST(MemoryReturn, AQuarterOfTheConnectionsGoneReturns) {
    MemoryReturn rule;
    EXPECT_FALSE(rule.due(0, 9000, 4 * MiB));
    EXPECT_FALSE(rule.due(0, 7000, 4 * MiB));
    EXPECT_TRUE(rule.due(0, 6000, 4 * MiB));
    rule.returned(6000, 4 * MiB);
    EXPECT_FALSE(rule.due(0, 5000, 4 * MiB));
    EXPECT_TRUE(rule.due(0, 4000, 4 * MiB));
}

// The DPDK stack's flows leave TIME_WAIT a minute after the connections
// closed: nothing changes in accepts or connections, only the heap's free
// bytes grow.
TEST(MemoryReturn, MemoryFreedAfterTheConnectionsReturnsOnceItReachesTheSlack) {
    MemoryReturn rule(16 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 100 * MiB));  // first look: the low point
    rule.returned(0, 100 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 90 * MiB));   // reused: a new low point
    EXPECT_FALSE(rule.due(0, 0, 105 * MiB));  // 15 MiB above it
    EXPECT_TRUE(rule.due(0, 0, 106 * MiB));
    // The returned pages stay counted as free: no return again for them.
    rule.returned(0, 106 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 106 * MiB));
    EXPECT_FALSE(rule.due(0, 0, 121 * MiB));
    EXPECT_TRUE(rule.due(0, 0, 122 * MiB));
}

}  // namespace
}  // namespace portcullis::dataplane
