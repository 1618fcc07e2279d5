// When a worker gives its memory back: not while the load holds, once its
// accepts halve or a quarter of its connections go, and once memory freed
// after its connections (the heap's free bytes growing) reaches a quarter of
// what is still in use.
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
        EXPECT_FALSE(rule.due(accepted, 500, free_heap, 100 * MiB)) << "interval " << interval;
    }
}

TEST(MemoryReturn, AcceptsFallingToHalfReturnOnce) {
    MemoryReturn rule;
    EXPECT_FALSE(rule.due(1000, 100, 4 * MiB, 8 * MiB));
    EXPECT_FALSE(rule.due(2000, 100, 4 * MiB, 8 * MiB));
    EXPECT_TRUE(rule.due(2500, 100, 4 * MiB, 8 * MiB));
    rule.returned(100, 4 * MiB);
    // Accepts stay low: the window is compared with the one before, which
    // was already low.
    EXPECT_FALSE(rule.due(3000, 100, 4 * MiB, 8 * MiB));
}

TEST(MemoryReturn, AQuarterOfTheConnectionsGoneReturns) {
    MemoryReturn rule;
    EXPECT_FALSE(rule.due(0, 9000, 4 * MiB, 400 * MiB));
    EXPECT_FALSE(rule.due(0, 7000, 4 * MiB, 400 * MiB));
    EXPECT_TRUE(rule.due(0, 6000, 4 * MiB, 400 * MiB));
    rule.returned(6000, 4 * MiB);
    EXPECT_FALSE(rule.due(0, 5000, 4 * MiB, 400 * MiB));
    EXPECT_TRUE(rule.due(0, 4000, 4 * MiB, 400 * MiB));
}

// The DPDK stack's flows leave TIME_WAIT a minute after the connections
// closed: nothing changes in accepts or connections, only the heap's free
// bytes grow, by little, but those few bytes pinned most of the pages.
TEST(MemoryReturn, MemoryFreedAfterTheConnectionsReturnsOnceItIsAQuarterOfWhatIsInUse) {
    MemoryReturn rule(1 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 300 * MiB, 12 * MiB));  // first look: the low point
    rule.returned(0, 300 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 290 * MiB, 12 * MiB));  // reused: a new low point
    EXPECT_FALSE(rule.due(0, 0, 292 * MiB, 12 * MiB));  // 2 MiB: under 12 / 4
    EXPECT_TRUE(rule.due(0, 0, 299 * MiB, 3 * MiB));    // 9 MiB of flows freed
    // The returned pages stay counted as free: no return again for them.
    rule.returned(0, 299 * MiB);
    EXPECT_FALSE(rule.due(0, 0, 299 * MiB, 3 * MiB));
    // Below the floor nothing is worth a return, however little is in use.
    EXPECT_FALSE(rule.due(0, 0, 299 * MiB + MiB / 2, 0));
    EXPECT_TRUE(rule.due(0, 0, 300 * MiB, 0));
}

// Under load the heap's free bytes swing with the connections; only a swing
// of a quarter of what is in use counts.
TEST(MemoryReturn, ALargeHeapInUseNeedsALargerSwing) {
    MemoryReturn rule(1 * MiB);
    EXPECT_FALSE(rule.due(0, 9000, 10 * MiB, 400 * MiB));
    EXPECT_FALSE(rule.due(0, 9000, 109 * MiB, 400 * MiB));
    EXPECT_TRUE(rule.due(0, 9000, 110 * MiB, 400 * MiB));
}

}  // namespace
}  // namespace portcullis::dataplane
