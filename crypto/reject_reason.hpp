// Why a client was refused. Stable names: they appear in logs, metrics and
// the load generator's report.
#pragma once

#include <string_view>

namespace portcullis::crypto {

enum class RejectReason {
    none,
    no_certificate,  // client_auth = require and no certificate sent
    expired,
    not_yet_valid,
    revoked,
    unknown_ca,  // chain does not end at a trusted CA
    self_signed,
    bad_eku,           // leaf lacks extendedKeyUsage clientAuth
    not_allowed,       // verified, but not on the listener's allow-list
    bad_signature,     // CertificateVerify or a chain signature did not verify
    crl_unavailable,   // CRL checking configured but no CRL for an issuer
    ocsp_unavailable,  // ocsp_failure = "hard" and no usable OCSP answer (or status unknown)
    protocol,          // wrong version, garbage, renegotiation, no shared cipher...
    timeout,           // handshake deadline passed
    key_unavailable,   // the server key operation failed: HSM error, timeout or queue full
    other,
};

inline constexpr int reject_reason_count = static_cast<int>(RejectReason::other) + 1;

constexpr std::string_view to_string(RejectReason r) {
    switch (r) {
        case RejectReason::none:
            return "none";
        case RejectReason::no_certificate:
            return "no_certificate";
        case RejectReason::expired:
            return "expired";
        case RejectReason::not_yet_valid:
            return "not_yet_valid";
        case RejectReason::revoked:
            return "revoked";
        case RejectReason::unknown_ca:
            return "unknown_ca";
        case RejectReason::self_signed:
            return "self_signed";
        case RejectReason::bad_eku:
            return "bad_eku";
        case RejectReason::not_allowed:
            return "not_allowed";
        case RejectReason::bad_signature:
            return "bad_signature";
        case RejectReason::crl_unavailable:
            return "crl_unavailable";
        case RejectReason::ocsp_unavailable:
            return "ocsp_unavailable";
        case RejectReason::protocol:
            return "protocol";
        case RejectReason::timeout:
            return "timeout";
        case RejectReason::key_unavailable:
            return "key_unavailable";
        case RejectReason::other:
            return "other";
    }
    return "other";
}

}  // namespace portcullis::crypto
