#include "crypto/peer_identity.hpp"

namespace portcullis::crypto {

std::string PeerIdentity::sha256_hex() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(sha256.size() * 2);
    for (const auto byte : sha256) {
        hex.push_back(digits[byte >> 4]);
        hex.push_back(digits[byte & 0x0f]);
    }
    return hex;
}

}  // namespace portcullis::crypto
