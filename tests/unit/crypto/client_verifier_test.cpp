// Allow-list, EKU and reason mapping on real certificates from the test PKI.
#include "crypto/client_verifier.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_pki.hpp"

namespace portcullis::crypto {
namespace {

using testing::CertificateAuthority;
using testing::CertOptions;

class ClientVerifier : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        ca = std::make_unique<CertificateAuthority>(CertificateAuthority::root("Unit CA"));
    }
    static void TearDownTestSuite() { ca.reset(); }
    static testing::IssuedCert partner() {
        CertOptions o;
        o.common_name = "partner-a";
        o.organization = "Partner Bank";
        o.uris = {"spiffe://partners.example/bank-a"};
        o.dns_names = {"api.partner-a.example"};
        return ca->issue(o);
    }
    static inline std::unique_ptr<CertificateAuthority> ca;
};

TEST_F(ClientVerifier, EmptyAllowListAdmitsEveryone) {
    EXPECT_TRUE(allow_list_permits(AllowList{}, partner().cert.get()));
}

TEST_F(ClientVerifier, SubjectGlobMatchesRfc2253Form) {
    const auto cert = partner();
    EXPECT_EQ(subject_rfc2253(X509_get_subject_name(cert.cert.get())),
              "CN=partner-a,O=Partner Bank,C=GB");
    AllowList allow;
    allow.subject_patterns = {"CN=partner-*,O=Partner Bank,C=GB"};
    EXPECT_TRUE(allow_list_permits(allow, cert.cert.get()));
    allow.subject_patterns = {"CN=partner-*,O=Other Bank,C=GB"};
    EXPECT_FALSE(allow_list_permits(allow, cert.cert.get()));
}

TEST_F(ClientVerifier, SanUriAndDnsGlobs) {
    const auto cert = partner();
    AllowList allow;
    allow.san_uris = {"spiffe://partners.example/*"};
    EXPECT_TRUE(allow_list_permits(allow, cert.cert.get()));
    allow.san_uris = {"spiffe://elsewhere.example/*"};
    EXPECT_FALSE(allow_list_permits(allow, cert.cert.get()));
    allow.san_uris.clear();
    allow.san_dns = {"*.partner-a.example"};
    EXPECT_TRUE(allow_list_permits(allow, cert.cert.get()));
    allow.san_dns = {"*.partner-b.example"};
    EXPECT_FALSE(allow_list_permits(allow, cert.cert.get()));
}

TEST_F(ClientVerifier, PinnedFingerprintIgnoresCaseAndColons) {
    const auto cert = partner();
    unsigned char digest[32];
    unsigned int length = 0;
    X509_digest(cert.cert.get(), EVP_sha256(), digest, &length);
    std::string colon_upper;
    for (unsigned i = 0; i < length; ++i) {
        char b[4];
        std::snprintf(b, sizeof b, i ? ":%02X" : "%02X", digest[i]);
        colon_upper += b;
    }
    AllowList allow;
    allow.sha256_fingerprints = {colon_upper};
    EXPECT_TRUE(allow_list_permits(allow, cert.cert.get()));
    allow.sha256_fingerprints = {std::string(64, '0')};
    EXPECT_FALSE(allow_list_permits(allow, cert.cert.get()));
}

TEST_F(ClientVerifier, ClientAuthEkuIsRequiredNotJustAllowed) {
    EXPECT_TRUE(has_client_auth_eku(partner().cert.get()));
    CertOptions none;
    none.include_eku = false;
    EXPECT_FALSE(has_client_auth_eku(ca->issue(none).cert.get()))
        << "a leaf without EKU must not pass";
    CertOptions server_only;
    server_only.client_auth = false;
    server_only.server_auth = true;
    EXPECT_FALSE(has_client_auth_eku(ca->issue(server_only).cert.get()));
}

TEST_F(ClientVerifier, VerifyErrorsMapToStableReasons) {
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_CERT_HAS_EXPIRED), RejectReason::expired);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_CERT_NOT_YET_VALID), RejectReason::not_yet_valid);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_CERT_REVOKED), RejectReason::revoked);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
              RejectReason::unknown_ca);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT),
              RejectReason::self_signed);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_UNABLE_TO_GET_CRL), RejectReason::crl_unavailable);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_CRL_HAS_EXPIRED), RejectReason::crl_unavailable);
    EXPECT_EQ(reason_for_verify_error(X509_V_ERR_CERT_SIGNATURE_FAILURE),
              RejectReason::bad_signature);
    EXPECT_EQ(to_string(RejectReason::not_allowed), "not_allowed");
}

}  // namespace
}  // namespace portcullis::crypto
