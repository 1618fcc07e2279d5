// The client-certificate matrix against the real daemon: every case checks
// what the client experiences AND the one log line the server writes.
#include <gtest/gtest.h>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

class ClientCertificateMatrix : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        require_port = free_port();
        optional_port = free_port();
        allow_port = free_port();
        revoked = std::make_unique<IssuedCert>(env->client("revoked-client"));
        env->client_ca.revoke(revoked->cert.get());
        // An intermediate the root has revoked, with a (valid, empty) CRL of its own.
        revoked_ca =
            std::make_unique<CertificateAuthority>(env->root.intermediate("Revoked Intermediate"));
        env->root.revoke(revoked_ca->cert());
        write_file(env->dir / "revoked-ca.crl", revoked_ca->crl_pem());
        env->write_crls();
        chain_port = free_port();
        std::string chain = env->listener("chain", chain_port, "crl_scope = \"chain\"\n");
        const std::string crls = "crl_files = [\"root.crl\", \"client-ca.crl\"]";
        chain.replace(chain.find(crls), crls.size(),
                      "crl_files = [\"root.crl\", \"client-ca.crl\", \"revoked-ca.crl\"]");
        const auto config = env->write_config(
            "matrix", env->listener("require", require_port) +
                          env->listener("optional", optional_port, "client_auth = \"optional\"\n") +
                          env->listener("allow", allow_port,
                                        "[listener.tls.allow]\nsubjects = "
                                        "[\"CN=allowed-*,O=Portcullis Test,C=GB\"]\n") +
                          chain);
        daemon = std::make_unique<Daemon>(config);
    }
    static void TearDownTestSuite() {
        daemon.reset();
        revoked.reset();
        revoked_ca.reset();
        env.reset();
    }

    ClientOptions with(const IssuedCert& cert, bool send_intermediate = true) const {
        auto o = env->options_for(cert);
        if (!send_intermediate) o.chain.clear();
        return o;
    }

    void expect_rejected(const ClientResult& r, const std::string& reason) {
        EXPECT_FALSE(r.exchanged) << "client was served but should have been refused";
        EXPECT_TRUE(
            daemon->wait_for_log(rejection_marker(r.local_port, reason), std::chrono::seconds(5)))
            << "missing log line '" << rejection_marker(r.local_port, reason) << "' in:\n"
            << daemon->log();
    }

    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<Daemon> daemon;
    static inline std::unique_ptr<IssuedCert> revoked;
    static inline std::unique_ptr<CertificateAuthority> revoked_ca;
    static inline int require_port, optional_port, allow_port, chain_port;
};

