// Protocol policy against the real daemon: versions, renegotiation, SNI,
// ECDSA/RSA selection, ALPN, IPv6.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include "base/unique_fd.hpp"
#include "dataplane/socket_address.hpp"
#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

class ProtocolPolicy : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        CertOptions api;
        api.common_name = "api.example";
        api.dns_names = {"api.example"};
        api.client_auth = false;
        api.server_auth = true;
        api_cert = std::make_unique<IssuedCert>(env->root.issue(api));
        write_file(env->dir / "api.pem", api_cert->cert_pem());
        write_file(env->dir / "api.key", api_cert->key_pem());
        client = std::make_unique<IssuedCert>(env->client("protocol-client"));
        port = free_port();
        ipv6_port = free_port("::1");
        std::string config =
            env->listener("edge", port, "alpn = [\"h2\", \"http/1.1\"]\n") +
            "[[listener.tls.certificate]]\nchain = \"api.pem\"\nkey = \"api.key\"\n";
        if (ipv6_port > 0) {
            std::string v6 = env->listener("edge6", ipv6_port);
            v6.replace(v6.find("127.0.0.1:" + std::to_string(ipv6_port)),
                       10 + std::to_string(ipv6_port).size(), "[::1]:" + std::to_string(ipv6_port));
            config += v6;
        }
        daemon = std::make_unique<Daemon>(env->write_config("protocol", config));
    }
    static void TearDownTestSuite() {
        daemon.reset();
        client.reset();
        api_cert.reset();
        env.reset();
    }

    ClientOptions good() const { return env->options_for(*client); }

    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<IssuedCert> api_cert, client;
    static inline std::unique_ptr<Daemon> daemon;
    static inline int port, ipv6_port;
};

TEST_F(ProtocolPolicy, Tls13AndTls12AreServed) {
    for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        auto o = good();
        o.min_version = o.max_version = version;
        const auto r = run_client(port, o);
        EXPECT_TRUE(r.exchanged) << r.error;
        EXPECT_EQ(r.version, version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
    }
}

TEST_F(ProtocolPolicy, HybridPostQuantumGroupIsPreferredAndClassicalGroupsStillServe) {
    // Offered -> negotiated with the default groups
    // (X25519MLKEM768:X25519:P-256:P-384). A client sending only a P-256
    // share gets P-256 at once, no HelloRetryRequest for a group it lacks.
    for (const auto& [offered, expected] : std::vector<std::pair<std::string, std::string>>{
             {"", "X25519MLKEM768"},
             {"X25519MLKEM768:X25519", "X25519MLKEM768"},
             {"X25519:P-256", "x25519"},
             {"P-256", "secp256r1"}}) {
        auto o = good();
        o.min_version = o.max_version = TLS1_3_VERSION;
        o.groups = offered;
        const auto r = run_client(port, o);
        EXPECT_TRUE(r.exchanged) << offered << ": " << r.error;
        EXPECT_EQ(r.group, expected) << "offered " << (offered.empty() ? "default" : offered);
    }
    // TLS 1.2 has no hybrid group: ECDHE on X25519.
    auto o = good();
    o.min_version = o.max_version = TLS1_2_VERSION;
    const auto r = run_client(port, o);
    EXPECT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.group, "x25519");
}

TEST_F(ProtocolPolicy, Tls10AndTls11AreRefused) {
    for (const int version : {TLS1_VERSION, TLS1_1_VERSION}) {
        auto o = good();
        o.min_version = o.max_version = version;
        o.security_level_zero = true;  // so the client really offers the old version
        const auto r = run_client(port, o);
        EXPECT_FALSE(r.handshake_ok) << "version " << version << " was accepted";
        EXPECT_EQ(r.alert, "protocol version");
        EXPECT_TRUE(daemon->wait_for_log(rejection_marker(r.local_port, "protocol")))
            << daemon->log();
    }
}

