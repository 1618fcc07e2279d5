// TlsConnection driven by a real OpenSSL client in the same thread: bytes are
// shuttled between the client's memory BIOs and the connection's buffers, so
// the TLS core is exercised with no socket at all (as the DPDK path will).
#include "crypto/tls_connection.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "crypto/server_tls_context.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/tls_wire.hpp"

namespace portcullis::crypto {
namespace {

namespace fs = std::filesystem;
using testing::CertificateAuthority;
using testing::CertOptions;

class TlsCore : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto cert = root.issue(testing::localhost_server());
        policy.certificates = {{files.put("server.pem", cert.cert_pem()),
                                files.put("server.key", cert.key_pem()),
                                {}}};
        policy.trust_file = files.put("root.pem", root.cert_pem());
        policy.alpn = {"http/1.1"};
    }

    struct Outcome {
        TlsConnection::Step step;
        bool client_done;
    };

    // Shuttles bytes until neither side makes progress.
    Outcome drive(TlsConnection& server, SSL* client) {
        TlsConnection::Step step = TlsConnection::Step::need_input;
        bool client_done = false;
        for (int round = 0; round < 50; ++round) {
            const int r = SSL_do_handshake(client);
            client_done = r == 1;
            bool moved = testing::client_to_server(client, server);
            step = server.handshake();
            moved |= testing::server_to_client(server, client);
            if (!moved && (step != TlsConnection::Step::need_input || client_done)) break;
        }
        return {step, client_done};
    }

