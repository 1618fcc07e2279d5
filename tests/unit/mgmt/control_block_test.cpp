// ControlBlock's contract: what the supervisor publishes is what a reader
// copies, across fork, and a reader racing the writer only ever copies a
// whole generation (text, ticket keys, reload verdict that belong together).
// scripts/test.sh also runs this under ThreadSanitizer.
#include "mgmt/control_block.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace portcullis::mgmt {
namespace {

// Length and bytes both follow the generation, so a copy mixing two writes
// cannot match the text of the generation it read.
std::string text_for(std::uint64_t generation) {
    std::string text((generation * 7919) % 20000 + 1, static_cast<char>('a' + generation % 26));
    return text + "#" + std::to_string(generation);
}

crypto::TicketKey key_for(std::uint64_t generation, std::size_t position) {
    std::array<std::uint8_t, crypto::ticket_key_bytes> bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i)
        bytes[i] = static_cast<std::uint8_t>(generation * 31 + position * 7 + i);
    return crypto::TicketKey::from_bytes(bytes);
}

std::vector<crypto::TicketKey> keys_for(std::uint64_t generation) {
    std::vector<crypto::TicketKey> keys;
    for (std::size_t i = 0; i < 1 + generation % max_ticket_keys; ++i)
        keys.push_back(key_for(generation, i));
    return keys;
}

std::string error_for(std::uint64_t attempt) {
    return attempt % 2 == 0 ? std::string() : std::string(attempt % 2000, 'e');
}

TEST(ControlBlock, ReadersCopyWhatTheSupervisorPublished) {
    ControlBlock control;
    EXPECT_EQ(control.config_generation(), 0u);
    EXPECT_EQ(control.config().text, "");

    control.publish_config("[listener.a]\n");
    control.publish_config("second");
    const auto config = control.config();
    EXPECT_EQ(config.generation, 2u);
    EXPECT_EQ(config.text, "second");
    EXPECT_THROW(control.publish_config(std::string(max_config_bytes + 1, 'x')), std::length_error);
    EXPECT_EQ(control.config().text, "second");
    const std::string largest(max_config_bytes, 'z');
    control.publish_config(largest);
    EXPECT_EQ(control.config().text, largest);

    std::vector<crypto::TicketKey> keys;
    for (std::size_t i = 0; i < max_ticket_keys + 2; ++i) keys.push_back(key_for(5, i));
    control.publish_ticket_keys(keys, 1700000000, true);
    control.publish_ticket_keys(keys, 1700000001, false);
    const auto tickets = control.ticket_keys();
    EXPECT_EQ(tickets.generation, 2u);
    EXPECT_EQ(control.ticket_generation(), 2u);
    EXPECT_EQ(tickets.rotations, 1u);
    EXPECT_EQ(tickets.current_created_unix, 1700000001);
    ASSERT_EQ(tickets.keys.size(), max_ticket_keys);  // the oldest beyond the limit are dropped
    for (std::size_t i = 0; i < max_ticket_keys; ++i)
        EXPECT_EQ(tickets.keys[i].bytes(), keys[i].bytes()) << "key " << i;

    control.publish_reload(false, std::string(5000, 'r'));
    auto reload = control.reload_status();
    EXPECT_EQ(reload.attempts, 1u);
    EXPECT_EQ(reload.failures, 1u);
    EXPECT_FALSE(reload.last_ok);
    EXPECT_GT(reload.last_unix, 0);
    EXPECT_EQ(reload.last_error, std::string(2048, 'r'));  // cut to the region's size
    control.publish_reload(true, "");
    reload = control.reload_status();
    EXPECT_EQ(reload.attempts, 2u);
    EXPECT_EQ(reload.successes, 1u);
    EXPECT_TRUE(reload.last_ok);
    EXPECT_EQ(reload.last_error, "");

    control.set_worker_ready(3, true);
    control.set_worker_ready(max_workers_tracked, true);  // ignored, not out of bounds
    EXPECT_TRUE(control.worker_ready(3));
    EXPECT_FALSE(control.worker_ready(2));
    EXPECT_FALSE(control.worker_ready(max_workers_tracked));
    control.set_supervisor_pid(4242);
    EXPECT_EQ(control.supervisor_pid(), 4242);
}

TEST(ControlBlock, AChildSeesWhatIsPublishedAfterItsFork) {
    ControlBlock control;
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        char byte = 0;
        const bool woken = ::read(ready[0], &byte, 1) == 1;
        const bool ok = woken && control.config().text == "after fork" &&
                        control.config_generation() == 1 && control.reload_status().attempts == 1;
        ::_exit(ok ? 0 : 1);
    }
    control.publish_config("after fork");
    control.publish_reload(true, "");
    ASSERT_EQ(::write(ready[1], "x", 1), 1);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ::close(ready[0]);
    ::close(ready[1]);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the child copied something else";
}

TEST(ControlBlock, ReadersRacingTheWriterCopyWholeGenerations) {
    ControlBlock control;
    constexpr std::uint64_t generations = 3000;
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> copies{0};
    std::atomic<std::uint64_t> mismatches{0};

    std::thread writer([&] {
        for (std::uint64_t g = 1; g <= generations; ++g) {
            control.publish_config(text_for(g));
            control.publish_ticket_keys(keys_for(g), static_cast<std::int64_t>(g), g % 3 == 0);
            control.publish_reload(g % 2 == 0, error_for(g));
        }
        done.store(true);
    });
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
        readers.emplace_back([&] {
            std::uint64_t last_config = 0;
            std::uint64_t last_tickets = 0;
            std::uint64_t last_reload = 0;
            auto check = [&](bool ok) {
                if (!ok) mismatches.fetch_add(1);
            };
            while (!done.load()) {
                const auto config = control.config();
                check(config.generation >= last_config);
                check(config.text == (config.generation == 0 ? "" : text_for(config.generation)));
                last_config = config.generation;

                const auto tickets = control.ticket_keys();
                check(tickets.generation >= last_tickets);
                check(tickets.current_created_unix ==
                      static_cast<std::int64_t>(tickets.generation));
                check(tickets.rotations == tickets.generation / 3);
                if (tickets.generation > 0) {
                    const auto expected = keys_for(tickets.generation);
                    check(tickets.keys.size() == expected.size());
                    for (std::size_t i = 0; i < tickets.keys.size() && i < expected.size(); ++i)
                        check(tickets.keys[i].bytes() == expected[i].bytes());
                }
                last_tickets = tickets.generation;

                const auto reload = control.reload_status();
                check(reload.attempts >= last_reload);
                check(reload.successes == reload.attempts / 2);
                check(reload.failures == reload.attempts - reload.attempts / 2);
                check(reload.attempts == 0 || reload.last_ok == (reload.attempts % 2 == 0));
                check(reload.last_error == error_for(reload.attempts));
                last_reload = reload.attempts;
                copies.fetch_add(1);
            }
        });
    }
    writer.join();
    for (auto& reader : readers) reader.join();

    EXPECT_EQ(mismatches.load(), 0u);
    EXPECT_GT(copies.load(), 0u);
    EXPECT_EQ(control.config().text, text_for(generations));
    EXPECT_EQ(control.reload_status().attempts, generations);
}

}  // namespace
}  // namespace portcullis::mgmt
