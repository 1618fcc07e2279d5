// The OpenSSL side of one listener's TlsPolicy: one SSL_CTX per SNI group
// (ECDSA and RSA certificates for the same names share a context), the trust
// store with its CRLs, the client-certificate checks (EKU, allow-list) and the
// protocol limits. Built once per worker process after fork, then shared by
// all of that worker's connections; never modified while connections use it,
// except for its verified-chain cache and its local session cache, which the
// handshakes of that worker's loop thread fill (see verified_chain_cache.hpp,
// local_session_cache.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/key_source.hpp"
#include "crypto/local_session_cache.hpp"
#include "crypto/ocsp_client.hpp"
#include "crypto/openssl_handles.hpp"
#include "crypto/ticket_keys.hpp"
#include "crypto/tls_policy.hpp"
#include "crypto/verified_chain_cache.hpp"

namespace portcullis::crypto {

struct TlsConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class SharedSessionCache;

// The client trust of `policy`: its CAs (trust_file, trust_dir) and CRLs with
// OpenSSL's CRL checks at the policy's scope. Every CRL loaded is also kept
// in `crls`. Throws TlsConfigError naming the file.
UniqueX509Store build_trust_store(const TlsPolicy& policy, std::vector<UniqueX509Crl>& crls);

// Why a session was not resumed: its client certificate was revoked or has
// expired since, or (tls.ocsp, hard) this worker holds no current OCSP answer
// about it.
enum class ResumptionRefusal { revoked, expired, ocsp_unchecked };

// What the TLS core reports to its owner's counters (called on the owner's thread).
class TlsEventSink {
  public:
    virtual ~TlsEventSink() = default;
    virtual void ticket_decrypted(TicketKeyring::Match key_age) = 0;
    virtual void resumption_refused(ResumptionRefusal reason) = 0;
    virtual void chain_cache(ChainCacheEvent) {}
    virtual void local_session_cache(LocalSessionEvent) {}
    // A client verified against a CRL past its nextUpdate (crl_stale = "soft").
    virtual void stale_crl_accepted() {}
    // An OCSP response went to a client that asked for one (ocsp_staple_dir).
    virtual void ocsp_stapled() {}
    // A client's certificate was checked by OCSP (policy ocsp), and what came of it.
    virtual void ocsp_checked(OcspSource, OcspVerdict::Kind) {}
    // ocsp_failure = "soft": a client served without a usable OCSP answer.
    virtual void ocsp_soft_accepted() {}
};

struct ServerTlsOptions {
    // Shared by all workers (and appliances with one key file), so a returning
    // client resumes wherever it lands. Null: OpenSSL's per-context random key.
    const TicketKeyring* tickets = nullptr;
    TlsEventSink* events = nullptr;
    // TLS 1.2 session IDs (and stateful TLS 1.3 tickets) across worker
    // processes. Null: no session-ID cache.
    SharedSessionCache* session_cache = nullptr;
    // TLS 1.3 tickets that are session IDs (SSL_OP_NO_TICKET), looked up in
    // `session_cache`, instead of tickets that carry the session encrypted
    // under `tickets`: no session is encoded into a ticket or decoded from
    // one, but only this appliance can resume it, and TLS 1.2 resumes by
    // session ID only. Needs `session_cache`.
    bool stateful_tickets = false;
    // Decoded sessions this context keeps in front of `session_cache` (see
    // local_session_cache.hpp); 0 or no `session_cache`: none.
    std::size_t local_session_entries = 0;
    // Answers OCSP questions about client certificates (policy.ocsp), and
    // the sink its lookups pause the handshake through. Null: a policy with
    // ocsp is refused (TlsConfigError).
    OcspClient* ocsp = nullptr;
    KeyCompletionSink* completions = nullptr;
};

class ServerTlsContext {
  public:
    // Throws TlsConfigError with the file and the OpenSSL reason on any problem
    // (unreadable chain, key not matching, bad cipher string, ...).
    // The objects in `options` must outlive the context.
    ServerTlsContext(const TlsPolicy& policy, KeySource& keys, ServerTlsOptions options = {});
    ~ServerTlsContext();
    ServerTlsContext(const ServerTlsContext&) = delete;
    ServerTlsContext& operator=(const ServerTlsContext&) = delete;

    // New server-side SSL for one connection (default context; SNI switches it).
    UniqueSsl new_session() const;

    const TlsPolicy& policy() const { return policy_; }

    // Whether a session may still be resumed: its client certificate has not
    // expired and is not on a CRL loaded since (resumption skips verification).
    bool session_still_trusted(SSL_SESSION* session) const;
    // Whether a CRL this context loaded lists `certificate` (by its issuer's
    // name and its serial number), or an OCSP answer this worker holds says
    // it is revoked (policy ocsp).
    bool revokes(X509* certificate) const;
    // Whether `session` was made under this context's session ID context
    // (the same listener policy and trusted CAs), as OpenSSL requires to resume it.
    bool owns_id_context(const SSL_SESSION* session) const;
    const ServerTlsOptions& options() const { return options_; }
    // Null when the listener verifies every client chain in full.
    const VerifiedChainCache* chain_cache() const { return chain_cache_.get(); }
    // Null without local_session_entries. Filled by the loop thread's handshakes.
    LocalSessionCache* local_sessions() const { return local_sessions_.get(); }
    // TLS 1.2 sessions decrypted from a ticket under the current key, by the
    // session ID the client sent beside it. A TLS 1.2 ticket is used until it
    // is renewed, and OpenSSL's client sends the SHA-256 of its ticket as the
    // session ID each time, so the next visit resumes from here by that ID
    // instead of decrypting and decoding the ticket again. Null without
    // local_session_entries, `tickets`, or with stateful tickets.
    LocalSessionCache* ticket_sessions() const { return ticket_sessions_.get(); }

    struct SniGroup;  // implementation detail, public for the callbacks

  private:
    TlsPolicy policy_;
    ServerTlsOptions options_;
    std::vector<UniqueX509Crl> crls_;             // for re-checking resumed sessions
    std::vector<unsigned char> alpn_wire_;        // policy.alpn in TLS wire format
    std::vector<unsigned char> session_context_;  // SSL_CTX_set_session_id_context's
    // Declared before groups_, whose SSL_CTXs point at it, so it outlives them.
    std::unique_ptr<VerifiedChainCache> chain_cache_;
    std::unique_ptr<LocalSessionCache> local_sessions_;   // likewise
    std::unique_ptr<LocalSessionCache> ticket_sessions_;  // likewise
    std::vector<std::unique_ptr<SniGroup>> groups_;
};

}  // namespace portcullis::crypto