TEST_F(ProtocolPolicy, ClientInitiatedRenegotiationIsRefused) {
    auto options = good();
    options.max_version = TLS1_2_VERSION;
    auto session = open_tls_session(port, options);
    ASSERT_TRUE(session.ok);
    SSL* ssl = session.ssl.get();
    ASSERT_EQ(SSL_write(ssl, "a\n", 2), 2);
    char buffer[16];
    ASSERT_EQ(SSL_read(ssl, buffer, sizeof buffer), 2);
    ASSERT_EQ(SSL_renegotiate(ssl), 1);
    ERR_clear_error();
    // The server answers the new ClientHello with no_renegotiation; the
    // renegotiation never completes.
    int ret = SSL_do_handshake(ssl);
    if (ret == 1) ret = SSL_read(ssl, buffer, sizeof buffer);
    EXPECT_LE(ret, 0);
    EXPECT_EQ(SSL_renegotiate_pending(ssl), 1) << "renegotiation completed";
    // The daemon keeps serving.
    EXPECT_TRUE(run_client(port, good()).exchanged);
}

TEST_F(ProtocolPolicy, SniPicksTheMatchingChain) {
    auto o = good();
    o.sni = "api.example";
    auto r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.server_leaf_cn, "api.example");
    o.sni = "localhost";
    r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.server_leaf_cn, "localhost");
    o.sni = "unknown.example";
    o.trusted_server_ca = nullptr;  // default chain does not name it
    r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.server_leaf_cn, "localhost") << "unknown names get the first (default) chain";
}

TEST_F(ProtocolPolicy, EcdsaPreferredRsaForRsaOnlyClients) {
    for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        auto o = good();
        o.min_version = o.max_version = version;
        auto r = run_client(port, o);
        ASSERT_TRUE(r.exchanged) << r.error;
        EXPECT_EQ(r.server_key_type, EVP_PKEY_EC) << "version " << version;
        // An RSA-only client (its own certificate is RSA too: the sigalgs
        // list also governs the client's CertificateVerify).
        CertOptions rsa;
        rsa.key = KeyKind::rsa2048;
        const auto rsa_client = env->client("rsa-client", rsa);
        o.cert = rsa_client.cert.get();
        o.key = rsa_client.key.get();
        o.sigalgs =
            version == TLS1_3_VERSION ? "rsa_pss_rsae_sha256" : "RSA+SHA256:rsa_pss_rsae_sha256";
        r = run_client(port, o);
        ASSERT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
        EXPECT_EQ(r.server_key_type, EVP_PKEY_RSA) << "version " << version;
    }
}

TEST_F(ProtocolPolicy, AlpnFollowsServerPreference) {
    auto o = good();
    o.alpn = {"http/1.1", "h2"};
    auto r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.alpn, "h2");
    o.alpn = {"spdy/3"};
    r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << "no common protocol must not fail the handshake: " << r.error;
    EXPECT_EQ(r.alpn, "");
}

TEST_F(ProtocolPolicy, Ipv6ListenerServes) {
    if (ipv6_port <= 0) GTEST_SKIP() << "SKIPPED LOUDLY: no IPv6 on loopback (cannot bind [::1])";
    const auto r = run_client(ipv6_port, good(), "::1");
    EXPECT_TRUE(r.exchanged) << r.error;
}

TEST(Resumption, ReturningClientsResumeOnAnyWorker) {
    TestDeployment env;
    const auto client = env.client("returning-client");
    const int port = free_port();
    Daemon daemon(env.write_config("resume", env.listener("edge", port)), 2);
    ASSERT_EQ(daemon.worker_pids().size(), 2u);
    for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        auto options = env.options_for(client);
        options.min_version = options.max_version = version;
        auto first = run_client(port, options);
        ASSERT_TRUE(first.exchanged) << first.error;
        EXPECT_FALSE(first.resumed);
        ASSERT_TRUE(first.session);
        int resumed = 0;
        UniqueSession session = std::move(first.session);
        // The kernel spreads connections over both workers; with one shared
        // ticket key every one of them must resume.
        for (int i = 0; i < 12; ++i) {
            options.resume_from = session.get();
            auto next = run_client(port, options);
            ASSERT_TRUE(next.exchanged) << next.error;
            resumed += next.resumed ? 1 : 0;
            if (next.session) session = std::move(next.session);
        }
        EXPECT_EQ(resumed, 12) << "version " << version;
    }
}

}  // namespace
}  // namespace portcullis::testing
