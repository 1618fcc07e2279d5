// The verified-chain cache against OpenSSL's own verification: first through
// X509_STORE_CTX as libssl sets it up (leaf + sent intermediates as the
// untrusted stack, the "ssl_client" purpose, the time fixed by the test), so
// time can jump forward and back; then through the TLS core with a real
// OpenSSL client, where the cache sits behind SSL_CTX_set_cert_verify_callback.
#include "crypto/verified_chain_cache.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "crypto/server_tls_context.hpp"
#include "crypto/tls_connection.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/tls_wire.hpp"

namespace portcullis::crypto {
namespace {

namespace fs = std::filesystem;
using testing::CertificateAuthority;
using testing::CertOptions;
using testing::IssuedCert;

struct Events final : TlsEventSink {
    void ticket_decrypted(TicketKeyring::Match) override {}
    void resumption_refused(ResumptionRefusal) override {}
    void chain_cache(ChainCacheEvent event) override {
        (event == ChainCacheEvent::hit    ? hits
         : event == ChainCacheEvent::miss ? misses
                                          : evictions) += 1;
    }
    int hits = 0, misses = 0, evictions = 0;
};

UniqueX509Crl crl_of(const std::string& pem) {
    UniqueBio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    return UniqueX509Crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
}

std::string der_of(X509* cert) {
    unsigned char* der = nullptr;
    const int length = i2d_X509(cert, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    return out;
}

// What one verification saw and answered.
struct Outcome {
    int verdict = -1;
    int error = X509_V_OK;
    std::vector<std::string> chain;  // DER, leaf first
    bool chain_uses_this_handshakes_certificates = false;
    std::vector<int> depths_called_ok;  // depths the callback was told "good", in call order
};

// The verify callback, as client_verifier's would be: here it records, and
// refuses the leaf when `refuse_leaf` is set.
struct Callback {
    static inline bool refuse_leaf = false;
    static inline std::vector<int>* depths = nullptr;
    static int call(int ok, X509_STORE_CTX* store_ctx) {
        const int depth = X509_STORE_CTX_get_error_depth(store_ctx);
        if (ok && depths != nullptr) depths->push_back(depth);
        if (ok && depth == 0 && refuse_leaf) {
            X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_PURPOSE);
            return 0;
        }
        return ok;
    }
};

class ChainCache : public ::testing::Test {
  protected:
    void SetUp() override {
        Callback::refuse_leaf = false;
        store.reset(X509_STORE_new());
        X509_STORE_add_cert(store.get(), root.cert());
        add_crl(root.crl_pem());
        add_crl(client_ca.crl_pem());
        X509_STORE_set_flags(store.get(), X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }

    void add_crl(const std::string& pem) {
        const auto crl = crl_of(pem);
        ASSERT_TRUE(crl);
        ASSERT_EQ(X509_STORE_add_crl(store.get(), crl.get()), 1);
    }

    IssuedCert partner(const std::string& name, CertOptions o = {}) const {
        o.common_name = name;
        return client_ca.issue(o);
    }

    // One verification as libssl runs it, on freshly decoded copies of the
    // presented certificates (a handshake decodes them from the wire).
    Outcome verify(VerifiedChainCache& cache, X509* leaf, std::vector<X509*> sent, time_t at) {
        std::vector<UniqueX509> copies;
        copies.emplace_back(X509_dup(leaf));
        for (X509* cert : sent) copies.emplace_back(X509_dup(cert));
        STACK_OF(X509)* presented = sk_X509_new_null();
        for (const auto& copy : copies) sk_X509_push(presented, copy.get());
        X509_STORE_CTX* store_ctx = X509_STORE_CTX_new();
        X509_STORE_CTX_init(store_ctx, store.get(), copies.front().get(), presented);
        X509_STORE_CTX_set_default(store_ctx, "ssl_client");
        X509_STORE_CTX_set_time(store_ctx, 0, at);
        X509_STORE_CTX_set_verify_cb(store_ctx, Callback::call);
        Outcome outcome;
        Callback::depths = &outcome.depths_called_ok;
        outcome.verdict = cache.verify(store_ctx);
        Callback::depths = nullptr;
        outcome.error = X509_STORE_CTX_get_error(store_ctx);
        STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
        for (int i = 0; i < sk_X509_num(chain); ++i)
            outcome.chain.push_back(der_of(sk_X509_value(chain, i)));
        outcome.chain_uses_this_handshakes_certificates =
            sk_X509_num(chain) >= 2 && sk_X509_value(chain, 0) == copies[0].get() &&
            (copies.size() < 2 || sk_X509_value(chain, 1) == copies[1].get());
        X509_STORE_CTX_free(store_ctx);
        sk_X509_free(presented);
        return outcome;
    }

    CertificateAuthority root = CertificateAuthority::root("Cache Root");
    CertificateAuthority client_ca = root.intermediate("Cache Client CA");
    UniqueX509Store store;
    Events events;
    const time_t now = ::time(nullptr);
};

TEST_F(ChainCache, ReturningChainIsAHitWithTheChainAFullVerificationBuilds) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("returning");
    const auto first = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    ASSERT_EQ(first.verdict, 1) << X509_verify_cert_error_string(first.error);
    EXPECT_EQ(events.misses, 1);
    EXPECT_EQ(cache.size(), 1u);

