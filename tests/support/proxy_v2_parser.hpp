// Test-side PROXY protocol v2 parser, written from the specification and not
// from the encoder, so the two check each other.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace portcullis::testing {

struct ProxyHeader {
    std::size_t total_length = 0;  // bytes the header occupies on the wire
    int family = 0;                // 0 unspec, 4, 6
    std::string source_address, destination_address;
    std::uint16_t source_port = 0, destination_port = 0;
    bool has_ssl = false;
    std::uint8_t ssl_client = 0;
    std::uint32_t ssl_verify = 0;
    std::string ssl_version, ssl_cn, ssl_cipher;
    std::string alpn, authority;
    std::string subject_dn;  // 0xE0
    std::string sha256_hex;  // 0xE1, lowercase hex

    std::string to_json() const;
};

// nullopt with `incomplete` set: need more bytes. nullopt with `error` set: invalid.
struct ParseOutcome {
    std::optional<ProxyHeader> header;
    bool incomplete = false;
    std::string error;
};

ParseOutcome parse_proxy_v2(std::span<const std::uint8_t> bytes);

}  // namespace portcullis::testing
