// TLS policy of one listener, as plain values. mgmt/ parses it from TOML,
// crypto/ turns it into OpenSSL contexts; nothing here touches OpenSSL.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace portcullis::crypto {

enum class ClientAuth { require, optional, none };

// Which certificates of the client's chain must be checked against a CRL.
enum class CrlScope { leaf, chain };
// A CRL past its nextUpdate: refuse the clients it covers (hard), or keep
// checking them against it and count each such handshake (soft).
enum class CrlStale { hard, soft };

enum class TlsVersion { tls12, tls13 };

// Which certificates of the client's chain are checked by OCSP (see
// crypto/ocsp_client.hpp): none, the leaf, or every certificate below the
// trust anchor.
enum class OcspCheck { off, leaf, chain };
// No usable OCSP answer (responder down, an answer refused, status unknown):
// refuse the client (hard) or serve it and count it (soft).
enum class OcspFailure { hard, soft };

struct CertificateSpec {
    std::string chain_file;  // PEM: leaf first, then intermediates
    std::string key;         // PEM file path (a PKCS#11 URI once hsm/ provides it)
    // SNI names served by this certificate; empty = taken from the leaf's
    // subjectAltName DNS entries (or CN when it has none).
    std::vector<std::string> server_names;
};

// Which authenticated clients may connect. Empty = any client whose chain verifies.
// A client passes when it matches any entry of any list.
struct AllowList {
    std::vector<std::string> subject_patterns;     // glob (fnmatch) on the RFC 2253 subject DN
    std::vector<std::string> san_uris;             // glob on each SAN URI
    std::vector<std::string> san_dns;              // glob on each SAN DNS name
    std::vector<std::string> sha256_fingerprints;  // hex, case and ':' insensitive

    bool empty() const {
        return subject_patterns.empty() && san_uris.empty() && san_dns.empty() &&
               sha256_fingerprints.empty();
    }
};

struct TlsPolicy {
    std::vector<CertificateSpec> certificates;  // at least one
    ClientAuth client_auth = ClientAuth::require;
    std::string trust_file;               // PEM bundle of accepted client CAs
    std::string trust_dir;                // c_rehash-style directory
    std::vector<std::string> crl_files;   // PEM CRLs
    CrlScope crl_scope = CrlScope::leaf;  // only used when crl_files is not empty
    CrlStale crl_stale = CrlStale::hard;
    // Where the fetcher keeps checked OCSP responses for the server
    // certificates (crypto/ocsp_response.hpp); "" = no OCSP stapling. A
    // certificate whose chain has no issuer is never stapled.
    std::string ocsp_staple_dir;
    OcspCheck ocsp = OcspCheck::off;
    std::string ocsp_responder;  // asked for every certificate; "" = each one's AIA OCSP URI
    OcspFailure ocsp_failure = OcspFailure::hard;
    bool ocsp_nonce = false;  // a nonce in each request, echoed in the response
    int verify_depth = 4;
    bool require_client_auth_eku = true;  // leaf must carry EKU clientAuth
    // Client chains remembered after a successful verification (see
    // crypto/verified_chain_cache.hpp); 0 = verify every chain in full.
    // Ignored with a trust_dir, which OpenSSL reads during verification.
    std::size_t verified_chain_cache_entries = 10000;
    AllowList allow;
    TlsVersion min_version = TlsVersion::tls12;
    TlsVersion max_version = TlsVersion::tls13;
    std::string ciphers;            // TLS 1.2 cipher list; empty = built-in strong default
    std::string ciphersuites;       // TLS 1.3 suites; empty = OpenSSL default
    std::string groups;             // key exchange groups; empty = built-in default
    std::vector<std::string> alpn;  // server preference order; empty = no ALPN
    // TLS 1.3 resumption without a fresh ECDHE (psk_ke): cheaper, but no
    // forward secrecy for the resumed session. Off unless configured.
    bool allow_psk_ke = false;
    int session_lifetime_s = 7200;  // tickets and cached sessions
};

}  // namespace portcullis::crypto
