// SigningService against SoftHSM2 behind the test module (latency and errors
// injected per test): an abandon racing the session thread's completion, a
// lost session or removed device failing one operation cleanly and the next
// one working again, and the per-key bound on signatures in flight. Built
// and run under ThreadSanitizer too (scripts/test.sh), where the race test
// is what proves SignOperation's ownership rule.
#include "hsm/signing_service.hpp"

#include <gtest/gtest.h>
#include <p11-kit/pkcs11.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "hsm/pkcs11_uri.hpp"
#include "tests/unit/hsm/soft_token.hpp"

namespace portcullis::hsm {
namespace {

using namespace std::chrono_literals;
using testing::SoftToken;

constexpr std::size_t first_key = 0;  // stats slot of the first key a service finds

// Records what the session threads report, and lets the test wait for it.
class RecordingSink final : public crypto::KeyCompletionSink {
  public:
    void paused(std::shared_ptr<crypto::PendingKeyOperation>) override {}
    void completed(std::shared_ptr<crypto::PendingKeyOperation> operation) override {
        {
            std::lock_guard lock(mutex_);
            done_.push_back(std::move(operation));
        }
        changed_.notify_all();
    }
    bool wait_for(std::size_t count, std::chrono::milliseconds limit) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, limit, [&] { return done_.size() >= count; });
    }
    std::vector<std::shared_ptr<crypto::PendingKeyOperation>> taken() {
        std::lock_guard lock(mutex_);
        return std::exchange(done_, {});
    }

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<std::shared_ptr<crypto::PendingKeyOperation>> done_;
};

std::shared_ptr<SignOperation> digest_operation(KeyEntry& key, crypto::KeyCompletionSink* sink) {
    auto op = std::make_shared<SignOperation>();
    op->key = &key;
    op->mechanism = Mechanism::ecdsa;
    op->input.assign(32, 0x5a);  // a SHA-256 digest's size
    op->sink = sink;
    return op;
}

// A blocking caller's wait, as the key method does outside an async job.
void wait_done(SignOperation& op) {
    while (op.state.load(std::memory_order_acquire) == SignOperation::pending)
        op.state.wait(SignOperation::pending, std::memory_order_acquire);
}

// Waits for a gauge the session threads lower when they let go of an
// operation; the threads give no other signal for an abandoned one.
bool wait_until_zero(const SharedCounter& gauge, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (gauge.get() != 0) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::yield();
    }
    return true;
}

class SigningServiceTest : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto why = SoftToken::missing();
        if (!why.empty()) GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
        token = std::make_unique<SoftToken>();
        ASSERT_TRUE(token->ready) << "softhsm2-util could not make the test token";
    }

    std::unique_ptr<SigningService> start(HsmSettings settings) {
        auto service = std::make_unique<SigningService>(settings, &stats);
        key = &service->key(Pkcs11Uri::parse(SoftToken::key_uri));
        return service;
    }

    std::size_t signs(SignResult result) const {
        return stats.keys[first_key].signs[static_cast<std::size_t>(result)].get();
    }

    std::unique_ptr<SoftToken> token;
    HsmStats stats;
    KeyEntry* key = nullptr;
};

TEST_F(SigningServiceTest, AbandonRacingTheCompletionHasOneWinner) {
    token->control("latency_ms = 0.3\njitter_ms = 0.4\n");
    auto settings = token->settings();
    settings.sessions = 4;
    RecordingSink sink;  // outlives the service, whose threads report to it
    auto service = start(settings);
    constexpr int rounds = 400;
    std::vector<std::shared_ptr<SignOperation>> abandoned_ops, completed_ops;
    for (int round = 0; round < rounds; ++round) {
        auto op = digest_operation(*key, &sink);
        ASSERT_TRUE(service->submit(op));
        // Spread the abandon over the signature's lifetime so both sides win.
        const auto spin_until =
            std::chrono::steady_clock::now() + std::chrono::microseconds(round % 40 * 100);
        while (std::chrono::steady_clock::now() < spin_until) std::this_thread::yield();
        op->abandon(crypto::KeyAbandonReason::timeout);
        ASSERT_TRUE(op->finished());
        const int state = op->state.load(std::memory_order_acquire);
        if (state == SignOperation::done) {
            completed_ops.push_back(op);
        } else {
            ASSERT_EQ(state, SignOperation::abandoned_timeout);
            abandoned_ops.push_back(op);
        }
    }
    ASSERT_TRUE(sink.wait_for(completed_ops.size(), 5s));
    ASSERT_TRUE(wait_until_zero(stats.keys[first_key].in_flight, 5s));
    const auto reported = sink.taken();
    // Exactly the operations that completed reached the sink, each once.
    ASSERT_EQ(reported.size(), completed_ops.size());
    for (const auto& op : completed_ops) {
        EXPECT_EQ(std::count(reported.begin(), reported.end(),
                             std::static_pointer_cast<crypto::PendingKeyOperation>(op)),
                  1);
        EXPECT_EQ(op->rv, CKR_OK) << op->failure;
        EXPECT_EQ(op->output.size(), 64u);  // r || s for P-256
        service->account(*op);
    }
    EXPECT_EQ(signs(SignResult::timeout), abandoned_ops.size());
    EXPECT_EQ(signs(SignResult::ok), completed_ops.size());
    EXPECT_EQ(service->abandoned_reason(SignOperation::abandoned_timeout),
              "HSM did not answer within 2000 ms");
    // Both outcomes happened, or the race was not exercised.
    EXPECT_GT(abandoned_ops.size(), 0u);
    EXPECT_GT(completed_ops.size(), 0u);
}