    UniqueSsl client_for(const testing::IssuedCert* cert) {
        client_ctx.reset(SSL_CTX_new(TLS_client_method()));
        if (cert) {
            SSL_CTX_use_certificate(client_ctx.get(), cert->cert.get());
            SSL_CTX_use_PrivateKey(client_ctx.get(), cert->key.get());
        }
        const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
        SSL_CTX_set_alpn_protos(client_ctx.get(), alpn, sizeof alpn);
        UniqueSsl ssl(SSL_new(client_ctx.get()));
        SSL_set_bio(ssl.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(ssl.get());
        SSL_set_tlsext_host_name(ssl.get(), "localhost");
        return ssl;
    }

    CertificateAuthority root = CertificateAuthority::root("Unit Root");
    testing::TempFiles files;
    TlsPolicy policy;
    PemFileKeySource keys;
    UniqueSslCtx client_ctx;
};

TEST_F(TlsCore, HandshakeCapturesThePeerIdentity) {
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    CertOptions o;
    o.common_name = "partner-a";
    o.uris = {"spiffe://partners.example/a"};
    const auto cert = root.issue(o);
    auto client = client_for(&cert);
    const auto outcome = drive(server, client.get());
    ASSERT_EQ(outcome.step, TlsConnection::Step::done) << server.failure().detail;
    const auto& peer = server.peer();
    EXPECT_TRUE(peer.certificate_presented());
    EXPECT_TRUE(peer.verified);
    EXPECT_EQ(peer.certificate.common_name(), "partner-a");
    EXPECT_EQ(peer.certificate.subject_dn(), "CN=partner-a,O=Portcullis Test,C=GB");
    EXPECT_EQ(peer.certificate.issuer_dn(), "CN=Unit Root,O=Portcullis Test,C=GB");
    EXPECT_EQ(peer.certificate.san_uris(), std::vector<std::string>{"spiffe://partners.example/a"});
    EXPECT_TRUE(peer.certificate.san_dns().empty());
    EXPECT_EQ(peer.tls_version, "TLSv1.3");
    EXPECT_EQ(peer.server_name, "localhost");
    EXPECT_EQ(peer.alpn, "http/1.1");
    EXPECT_FALSE(peer.resumed);
    unsigned char digest[32];
    unsigned int length = 0;
    X509_digest(cert.cert.get(), EVP_sha256(), digest, &length);
    EXPECT_TRUE(std::equal(digest, digest + 32, peer.certificate.sha256().begin()));
}

TEST_F(TlsCore, WhatTheAllowListReadIsTheIdentity) {
    CertOptions o;
    o.common_name = "partner-b";
    o.dns_names = {"api.partner-b.example"};
    const auto cert = root.issue(o);
    policy.allow.subject_patterns = {"CN=nobody"};
    policy.allow.san_dns = {"*.partner-b.example"};
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    auto client = client_for(&cert);
    ASSERT_EQ(drive(server, client.get()).step, TlsConnection::Step::done)
        << server.failure().detail;
    const auto& peer = server.peer();
    EXPECT_EQ(X509_cmp(peer.certificate.get(), cert.cert.get()), 0);
    EXPECT_EQ(peer.certificate.subject_dn(), "CN=partner-b,O=Portcullis Test,C=GB");
    EXPECT_EQ(peer.certificate.san_dns(), std::vector<std::string>{"api.partner-b.example"});
    EXPECT_TRUE(peer.certificate.san_uris().empty());
    EXPECT_EQ(peer.certificate.common_name(), "partner-b");
}

TEST_F(TlsCore, ResumedHandshakeCarriesTheSessionsIdentity) {
    ServerTlsContext context(policy, keys);
    CertOptions o;
    o.common_name = "partner-c";
    const auto cert = root.issue(o);
    UniqueSsl first_client = client_for(&cert);
    SSL_SESSION* session = nullptr;
    {
        TlsConnection first(context);
        ASSERT_EQ(drive(first, first_client.get()).step, TlsConnection::Step::done);
        // The server writes its TLS 1.3 ticket on its first read.
        std::uint8_t plain[16];
        EXPECT_EQ(first.read_plaintext(plain).status, TlsConnection::IoStatus::need_input);
        testing::server_to_client(first, first_client.get());
        char sink[16];
        EXPECT_LE(SSL_read(first_client.get(), sink, sizeof sink), 0);
        session = SSL_get1_session(first_client.get());
    }
    ASSERT_NE(session, nullptr);
    ASSERT_EQ(SSL_SESSION_is_resumable(session), 1);
    UniqueSsl client(SSL_new(client_ctx.get()));
    SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(client.get());
    SSL_set_tlsext_host_name(client.get(), "localhost");
    SSL_set_session(client.get(), session);
    SSL_SESSION_free(session);
    TlsConnection server(context);
    ASSERT_EQ(drive(server, client.get()).step, TlsConnection::Step::done)
        << server.failure().detail;
    const auto& peer = server.peer();
    ASSERT_TRUE(peer.resumed);
    EXPECT_TRUE(peer.certificate_presented());
    EXPECT_TRUE(peer.verified);
    EXPECT_EQ(peer.certificate.subject_dn(), "CN=partner-c,O=Portcullis Test,C=GB");
    unsigned char digest[32];
    unsigned int length = 0;
    X509_digest(cert.cert.get(), EVP_sha256(), digest, &length);
    EXPECT_TRUE(std::equal(digest, digest + 32, peer.certificate.sha256().begin()));
}

TEST_F(TlsCore, PlaintextFlowsBothWaysThroughTheBuffers) {
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    CertOptions o;
    const auto cert = root.issue(o);
    auto client = client_for(&cert);
    ASSERT_EQ(drive(server, client.get()).step, TlsConnection::Step::done);
    ASSERT_EQ(SSL_write(client.get(), "hello", 5), 5);
    char buffer[4096];
    int n;
    while ((n = BIO_read(SSL_get_wbio(client.get()), buffer, sizeof buffer)) > 0) {
        auto space = server.inbound_space();
        std::memcpy(space.data(), buffer, static_cast<std::size_t>(n));
        server.commit_inbound(static_cast<std::size_t>(n));
    }
    std::uint8_t plain[64];
    const auto r = server.read_plaintext(plain);
    ASSERT_EQ(r.status, TlsConnection::IoStatus::ok);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(plain), r.bytes), "hello");
    const std::string reply = "world";
    const auto w =
        server.write_plaintext({reinterpret_cast<const std::uint8_t*>(reply.data()), reply.size()});
    ASSERT_EQ(w.status, TlsConnection::IoStatus::ok);
    EXPECT_EQ(w.bytes, reply.size());
    auto out = server.outbound();
    BIO_write(SSL_get_rbio(client.get()), out.data(), static_cast<int>(out.size()));
    server.consume_outbound(out.size());
    char got[16] = {};
    int total = 0;
    while (total < 5) {
        const int k =
            SSL_read(client.get(), got + total, sizeof got - 1 - static_cast<std::size_t>(total));
        if (k <= 0) break;
        total += k;
    }
    EXPECT_EQ(std::string(got, static_cast<std::size_t>(total)), "world");
}

