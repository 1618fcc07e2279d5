// A TLS handshake whose server key lives in a SoftHSM2 token (behind the test
// module's latency), driven like the worker drives it: the handshake pauses
// on the signature, the operation reaches the KeyCompletionQueue, the
// handshake resumes. And the ways it can end badly: the client leaves while
// the signature is pending (the late completion must not touch the freed
// connection: run under ASan and TSan), a timeout, and a full queue, each
// failing the handshake as key_unavailable with the reason.
#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "crypto/key_completion_queue.hpp"
#include "crypto/server_tls_context.hpp"
#include "crypto/tls_connection.hpp"
#include "hsm/pkcs11_key_source.hpp"
#include "hsm/signing_service.hpp"
#include "tests/support/tls_wire.hpp"
#include "tests/unit/hsm/soft_token.hpp"

namespace portcullis::hsm {
namespace {

using namespace std::chrono_literals;
using crypto::TlsConnection;
using testing::SoftToken;

class AsyncHandshake : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto why = SoftToken::missing();
        if (!why.empty()) GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
        token = std::make_unique<SoftToken>();
        ASSERT_TRUE(token->ready) << "softhsm2-util could not make the test token";
    }

    void start(HsmSettings settings) {
        service = std::make_shared<SigningService>(settings, &stats);
        keys = std::make_unique<Pkcs11KeySource>(service, &completions);
        crypto::TlsPolicy policy;
        policy.certificates = {{(token->dir / "server.pem").string(), SoftToken::key_uri, {}}};
        policy.client_auth = crypto::ClientAuth::none;
        context = std::make_unique<crypto::ServerTlsContext>(policy, *keys);
    }

    crypto::UniqueSsl client() {
        if (!client_ctx) client_ctx.reset(SSL_CTX_new(TLS_client_method()));
        crypto::UniqueSsl ssl(SSL_new(client_ctx.get()));
        SSL_set_bio(ssl.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(ssl.get());
        SSL_set_tlsext_host_name(ssl.get(), "localhost");
        return ssl;
    }

    // Shuttles bytes until the server pauses, finishes or fails.
    TlsConnection::Step drive(TlsConnection& server, SSL* client) {
        TlsConnection::Step step = TlsConnection::Step::need_input;
        for (int round = 0; round < 50; ++round) {
            SSL_do_handshake(client);
            bool moved = portcullis::testing::client_to_server(client, server);
            step = server.handshake();
            moved |= portcullis::testing::server_to_client(server, client);
            if (step != TlsConnection::Step::need_input) break;
            if (!moved) break;
        }
        return step;
    }

    // What the worker's epoll does: wait for the eventfd, then drain.
    std::vector<std::shared_ptr<crypto::PendingKeyOperation>> wait_for_completions() {
        pollfd p{completions.fd(), POLLIN, 0};
        if (::poll(&p, 1, 5000) != 1) return {};
        return completions.drain();
    }

    // The session threads lower this gauge when they let go of an operation.
    bool wait_until_idle() {
        const auto until = std::chrono::steady_clock::now() + 5s;
        while (stats.keys[0].in_flight.get() != 0) {
            if (std::chrono::steady_clock::now() > until) return false;
            std::this_thread::yield();
        }
        return true;
    }

    std::unique_ptr<SoftToken> token;
    HsmStats stats;
    crypto::KeyCompletionQueue completions;
    std::shared_ptr<SigningService> service;
    std::unique_ptr<Pkcs11KeySource> keys;
    std::unique_ptr<crypto::ServerTlsContext> context;
    crypto::UniqueSslCtx client_ctx;
};

TEST_F(AsyncHandshake, PausesOnTheSignatureAndResumesWhenItIsBack) {
    token->control("latency_ms = 20\n");
    start(token->settings());
    TlsConnection server(*context);
    auto ssl = client();
    ASSERT_EQ(drive(server, ssl.get()), TlsConnection::Step::key_operation_pending);
    const auto op = completions.take_paused();
    ASSERT_TRUE(op);
    EXPECT_FALSE(completions.take_paused());  // handed over once
    const auto done = wait_for_completions();
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done.front(), op);
    EXPECT_TRUE(op->finished());
    EXPECT_EQ(op->why_failed(), "");
    ASSERT_EQ(drive(server, ssl.get()), TlsConnection::Step::done) << server.failure().detail;
    EXPECT_EQ(SSL_do_handshake(ssl.get()), 1);
    EXPECT_EQ(stats.keys[0].signs[static_cast<std::size_t>(SignResult::ok)].get(), 1u);
}