TEST_F(SigningServiceTest, LostSessionFailsOneOperationThenSessionsReopen) {
    auto service = start(token->settings());
    token->control("fail_next = 1\nerror = CKR_SESSION_HANDLE_INVALID\n");
    auto failed = digest_operation(*key, nullptr);
    ASSERT_TRUE(service->submit(failed));
    wait_done(*failed);
    EXPECT_EQ(failed->rv, CKR_SESSION_HANDLE_INVALID);
    EXPECT_NE(failed->failure.find("CKR_SESSION_HANDLE_INVALID"), std::string::npos)
        << failed->failure;
    EXPECT_TRUE(failed->output.empty());
    EXPECT_EQ(failed->why_failed(), failed->failure);
    EXPECT_EQ(stats.relogins.get(), 1u);
    EXPECT_TRUE(service->primary_healthy());  // a session problem, not a token problem

    auto next = digest_operation(*key, nullptr);
    ASSERT_TRUE(service->submit(next));
    wait_done(*next);
    EXPECT_EQ(next->rv, CKR_OK) << next->failure;
    EXPECT_EQ(next->output.size(), 64u);
}

TEST_F(SigningServiceTest, RemovedDeviceFailsCleanlyAndTheTokenComesBack) {
    auto settings = token->settings();
    settings.sessions = 1;
    auto service = start(settings);
    token->control("fail_next = 1\nerror = CKR_DEVICE_REMOVED\n");
    auto failed = digest_operation(*key, nullptr);
    ASSERT_TRUE(service->submit(failed));
    wait_done(*failed);
    EXPECT_EQ(failed->rv, CKR_DEVICE_REMOVED);
    EXPECT_FALSE(service->primary_healthy());
    EXPECT_EQ(stats.primary_healthy.get(), 0u);

    // Until the retry interval passes, operations fail at once; after it the
    // token is probed with a fresh session and signing resumes.
    bool signed_again = false;
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (!signed_again && std::chrono::steady_clock::now() < until) {
        auto op = digest_operation(*key, nullptr);
        ASSERT_TRUE(service->submit(op));
        wait_done(*op);
        if (op->rv == CKR_OK) {
            signed_again = true;
        } else {
            EXPECT_EQ(op->failure, "no healthy HSM token");
        }
    }
    EXPECT_TRUE(signed_again);
    EXPECT_TRUE(service->primary_healthy());
    EXPECT_EQ(stats.primary_healthy.get(), 1u);
}

TEST_F(SigningServiceTest, FullQueueRefusesAtOnceAndCountsIt) {
    auto settings = token->settings();
    settings.max_in_flight = 2;
    settings.sessions = 1;
    RecordingSink sink;  // outlives the service, whose threads report to it
    auto service = start(settings);
    token->control("latency_ms = 300\n");
    auto first = digest_operation(*key, &sink);
    auto second = digest_operation(*key, &sink);
    auto third = digest_operation(*key, &sink);
    ASSERT_TRUE(service->submit(first));
    ASSERT_TRUE(service->submit(second));
    EXPECT_FALSE(service->submit(third));
    EXPECT_EQ(signs(SignResult::queue_full), 1u);
    EXPECT_EQ(third->state.load(), SignOperation::pending);  // never queued, never touched
    ASSERT_TRUE(sink.wait_for(2, 5s));
    ASSERT_TRUE(wait_until_zero(stats.keys[first_key].in_flight, 5s));
    // Room again once they are done.
    auto fourth = digest_operation(*key, &sink);
    EXPECT_TRUE(service->submit(fourth));
    ASSERT_TRUE(sink.wait_for(3, 5s));
}

}  // namespace
}  // namespace portcullis::hsm
