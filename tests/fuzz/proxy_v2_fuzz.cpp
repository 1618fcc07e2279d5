// libFuzzer target for the PROXY v2 encoder (dataplane/upstream/proxy_v2.cpp).
// The fuzz bytes choose what the encoder is given: both addresses (IPv4, IPv6
// or neither, any bytes and ports), the handshake's strings (short, or a
// pattern repeated past the 65535-byte limits), the flags, and whether the
// client presented a certificate, whose subject (CN, O, OU, ... entries, any
// bytes) is built and signed here. The header is then read back by the test
// parser (tests/support/proxy_v2_parser, written from the specification), and
// the target asserts:
//   - encode() throws std::length_error exactly when a TLV value or the whole
//     header would pass 65535 bytes, and nothing else;
//   - otherwise the header parses completely, its length field is the exact
//     size of the body this model expects, and every input comes back: the
//     family and both addresses and ports, ALPN, SNI, the SSL TLV's client
//     flags, verify result, version and cipher, and with a certificate its
//     RFC 2253 subject and SHA-256;
//   - the CN sub-TLV is the certificate's first CN exactly, or absent when
//     that CN cannot be sent faithfully (it holds a NUL byte): a backend
//     authorises on it, so a shortened CN could name another client.
#include <arpa/inet.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/upstream/proxy_v2.hpp"
#include "tests/support/proxy_v2_parser.hpp"

namespace {

using portcullis::crypto::PeerCertificate;
using portcullis::crypto::PeerIdentity;
using portcullis::dataplane::SocketAddress;

constexpr std::size_t kMaxField = 0xffff;
EVP_PKEY* signing_key = nullptr;  // Ed25519, made once: signing stays cheap

[[noreturn]] void broken(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "proxy_v2_fuzz: %s %s\n", what, detail.c_str());
    std::abort();
}

void require(bool holds, const char* what, const std::string& detail = {}) {
    if (!holds) broken(what, detail);
}

// The address bytes as given, so the parser's text is compared with them and not with the
// encoder's view of them.
struct Endpoint {
    SocketAddress address;
    int family = 0;  // 4, 6 or 0
    std::vector<std::uint8_t> bytes;
    std::uint16_t port = 0;
};

Endpoint endpoint_from(FuzzedDataProvider& in) {
    Endpoint e;
    const int kind = in.ConsumeIntegralInRange(0, 2);
    if (kind == 2) return e;  // AF_UNSPEC, as for a socket of another family
    e.family = kind == 0 ? 4 : 6;
    e.bytes = in.ConsumeBytes<std::uint8_t>(e.family == 4 ? 4 : 16);
    e.bytes.resize(e.family == 4 ? 4 : 16);
    e.port = in.ConsumeIntegral<std::uint16_t>();
    if (e.family == 4) {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&e.address.storage);
        v4->sin_family = AF_INET;
        v4->sin_port = htons(e.port);
        std::memcpy(&v4->sin_addr, e.bytes.data(), 4);
        e.address.length = sizeof(sockaddr_in);
    } else {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.address.storage);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(e.port);
        std::memcpy(&v6->sin6_addr, e.bytes.data(), 16);
        v6->sin6_flowinfo = in.ConsumeIntegral<std::uint32_t>();  // not part of the header
        v6->sin6_scope_id = in.ConsumeIntegral<std::uint32_t>();
        e.address.length = sizeof(sockaddr_in6);
    }
    return e;
}

// Short text 15 times in 16 (long values make a run slow); otherwise a pattern repeated to a
// chosen length, to reach the 65535-byte limits with inputs of a few bytes.
std::string text_from(FuzzedDataProvider& in) {
    if (in.ConsumeIntegralInRange(0, 15) != 0) return in.ConsumeRandomLengthString(64);
    const std::string pattern = in.ConsumeRandomLengthString(8);
    const auto length = in.ConsumeIntegralInRange<std::size_t>(0, kMaxField + 64);
    std::string out;
    if (pattern.empty()) return out;
    while (out.size() < length) out += pattern;
    out.resize(length);
    return out;
}

struct Certificate {
    X509* x509 = nullptr;
    std::optional<std::string> first_cn;  // the raw value of the first CN entry
};

std::optional<Certificate> certificate_from(FuzzedDataProvider& in) {
    if (!in.ConsumeBool()) return std::nullopt;
    static constexpr int kNids[] = {
        NID_commonName,  NID_organizationName, NID_organizationalUnitName,
        NID_countryName, NID_localityName,     NID_serialNumber};
    static constexpr int kTypes[] = {V_ASN1_UTF8STRING, V_ASN1_PRINTABLESTRING, V_ASN1_IA5STRING};
    Certificate c;
    c.x509 = X509_new();
    X509_NAME* name = X509_get_subject_name(c.x509);
    const int entries = in.ConsumeIntegralInRange(0, 4);
    for (int i = 0; i < entries; ++i) {
        const int nid = in.PickValueInArray(kNids);
        // Bytes as they are, whatever the string type claims: a CA may have signed anything.
        const int type = in.PickValueInArray(kTypes);
        const std::string value = text_from(in);
        if (X509_NAME_add_entry_by_NID(name, nid, type,
                                       reinterpret_cast<const unsigned char*>(value.data()),
                                       static_cast<int>(value.size()), -1, 0) != 1) {
            broken("X509_NAME_add_entry_by_NID failed");
        }
        if (nid == NID_commonName && !c.first_cn) c.first_cn = value;
    }
    ASN1_INTEGER_set(X509_get_serialNumber(c.x509), 1);
    X509_gmtime_adj(X509_getm_notBefore(c.x509), 0);
    X509_gmtime_adj(X509_getm_notAfter(c.x509), 3600);
    X509_set_issuer_name(c.x509, name);
    X509_set_pubkey(c.x509, signing_key);
    if (X509_sign(c.x509, signing_key, nullptr) <= 0) broken("X509_sign failed");
    return c;
}

