// allowed_cpus() follows the affinity mask the process was started with.
#include "base/allowed_cpus.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <vector>

namespace portcullis::base {
namespace {

struct AffinityRestorer {
    cpu_set_t saved;
    AffinityRestorer() { ::sched_getaffinity(0, sizeof saved, &saved); }
    ~AffinityRestorer() { ::sched_setaffinity(0, sizeof saved, &saved); }
};

TEST(AllowedCpus, AreTheAffinityMaskInOrder) {
    cpu_set_t set;
    ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
    std::vector<int> expected;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &set)) expected.push_back(cpu);
    EXPECT_EQ(allowed_cpus(), expected);
}

TEST(AllowedCpus, FollowANarrowerMask) {
    AffinityRestorer restore;
    const auto all = allowed_cpus();
    ASSERT_FALSE(all.empty());
    const int last = all.back();
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
    EXPECT_EQ(allowed_cpus(), std::vector<int>{last})
        << "a daemon started under taskset -c " << last << " must pin its workers there";
}

}  // namespace
}  // namespace portcullis::base
