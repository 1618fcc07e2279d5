// check_ocsp_response() against responses the test PKI signs: what may be
// stapled (a good or revoked answer from the issuer or a responder it
// delegated to, fresh) and every way a response is refused.
#include "crypto/ocsp_response.hpp"

#include <gtest/gtest.h>
#include <openssl/ocsp.h>

#include <ctime>

#include "tests/support/test_pki.hpp"

namespace portcullis::testing {
namespace {

using Status = OcspResponseOptions::Status;

std::span<const unsigned char> bytes(const std::string& der) {
    return {reinterpret_cast<const unsigned char*>(der.data()), der.size()};
}

class OcspResponseCheck : public ::testing::Test {
  protected:
    CertificateAuthority root = CertificateAuthority::root("OCSP Test Root");
    CertificateAuthority ca = root.intermediate("OCSP Test Server CA");
    IssuedCert leaf = ca.issue([] {
        auto o = localhost_server();
        o.ocsp_url = "http://127.0.0.1:8888/";
        return o;
    }());
    std::int64_t now = std::time(nullptr);

    crypto::OcspAnswer check(const std::string& der) {
        return crypto::check_ocsp_response(bytes(der), leaf.cert.get(), ca.cert(), now);
    }
    IssuedCert responder(const CertificateAuthority& by, bool ocsp_signing = true) {
        CertOptions o;
        o.common_name = "OCSP responder";
        o.client_auth = false;
        o.ocsp_signing = ocsp_signing;
        return by.issue(o);
    }
};

TEST_F(OcspResponseCheck, GoodAnswerFromTheIssuerPasses) {
    const auto answer = check(ca.ocsp_response_der(leaf.cert.get()));
    EXPECT_EQ(answer.problem, "");
    EXPECT_EQ(answer.status, crypto::OcspCertStatus::good);
    EXPECT_NEAR(static_cast<double>(answer.this_update), static_cast<double>(now - 60), 2);
    EXPECT_NEAR(static_cast<double>(answer.next_update), static_cast<double>(now + 3600), 2);
}

TEST_F(OcspResponseCheck, RevokedAndUnknownAnswersPassWithTheirStatus) {
    OcspResponseOptions o;
    o.status = Status::revoked;
    auto answer = check(ca.ocsp_response_der(leaf.cert.get(), o));
    EXPECT_EQ(answer.problem, "");
    EXPECT_EQ(answer.status, crypto::OcspCertStatus::revoked);
    o.status = Status::unknown;
    answer = check(ca.ocsp_response_der(leaf.cert.get(), o));
    EXPECT_EQ(answer.problem, "");
    EXPECT_EQ(answer.status, crypto::OcspCertStatus::unknown);
}

TEST_F(OcspResponseCheck, DelegatedResponderWithOcspSigningPasses) {
    const auto delegate = responder(ca);
    OcspResponseOptions o;
    o.signer = delegate.cert.get();
    o.signer_key = delegate.key.get();
    const auto answer = check(ca.ocsp_response_der(leaf.cert.get(), o));
    EXPECT_EQ(answer.problem, "");
    EXPECT_EQ(answer.status, crypto::OcspCertStatus::good);
}

TEST_F(OcspResponseCheck, ResponderWithoutOcspSigningIsRefused) {
    const auto delegate = responder(ca, false);
    OcspResponseOptions o;
    o.signer = delegate.cert.get();
    o.signer_key = delegate.key.get();
    EXPECT_NE(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem, "");
}

TEST_F(OcspResponseCheck, ResponderDelegatedByAnotherCaIsRefused) {
    // The root may sign for its own children, not for the intermediate's.
    const auto delegate = responder(root);
    OcspResponseOptions o;
    o.signer = delegate.cert.get();
    o.signer_key = delegate.key.get();
    EXPECT_NE(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem, "");
}

TEST_F(OcspResponseCheck, ForgedSignerIsRefused) {
    // A CA with the issuer's name and a key of its own.
    const auto forger = root.intermediate("OCSP Test Server CA");
    OcspResponseOptions o;
    o.signer = forger.cert();
    o.signer_key = forger.key();
    const auto answer = check(ca.ocsp_response_der(leaf.cert.get(), o));
    EXPECT_EQ(answer.problem, "not signed by the issuer or a responder it delegated to");
}

TEST_F(OcspResponseCheck, AnswerAboutAnotherCertificateIsRefused) {
    const auto other = ca.issue(localhost_server());
    EXPECT_EQ(check(ca.ocsp_response_der(other.cert.get())).problem,
              "no answer about this certificate");
}

TEST_F(OcspResponseCheck, StaleAnswerIsRefused) {
    OcspResponseOptions o;
    o.this_update_offset_s = -7200;
    o.next_update_offset_s = -1;
    EXPECT_EQ(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem, "nextUpdate has passed");
}

TEST_F(OcspResponseCheck, AnswerWithoutNextUpdateIsRefused) {
    OcspResponseOptions o;
    o.next_update_offset_s = std::nullopt;
    EXPECT_EQ(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem,
              "no nextUpdate (its freshness could never be judged)");
}

TEST_F(OcspResponseCheck, ThisUpdateWithinTheClockSkewPassesAndBeyondItIsRefused) {
    OcspResponseOptions o;
    o.this_update_offset_s = crypto::ocsp_clock_skew_s - 5;
    EXPECT_EQ(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem, "");
    o.this_update_offset_s = crypto::ocsp_clock_skew_s + 30;
    EXPECT_EQ(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem,
              "thisUpdate is in the future");
}

TEST_F(OcspResponseCheck, ErrorResponsesAndGarbageAreRefused) {
    OcspResponseOptions o;
    o.response_status = OCSP_RESPONSE_STATUS_TRYLATER;
    EXPECT_EQ(check(ca.ocsp_response_der(leaf.cert.get(), o)).problem,
              "responder answered trylater");
    EXPECT_EQ(check("not DER at all").problem, "not a DER OCSP response");
    auto truncated = ca.ocsp_response_der(leaf.cert.get());
    truncated.resize(truncated.size() / 2);
    EXPECT_EQ(check(truncated).problem, "not a DER OCSP response");
}

TEST_F(OcspResponseCheck, TamperedSignatureIsRefused) {
    auto der = ca.ocsp_response_der(leaf.cert.get());
    // producedAt, the first GeneralizedTime (tag 0x18, 15 bytes) of the signed
    // data: one second earlier, still a valid time, no longer what was signed.
    const auto at = der.find(std::string("\x18\x0f", 2));
    ASSERT_NE(at, std::string::npos);
    char& second = der[at + 2 + 13];
    second = second == '0' ? '1' : static_cast<char>(second - 1);
    EXPECT_EQ(check(der).problem, "not signed by the issuer or a responder it delegated to");
}

TEST_F(OcspResponseCheck, RequestNamesTheCertificate) {
    const auto request = crypto::ocsp_request(leaf.cert.get(), ca.cert());
    ASSERT_FALSE(request.empty());
    const unsigned char* cursor = request.data();
    crypto::UniqueOcspRequest decoded(
        d2i_OCSP_REQUEST(nullptr, &cursor, static_cast<long>(request.size())));
    ASSERT_TRUE(decoded);
    ASSERT_EQ(OCSP_request_onereq_count(decoded.get()), 1);
    crypto::UniqueOcspCertId expected(OCSP_cert_to_id(nullptr, leaf.cert.get(), ca.cert()));
    EXPECT_EQ(OCSP_id_cmp(OCSP_onereq_get0_id(OCSP_request_onereq_get0(decoded.get(), 0)),
                          expected.get()),
              0);
    // No nonce: one stapled response serves every client.
    EXPECT_LT(OCSP_REQUEST_get_ext_by_NID(decoded.get(), NID_id_pkix_OCSP_Nonce, -1), 0);
}

TEST_F(OcspResponseCheck, ResponderAndPathComeFromTheCertificate) {
    EXPECT_EQ(crypto::ocsp_responder_of(leaf.cert.get()), "http://127.0.0.1:8888/");
    EXPECT_EQ(crypto::ocsp_responder_of(ca.cert()), "");
    const auto path = crypto::ocsp_response_path("/cache", leaf.cert.get());
    EXPECT_EQ(path.rfind("/cache/ocsp-", 0), 0U) << path;
    EXPECT_EQ(path.size(), std::string("/cache/ocsp-").size() + 64 + 4);
    const auto other = ca.issue(localhost_server());
    EXPECT_NE(crypto::ocsp_response_path("/cache", other.cert.get()), path);
}

}  // namespace
}  // namespace portcullis::testing
