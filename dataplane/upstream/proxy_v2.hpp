// PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2) that
// tells the backend who the client is: addresses, plus the PP2_TYPE_SSL TLV
// (client flags, verify result, version, CN, cipher) and two Portcullis TLVs
// in the application range for what the standard TLVs cannot carry.
#pragma once

#include <cstdint>
#include <vector>

#include "crypto/peer_identity.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::dataplane::proxy_v2 {

inline constexpr std::uint8_t tlv_alpn = 0x01;
inline constexpr std::uint8_t tlv_authority = 0x02;  // SNI
inline constexpr std::uint8_t tlv_ssl = 0x20;
inline constexpr std::uint8_t subtlv_ssl_version = 0x21;
inline constexpr std::uint8_t subtlv_ssl_cn = 0x22;
inline constexpr std::uint8_t subtlv_ssl_cipher = 0x23;
inline constexpr std::uint8_t ssl_client_ssl = 0x01;
inline constexpr std::uint8_t ssl_client_cert_conn = 0x02;
inline constexpr std::uint8_t ssl_client_cert_sess = 0x04;
// Application-specific range 0xE0..0xEF.
inline constexpr std::uint8_t tlv_portcullis_subject_dn = 0xE0;  // RFC 2253 string
inline constexpr std::uint8_t tlv_portcullis_sha256 = 0xE1;      // 32 raw bytes

// Header for a connection accepted from `client` on `local` (both of one
// family; mixed families are sent as AF_UNSPEC/LOCAL with the TLVs only).
std::vector<std::uint8_t> encode(const SocketAddress& client, const SocketAddress& local,
                                 const crypto::PeerIdentity& identity);

}  // namespace portcullis::dataplane::proxy_v2