std::string hex_of(const unsigned char* bytes, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
        out += digits[bytes[i] >> 4];
        out += digits[bytes[i] & 15];
    }
    return out;
}

void check_address(const std::string& text, const Endpoint& e) {
    unsigned char parsed[16] = {};
    require(inet_pton(e.family == 4 ? AF_INET : AF_INET6, text.c_str(), parsed) == 1,
            "the parser's address does not parse", text);
    require(std::memcmp(parsed, e.bytes.data(), e.bytes.size()) == 0,
            "an address came back changed", text);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    signing_key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    if (signing_key == nullptr) broken("cannot make an Ed25519 key");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const Endpoint client = endpoint_from(in);
    const Endpoint local = endpoint_from(in);
    PeerIdentity identity;
    identity.verified = in.ConsumeBool();
    identity.resumed = in.ConsumeBool();
    identity.tls_version = text_from(in);
    identity.cipher = text_from(in);
    identity.server_name = text_from(in);
    identity.alpn = text_from(in);
    const auto certificate = certificate_from(in);
    std::string sha256_hex;
    if (certificate) {
        identity.certificate = PeerCertificate(certificate->x509);
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        if (X509_digest(certificate->x509, EVP_sha256(), digest, &length) != 1)
            broken("X509_digest failed");
        sha256_hex = hex_of(digest, length);
        X509_free(certificate->x509);  // the identity holds its own reference
    }

    // The model: which TLVs are sent, the expected body length, whether it fits.
    const bool same_family = client.family != 0 && client.family == local.family;
    const int family = same_family ? client.family : 0;
    std::size_t body = family == 4 ? 12 : family == 6 ? 36 : 0;
    bool fits = true;
    const auto tlv = [&body, &fits](std::size_t value_length) {
        fits = fits && value_length <= kMaxField;
        body += 3 + value_length;
    };
    std::string expected_cn;
    if (certificate && certificate->first_cn &&
        certificate->first_cn->find('\0') == std::string::npos) {
        expected_cn = *certificate->first_cn;
    }
    if (!identity.alpn.empty()) tlv(identity.alpn.size());
    if (!identity.server_name.empty()) tlv(identity.server_name.size());
    std::size_t ssl = 5 + 3 + identity.tls_version.size() + 3 + identity.cipher.size();
    fits = fits && identity.tls_version.size() <= kMaxField && identity.cipher.size() <= kMaxField;
    if (!expected_cn.empty()) {
        ssl += 3 + expected_cn.size();
        fits = fits && expected_cn.size() <= kMaxField;
    }
    tlv(ssl);
    const std::string subject_dn = identity.certificate.subject_dn();
    if (certificate) {
        tlv(subject_dn.size());
        tlv(32);
    }
    fits = fits && body <= kMaxField;

    std::vector<std::uint8_t> header;
    try {
        header = portcullis::dataplane::proxy_v2::encode(client.address, local.address, identity);
    } catch (const std::length_error& error) {
        require(!fits, "length_error for a header that fits", error.what());
        return 0;
    } catch (const std::exception& error) {
        broken("an exception other than length_error", error.what());
    }
    require(fits, "no length_error for a header past 65535 bytes", std::to_string(body) + " bytes");
    const auto outcome = portcullis::testing::parse_proxy_v2(header);
    require(outcome.header.has_value(), "the parser refuses the header", outcome.error);
    const auto& h = *outcome.header;
    require(h.total_length == header.size(), "the parser reads another length");
    require(h.family == family, "the family changed");
    if (family != 0) {
        check_address(h.source_address, client);
        check_address(h.destination_address, local);
        require(h.source_port == client.port && h.destination_port == local.port, "a port changed");
    }
    require(h.alpn == identity.alpn, "ALPN changed");
    require(h.authority == identity.server_name, "SNI changed");
    require(h.has_ssl, "no SSL TLV");
    const std::uint8_t flags =
        0x01 | (certificate ? 0x02 : 0) | (certificate && identity.resumed ? 0x04 : 0);
    require(h.ssl_client == flags, "the SSL client flags are wrong");
    require(h.ssl_verify == (certificate && identity.verified ? 0u : 1u), "the verify field");
    require(h.ssl_version == identity.tls_version, "the TLS version changed");
    require(h.ssl_cipher == identity.cipher, "the cipher changed");
    require(h.ssl_cn == expected_cn, "the CN is not the certificate's first CN",
            "sent \"" + h.ssl_cn + "\"");
    require(h.subject_dn == (certificate ? subject_dn : ""), "the subject DN changed");
    require(h.sha256_hex == sha256_hex, "the SHA-256 changed");
    require(header.size() == 16 + body, "the header is not the expected size",
            std::to_string(header.size()) + " bytes, expected " + std::to_string(16 + body));
    require((std::size_t{header[14]} << 8 | header[15]) == body,
            "the length field is not the body's size");
    return 0;
}