    const auto second = verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 60);
    EXPECT_EQ(second.verdict, 1);
    EXPECT_EQ(second.error, X509_V_OK);
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(events.misses, 1);
    ASSERT_EQ(second.chain.size(), 3u);  // leaf, intermediate, root
    EXPECT_EQ(second.chain, first.chain);
    EXPECT_EQ(second.chain[2], der_of(root.cert()));
    EXPECT_TRUE(second.chain_uses_this_handshakes_certificates)
        << "a hit must hand OpenSSL this handshake's certificates, not those of the first";
}

TEST_F(ChainCache, VerifyCallbackRunsAtEveryDepthOnAHitAsOnAMiss) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("called-back");
    const auto miss = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    ASSERT_EQ(miss.verdict, 1);
    const auto hit = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    ASSERT_EQ(events.hits, 1);
    EXPECT_EQ(hit.depths_called_ok, (std::vector<int>{2, 1, 0}));
    EXPECT_EQ(hit.depths_called_ok, miss.depths_called_ok);
}

TEST_F(ChainCache, CallbackRefusingOnAHitRefusesAndTheEntryIsForgotten) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("refused-later");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    Callback::refuse_leaf = true;
    const auto refused = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    EXPECT_EQ(refused.verdict, 0);
    EXPECT_EQ(refused.error, X509_V_ERR_INVALID_PURPOSE);
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(cache.size(), 0u);
    Callback::refuse_leaf = false;
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(events.misses, 2) << "verified in full again";
}

TEST_F(ChainCache, LeafThatExpiredSinceItWasCachedIsRefused) {
    VerifiedChainCache cache(store.get(), 100, &events);
    CertOptions short_lived;
    short_lived.not_after_offset_s = 3600;
    const auto leaf = partner("short-lived", short_lived);
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 3000).verdict, 1);
    EXPECT_EQ(events.hits, 1) << "still valid: a hit";
    const auto expired = verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 7200);
    EXPECT_EQ(expired.verdict, 0);
    EXPECT_EQ(expired.error, X509_V_ERR_CERT_HAS_EXPIRED);
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(events.misses, 2);
}

TEST_F(ChainCache, CrlPastItsNextUpdateEndsTheEntry) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("stale-crl");  // valid 30 days; the CRLs say "next update in 1 day"
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    const auto stale = verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 2 * 86400);
    EXPECT_EQ(stale.verdict, 0);
    EXPECT_EQ(stale.error, X509_V_ERR_CRL_HAS_EXPIRED);
    EXPECT_EQ(events.hits, 0);
}

TEST_F(ChainCache, ClockSetBackBeforeTheVerificationIsAMiss) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("time-traveller");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now - 600).verdict, 1);
    EXPECT_EQ(events.hits, 0);
    EXPECT_EQ(events.misses, 2);
}

TEST_F(ChainCache, CertificateOfTheStoreBecomingValidEndsEntries) {
    // A CA that is not yet valid may become the preferred issuer once it is.
    CertOptions future;
    future.common_name = "Future CA";
    future.not_before_offset_s = 1800;
    const auto future_ca = testing::self_signed(future);
    X509_STORE_add_cert(store.get(), future_ca.cert.get());
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("before-the-future");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 1700).verdict, 1);
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now + 1900).verdict, 1);
    EXPECT_EQ(events.hits, 1) << "past the future CA's notBefore the chain is verified in full";
}

TEST_F(ChainCache, SameLeafWithOtherIntermediatesIsAnotherKey) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("one-leaf");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);

    // Same leaf, one more certificate sent: another input, verified in full.
    EXPECT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert(), root.cert()}, now).verdict, 1);
    EXPECT_EQ(events.hits, 0);

    // Same leaf under an impostor of the intermediate (same name, another key):
    // never the cached verdict.
    const auto impostor = root.intermediate("Cache Client CA");
    const auto forged = verify(cache, leaf.cert.get(), {impostor.cert()}, now);
    EXPECT_EQ(forged.verdict, 0);
    EXPECT_EQ(events.hits, 0);
    EXPECT_EQ(events.misses, 3);

    // Same leaf without its intermediate: unknown issuer, verified in full.
    EXPECT_EQ(verify(cache, leaf.cert.get(), {}, now).verdict, 0);
    EXPECT_EQ(events.hits, 0);
}

