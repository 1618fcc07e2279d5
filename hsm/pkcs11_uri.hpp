// RFC 7512 PKCS#11 URIs naming a private key: "pkcs11:token=edge;object=server-ec;type=private".
// A PIN never comes from the URI (pin-value / pin-source are refused): the
// configuration names a PIN file or environment variable instead.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace portcullis::hsm {

struct Pkcs11UriError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Pkcs11Uri {
    std::string token;             // CKA_LABEL of the token ("" = the configured token)
    std::string object;            // CKA_LABEL of the key
    std::vector<std::uint8_t> id;  // CKA_ID
    std::optional<unsigned long> slot_id;
    std::string type;  // "private" or "" (anything else is refused)

    static Pkcs11Uri parse(const std::string& text);
    std::string to_string() const;  // canonical form, for logs and metrics labels
};

}  // namespace portcullis::hsm
