// The OpenSSL side of one listener's TlsPolicy: one SSL_CTX per SNI group
// (ECDSA and RSA certificates for the same names share a context), the trust
// store with its CRLs, the client-certificate checks (EKU, allow-list) and the
// protocol limits. Built once per worker process after fork, then shared by
// all of that worker's connections; never modified while connections use it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/key_source.hpp"
#include "crypto/openssl_handles.hpp"
#include "crypto/tls_policy.hpp"

namespace portcullis::crypto {

struct TlsConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class ServerTlsContext {
  public:
    // Throws TlsConfigError with the file and the OpenSSL reason on any problem
    // (unreadable chain, key not matching, bad cipher string, ...).
    // `ticket_key` (80 bytes: name, HMAC and AES keys), when given, is used by
    // every worker so a returning client resumes whichever worker it reaches.
    ServerTlsContext(const TlsPolicy& policy, KeySource& keys,
                     std::span<const std::uint8_t> ticket_key = {});
    ~ServerTlsContext();
    ServerTlsContext(const ServerTlsContext&) = delete;
    ServerTlsContext& operator=(const ServerTlsContext&) = delete;

    // New server-side SSL for one connection (default context; SNI switches it).
    UniqueSsl new_session() const;

    const TlsPolicy& policy() const { return policy_; }

    struct SniGroup;  // implementation detail, public for the callbacks

  private:
    TlsPolicy policy_;
    std::vector<unsigned char> alpn_wire_;  // policy.alpn in TLS wire format
    std::vector<std::unique_ptr<SniGroup>> groups_;
};

}  // namespace portcullis::crypto