TEST_F(ChainCache, CrlAddedToTheStoreRevokesACachedChain) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("revoked-after-caching");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    ASSERT_EQ(events.hits, 1);

    // A newer CRL of the same CA, swapped into the live store.
    client_ca.revoke(leaf.cert.get());
    add_crl(client_ca.crl_pem(-60));
    const auto revoked = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    EXPECT_EQ(revoked.verdict, 0);
    EXPECT_EQ(revoked.error, X509_V_ERR_CERT_REVOKED);
    EXPECT_EQ(events.hits, 1);
}

TEST_F(ChainCache, RevokedIntermediateIsRefusedUnderChainScope) {
    VerifiedChainCache cache(store.get(), 100, &events);
    const auto leaf = partner("under-a-revoked-ca");
    ASSERT_EQ(verify(cache, leaf.cert.get(), {client_ca.cert()}, now).verdict, 1);
    root.revoke(client_ca.cert());
    add_crl(root.crl_pem(-60));
    const auto revoked = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
    EXPECT_EQ(revoked.verdict, 0);
    EXPECT_EQ(revoked.error, X509_V_ERR_CERT_REVOKED);
    EXPECT_EQ(events.hits, 0);
}

TEST_F(ChainCache, FailuresAreNeverStored) {
    VerifiedChainCache cache(store.get(), 100, &events);
    CertOptions expired;
    expired.not_before_offset_s = -7200;
    expired.not_after_offset_s = -3600;
    const auto leaf = partner("already-expired", expired);
    for (int visit = 0; visit < 2; ++visit) {
        const auto outcome = verify(cache, leaf.cert.get(), {client_ca.cert()}, now);
        EXPECT_EQ(outcome.verdict, 0);
        EXPECT_EQ(outcome.error, X509_V_ERR_CERT_HAS_EXPIRED);
    }
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_EQ(events.misses, 2);
    EXPECT_EQ(events.hits, 0);
}

TEST_F(ChainCache, BoundedLeastRecentlyUsedFirst) {
    VerifiedChainCache cache(store.get(), 2, &events);
    const auto a = partner("a"), b = partner("b"), c = partner("c");
    ASSERT_EQ(verify(cache, a.cert.get(), {client_ca.cert()}, now).verdict, 1);
    ASSERT_EQ(verify(cache, b.cert.get(), {client_ca.cert()}, now).verdict, 1);
    ASSERT_EQ(verify(cache, a.cert.get(), {client_ca.cert()}, now).verdict, 1);  // a: hit, newest
    ASSERT_EQ(verify(cache, c.cert.get(), {client_ca.cert()}, now).verdict, 1);  // evicts b
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(events.evictions, 1);
    EXPECT_EQ(events.hits, 1);
    ASSERT_EQ(verify(cache, a.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(events.hits, 2) << "a was used more recently than b";
    ASSERT_EQ(verify(cache, b.cert.get(), {client_ca.cert()}, now).verdict, 1);
    EXPECT_EQ(events.hits, 2) << "b was evicted";
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(events.evictions, 2);
}

// ---- through the TLS core, with a real OpenSSL client ------------------------------------

class ChainCacheInTheTlsCore : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto cert = root.issue(testing::localhost_server());
        policy.certificates = {{files.put("server.pem", cert.cert_pem()),
                                files.put("server.key", cert.key_pem()),
                                {}}};
        policy.trust_file = files.put("root.pem", root.cert_pem());
        policy.crl_files = {files.put("root.crl", root.crl_pem()),
                            files.put("client-ca.crl", client_ca.crl_pem())};
        policy.crl_scope = CrlScope::chain;
        options.events = &events;
    }

    struct Seen {
        bool verified = false;
        std::string subject;
    };

    // A full handshake of a fresh OpenSSL client presenting `cert` and the intermediate.
    TlsConnection::Step handshake(const ServerTlsContext& context, const IssuedCert& cert,
                                  TlsFailure* failure = nullptr, Seen* seen = nullptr) {
        UniqueSslCtx client_ctx(SSL_CTX_new(TLS_client_method()));
        SSL_CTX_use_certificate(client_ctx.get(), cert.cert.get());
        SSL_CTX_add1_chain_cert(client_ctx.get(), client_ca.cert());
        SSL_CTX_use_PrivateKey(client_ctx.get(), cert.key.get());
        UniqueSsl client(SSL_new(client_ctx.get()));
        SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(client.get());
        TlsConnection server(context);
        TlsConnection::Step step = TlsConnection::Step::need_input;
        for (int round = 0; round < 50; ++round) {
            const bool client_done = SSL_do_handshake(client.get()) == 1;
            bool moved = testing::client_to_server(client.get(), server);
            step = server.handshake();
            moved |= testing::server_to_client(server, client.get());
            if (!moved && (step != TlsConnection::Step::need_input || client_done)) break;
        }
        if (failure) *failure = server.failure();
        if (seen && step == TlsConnection::Step::done)
            *seen = {server.peer().verified, server.peer().certificate.subject_dn()};
        return step;
    }

    CertificateAuthority root = CertificateAuthority::root("Core Root");
    CertificateAuthority client_ca = root.intermediate("Core Client CA");
    testing::TempFiles files;
    TlsPolicy policy;
    PemFileKeySource keys;
    Events events;
    ServerTlsOptions options;
};

