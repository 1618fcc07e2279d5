// The DPDK stack's compact TIME_WAIT entries: the table's lookups through
// collisions, growth and shrinking, expiry in order, the pages given back
// when it empties, and what each kind of segment gets in answer.
#include "dataplane/tcp/time_wait_table.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace portcullis::dataplane::tcp {
namespace {

constexpr std::uint32_t rcv_nxt = 7001;
constexpr std::uint32_t snd_nxt = 3001;

TimeWaitEntry entry(std::uint64_t key, std::uint64_t deadline_ms) {
    TimeWaitEntry e;
    e.key = key;
    e.deadline_ms = deadline_ms;
    e.snd_nxt = snd_nxt;
    e.rcv_nxt = rcv_nxt;
    e.window_bytes = 256 * 1024;
    e.window_field = 2048;
    return e;
}

// Keys as the stack makes them: peer address, peer port, local port.
std::uint64_t key_of(std::uint32_t peer, std::uint16_t peer_port, std::uint16_t local_port) {
    return (std::uint64_t{peer} << 32) | (std::uint64_t{peer_port} << 16) | local_port;
}

TcpSegment segment(std::uint32_t seq, std::uint8_t flags) {
    TcpSegment s;
    s.seq = seq;
    s.ack = snd_nxt;
    s.flags = flags;
    return s;
}

TEST(TimeWaitTable, FindsEveryEntryThroughGrowthErasureAndShrinking) {
    TimeWaitTable table;
    std::vector<std::uint64_t> keys;
    // One backend address and port, every local port: the keys differ in
    // their low bits only, as the upstream flows of a worker do.
    for (std::uint16_t port = 32768; port < 32768 + 20000; ++port)
        keys.push_back(key_of(0x0a4d0002, 9000, port));
    for (auto key : keys) table.insert(entry(key, 1000));
    EXPECT_EQ(table.size(), keys.size());
    EXPECT_GE(table.capacity() * 3, keys.size() * 4) << "at most three quarters full";
    for (auto key : keys) ASSERT_NE(table.find(key), nullptr) << key;
    EXPECT_EQ(table.find(key_of(0x0a4d0002, 9000, 80)), nullptr);

    std::mt19937_64 random(7);
    std::shuffle(keys.begin(), keys.end(), random);
    const std::size_t full_capacity = table.capacity();
    const std::size_t kept = 1000;
    for (std::size_t i = kept; i < keys.size(); ++i) ASSERT_TRUE(table.erase(keys[i]));
    EXPECT_FALSE(table.erase(keys.back())) << "already gone";
    EXPECT_EQ(table.size(), kept);
    EXPECT_LT(table.capacity(), full_capacity / 4) << "the table halves as it empties";
    for (std::size_t i = 0; i < keys.size(); ++i)
        ASSERT_EQ(table.find(keys[i]) != nullptr, i < kept) << i;

    for (std::size_t i = 0; i < kept; ++i) ASSERT_TRUE(table.erase(keys[i]));
    EXPECT_EQ(table.size(), 0u);
    EXPECT_EQ(table.mapped_bytes(), 0u) << "nothing stays mapped once empty";
}

TEST(TimeWaitTable, ExpiresEntriesInTheirOrderAndUnmapsWhenTheLastGoes) {
    TimeWaitTable table(60000);
    for (std::uint16_t i = 0; i < 3000; ++i)
        table.insert(entry(key_of(0x0a000001, 443, i + 1), 60000 + i));
    EXPECT_GT(table.mapped_bytes(), 3000 * sizeof(TimeWaitEntry));
    table.expire(59999);
    EXPECT_EQ(table.size(), 3000u);
    table.expire(60000 + 999);
    EXPECT_EQ(table.size(), 2000u);
    EXPECT_EQ(table.find(key_of(0x0a000001, 443, 1000)), nullptr);
    EXPECT_NE(table.find(key_of(0x0a000001, 443, 1001)), nullptr);
    table.expire(60000 + 2999);
    EXPECT_EQ(table.size(), 0u);
    EXPECT_EQ(table.mapped_bytes(), 0u);
}

TEST(TimeWaitTable, ThePeersFinAgainIsAckedAndStartsTwoMslOver) {
    TimeWaitTable table(60000);
    const auto key = key_of(0x0a000002, 40000, 9000);
    auto e = entry(key, 60000);
    e.timestamps = true;
    e.ts_recent = 555;
    e.ts_offset = 1000;
    table.insert(e);

    const auto ack = table.answer(key, segment(rcv_nxt - 1, flag::fin | flag::ack), 30000);
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->flags, flag::ack);
    EXPECT_EQ(ack->seq, snd_nxt);
    EXPECT_EQ(ack->ack, rcv_nxt);
    EXPECT_EQ(ack->window, 2048);
    EXPECT_TRUE(ack->options.timestamps);
    EXPECT_EQ(ack->options.ts_value, 30000u + 1 + 1000);
    EXPECT_EQ(ack->options.ts_echo, 555u);

    table.expire(60000);
    EXPECT_NE(table.find(key), nullptr) << "2 MSL started over at the FIN";
    table.expire(89999);
    EXPECT_NE(table.find(key), nullptr);
    table.expire(90000);
    EXPECT_EQ(table.find(key), nullptr);
    EXPECT_EQ(table.mapped_bytes(), 0u);
}

TEST(TimeWaitTable, OnlyAnExactRstEndsTheEntry) {
    TimeWaitTable table;
    const auto key = key_of(0x0a000002, 40000, 9000);
    table.insert(entry(key, 60000));
    EXPECT_FALSE(table.answer(key, segment(rcv_nxt - 5000, flag::rst), 10).has_value())
        << "outside the window: ignored";
    const auto challenge = table.answer(key, segment(rcv_nxt + 10, flag::rst), 10);
    ASSERT_TRUE(challenge.has_value()) << "in the window but not exact: a challenge ACK";
    EXPECT_EQ(challenge->flags, flag::ack);
    EXPECT_NE(table.find(key), nullptr);
    EXPECT_FALSE(table.answer(key, segment(rcv_nxt, flag::rst), 10).has_value());
    EXPECT_EQ(table.find(key), nullptr);
}

TEST(TimeWaitTable, DataOldSegmentsAndSynAcksAreAckedABareAckIsNot) {
    TimeWaitTable table;
    const auto key = key_of(0x0a000002, 40000, 9000);
    table.insert(entry(key, 60000));
    EXPECT_FALSE(table.answer(key, segment(rcv_nxt, flag::ack), 10).has_value());
    const std::uint8_t byte = 1;
    auto data = segment(rcv_nxt, flag::ack);
    data.payload = std::span(&byte, 1);
    EXPECT_TRUE(table.answer(key, data, 10).has_value());
    EXPECT_TRUE(table.answer(key, segment(rcv_nxt - 1, flag::ack), 10).has_value())
        << "a keepalive probe";
    EXPECT_TRUE(table.answer(key, segment(rcv_nxt, flag::syn | flag::ack), 10).has_value());
    EXPECT_FALSE(table.answer(key_of(1, 2, 3), segment(rcv_nxt, flag::fin), 10).has_value())
        << "no entry, no answer";
    EXPECT_EQ(table.size(), 1u);
}

}  // namespace
}  // namespace portcullis::dataplane::tcp
