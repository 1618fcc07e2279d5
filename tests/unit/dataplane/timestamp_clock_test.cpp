// The offset that keeps TCP timestamps rising across connections and
// restarts: the same for every process of one boot, different per peer.
#include "dataplane/tcp/timestamp_clock.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace portcullis::dataplane::tcp {
namespace {

TEST(TimestampClock, TheKeyIsTheSameForEveryProcessOfThisBoot) {
    if (!std::ifstream("/proc/sys/kernel/random/boot_id")) {
        GTEST_SKIP() << "SKIPPED: no /proc/sys/kernel/random/boot_id on this machine";
    }
    const auto key = TimestampClock::boot_key();
    EXPECT_EQ(TimestampClock::boot_key(), key) << "a restarted process must find the same key";
    EXPECT_NE(key, TimestampClock::Key{}) << "read from the boot id, not left empty";
}

TEST(TimestampClock, OffsetDependsOnTheKeyAndTheAddressPair) {
    const TimestampClock clock(TimestampClock::Key{1, 2, 3});
    const std::uint32_t local = 0x0a4d0901, backend = 0x0a4d0902, other = 0x0a4d0903;
    EXPECT_EQ(clock.offset(local, backend),
              TimestampClock(TimestampClock::Key{1, 2, 3}).offset(local, backend));
    EXPECT_NE(clock.offset(local, backend), clock.offset(local, other));
    EXPECT_NE(clock.offset(local, backend),
              TimestampClock(TimestampClock::Key{9}).offset(local, backend));
}

}  // namespace
}  // namespace portcullis::dataplane::tcp
