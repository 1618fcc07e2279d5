// OCSP (RFC 6960) about one certificate, as stapling needs it: the request a
// fetcher sends, the checks an answer passes before it may be stapled, and
// the file through which the fetcher hands a checked answer to the workers.
// Everything here runs when a response is fetched or a context is built,
// never per handshake.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {

// How far a responder's clock may run ahead of ours.
inline constexpr std::int64_t ocsp_clock_skew_s = 60;

enum class OcspCertStatus { good, revoked, unknown };
const char* to_string(OcspCertStatus status);

struct OcspAnswer {
    std::string problem;  // "" = the response passed every check
    OcspCertStatus status = OcspCertStatus::unknown;
    std::int64_t this_update = 0;  // Unix seconds
    std::int64_t next_update = 0;
};

// A DER OCSPRequest for `leaf`, issued by `issuer`, with a SHA-1 CertID (what
// responders index by). No nonce unless `with_nonce`: a stapled response is
// cached and sent to many clients, so it cannot answer any one request's
// nonce, and many responders pre-sign their answers and support none.
std::vector<unsigned char> ocsp_request(X509* leaf, X509* issuer, bool with_nonce = false);

// Checks a DER OCSPResponse about `leaf` at Unix time `now`:
//   - responseStatus successful, with a BasicOCSPResponse;
//   - signed by `issuer` itself or by a responder certificate that `issuer`
//     issued with extendedKeyUsage id-kp-OCSPSigning (RFC 6960 4.2.2.2);
//   - a SingleResponse for leaf's CertID;
//   - thisUpdate at most ocsp_clock_skew_s in the future, and a nextUpdate
//     that has not passed. A response without nextUpdate is refused: nothing
//     could tell when it goes stale, and a stale response is never stapled;
//   - when `request` (the DER OCSPRequest it answers) carries a nonce, the
//     same nonce in the response (RFC 8954): no replayed answer.
OcspAnswer check_ocsp_response(std::span<const unsigned char> der, X509* leaf, X509* issuer,
                               std::int64_t now, std::span<const unsigned char> request = {});

// The responder URL in leaf's Authority Information Access, or "".
std::string ocsp_responder_of(X509* leaf);

// The file in `dir` that holds the checked response for `leaf`:
// ocsp-<SHA-256 of leaf's DER, in hex>.der, so a renewed certificate never
// meets its predecessor's response.
std::string ocsp_response_path(const std::string& dir, X509* leaf);
// The bytes of the file at `path`; empty when there is none.
std::vector<unsigned char> read_ocsp_response(const std::string& path);

}  // namespace portcullis::crypto
