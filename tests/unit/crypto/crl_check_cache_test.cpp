// The CRL check cache changes how often a CRL's signature is verified, never
// a verdict: every case verifies the same chain against a store with the
// cache and one without, and expects the same result, warm or cold.
#include "crypto/crl_check_cache.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>
#include <string>
#include <vector>

#include "crypto/openssl_handles.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::crypto {
namespace {

using testing::CertificateAuthority;
using testing::CertOptions;
using testing::IssuedCert;

CertOptions named(const std::string& common_name) {
    CertOptions options;
    options.common_name = common_name;
    return options;
}

UniqueX509Crl crl_from_pem(const std::string& pem) {
    UniqueBio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    return UniqueX509Crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
}

// The same CRL with one bit of its signature flipped.
UniqueX509Crl tampered(const X509_CRL* crl) {
    unsigned char* der = nullptr;
    const int length = i2d_X509_CRL(crl, &der);
    std::vector<unsigned char> bytes(der, der + length);
    OPENSSL_free(der);
    bytes.back() ^= 0x01;
    const unsigned char* p = bytes.data();
    return UniqueX509Crl(d2i_X509_CRL(nullptr, &p, length));
}

struct Pki {
    CertificateAuthority root = CertificateAuthority::root("CRL Cache Root");
    CertificateAuthority intermediate = root.intermediate("CRL Cache Intermediate");
    IssuedCert good = intermediate.issue(named("good"));
    IssuedCert other = intermediate.issue(named("other"));
    IssuedCert revoked = intermediate.issue(named("revoked"));
    Pki() { intermediate.revoke(revoked.cert.get()); }
};

UniqueX509Store make_store(const Pki& pki, bool cached, std::vector<const X509_CRL*> crls = {}) {
    UniqueX509Store store(X509_STORE_new());
    X509_STORE_add_cert(store.get(), pki.root.cert());
    std::vector<UniqueX509Crl> own;
    if (crls.empty()) {
        own.push_back(crl_from_pem(pki.root.crl_pem()));
        own.push_back(crl_from_pem(pki.intermediate.crl_pem()));
        for (const auto& c : own) crls.push_back(c.get());
    }
    for (const X509_CRL* crl : crls) X509_STORE_add_crl(store.get(), const_cast<X509_CRL*>(crl));
    X509_STORE_set_flags(store.get(), X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (cached) install_crl_check_cache(store.get());
    return store;
}

// X509_V_OK or the error a full verification ends with.
int verify(X509_STORE* store, X509* leaf, X509* intermediate, std::time_t at = 0) {
    UniqueX509StoreCtx ctx(X509_STORE_CTX_new());
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    sk_X509_push(untrusted, intermediate);
    X509_STORE_CTX_init(ctx.get(), store, leaf, untrusted);
    if (at != 0) X509_STORE_CTX_set_time(ctx.get(), 0, at);
    const int ok = X509_verify_cert(ctx.get());
    const int error = X509_STORE_CTX_get_error(ctx.get());
    sk_X509_free(untrusted);
    return ok == 1 ? X509_V_OK : (error == X509_V_OK ? -1 : error);
}

TEST(CrlCheckCache, LaterVerificationsSkipEveryCrlSignature) {
    Pki pki;
    auto store = make_store(pki, true);
    X509* intermediate = pki.intermediate.cert();
    EXPECT_EQ(verify(store.get(), pki.good.cert.get(), intermediate), X509_V_OK);
    auto cold = crl_check_cache_stats(store.get());
    // Three checks (CRL_CHECK_ALL): the leaf against the intermediate's CRL,
    // the intermediate and then the root itself against the root's CRL. The
    // last is the second's combination again (same CRL, issuer, issuer name).
    EXPECT_EQ(cold.misses, 2u);
    EXPECT_EQ(cold.hits, 1u);
    EXPECT_EQ(cold.entries, 2u);
    EXPECT_EQ(verify(store.get(), pki.good.cert.get(), intermediate), X509_V_OK);
    // A different leaf under the same intermediate uses the same two CRLs.
    EXPECT_EQ(verify(store.get(), pki.other.cert.get(), intermediate), X509_V_OK);
    auto warm = crl_check_cache_stats(store.get());
    EXPECT_EQ(warm.hits, 7u);
    EXPECT_EQ(warm.misses, 2u);
    EXPECT_EQ(warm.entries, 2u);
}

TEST(CrlCheckCache, RevokedLeafIsRefusedWithAWarmCache) {
    Pki pki;
    auto cached = make_store(pki, true);
    auto plain = make_store(pki, false);
    X509* intermediate = pki.intermediate.cert();
    ASSERT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate), X509_V_OK);
    EXPECT_EQ(verify(cached.get(), pki.revoked.cert.get(), intermediate), X509_V_ERR_CERT_REVOKED);
    EXPECT_EQ(verify(plain.get(), pki.revoked.cert.get(), intermediate), X509_V_ERR_CERT_REVOKED);
    EXPECT_GE(crl_check_cache_stats(cached.get()).hits, 1u);
}

