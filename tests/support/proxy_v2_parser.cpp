#include "tests/support/proxy_v2_parser.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace portcullis::testing {
namespace {

const std::uint8_t magic[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

std::uint16_t be16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

std::string text(const std::uint8_t* p, std::size_t n) {
    return std::string(reinterpret_cast<const char*>(p), n);
}

std::string escape_json(const std::string& s) {
    std::string out;
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

// Reads type-length-value entries of [p, end); false on a malformed entry.
template <typename Visit>
bool for_each_tlv(const std::uint8_t* p, const std::uint8_t* end, Visit visit) {
    while (p < end) {
        if (end - p < 3) return false;
        const std::uint8_t type = p[0];
        const std::size_t length = be16(p + 1);
        if (static_cast<std::size_t>(end - p - 3) < length) return false;
        if (!visit(type, p + 3, length)) return false;
        p += 3 + length;
    }
    return true;
}

}  // namespace

std::string ProxyHeader::to_json() const {
    std::string j = "{";
    auto field = [&j](const char* name, const std::string& value) {
        if (j.size() > 1) j += ",";
        j += "\"" + std::string(name) + "\":\"" + escape_json(value) + "\"";
    };
    auto number = [&j](const char* name, long long value) {
        if (j.size() > 1) j += ",";
        j += "\"" + std::string(name) + "\":" + std::to_string(value);
    };
    number("family", family);
    field("src", source_address);
    number("src_port", source_port);
    field("dst", destination_address);
    number("dst_port", destination_port);
    j += std::string(",\"ssl\":") + (has_ssl ? "true" : "false");
    number("client_flags", ssl_client);
    j += std::string(",\"verified\":") + (has_ssl && ssl_verify == 0 ? "true" : "false");
    field("version", ssl_version);
    field("cipher", ssl_cipher);
    field("cn", ssl_cn);
    field("subject_dn", subject_dn);
    field("sha256", sha256_hex);
    field("alpn", alpn);
    field("authority", authority);
    return j + "}";
}

ParseOutcome parse_proxy_v2(std::span<const std::uint8_t> bytes) {
    ParseOutcome out;
    const std::size_t prefix = std::min<std::size_t>(bytes.size(), sizeof magic);
    if (std::memcmp(bytes.data(), magic, prefix) != 0) {
        out.error = "not a PROXY v2 signature";
        return out;
    }
    if (bytes.size() < 16) {
        out.incomplete = true;
        return out;
    }
    const std::uint8_t* p = bytes.data();
    if ((p[12] >> 4) != 2) {
        out.error = "version is not 2";
        return out;
    }
    if ((p[12] & 0x0f) != 1) {
        out.error = "command is not PROXY";
        return out;
    }
    const std::size_t length = be16(p + 14);
    if (bytes.size() < 16 + length) {
        out.incomplete = true;
        return out;
    }
    ProxyHeader h;
    h.total_length = 16 + length;
    const std::uint8_t* body = p + 16;
    const std::uint8_t* end = body + length;
    const std::uint8_t family = p[13];
    char address[INET6_ADDRSTRLEN];
    if (family == 0x11) {
        if (length < 12) {
            out.error = "IPv4 address block truncated";
            return out;
        }
        h.family = 4;
        h.source_address = inet_ntop(AF_INET, body, address, sizeof address);
        h.destination_address = inet_ntop(AF_INET, body + 4, address, sizeof address);
        h.source_port = be16(body + 8);
        h.destination_port = be16(body + 10);
        body += 12;
    } else if (family == 0x21) {
        if (length < 36) {
            out.error = "IPv6 address block truncated";
            return out;
        }
        h.family = 6;
        h.source_address = inet_ntop(AF_INET6, body, address, sizeof address);
        h.destination_address = inet_ntop(AF_INET6, body + 16, address, sizeof address);
        h.source_port = be16(body + 32);
        h.destination_port = be16(body + 34);
        body += 36;
    } else if (family != 0x00) {
        out.error = "unsupported address family byte";
        return out;
    }
    const bool ok =
        for_each_tlv(body, end, [&h](std::uint8_t type, const std::uint8_t* v, std::size_t n) {
            switch (type) {
                case 0x01:
                    h.alpn = text(v, n);
                    return true;
                case 0x02:
                    h.authority = text(v, n);
                    return true;
                case 0xE0:
                    h.subject_dn = text(v, n);
                    return true;
                case 0xE1: {
                    if (n != 32) return false;
                    static const char* digits = "0123456789abcdef";
                    for (std::size_t i = 0; i < n; ++i) {
                        h.sha256_hex += digits[v[i] >> 4];
                        h.sha256_hex += digits[v[i] & 15];
                    }
                    return true;
                }
                case 0x20: {
                    if (n < 5) return false;
                    h.has_ssl = true;
                    h.ssl_client = v[0];
                    h.ssl_verify = static_cast<std::uint32_t>(v[1]) << 24 |
                                   static_cast<std::uint32_t>(v[2]) << 16 |
                                   static_cast<std::uint32_t>(v[3]) << 8 | v[4];
                    return for_each_tlv(
                        v + 5, v + n,
                        [&h](std::uint8_t sub, const std::uint8_t* sv, std::size_t sn) {
                            if (sub == 0x21) h.ssl_version = text(sv, sn);
                            if (sub == 0x22) h.ssl_cn = text(sv, sn);
                            if (sub == 0x23) h.ssl_cipher = text(sv, sn);
                            return true;
                        });
                }
                default:
                    return true;  // other TLVs are allowed and ignored
            }
        });
    if (!ok) {
        out.error = "malformed TLV";
        return out;
    }
    out.header = std::move(h);
    return out;
}

}  // namespace portcullis::testing
