// What the handshake established about the peer: handed to the upstream side
// (PROXY v2 TLVs), the access log and the allow-list.
//
// The handshake's own facts (version, cipher, SNI, ALPN, resumed, verified)
// are plain values set when it completes. What is read out of the client's
// certificate (DN strings, CN, SANs, SHA-256 fingerprint) is computed on the
// first call of its accessor and kept: a listener whose access log, PROXY v2
// header and allow-list are all off never decodes any of it, and one that
// uses a part computes it once per connection however many readers ask.
//
// Threads: an identity belongs to its connection's thread. The accessors are
// const but fill their caches, without locking.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {

// The client's leaf certificate and what is read from it. Empty when the
// client sent none: every accessor then returns an empty value.
class PeerCertificate {
  public:
    PeerCertificate() = default;
    // Takes a reference of its own (X509_up_ref): it may outlive the SSL.
    explicit PeerCertificate(X509* leaf);

    explicit operator bool() const { return leaf_ != nullptr; }
    X509* get() const { return leaf_.get(); }

    const std::string& subject_dn() const;   // RFC 2253
    const std::string& issuer_dn() const;    // RFC 2253
    const std::string& common_name() const;  // the first CN; "" if it holds a NUL byte
    const std::vector<std::string>& san_dns() const;
    const std::vector<std::string>& san_uris() const;
    const std::array<std::uint8_t, 32>& sha256() const;  // of the DER certificate
    std::string sha256_hex() const;                      // lowercase, no separators

  private:
    void read_subject_alt_names() const;  // one decode of the extension fills both lists

    UniqueX509 leaf_;
    mutable std::optional<std::string> subject_dn_;
    mutable std::optional<std::string> issuer_dn_;
    mutable std::optional<std::string> common_name_;
    mutable std::optional<std::vector<std::string>> san_dns_;
    mutable std::optional<std::vector<std::string>> san_uris_;
    mutable std::optional<std::array<std::uint8_t, 32>> sha256_;
};

struct PeerIdentity {
    bool verified = false;    // chain, CRL, EKU and allow-list all passed
    std::string tls_version;  // "TLSv1.3"
    std::string cipher;       // IANA/OpenSSL name
    std::string server_name;  // SNI sent by the client, may be empty
    std::string alpn;         // negotiated protocol, may be empty
    bool resumed = false;
    PeerCertificate certificate;  // empty when the client presented none

    bool certificate_presented() const { return static_cast<bool>(certificate); }
};

}  // namespace portcullis::crypto