TEST_F(TlsCore, MissingCertificateUnderRequireFailsWithReason) {
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    auto client = client_for(nullptr);
    const auto outcome = drive(server, client.get());
    EXPECT_EQ(outcome.step, TlsConnection::Step::failed);
    EXPECT_EQ(server.failure().reason, RejectReason::no_certificate);
    // The alert reached the client: its next read fails on it.
    char buffer[16];
    ERR_clear_error();
    EXPECT_LE(SSL_read(client.get(), buffer, sizeof buffer), 0);
    EXPECT_EQ(SSL_get_error(client.get(), 0), SSL_ERROR_SSL);
    EXPECT_EQ(ERR_GET_REASON(ERR_peek_last_error()), SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
}

TEST_F(TlsCore, OptionalClientAuthAcceptsAnonymousClients) {
    policy.client_auth = ClientAuth::optional;
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    auto client = client_for(nullptr);
    ASSERT_EQ(drive(server, client.get()).step, TlsConnection::Step::done);
    EXPECT_FALSE(server.peer().certificate_presented());
    EXPECT_EQ(server.peer().certificate.subject_dn(), "");
    EXPECT_EQ(server.peer().certificate.sha256_hex(), "");
    EXPECT_FALSE(server.peer().verified);
}

TEST_F(TlsCore, FullInboundBufferIsBackpressureNotGrowth) {
    ServerTlsContext context(policy, keys);
    base::BufferPool pool;
    TlsConnection server(context, pool, 4096);
    std::size_t accepted = 0;
    for (int i = 0; i < 100; ++i) {
        auto space = server.inbound_space();
        if (space.empty()) break;
        std::memset(space.data(), 0x16, space.size());
        server.commit_inbound(space.size());
        accepted += space.size();
    }
    EXPECT_EQ(accepted, 4096u);
    EXPECT_TRUE(server.inbound_space().empty());
}

TEST_F(TlsCore, GarbageFailsAsProtocol) {
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    const std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    auto space = server.inbound_space();
    std::memcpy(space.data(), garbage.data(), garbage.size());
    server.commit_inbound(garbage.size());
    EXPECT_EQ(server.handshake(), TlsConnection::Step::failed);
    EXPECT_EQ(server.failure().reason, RejectReason::protocol);
}

TEST_F(TlsCore, BadMaterialIsAConfigErrorNamingTheFile) {
    policy.certificates[0].chain_file = (files.dir / "missing.pem").string();
    EXPECT_THROW(
        {
            try {
                ServerTlsContext context(policy, keys);
            } catch (const TlsConfigError& e) {
                EXPECT_NE(std::string(e.what()).find("missing.pem"), std::string::npos) << e.what();
                throw;
            }
        },
        TlsConfigError);
}

TEST_F(TlsCore, KeyNotMatchingCertificateIsRefused) {
    CertOptions other;
    const auto unrelated = root.issue(other);
    policy.certificates[0].key = files.put("other.key", unrelated.key_pem());
    EXPECT_THROW(ServerTlsContext(policy, keys), TlsConfigError);
}

TEST_F(TlsCore, BadCipherStringIsRefused) {
    policy.ciphers = "NOT-A-CIPHER";
    EXPECT_THROW(ServerTlsContext(policy, keys), TlsConfigError);
}

TEST_F(TlsCore, Pkcs11KeysAreRefusedClearlyUntilSupported) {
    policy.certificates[0].key = "pkcs11:token=edge;object=server";
    try {
        ServerTlsContext context(policy, keys);
        FAIL() << "a PKCS#11 URI must not load yet";
    } catch (const KeyLoadError& e) {
        EXPECT_NE(std::string(e.what()).find("pkcs11:token=edge"), std::string::npos);
    }
}

// Between records nothing is buffered: the queues gave their blocks back and
// OpenSSL released its record buffers (SSL_MODE_RELEASE_BUFFERS).
TEST_F(TlsCore, AnEstablishedConnectionWithNothingInFlightHoldsNoBuffers) {
    ServerTlsContext context(policy, keys);
    base::BufferPool pool;
    TlsConnection server(context, pool);
    const auto cert = root.issue(CertOptions{});
    auto client = client_for(&cert);
    EXPECT_EQ(server.buffer_blocks(), 0u) << "blocks taken before a byte arrived";
    ASSERT_EQ(drive(server, client.get()).step, TlsConnection::Step::done)
        << server.failure().detail;
    server.release_unused_buffers();
    EXPECT_EQ(server.buffer_blocks(), 0u);
    EXPECT_EQ(pool.bytes_in_use(), 0u);
    EXPECT_GT(pool.high_water_bytes(), 0u) << "the handshake never used the pool";

    const std::string request(30000, 'q');
    ASSERT_EQ(SSL_write(client.get(), request.data(), static_cast<int>(request.size())),
              static_cast<int>(request.size()));
    testing::client_to_server(client.get(), server);
    EXPECT_GT(server.buffer_blocks(), 1u) << "30 KB of records in one block";
    std::string got(request.size(), '\0');
    std::size_t read = 0;
    while (read < got.size()) {
        const auto r = server.read_plaintext(
            {reinterpret_cast<std::uint8_t*>(got.data()) + read, got.size() - read});
        if (r.status != TlsConnection::IoStatus::ok) break;
        read += r.bytes;
    }
    EXPECT_EQ(got, request);
    testing::server_to_client(server, client.get());  // TLS 1.3 may answer with tickets
    server.release_unused_buffers();
    EXPECT_EQ(server.buffer_blocks(), 0u) << "drained queues kept their blocks";
    EXPECT_EQ(pool.bytes_in_use(), 0u);
}

// A spent budget is backpressure: no space for what the network brings,
// with the refusal counted, until another queue gives its blocks back.
TEST_F(TlsCore, ASpentBufferBudgetRefusesInboundSpaceUntilBlocksComeBack) {
    ServerTlsContext context(policy, keys);
    base::BufferPool pool(base::BufferPoolLimits{.budget_bytes = 8 * 17 * 1024});
    TlsConnection server(context, pool);
    auto hog = std::make_unique<base::ByteQueue>(pool, base::BufferPool::Use::ingress,
                                                 std::size_t{1} << 20);
    const std::string filler(1 << 20, 'x');
    const auto held =
        hog->append({reinterpret_cast<const std::uint8_t*>(filler.data()), filler.size()});
    EXPECT_EQ(hog->blocks(), 7u) << "ingress may take the budget less its reserve of an eighth";
    EXPECT_LT(held, filler.size());
    const auto denials = pool.denials();
    EXPECT_TRUE(server.inbound_space().empty()) << "a block past the budget was handed out";
    EXPECT_GT(pool.denials(), denials);
    EXPECT_LE(pool.bytes_in_use(), pool.budget_bytes());

    // The reserve still takes what is made from bytes already held.
    base::ByteQueue made(pool, base::BufferPool::Use::transform, 64 * 1024);
    EXPECT_FALSE(made.writable().empty());
    made.release_unused();

    hog.reset();
    EXPECT_FALSE(server.inbound_space().empty()) << "space did not come back with the blocks";
    server.release_unused_buffers();
    EXPECT_EQ(pool.bytes_in_use(), 0u);
    EXPECT_EQ(pool.high_water_bytes(), 8u * 17 * 1024);
}

// A ClientHello trickled in a byte at a time (slowloris) holds the bytes
// it sent, not an SSL and OpenSSL's handshake buffers, and no pool block;
// once its record is whole the handshake goes on as usual.
TEST_F(TlsCore, AFirstRecordInPiecesWaitsWithoutAnSslAndThenCompletes) {
    ServerTlsContext context(policy, keys);
    base::BufferPool pool;
    TlsConnection server(context, pool);
    const auto cert = root.issue(CertOptions{});
    auto client = client_for(&cert);
    SSL_do_handshake(client.get());
    std::string hello;
    char buffer[16384];
    for (int n; (n = BIO_read(SSL_get_wbio(client.get()), buffer, sizeof buffer)) > 0;)
        hello.append(buffer, static_cast<std::size_t>(n));
    ASSERT_GT(hello.size(), 100u);
    const std::size_t record =
        5 + (static_cast<std::size_t>(static_cast<std::uint8_t>(hello[3])) << 8 |
             static_cast<std::uint8_t>(hello[4]));
    for (std::size_t i = 0; i + 1 < record; ++i) {
        auto space = server.inbound_space();
        ASSERT_FALSE(space.empty());
        space[0] = static_cast<std::uint8_t>(hello[i]);
        server.commit_inbound(1);
        ASSERT_EQ(server.handshake(), TlsConnection::Step::need_input);
        server.release_unused_buffers();
        EXPECT_FALSE(server.started()) << "an SSL before the first record was whole, byte " << i;
        EXPECT_EQ(server.staged_bytes(), i + 1);
        EXPECT_EQ(pool.bytes_in_use(), 0u) << "a partial record kept a pool block";
    }
    auto space = server.inbound_space();
    std::memcpy(space.data(), hello.data() + record - 1, hello.size() - (record - 1));
    server.commit_inbound(hello.size() - (record - 1));
    const auto outcome = drive(server, client.get());
    EXPECT_TRUE(server.started());
    ASSERT_EQ(outcome.step, TlsConnection::Step::done) << server.failure().detail;
    EXPECT_TRUE(outcome.client_done);
    EXPECT_EQ(server.staged_bytes(), 0u);
}

// Bytes that are no TLS record go to OpenSSL at once, which refuses them.
TEST_F(TlsCore, AFirstRecordThatIsNoHandshakeIsRefusedAtOnce) {
    ServerTlsContext context(policy, keys);
    TlsConnection server(context);
    const std::string request = "GET / HTTP/1.1\r\n";
    auto space = server.inbound_space();
    std::memcpy(space.data(), request.data(), request.size());
    server.commit_inbound(request.size());
    EXPECT_EQ(server.handshake(), TlsConnection::Step::failed);
    EXPECT_TRUE(server.started());
    EXPECT_EQ(server.failure().reason, RejectReason::protocol) << server.failure().detail;
}

struct StaleCrlEvents final : TlsEventSink {
    void ticket_decrypted(TicketKeyring::Match) override {}
    void resumption_refused(ResumptionRefusal) override {}
    void stale_crl_accepted() override { ++stale; }
    int stale = 0;
};

// A CRL a minute past its nextUpdate: "hard" refuses the clients it covers;
// "soft" serves them and counts it, and what the stale CRL revokes stays
// revoked either way.
TEST_F(TlsCore, AStaleCrlRefusesItsClientsUnlessSoftAndStillRevokesWhatItLists) {
    CertOptions revoked_options;
    revoked_options.common_name = "revoked";
    const auto good = root.issue(CertOptions{});
    const auto revoked = root.issue(revoked_options);
    root.revoke(revoked.cert.get());
    policy.crl_files = {files.put("root.crl", root.crl_pem(-7200, -60))};
    for (const auto stale : {CrlStale::hard, CrlStale::soft}) {
        SCOPED_TRACE(stale == CrlStale::hard ? "hard" : "soft");
        policy.crl_stale = stale;
        StaleCrlEvents events;
        ServerTlsContext context(policy, keys, ServerTlsOptions{.events = &events});
        {
            TlsConnection server(context);
            auto client = client_for(&good);
            const auto outcome = drive(server, client.get());
            if (stale == CrlStale::hard) {
                EXPECT_EQ(outcome.step, TlsConnection::Step::failed);
                EXPECT_EQ(server.failure().reason, RejectReason::crl_unavailable)
                    << server.failure().detail;
                EXPECT_EQ(events.stale, 0);
            } else {
                EXPECT_EQ(outcome.step, TlsConnection::Step::done) << server.failure().detail;
                EXPECT_GE(events.stale, 1);
            }
        }
        TlsConnection server(context);
        auto client = client_for(&revoked);
        EXPECT_EQ(drive(server, client.get()).step, TlsConnection::Step::failed);
        EXPECT_EQ(server.failure().reason,
                  stale == CrlStale::hard ? RejectReason::crl_unavailable : RejectReason::revoked)
            << server.failure().detail;
    }
}

}  // namespace
}  // namespace portcullis::crypto
