#include "dataplane/upstream/proxy_v2.hpp"

#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace portcullis::dataplane::proxy_v2 {
namespace {

constexpr std::array<std::uint8_t, 12> signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::uint8_t version2_proxy = 0x21;
constexpr std::uint8_t family_unspec = 0x00;
constexpr std::uint8_t family_tcp4 = 0x11;
constexpr std::uint8_t family_tcp6 = 0x21;

void put16(std::vector<std::uint8_t>& out, std::size_t value) {
    out.push_back(static_cast<std::uint8_t>(value >> 8));
    out.push_back(static_cast<std::uint8_t>(value & 0xff));
}

void put_bytes(std::vector<std::uint8_t>& out, const void* data, std::size_t n) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    out.insert(out.end(), bytes, bytes + n);
}

void put_tlv(std::vector<std::uint8_t>& out, std::uint8_t type, std::string_view value) {
    if (value.size() > 0xffff)
        throw std::length_error("PROXY v2 TLV value longer than 65535 bytes");
    out.push_back(type);
    put16(out, value.size());
    put_bytes(out, value.data(), value.size());
}

std::vector<std::uint8_t> ssl_tlv_value(const crypto::PeerIdentity& id) {
    std::vector<std::uint8_t> value;
    std::uint8_t client = ssl_client_ssl;
    if (id.certificate_presented()) client |= ssl_client_cert_conn;
    if (id.certificate_presented() && id.resumed) client |= ssl_client_cert_sess;
    value.push_back(client);
    // verify: 0 means the client presented a certificate that verified.
    const std::uint32_t verify = id.certificate_presented() && id.verified ? 0 : 1;
    for (int shift = 24; shift >= 0; shift -= 8)
        value.push_back(static_cast<std::uint8_t>(verify >> shift));
    put_tlv(value, subtlv_ssl_version, id.tls_version);
    const std::string& common_name = id.certificate.common_name();
    if (!common_name.empty()) put_tlv(value, subtlv_ssl_cn, common_name);
    put_tlv(value, subtlv_ssl_cipher, id.cipher);
    return value;
}

}  // namespace

std::vector<std::uint8_t> encode(const SocketAddress& client, const SocketAddress& local,
                                 const crypto::PeerIdentity& identity) {
    // The fixed 16-byte header is filled in last, in place, once the length
    // of what follows is known: one buffer, no copy of the body.
    constexpr std::size_t fixed = 16;
    static_assert(fixed == signature.size() + 4);
    std::vector<std::uint8_t> body(fixed);
    std::uint8_t family = family_unspec;
    if (client.family() == AF_INET && local.family() == AF_INET) {
        family = family_tcp4;
        const auto* src = reinterpret_cast<const sockaddr_in*>(&client.storage);
        const auto* dst = reinterpret_cast<const sockaddr_in*>(&local.storage);
        put_bytes(body, &src->sin_addr, 4);
        put_bytes(body, &dst->sin_addr, 4);
        put_bytes(body, &src->sin_port, 2);  // already network order
        put_bytes(body, &dst->sin_port, 2);
    } else if (client.family() == AF_INET6 && local.family() == AF_INET6) {
        family = family_tcp6;
        const auto* src = reinterpret_cast<const sockaddr_in6*>(&client.storage);
        const auto* dst = reinterpret_cast<const sockaddr_in6*>(&local.storage);
        put_bytes(body, &src->sin6_addr, 16);
        put_bytes(body, &dst->sin6_addr, 16);
        put_bytes(body, &src->sin6_port, 2);
        put_bytes(body, &dst->sin6_port, 2);
    }
    if (!identity.alpn.empty()) put_tlv(body, tlv_alpn, identity.alpn);
    if (!identity.server_name.empty()) put_tlv(body, tlv_authority, identity.server_name);
    const auto ssl = ssl_tlv_value(identity);
    put_tlv(body, tlv_ssl, std::string_view(reinterpret_cast<const char*>(ssl.data()), ssl.size()));
    if (identity.certificate_presented()) {
        put_tlv(body, tlv_portcullis_subject_dn, identity.certificate.subject_dn());
        const auto& sha256 = identity.certificate.sha256();
        put_tlv(body, tlv_portcullis_sha256,
                std::string_view(reinterpret_cast<const char*>(sha256.data()), sha256.size()));
    }
    const std::size_t length = body.size() - fixed;
    if (length > 0xffff) throw std::length_error("PROXY v2 header longer than 65535 bytes");
    std::copy(signature.begin(), signature.end(), body.begin());
    body[12] = version2_proxy;
    body[13] = family;
    body[14] = static_cast<std::uint8_t>(length >> 8);
    body[15] = static_cast<std::uint8_t>(length & 0xff);
    return body;
}

}  // namespace portcullis::dataplane::proxy_v2
