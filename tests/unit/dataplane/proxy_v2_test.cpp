// PROXY v2 encoder, checked byte-wise against the specification and
// round-tripped through the independent test parser.
#include "dataplane/upstream/proxy_v2.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "tests/support/proxy_v2_parser.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::dataplane {
namespace {

// Identities carry a real certificate: what the encoder sends is read from it.
const testing::CertificateAuthority& ca() {
    static const auto authority = testing::CertificateAuthority::root("Proxy Test CA");
    return authority;
}

crypto::PeerIdentity identity_with(const testing::CertOptions& options) {
    const auto issued = ca().issue(options);
    crypto::PeerIdentity id;
    id.verified = true;
    id.certificate = crypto::PeerCertificate(issued.cert.get());
    id.tls_version = "TLSv1.3";
    id.cipher = "TLS_AES_128_GCM_SHA256";
    id.server_name = "edge.example";
    id.alpn = "h2";
    return id;
}

crypto::PeerIdentity verified_identity() {
    testing::CertOptions o;
    o.common_name = "partner-a";
    o.organization = "Partner Bank";
    return identity_with(o);
}

// A subject longer than `length` characters in RFC 2253 form, made of OU
// entries (each attribute value is limited to 64 characters), and that form.
std::pair<crypto::PeerIdentity, std::string> identity_with_subject_of(std::size_t length) {
    testing::CertOptions o;
    o.common_name = "partner-a";
    o.organization = "Bank";
    std::string subject = "CN=partner-a";
    while (subject.size() <= length) {
        o.organizational_units.push_back(std::string(60, 'a'));
        subject += ",OU=" + o.organizational_units.back();
    }
    subject += ",O=Bank,C=GB";
    return {identity_with(o), subject};
}

std::string sha256_hex_of(X509* cert) {
    unsigned char digest[32];
    unsigned int length = 0;
    X509_digest(cert, EVP_sha256(), digest, &length);
    std::string hex;
    for (unsigned i = 0; i < length; ++i) {
        char byte[3];
        std::snprintf(byte, sizeof byte, "%02x", digest[i]);
        hex += byte;
    }
    return hex;
}

SocketAddress addr(const char* text) {
    return *SocketAddress::parse(text);
}

testing::ProxyHeader parse(const std::vector<std::uint8_t>& bytes) {
    const auto outcome = testing::parse_proxy_v2(bytes);
    EXPECT_TRUE(outcome.header.has_value()) << outcome.error;
    return outcome.header.value_or(testing::ProxyHeader{});
}

TEST(ProxyV2, FixedPrefixFollowsTheSpecification) {
    const auto bytes =
        proxy_v2::encode(addr("192.0.2.10:40000"), addr("198.51.100.1:443"), verified_identity());
    const std::vector<std::uint8_t> signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    ASSERT_GE(bytes.size(), 16u);
    EXPECT_TRUE(std::equal(signature.begin(), signature.end(), bytes.begin()));
    EXPECT_EQ(bytes[12], 0x21) << "version 2, command PROXY";
    EXPECT_EQ(bytes[13], 0x11) << "TCP over IPv4";
    EXPECT_EQ(static_cast<std::size_t>(bytes[14] << 8 | bytes[15]), bytes.size() - 16);
    // IPv4 block: src, dst, src port, dst port, network order.
    EXPECT_EQ(bytes[16], 192);
    EXPECT_EQ(bytes[19], 10);
    EXPECT_EQ(bytes[20], 198);
    EXPECT_EQ(bytes[24] << 8 | bytes[25], 40000);
    EXPECT_EQ(bytes[26] << 8 | bytes[27], 443);
}

TEST(ProxyV2, Ipv4RoundTripCarriesEveryField) {
    const auto id = verified_identity();
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:40000"), addr("198.51.100.1:443"), id));
    EXPECT_EQ(h.family, 4);
    EXPECT_EQ(h.source_address, "192.0.2.10");
    EXPECT_EQ(h.source_port, 40000);
    EXPECT_EQ(h.destination_address, "198.51.100.1");
    EXPECT_EQ(h.destination_port, 443);
    EXPECT_TRUE(h.has_ssl);
    EXPECT_EQ(h.ssl_client, proxy_v2::ssl_client_ssl | proxy_v2::ssl_client_cert_conn);
    EXPECT_EQ(h.ssl_verify, 0u);
    EXPECT_EQ(h.ssl_version, "TLSv1.3");
    EXPECT_EQ(h.ssl_cn, "partner-a");
    EXPECT_EQ(h.ssl_cipher, "TLS_AES_128_GCM_SHA256");
    EXPECT_EQ(h.alpn, "h2");
    EXPECT_EQ(h.authority, "edge.example");
    EXPECT_EQ(h.subject_dn, "CN=partner-a,O=Partner Bank,C=GB");
    EXPECT_EQ(h.sha256_hex, sha256_hex_of(id.certificate.get()));
}

TEST(ProxyV2, Ipv6RoundTrip) {
    const auto h = parse(proxy_v2::encode(addr("[2001:db8::10]:50000"), addr("[2001:db8::1]:8443"),
                                          verified_identity()));
    EXPECT_EQ(h.family, 6);
    EXPECT_EQ(h.source_address, "2001:db8::10");
    EXPECT_EQ(h.source_port, 50000);
    EXPECT_EQ(h.destination_address, "2001:db8::1");
    EXPECT_EQ(h.destination_port, 8443);
    EXPECT_EQ(h.ssl_cn, "partner-a");
}

TEST(ProxyV2, MixedFamiliesSendUnspecWithTlvsKept) {
    const auto bytes =
        proxy_v2::encode(addr("192.0.2.10:40000"), addr("[2001:db8::1]:443"), verified_identity());
    EXPECT_EQ(bytes[13], 0x00);
    const auto h = parse(bytes);
    EXPECT_EQ(h.family, 0);
    EXPECT_EQ(h.ssl_cn, "partner-a");
}

TEST(ProxyV2, NoCertificateIsUnverifiedWithoutIdentityTlvs) {
    crypto::PeerIdentity id;
    id.tls_version = "TLSv1.2";
    id.cipher = "ECDHE-ECDSA-AES128-GCM-SHA256";
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), id));
    EXPECT_EQ(h.ssl_client, proxy_v2::ssl_client_ssl);
    EXPECT_NE(h.ssl_verify, 0u);
    EXPECT_EQ(h.ssl_cn, "");
    EXPECT_EQ(h.subject_dn, "");
    EXPECT_EQ(h.sha256_hex, "");
    EXPECT_EQ(h.alpn, "");
}