TEST_F(ClientCertificateMatrix, GoodClientIssuedByRootIsServed) {
    CertOptions o;
    o.common_name = "direct-client";
    const auto cert = env->root.issue(o);
    const auto r = run_client(require_port, with(cert, false));
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_F(ClientCertificateMatrix, GoodClientSendingItsIntermediateIsServed) {
    const auto r = run_client(require_port, with(env->client("partner-a")));
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
    EXPECT_EQ(r.received, "ping\n");
}

TEST_F(ClientCertificateMatrix, GoodClientWithoutItsIntermediateIsUnknownCa) {
    const auto r = run_client(require_port, with(env->client("partner-b"), false));
    expect_rejected(r, "unknown_ca");
}

TEST_F(ClientCertificateMatrix, ExpiredCertificateIsRefused) {
    CertOptions o;
    o.not_before_offset_s = -10 * 86400;
    o.not_after_offset_s = -86400;
    const auto r = run_client(require_port, with(env->client("expired", o)));
    expect_rejected(r, "expired");
    EXPECT_EQ(r.alert, "certificate expired");
}

TEST_F(ClientCertificateMatrix, NotYetValidCertificateIsRefused) {
    CertOptions o;
    o.not_before_offset_s = 86400;
    o.not_after_offset_s = 10 * 86400;
    expect_rejected(run_client(require_port, with(env->client("future", o))), "not_yet_valid");
}

TEST_F(ClientCertificateMatrix, RevokedCertificateIsRefused) {
    const auto r = run_client(require_port, with(*revoked));
    expect_rejected(r, "revoked");
    EXPECT_EQ(r.alert, "certificate revoked");
    EXPECT_NE(daemon->log().find("subject=\"CN=revoked-client,O=Portcullis Test,C=GB\""),
              std::string::npos);
}

TEST_F(ClientCertificateMatrix, CertificateFromUnrelatedCaIsRefused) {
    const auto rogue_ca = CertificateAuthority::root("Rogue CA");
    CertOptions o;
    o.common_name = "rogue";
    const auto cert = rogue_ca.issue(o);
    auto options = with(cert, false);
    const auto r = run_client(require_port, options);
    expect_rejected(r, "unknown_ca");
    EXPECT_EQ(r.alert, "unknown CA");
}

TEST_F(ClientCertificateMatrix, SelfSignedCertificateIsRefused) {
    CertOptions o;
    o.common_name = "selfie";
    const auto cert = self_signed(o);
    expect_rejected(run_client(require_port, with(cert, false)), "self_signed");
}

TEST_F(ClientCertificateMatrix, CertificateWithoutAnyEkuIsRefused) {
    CertOptions o;
    o.include_eku = false;
    expect_rejected(run_client(require_port, with(env->client("no-eku", o))), "bad_eku");
}

TEST_F(ClientCertificateMatrix, CertificateWithServerAuthOnlyIsRefused) {
    CertOptions o;
    o.client_auth = false;
    o.server_auth = true;
    expect_rejected(run_client(require_port, with(env->client("server-eku-only", o))), "bad_eku");
}

TEST_F(ClientCertificateMatrix, KeyNotMatchingCertificateIsRefused) {
    CertOptions o;
    o.key = KeyKind::rsa2048;
    const auto cert = env->client("wrong-key", o);
    const auto wrong_key = mismatched_rsa_key(cert.cert.get());
    auto options = with(cert);
    options.key = wrong_key.get();
    const auto r = run_client(require_port, options);
    ASSERT_TRUE(r.error.find("client key rejected") == std::string::npos) << r.error;
    expect_rejected(r, "bad_signature");
}

TEST_F(ClientCertificateMatrix, NoCertificateUnderRequireIsRefused) {
    ClientOptions o;
    o.trusted_server_ca = env->root.cert();
    const auto r = run_client(require_port, o);
    expect_rejected(r, "no_certificate");
    EXPECT_EQ(r.alert, "certificate required");
}

TEST_F(ClientCertificateMatrix, NoCertificateUnderOptionalIsServedAsUnverified) {
    ClientOptions o;
    o.trusted_server_ca = env->root.cert();
    o.send = "optional-anonymous\n";
    const auto r = run_client(optional_port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    const auto record = read_file(env->backend->record_path());
    const auto line_start = record.find("\"src_port\":" + std::to_string(r.local_port));
    ASSERT_NE(line_start, std::string::npos) << record;
    const auto line = record.substr(record.rfind('\n', line_start) + 1,
                                    record.find('\n', line_start) - record.rfind('\n', line_start));
    EXPECT_NE(line.find("\"verified\":false"), std::string::npos) << line;
    EXPECT_NE(line.find("\"client_flags\":1"), std::string::npos) << line;
}

TEST_F(ClientCertificateMatrix, BadCertificateUnderOptionalIsStillRefused) {
    CertOptions o;
    o.include_eku = false;
    expect_rejected(run_client(optional_port, with(env->client("optional-no-eku", o))), "bad_eku");
}

TEST_F(ClientCertificateMatrix, AllowListAdmitsMatchingSubject) {
    const auto r = run_client(allow_port, with(env->client("allowed-1")));
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_F(ClientCertificateMatrix, VerifiedClientNotOnAllowListIsRefused) {
    const auto r = run_client(allow_port, with(env->client("stranger")));
    expect_rejected(r, "not_allowed");
}

TEST_F(ClientCertificateMatrix, RevokedIntermediateIsRefusedUnderChainScope) {
    CertOptions o;
    o.common_name = "under-revoked-ca";
    const auto cert = revoked_ca->issue(o);
    auto options = with(cert, false);
    options.chain = {revoked_ca->cert()};
    expect_rejected(run_client(chain_port, options), "revoked");
}

TEST_F(ClientCertificateMatrix, ChainScopeStillServesGoodClients) {
    const auto r = run_client(chain_port, with(env->client("chain-good")));
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_F(ClientCertificateMatrix, MissingCrlForTheIssuerFailsClosed) {
    // The leaf-scope listener has no CRL from that intermediate: a missing CRL
    // must never read as "not revoked".
    CertOptions o;
    o.common_name = "issuer-without-crl";
    const auto cert = revoked_ca->issue(o);
    auto options = with(cert, false);
    options.chain = {revoked_ca->cert()};
    expect_rejected(run_client(require_port, options), "crl_unavailable");
}

}  // namespace
}  // namespace portcullis::testing
