// PROXY v2 encoder, checked byte-wise against the specification and
// round-tripped through the independent test parser.
#include "dataplane/upstream/proxy_v2.hpp"

#include <gtest/gtest.h>

#include "tests/support/proxy_v2_parser.hpp"

namespace portcullis::dataplane {
namespace {

crypto::PeerIdentity verified_identity() {
    crypto::PeerIdentity id;
    id.certificate_presented = true;
    id.verified = true;
    id.subject_dn = "CN=partner-a,O=Partner Bank,C=GB";
    id.common_name = "partner-a";
    for (std::size_t i = 0; i < id.sha256.size(); ++i)
        id.sha256[i] = static_cast<std::uint8_t>(i * 7);
    id.tls_version = "TLSv1.3";
    id.cipher = "TLS_AES_128_GCM_SHA256";
    id.server_name = "edge.example";
    id.alpn = "h2";
    return id;
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
    EXPECT_EQ(h.subject_dn, id.subject_dn);
    EXPECT_EQ(h.sha256_hex, id.sha256_hex());
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
    auto id = verified_identity();
    id.subject_dn = "CN=" + std::string(4000, 'a') + ",O=Bank";
    const auto h = parse(proxy_v2::encode(addr("192.0.2.10:1"), addr("198.51.100.1:2"), id));
    EXPECT_EQ(h.subject_dn, id.subject_dn);
}

TEST(ProxyV2, HeaderThatCannotFitIsRefused) {
    auto id = verified_identity();
    id.subject_dn = std::string(70000, 'x');
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
