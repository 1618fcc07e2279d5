// GLIBC_TUNABLES for a worker: the per-thread cache's count is added to what
// the environment already says, and an operator's own count is left alone.
#include "base/heap_tunables.hpp"

#include <gtest/gtest.h>

namespace portcullis::base {
namespace {

TEST(HeapTunables, AddsTheCacheCountToAnEmptyEnvironment) {
    EXPECT_EQ(with_worker_tunables(""), "glibc.malloc.tcache_count=256");
}

TEST(HeapTunables, KeepsOtherTunablesBeforeIt) {
    EXPECT_EQ(with_worker_tunables("glibc.malloc.arena_max=2"),
              "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=256");
}

TEST(HeapTunables, AnOperatorsOwnCountWins) {
    EXPECT_EQ(with_worker_tunables("glibc.malloc.tcache_count=7"), "");
    EXPECT_EQ(with_worker_tunables("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=64"), "");
}

TEST(HeapTunables, ASimilarNameIsNotTheCount) {
    EXPECT_EQ(with_worker_tunables("glibc.malloc.tcache_count_x=1"),
              "glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=256");
}

}  // namespace
}  // namespace portcullis::base
