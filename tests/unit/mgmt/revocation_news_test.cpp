// RevocationNews' contract: what one worker publishes every reader gets once,
// across fork; a reader started later gets what the rings still hold; one
// that falls more than a ring behind counts what it missed and never returns
// a torn digest, even while its writer laps it (also run under TSan).
#include "mgmt/revocation_news.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

namespace portcullis::mgmt {
namespace {

// n's four bytes eight times over, so a digest mixing two writes matches no n.
RevocationNews::Digest digest_for(std::uint32_t n) {
    RevocationNews::Digest digest;
    for (std::size_t i = 0; i < digest.size(); ++i)
        digest[i] = static_cast<unsigned char>((n >> (8 * (i % 4))) ^ i);
    return digest;
}

std::uint32_t number_of(const RevocationNews::Digest& digest) {
    std::uint32_t n = 0;
    for (std::size_t i = 0; i < 4; ++i)
        n |= std::uint32_t{static_cast<unsigned char>(digest[i] ^ i)} << (8 * i);
    return n;
}

bool whole(const RevocationNews::Digest& digest, std::uint32_t n) {
    return digest == digest_for(n);
}

TEST(RevocationNews, EveryReaderGetsEachPublishedDigestOnce) {
    RevocationNews news(3);
    RevocationNews::Reader early(news);
    EXPECT_TRUE(early.poll().empty());
    news.publish(0, {digest_for(1), digest_for(2)});
    news.publish(2, {digest_for(3)});
    const auto first = early.poll();
    ASSERT_EQ(first.size(), 3u);
    EXPECT_EQ(std::set(first.begin(), first.end()),
              std::set({digest_for(1), digest_for(2), digest_for(3)}));
    EXPECT_TRUE(early.poll().empty()) << "a digest came twice";

    // A worker restarted now still learns what its ring neighbours hold.
    RevocationNews::Reader late(news);
    EXPECT_EQ(late.poll().size(), 3u);
    news.publish(1, {digest_for(4)});
    EXPECT_EQ(early.poll(), std::vector({digest_for(4)}));
    EXPECT_EQ(late.poll(), std::vector({digest_for(4)}));
    EXPECT_EQ(early.missed(), 0u);
    news.publish(7, {digest_for(5)});  // no such worker: ignored
    EXPECT_TRUE(early.poll().empty());
}

TEST(RevocationNews, ItCrossesFork) {
    RevocationNews news(2);
    RevocationNews::Reader reader(news);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        news.publish(1, {digest_for(42)});
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(reader.poll(), std::vector({digest_for(42)}));
}

TEST(RevocationNews, AReaderMoreThanARingBehindCountsWhatItMissed) {
    RevocationNews news(1);
    RevocationNews::Reader reader(news);
    std::vector<RevocationNews::Digest> batch;
    const std::uint32_t total = RevocationNews::ring_entries + 10;
    for (std::uint32_t n = 0; n < total; ++n) batch.push_back(digest_for(n));
    news.publish(0, batch);
    const auto got = reader.poll();
    ASSERT_EQ(got.size(), RevocationNews::ring_entries - 1);
    EXPECT_EQ(reader.missed(), 11u);
    EXPECT_TRUE(whole(got.front(), 11));
    EXPECT_TRUE(whole(got.back(), total - 1));
}

TEST(RevocationNews, AReaderRacingItsWriterNeverGetsATornDigest) {
    RevocationNews news(1);
    RevocationNews::Reader reader(news);
    constexpr std::uint32_t total = 20000;
    std::atomic<bool> done{false};
    std::thread writer([&] {
        for (std::uint32_t n = 0; n < total; ++n) news.publish(0, {digest_for(n)});
        done.store(true);
    });
    std::uint64_t got = 0;
    std::int64_t last = -1;
    bool ordered = true;
    const auto take = [&] {
        for (const auto& digest : reader.poll()) {
            const auto n = number_of(digest);
            EXPECT_TRUE(whole(digest, n) && n < total) << "a torn digest";
            ordered = ordered && static_cast<std::int64_t>(n) > last;
            last = n;
            ++got;
        }
    };
    while (!done.load()) take();
    writer.join();
    take();
    EXPECT_TRUE(ordered);
    EXPECT_EQ(got + reader.missed(), total);
}

}  // namespace
}  // namespace portcullis::mgmt
