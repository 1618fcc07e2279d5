// What the handshake established about the peer: handed to the upstream side
// (PROXY v2 TLVs), the access log and the allow-list.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace portcullis::crypto {

struct PeerIdentity {
    bool certificate_presented = false;
    bool verified = false;   // chain, CRL, EKU and allow-list all passed
    std::string subject_dn;  // RFC 2253
    std::string issuer_dn;   // RFC 2253
    std::string common_name;
    std::vector<std::string> san_dns;
    std::vector<std::string> san_uris;
    std::array<std::uint8_t, 32> sha256{};  // of the DER leaf certificate
    std::string tls_version;                // "TLSv1.3"
    std::string cipher;                     // IANA/OpenSSL name
    std::string server_name;                // SNI sent by the client, may be empty
    std::string alpn;                       // negotiated protocol, may be empty
    bool resumed = false;

    std::string sha256_hex() const;  // lowercase, no separators
};

}  // namespace portcullis::crypto