TEST_F(AsyncHandshake, ClientLeavingBeforeTheSignatureLeavesNothingForTheLateCompletion) {
    token->control("latency_ms = 150\n");
    start(token->settings());
    {
        auto server = std::make_unique<TlsConnection>(*context);
        auto ssl = client();
        ASSERT_EQ(drive(*server, ssl.get()), TlsConnection::Step::key_operation_pending);
        const auto op = completions.take_paused();
        ASSERT_TRUE(op);
        // What Connection::cancel_key_operation does before the SSL is freed.
        op->abandon(crypto::KeyAbandonReason::cancelled);
        EXPECT_EQ(op->why_failed(), "the connection closed while its signature was pending");
        ASSERT_EQ(server->handshake(), TlsConnection::Step::failed);
        EXPECT_EQ(server->failure().reason, crypto::RejectReason::key_unavailable);
        EXPECT_EQ(server->failure().detail,
                  "the connection closed while its signature was pending");
        server.reset();
        ssl.reset();
        // The session thread is still in C_Sign (150 ms) with its own
        // reference to the operation: it must finish without the connection.
    }
    ASSERT_TRUE(wait_until_idle());
    service.reset();  // joins the session threads: any late completion is over
    keys.reset();
    EXPECT_TRUE(completions.drain().empty());
    EXPECT_EQ(stats.keys[0].signs[static_cast<std::size_t>(SignResult::cancelled)].get(), 1u);
}

TEST_F(AsyncHandshake, TimeoutFailsTheHandshakeWithTheReason) {
    token->control("latency_ms = 150\n");
    auto settings = token->settings();
    settings.operation_timeout_ms = 40;
    start(settings);
    TlsConnection server(*context);
    auto ssl = client();
    ASSERT_EQ(drive(server, ssl.get()), TlsConnection::Step::key_operation_pending);
    const auto op = completions.take_paused();
    ASSERT_TRUE(op);
    EXPECT_LE(op->deadline(), std::chrono::steady_clock::now() + 40ms);
    op->abandon(crypto::KeyAbandonReason::timeout);  // what the worker's tick does
    ASSERT_EQ(server.handshake(), TlsConnection::Step::failed);
    EXPECT_EQ(server.failure().reason, crypto::RejectReason::key_unavailable);
    EXPECT_EQ(server.failure().detail, "HSM did not answer within 40 ms");
    ASSERT_TRUE(wait_until_idle());
}

TEST_F(AsyncHandshake, FullQueueFailsTheNextHandshakeAtOnce) {
    token->control("latency_ms = 150\n");
    auto settings = token->settings();
    settings.max_in_flight = 1;
    start(settings);
    TlsConnection first(*context);
    auto first_client = client();
    ASSERT_EQ(drive(first, first_client.get()), TlsConnection::Step::key_operation_pending);
    ASSERT_TRUE(completions.take_paused());

    TlsConnection second(*context);
    auto second_client = client();
    ASSERT_EQ(drive(second, second_client.get()), TlsConnection::Step::failed);
    EXPECT_EQ(second.failure().reason, crypto::RejectReason::key_unavailable);
    EXPECT_NE(second.failure().detail.find("HSM queue full for pkcs11:"), std::string::npos)
        << second.failure().detail;
    EXPECT_FALSE(completions.take_paused());  // it never paused

    ASSERT_EQ(wait_for_completions().size(), 1u);
    EXPECT_EQ(drive(first, first_client.get()), TlsConnection::Step::done)
        << first.failure().detail;
}

}  // namespace
}  // namespace portcullis::hsm