TEST(ProxyV2, ResumedSessionSetsCertSessFlag) {
    auto id = verified_identity();
    id.resumed = true;
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), id));
    EXPECT_EQ(h.ssl_client, proxy_v2::ssl_client_ssl | proxy_v2::ssl_client_cert_conn |
                                proxy_v2::ssl_client_cert_sess);
}

TEST(ProxyV2, LongSubjectIsCarriedWhole) {
    const auto [id, subject] = identity_with_subject_of(4000);
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), id));
    EXPECT_EQ(h.subject_dn, subject);
}

// The certificate's first CN replaced by raw bytes, past what a CA's tooling would let through
// (ub-common-name is 64): what a CA may still have signed.
crypto::PeerIdentity identity_with_cn_bytes(std::string_view cn) {
    auto id = verified_identity();
    X509_NAME* name = X509_get_subject_name(id.certificate.get());
    X509_NAME_ENTRY* entry =
        X509_NAME_get_entry(name, X509_NAME_get_index_by_NID(name, NID_commonName, -1));
    EXPECT_EQ(X509_NAME_ENTRY_set_data(entry, V_ASN1_UTF8STRING,
                                       reinterpret_cast<const unsigned char*>(cn.data()),
                                       static_cast<int>(cn.size())),
              1);
    return id;
}

// proxy_v2_fuzz found the CN sub-TLV cut to 255 bytes and at a NUL byte: the backend
// authorises on it, and a cut CN can name another client.
TEST(ProxyV2, LongCommonNameIsCarriedWhole) {
    const std::string cn = std::string(300, 'c') + ".partner.example";
    const auto h = parse(
        proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), identity_with_cn_bytes(cn)));
    EXPECT_EQ(h.ssl_cn, cn);
}

TEST(ProxyV2, CommonNameWithANulByteIsNotSent) {
    using namespace std::string_view_literals;
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"),
                                          identity_with_cn_bytes("admin\0.partner.example"sv)));
    EXPECT_EQ(h.ssl_cn, "");
    // The subject still says what the certificate holds, escaped.
    EXPECT_EQ(h.subject_dn, "CN=admin\\00.partner.example,O=Partner Bank,C=GB");
}

TEST(ProxyV2, HeaderThatCannotFitIsRefused) {
    const auto [id, subject] = identity_with_subject_of(70000);
    ASSERT_EQ(id.certificate.subject_dn(), subject);
    EXPECT_THROW(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), id),
                 std::length_error);
}

TEST(ProxyV2Parser, RejectsBadSignatureAndWaitsForMore) {
    const auto bytes =
        proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), verified_identity());
    const std::vector<std::uint8_t> half(bytes.begin(), bytes.begin() + 20);
    EXPECT_TRUE(testing::parse_proxy_v2(half).incomplete);
    std::vector<std::uint8_t> bad = bytes;
    bad[3] = 'X';
    EXPECT_FALSE(testing::parse_proxy_v2(bad).error.empty());
}

}  // namespace
}  // namespace portcullis::dataplane
