// The client-certificate matrix against the real daemon: every case checks
// what the client experiences AND the one log line the server writes. Each
// case runs with the verified-chain cache on (the default) and off, and
// visits twice: the second visit must get the same answer, and with the cache
// on a chain that verified is then a cache hit.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

std::string admin_block(int port) {
    return "[admin]\naddress = \"127.0.0.1:" + std::to_string(port) + "\"\n\n";
}

// The admin process may still be starting when the daemon reports ready.
double scrape(int admin_port, const std::string& sample) {
    for (int attempt = 0; attempt < 200; ++attempt) {
        const auto response = http_request(admin_port, "GET", "/metrics");
        if (response.status == 200) return metric_value(response.body, sample);
        std::this_thread::sleep_for(25ms);
    }
    return std::nan("");
}

std::string chain_cache_sample(const std::string& listener, const std::string& result) {
    return "portcullis_verified_chain_cache_lookups_total{listener=\"" + listener + "\",result=\"" +
           result + "\"}";
}

struct Listeners {
    int require, optional, allow, chain;
};

// What the client's chain does at the server: verified (it may still be
// refused later, e.g. by its CertificateVerify), refused, or never sent.
enum class Chain { verifies, refused, absent };

class ClientCertificateMatrix : public ::testing::TestWithParam<bool> {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        admin_port = free_port();
        revoked = std::make_unique<IssuedCert>(env->client("revoked-client"));
        env->client_ca.revoke(revoked->cert.get());
        // An intermediate the root has revoked, with a (valid, empty) CRL of its own.
        revoked_ca =
            std::make_unique<CertificateAuthority>(env->root.intermediate("Revoked Intermediate"));
        env->root.revoke(revoked_ca->cert());
        write_file(env->dir / "revoked-ca.crl", revoked_ca->crl_pem());
        env->write_crls();
        std::string body = admin_block(admin_port);
        for (const bool cached : {false, true}) {
            const std::string suffix = cached ? "" : "-uncached";
            const std::string cache = cached ? "" : "verified_chain_cache_entries = 0\n";
            auto& ports = listeners[cached ? 1 : 0];
            ports = {free_port(), free_port(), free_port(), free_port()};
            std::string chain =
                env->listener("chain" + suffix, ports.chain, "crl_scope = \"chain\"\n" + cache);
            const std::string crls = "crl_files = [\"root.crl\", \"client-ca.crl\"]";
            chain.replace(chain.find(crls), crls.size(),
                          "crl_files = [\"root.crl\", \"client-ca.crl\", \"revoked-ca.crl\"]");
            body += env->listener("require" + suffix, ports.require, cache) +
                    env->listener("optional" + suffix, ports.optional,
                                  "client_auth = \"optional\"\n" + cache) +
                    env->listener("allow" + suffix, ports.allow,
                                  cache +
                                      "[listener.tls.allow]\nsubjects = "
                                      "[\"CN=allowed-*,O=Portcullis Test,C=GB\"]\n") +
                    chain;
        }
        daemon = std::make_unique<Daemon>(env->write_config("matrix", body));
    }
    static void TearDownTestSuite() {
        daemon.reset();
        revoked.reset();
        revoked_ca.reset();
        env.reset();
    }

    static bool cached() { return GetParam(); }
    static const Listeners& ports() { return listeners[cached() ? 1 : 0]; }
    static std::string name_of(int port) {
        const auto& p = ports();
        const std::string base = port == p.require    ? "require"
                                 : port == p.optional ? "optional"
                                 : port == p.allow    ? "allow"
                                                      : "chain";
        return cached() ? base : base + "-uncached";
    }

    ClientOptions with(const IssuedCert& cert, bool send_intermediate = true) const {
        auto o = env->options_for(cert);
        if (!send_intermediate) o.chain.clear();
        return o;
    }

    // Two visits with the same certificates; returns the second.
    ClientResult visit(int port, const ClientOptions& options, Chain chain) {
        const auto hits = chain_cache_sample(name_of(port), "hit");
        const auto first = run_client(port, options);
        const double hits_before = scrape(admin_port, hits);
        auto second = run_client(port, options);
        EXPECT_EQ(second.exchanged, first.exchanged) << "the second visit got another answer";
        EXPECT_EQ(second.alert, first.alert);
        EXPECT_EQ(scrape(admin_port, hits) - hits_before,
                  cached() && chain == Chain::verifies ? 1 : 0)
            << "cache hits of the second visit";
        return second;
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
    static inline int admin_port;
    static inline Listeners listeners[2];  // [0]: cache off, [1]: cache on
};