TEST_F(ChainCacheInTheTlsCore, ReturningPartnerHitsAndGetsTheSameIdentity) {
    ServerTlsContext context(policy, keys, options);
    ASSERT_NE(context.chain_cache(), nullptr);
    CertOptions o;
    o.common_name = "returning-partner";
    const auto cert = client_ca.issue(o);
    Seen first, second;
    ASSERT_EQ(handshake(context, cert, nullptr, &first), TlsConnection::Step::done);
    ASSERT_EQ(handshake(context, cert, nullptr, &second), TlsConnection::Step::done);
    EXPECT_EQ(events.misses, 1);
    EXPECT_EQ(events.hits, 1);
    EXPECT_TRUE(first.verified);
    EXPECT_TRUE(second.verified);
    EXPECT_EQ(second.subject, "CN=returning-partner,O=Portcullis Test,C=GB");
    EXPECT_EQ(second.subject, first.subject);
}

TEST_F(ChainCacheInTheTlsCore, LeafWithoutClientAuthEkuIsRefusedOnEveryVisit) {
    ServerTlsContext context(policy, keys, options);
    CertOptions o;
    o.common_name = "server-eku-only";
    o.client_auth = false;
    o.server_auth = true;
    const auto cert = client_ca.issue(o);
    for (int visit = 0; visit < 2; ++visit) {
        TlsFailure failure;
        EXPECT_EQ(handshake(context, cert, &failure), TlsConnection::Step::failed);
        EXPECT_EQ(failure.reason, RejectReason::bad_eku) << failure.detail;
    }
    EXPECT_EQ(events.hits, 0);
    EXPECT_EQ(context.chain_cache()->size(), 0u);
}

TEST_F(ChainCacheInTheTlsCore, AllowListRunsOnHits) {
    policy.allow.subject_patterns = {"CN=allowed-*"};
    ServerTlsContext context(policy, keys, options);
    CertOptions allowed, stranger;
    allowed.common_name = "allowed-1";
    stranger.common_name = "stranger";
    const auto good = client_ca.issue(allowed);
    const auto bad = client_ca.issue(stranger);
    for (int visit = 0; visit < 2; ++visit) {
        EXPECT_EQ(handshake(context, good), TlsConnection::Step::done);
        TlsFailure failure;
        EXPECT_EQ(handshake(context, bad, &failure), TlsConnection::Step::failed);
        EXPECT_EQ(failure.reason, RejectReason::not_allowed);
    }
    EXPECT_EQ(events.hits, 1);  // the allowed partner's second visit
    EXPECT_EQ(events.misses, 3);
}

TEST_F(ChainCacheInTheTlsCore, ZeroEntriesOrATrustDirectoryVerifyEveryChainInFull) {
    policy.verified_chain_cache_entries = 0;
    const auto cert = client_ca.issue(CertOptions{});
    {
        ServerTlsContext context(policy, keys, options);
        EXPECT_EQ(context.chain_cache(), nullptr);
        EXPECT_EQ(handshake(context, cert), TlsConnection::Step::done);
        EXPECT_EQ(handshake(context, cert), TlsConnection::Step::done);
    }
    policy.verified_chain_cache_entries = 100;
    policy.trust_dir = files.dir.string();
    {
        ServerTlsContext context(policy, keys, options);
        EXPECT_EQ(context.chain_cache(), nullptr);
        EXPECT_EQ(handshake(context, cert), TlsConnection::Step::done);
    }
    EXPECT_EQ(events.hits + events.misses, 0);
}

}  // namespace
}  // namespace portcullis::crypto