TEST(CrlCheckCache, CrlPastItsNextUpdateIsRefusedWithAWarmCache) {
    Pki pki;
    auto cached = make_store(pki, true);
    auto plain = make_store(pki, false);
    X509* intermediate = pki.intermediate.cert();
    ASSERT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate), X509_V_OK);
    const std::time_t later = std::time(nullptr) + 2 * 86400;  // the test CRLs last one day
    const int expected = verify(plain.get(), pki.good.cert.get(), intermediate, later);
    EXPECT_EQ(expected, X509_V_ERR_CRL_HAS_EXPIRED);
    EXPECT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate, later), expected);
    const std::time_t earlier = std::time(nullptr) - 2 * 3600;  // before thisUpdate
    EXPECT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate, earlier),
              verify(plain.get(), pki.good.cert.get(), intermediate, earlier));
    // Still good now, and from the cache again.
    const auto before = crl_check_cache_stats(cached.get()).hits;
    EXPECT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate), X509_V_OK);
    EXPECT_EQ(crl_check_cache_stats(cached.get()).hits, before + 3);
}

TEST(CrlCheckCache, CrlWithABadSignatureIsRefusedEveryTimeAndNeverRemembered) {
    Pki pki;
    auto root_crl = crl_from_pem(pki.root.crl_pem());
    auto bad = tampered(crl_from_pem(pki.intermediate.crl_pem()).get());
    ASSERT_TRUE(bad);
    auto cached = make_store(pki, true, {root_crl.get(), bad.get()});
    auto plain = make_store(pki, false, {root_crl.get(), bad.get()});
    X509* intermediate = pki.intermediate.cert();
    const int expected = verify(plain.get(), pki.good.cert.get(), intermediate);
    EXPECT_EQ(expected, X509_V_ERR_CRL_SIGNATURE_FAILURE);
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(verify(cached.get(), pki.good.cert.get(), intermediate), expected);
    EXPECT_LE(crl_check_cache_stats(cached.get()).entries, 1u);  // the root's CRL only
}

TEST(CrlCheckCache, AnIntermediateWithTheSameNameButAnotherKeyIsNotTheCachedIssuer) {
    Pki pki;
    // Same subject name, another key, also signed by the root: the CRL in the
    // store was signed by the first one.
    CertificateAuthority impostor = pki.root.intermediate("CRL Cache Intermediate");
    IssuedCert leaf = impostor.issue(named("impostor leaf"));
    auto cached = make_store(pki, true);
    auto plain = make_store(pki, false);
    ASSERT_EQ(verify(cached.get(), pki.good.cert.get(), pki.intermediate.cert()), X509_V_OK);
    const int expected = verify(plain.get(), leaf.cert.get(), impostor.cert());
    EXPECT_NE(expected, X509_V_OK);
    EXPECT_EQ(verify(cached.get(), leaf.cert.get(), impostor.cert()), expected);
}

TEST(CrlCheckCache, EntriesAreBounded) {
    Pki pki;
    auto store = make_store(pki, true);
    // Each round adds the root CRL for a new intermediate (a new issuer
    // combination) until the bound; verification keeps working past it.
    std::vector<CertificateAuthority> intermediates;
    for (std::size_t i = 0; i < crl_check_cache_max_entries + 4; ++i) {
        intermediates.push_back(pki.root.intermediate("Intermediate " + std::to_string(i)));
        auto& ca = intermediates.back();
        auto leaf = ca.issue(named("leaf"));
        auto crl = crl_from_pem(ca.crl_pem());
        X509_STORE_add_crl(store.get(), crl.get());
        ASSERT_EQ(verify(store.get(), leaf.cert.get(), ca.cert()), X509_V_OK) << i;
    }
    EXPECT_EQ(crl_check_cache_stats(store.get()).entries, crl_check_cache_max_entries);
}

TEST(CrlCheckCache, StoreWithoutTheCacheReportsNothing) {
    Pki pki;
    auto store = make_store(pki, false);
    EXPECT_EQ(verify(store.get(), pki.good.cert.get(), pki.intermediate.cert()), X509_V_OK);
    const auto stats = crl_check_cache_stats(store.get());
    EXPECT_EQ(stats.hits + stats.misses + stats.entries, 0u);
}

}  // namespace
}  // namespace portcullis::crypto