TEST_P(ClientCertificateMatrix, GoodClientIssuedByRootIsServed) {
    CertOptions o;
    o.common_name = "direct-client";
    const auto cert = env->root.issue(o);
    const auto r = visit(ports().require, with(cert, false), Chain::verifies);
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_P(ClientCertificateMatrix, GoodClientSendingItsIntermediateIsServed) {
    const auto r = visit(ports().require, with(env->client("partner-a")), Chain::verifies);
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
    EXPECT_EQ(r.received, "ping\n");
}

TEST_P(ClientCertificateMatrix, GoodClientWithoutItsIntermediateIsUnknownCa) {
    const auto r = visit(ports().require, with(env->client("partner-b"), false), Chain::refused);
    expect_rejected(r, "unknown_ca");
}

TEST_P(ClientCertificateMatrix, ExpiredCertificateIsRefused) {
    CertOptions o;
    o.not_before_offset_s = -10 * 86400;
    o.not_after_offset_s = -86400;
    const auto r = visit(ports().require, with(env->client("expired", o)), Chain::refused);
    expect_rejected(r, "expired");
    EXPECT_EQ(r.alert, "certificate expired");
}

TEST_P(ClientCertificateMatrix, NotYetValidCertificateIsRefused) {
    CertOptions o;
    o.not_before_offset_s = 86400;
    o.not_after_offset_s = 10 * 86400;
    expect_rejected(visit(ports().require, with(env->client("future", o)), Chain::refused),
                    "not_yet_valid");
}

TEST_P(ClientCertificateMatrix, RevokedCertificateIsRefused) {
    const auto r = visit(ports().require, with(*revoked), Chain::refused);
    expect_rejected(r, "revoked");
    EXPECT_EQ(r.alert, "certificate revoked");
    EXPECT_NE(daemon->log().find("subject=\"CN=revoked-client,O=Portcullis Test,C=GB\""),
              std::string::npos);
}

TEST_P(ClientCertificateMatrix, CertificateFromUnrelatedCaIsRefused) {
    const auto rogue_ca = CertificateAuthority::root("Rogue CA");
    CertOptions o;
    o.common_name = "rogue";
    const auto cert = rogue_ca.issue(o);
    auto options = with(cert, false);
    const auto r = visit(ports().require, options, Chain::refused);
    expect_rejected(r, "unknown_ca");
    EXPECT_EQ(r.alert, "unknown CA");
}

TEST_P(ClientCertificateMatrix, SelfSignedCertificateIsRefused) {
    CertOptions o;
    o.common_name = "selfie";
    const auto cert = self_signed(o);
    expect_rejected(visit(ports().require, with(cert, false), Chain::refused), "self_signed");
}

TEST_P(ClientCertificateMatrix, CertificateWithoutAnyEkuIsRefused) {
    CertOptions o;
    o.include_eku = false;
    expect_rejected(visit(ports().require, with(env->client("no-eku", o)), Chain::refused),
                    "bad_eku");
}

TEST_P(ClientCertificateMatrix, CertificateWithServerAuthOnlyIsRefused) {
    CertOptions o;
    o.client_auth = false;
    o.server_auth = true;
    expect_rejected(visit(ports().require, with(env->client("server-eku-only", o)), Chain::refused),
                    "bad_eku");
}

TEST_P(ClientCertificateMatrix, KeyNotMatchingCertificateIsRefused) {
    CertOptions o;
    o.key = KeyKind::rsa2048;
    const auto cert = env->client("wrong-key", o);
    const auto wrong_key = mismatched_rsa_key(cert.cert.get());
    auto options = with(cert);
    options.key = wrong_key.get();
    const auto r = visit(ports().require, options, Chain::verifies);
    ASSERT_TRUE(r.error.find("client key rejected") == std::string::npos) << r.error;
    expect_rejected(r, "bad_signature");
}

TEST_P(ClientCertificateMatrix, NoCertificateUnderRequireIsRefused) {
    ClientOptions o;
    o.trusted_server_ca = env->root.cert();
    const auto r = visit(ports().require, o, Chain::absent);
    expect_rejected(r, "no_certificate");
    EXPECT_EQ(r.alert, "certificate required");
}

TEST_P(ClientCertificateMatrix, NoCertificateUnderOptionalIsServedAsUnverified) {
    ClientOptions o;
    o.trusted_server_ca = env->root.cert();
    o.send = "optional-anonymous\n";
    const auto r = visit(ports().optional, o, Chain::absent);
    ASSERT_TRUE(r.exchanged) << r.error;
    const auto record = read_file(env->backend->record_path());
    const auto line_start = record.find("\"src_port\":" + std::to_string(r.local_port));
    ASSERT_NE(line_start, std::string::npos) << record;
    const auto line = record.substr(record.rfind('\n', line_start) + 1,
                                    record.find('\n', line_start) - record.rfind('\n', line_start));
    EXPECT_NE(line.find("\"verified\":false"), std::string::npos) << line;
    EXPECT_NE(line.find("\"client_flags\":1"), std::string::npos) << line;
}

TEST_P(ClientCertificateMatrix, BadCertificateUnderOptionalIsStillRefused) {
    CertOptions o;
    o.include_eku = false;
    expect_rejected(
        visit(ports().optional, with(env->client("optional-no-eku", o)), Chain::refused),
        "bad_eku");
}

TEST_P(ClientCertificateMatrix, AllowListAdmitsMatchingSubject) {
    const auto r = visit(ports().allow, with(env->client("allowed-1")), Chain::verifies);
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_P(ClientCertificateMatrix, VerifiedClientNotOnAllowListIsRefused) {
    const auto r = visit(ports().allow, with(env->client("stranger")), Chain::refused);
    expect_rejected(r, "not_allowed");
}

TEST_P(ClientCertificateMatrix, RevokedIntermediateIsRefusedUnderChainScope) {
    CertOptions o;
    o.common_name = "under-revoked-ca";
    const auto cert = revoked_ca->issue(o);
    auto options = with(cert, false);
    options.chain = {revoked_ca->cert()};
    expect_rejected(visit(ports().chain, options, Chain::refused), "revoked");
}

TEST_P(ClientCertificateMatrix, ChainScopeStillServesGoodClients) {
    const auto r = visit(ports().chain, with(env->client("chain-good")), Chain::verifies);
    EXPECT_TRUE(r.exchanged) << r.error << " alert=" << r.alert;
}

TEST_P(ClientCertificateMatrix, MissingCrlForTheIssuerFailsClosed) {
    // The leaf-scope listener has no CRL from that intermediate: a missing CRL
    // must never read as "not revoked".
    CertOptions o;
    o.common_name = "issuer-without-crl";
    const auto cert = revoked_ca->issue(o);
    auto options = with(cert, false);
    options.chain = {revoked_ca->cert()};
    expect_rejected(visit(ports().require, options, Chain::refused), "crl_unavailable");
}

// ---- the verified-chain cache across CRL reloads, expiry and its bound ------------------

class VerifiedChainCache : public ::testing::Test {
  protected:
    void start(const std::string& tls_extra = "") {
        admin = free_port();
        port = free_port();
        daemon = std::make_unique<Daemon>(
            env.write_config("cache", admin_block(admin) + env.listener("edge", port, tls_extra)));
        ASSERT_FALSE(std::isnan(scrape(admin, "portcullis_workers")));
    }
    double lookups(const std::string& result) {
        return scrape(admin, chain_cache_sample("edge", result));
    }
    void reload() {
        const auto response = http_request(admin, "POST", "/reload");
        ASSERT_EQ(response.status, 200) << response.body;
    }
    void expect_rejected(const ClientResult& r, const std::string& reason) {
        EXPECT_FALSE(r.exchanged) << "a cached chain must not let this client through";
        EXPECT_TRUE(daemon->wait_for_log(rejection_marker(r.local_port, reason), 5s))
            << daemon->log();
    }

    TestDeployment env;
    int admin = 0, port = 0;
    std::unique_ptr<Daemon> daemon;
};

TEST_F(VerifiedChainCache, ChainRevokedByACrlReloadIsRefusedThoughItWasCached) {
    start();
    const auto partner = env.client("revoked-while-cached");
    const auto options = env.options_for(partner);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_EQ(lookups("hit"), 1) << "the chain is cached before the revocation";

    env.client_ca.revoke(partner.cert.get());
    env.write_crls();
    reload();
    const auto after = run_client(port, options);
    expect_rejected(after, "revoked");
    EXPECT_EQ(after.alert, "certificate revoked");
    EXPECT_EQ(lookups("hit"), 1);
    EXPECT_EQ(lookups("miss"), 2) << "after the reload the chain was verified in full";
}

TEST_F(VerifiedChainCache, CertificateExpiredSinceItWasCachedIsRefused) {
    start();
    CertOptions short_lived;
    short_lived.not_after_offset_s = 3;
    const auto partner = env.client("expires-while-cached", short_lived);
    const auto options = env.options_for(partner);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_EQ(lookups("hit"), 1);
    std::this_thread::sleep_for(4500ms);
    const auto after = run_client(port, options);
    expect_rejected(after, "expired");
    EXPECT_EQ(after.alert, "certificate expired");
    EXPECT_EQ(lookups("hit"), 1);
}

TEST_F(VerifiedChainCache, ReloadStartsItEmpty) {
    start();
    const auto partner = env.client("reloaded");
    const auto options = env.options_for(partner);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_TRUE(run_client(port, options).exchanged);
    reload();
    ASSERT_TRUE(run_client(port, options).exchanged);
    EXPECT_EQ(lookups("miss"), 2);
    EXPECT_EQ(lookups("hit"), 1);
    ASSERT_TRUE(run_client(port, options).exchanged);
    EXPECT_EQ(lookups("hit"), 2) << "filled again after the reload";
}

TEST_F(VerifiedChainCache, KeepsItsConfiguredBound) {
    start("verified_chain_cache_entries = 2\n");
    const auto a = env.client("bounded-a"), b = env.client("bounded-b"),
               c = env.client("bounded-c");
    for (const IssuedCert* partner : {&a, &b, &c}) {
        ASSERT_TRUE(run_client(port, env.options_for(*partner)).exchanged);
    }
    EXPECT_EQ(scrape(admin, "portcullis_verified_chain_cache_evictions_total{listener=\"edge\"}"),
              1);
    ASSERT_TRUE(run_client(port, env.options_for(c)).exchanged);
    EXPECT_EQ(lookups("hit"), 1);
    ASSERT_TRUE(run_client(port, env.options_for(a)).exchanged);
    EXPECT_EQ(lookups("hit"), 1) << "the oldest entry made room";
    EXPECT_EQ(lookups("miss"), 4);
}

TEST_F(VerifiedChainCache, OffMeansEveryChainIsVerifiedInFull) {
    start("verified_chain_cache_entries = 0\n");
    const auto partner = env.client("never-cached");
    const auto options = env.options_for(partner);
    ASSERT_TRUE(run_client(port, options).exchanged);
    ASSERT_TRUE(run_client(port, options).exchanged);
    EXPECT_EQ(lookups("hit"), 0);
    EXPECT_EQ(lookups("miss"), 0);
}

INSTANTIATE_TEST_SUITE_P(ChainCache, ClientCertificateMatrix, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "CacheOn" : "CacheOff"; });

// A partner revoked while connected: the reload that brings the new CRLs
// ends its live connections on every worker (close_notify, an access-log
// line result=revoked_live, a counter), other partners' connections carry
// on, and it cannot come back. With crl_scope = "chain" the same holds for a
// partner whose intermediate the root revokes.
class LiveRevocation : public ::testing::TestWithParam<bool> {};

TEST_P(LiveRevocation, ARevokedPartnersConnectionEndsAtTheReloadAndOthersCarryOn) {
    const bool intermediate = GetParam();
    TestDeployment env;
    // A second intermediate under the root, for the chain case.
    CertificateAuthority other_ca = env.root.intermediate("Other Client CA");
    write_file(env.dir / "other-ca.crl", other_ca.crl_pem());
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(
        env.write_config(
            "live-revocation",
            admin_block(admin) + "[log]\naccess_log = \"audit.log\"\n\n" +
                replace_all(env.listener("edge", port, "crl_scope = \"chain\"\n"),
                            "\"client-ca.crl\"]", "\"client-ca.crl\", \"other-ca.crl\"]")),
        2);
    CertOptions doomed_options_pki;
    doomed_options_pki.common_name = "doomed";
    const auto doomed_cert =
        intermediate ? other_ca.issue(doomed_options_pki) : env.client("doomed");
    const auto kept_cert = env.client("kept");
    auto doomed_options = env.options_for(doomed_cert);
    if (intermediate) doomed_options.chain = {other_ca.cert()};
    auto doomed = open_tls_session(port, doomed_options);
    auto kept = open_tls_session(port, env.options_for(kept_cert));
    ASSERT_TRUE(doomed.ok && kept.ok);
    ASSERT_EQ(echo_on(doomed, "before\n"), "before\n");
    ASSERT_EQ(echo_on(kept, "before\n"), "before\n");

    if (intermediate) {
        env.root.revoke(other_ca.cert());
    } else {
        env.client_ca.revoke(doomed_cert.cert.get());
    }
    env.write_crls();
    const auto revoked_at = std::chrono::steady_clock::now();
    ASSERT_EQ(http_request(admin, "POST", "/reload").status, 200);

    const long ended_after = ms_until_close_notify(doomed, revoked_at);
    EXPECT_GE(ended_after, 0) << "no close_notify within 5 s";
    EXPECT_LT(ended_after, 5000);
    EXPECT_EQ(echo_on(kept, "after\n"), "after\n") << "another partner's connection was ended";

    EXPECT_TRUE(daemon.wait_for_log("reason=revoked_live subject=\"CN=doomed")) << daemon.log();
    std::string audit;
    for (int i = 0; i < 100 && audit.find("result=revoked_live") == std::string::npos; ++i) {
        std::this_thread::sleep_for(20ms);
        audit = read_file(env.dir / "audit.log");
    }
    EXPECT_NE(audit.find("result=revoked_live"), std::string::npos) << audit;
    EXPECT_GE(scrape(admin, "portcullis_connections_revoked_total{listener=\"edge\"}"), 1);
    EXPECT_FALSE(first_refusal(port, doomed_options).exchanged)
        << "the revoked partner still got in 5 s after the reload";
    EXPECT_TRUE(run_client(port, env.options_for(kept_cert)).exchanged);
}

INSTANTIATE_TEST_SUITE_P(LeafOrIntermediate, LiveRevocation, ::testing::Bool(),
                         [](const auto& info) {
                             return info.param ? "IntermediateRevoked" : "LeafRevoked";
                         });

}  // namespace
}  // namespace portcullis::testing
