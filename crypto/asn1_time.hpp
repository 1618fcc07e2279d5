// ASN.1 times (certificate validity, CRL and OCSP updates) as Unix seconds,
// the unit every comparison, metric and log line of Portcullis uses.
#pragma once

#include <openssl/asn1.h>

#include <cstdint>
#include <ctime>
#include <optional>

namespace portcullis::crypto {

// Empty for an absent or unreadable time.
inline std::optional<std::int64_t> unix_seconds(const ASN1_TIME* time) {
    std::tm parts{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) return std::nullopt;
    return static_cast<std::int64_t>(::timegm(&parts));
}

}  // namespace portcullis::crypto
