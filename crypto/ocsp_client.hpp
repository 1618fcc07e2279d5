// OCSP for client certificates (listener.tls.ocsp): once a client's chain has
// verified, the verify callback asks OcspClient about each certificate in
// scope. The answer comes from, in order:
//   1. this worker's memory, until the answer's nextUpdate: a returning
//      partner costs a hash lookup and no I/O;
//   2. the shared cache directory (revocation.cache_dir), where whichever
//      worker fetched an answer keeps it for the others: one file read, and
//      the response is checked again in full;
//   3. the responder: a lookup thread of this worker POSTs the request while
//      the handshake pauses exactly as it does for an HSM signature. The
//      lookup is a PendingKeyOperation handed to the transport's
//      KeyCompletionSink, so the event loop serves other connections, and the
//      transport gives up on it at its deadline (pending_key_operation.hpp).
// Every response is checked by check_ocsp_response (signer and delegation,
// CertID, thisUpdate/nextUpdate with the clock-skew allowance, the nonce when
// one was sent) before anything believes it.
//
// The network and the disk writes are the owner's (mgmt/ gives an HTTP POST
// and an atomic file write), so crypto/ stays free of both.
//
// A revocation this worker learns (from the shared cache or the responder)
// waits in take_learned_revocations() for the owner, which ends this worker's
// live connections of that certificate and tells the other workers, whose
// clients take it in through learn_revoked(): an OCSP answer reaches live
// state the way a fetched CRL does.
//
// Threads: everything but the lookups runs on the worker's loop thread (check
// inside the handshake's async job); the lookup threads fetch, check and
// store, and hand the result back through the operation alone.
#pragma once

#include <openssl/x509.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "crypto/ocsp_response.hpp"
#include "crypto/pending_key_operation.hpp"

namespace portcullis::crypto {

struct OcspHttpAnswer {
    std::string error;  // "" = an HTTP answer came
    int status = 0;
    std::string body;
};

struct OcspTransport {
    // POSTs an application/ocsp-request; never longer than `timeout`.
    std::function<OcspHttpAnswer(const std::string& url, std::string_view request,
                                 std::chrono::milliseconds timeout)>
        post;
    // Replaces `path` whole (a reader sees the old file or the new one);
    // false when it could not.
    std::function<bool(const std::string& path, std::string_view bytes)> keep;
};

struct OcspClientSettings {
    std::string cache_dir;  // the shared cache; "" = memory only
    std::chrono::milliseconds timeout{2000};
    std::size_t threads = 2;  // responder lookups in flight at once, per worker
    std::size_t memory_entries = 100000;
};

// Where an answer came from.
enum class OcspSource { memory, shared_cache, responder };

struct OcspVerdict {
    enum class Kind { good, revoked, unknown, unavailable };
    Kind kind = Kind::unavailable;
    OcspSource source = OcspSource::responder;
    std::string detail;  // why it is unavailable, or which responder answered
};
const char* to_string(OcspVerdict::Kind kind);
const char* to_string(OcspSource source);

class OcspLookup;

class OcspClient {
  public:
    // The SHA-256 of a certificate's DER: the key of every answer kept.
    using CertDigest = std::array<unsigned char, 32>;
    static bool digest_of(X509* cert, CertDigest& digest);

    OcspClient(OcspTransport transport, OcspClientSettings settings);
    ~OcspClient();
    OcspClient(const OcspClient&) = delete;
    OcspClient& operator=(const OcspClient&) = delete;

    // The status of `cert`, which `issuer` issued, asking `responder` ("" =
    // the one cert's AIA names) on a miss. Inside a handshake's async job with
    // a `sink`, a responder lookup pauses the job; outside one it blocks.
    OcspVerdict check(X509* cert, X509* issuer, const std::string& responder, bool nonce,
                      KeyCompletionSink* sink);
    // Whether this worker was told `cert` is revoked (such an answer is kept
    // past its nextUpdate and never evicted: a revocation is final).
    bool known_revoked(X509* cert) const;
    // known_revoked, or of an issuer above it that this worker's answers
    // link it to (tls.ocsp = "chain": a resumed session carries no chain).
    bool known_revoked_along_chain(X509* cert) const;
    // Whether this worker holds an answer about `cert` it may still act on:
    // revoked, or good before its nextUpdate. A resumption under the hard
    // policy needs one (ServerTlsContext::session_still_trusted).
    bool has_current_answer(X509* cert, std::int64_t now) const;
    // The certificates this client learned are revoked since the last call,
    // from the shared cache or a responder (not those told by learn_revoked).
    std::vector<CertDigest> take_learned_revocations();
    // Another worker learned this certificate is revoked; true when this
    // client did not know it yet.
    bool learn_revoked(const CertDigest& digest);

    // Outside any handshake, for an established connection: when this
    // worker holds no answer about `cert` before its nextUpdate (nor a
    // revocation), reads the shared cache
    // and otherwise asks the responder on a lookup thread, never waiting.
    // collect_refreshes() takes in what came back, so a revocation the
    // responder knows reaches a live connection whose partner never
    // reconnects. One lookup per certificate at a time.
    void refresh(X509* cert, X509* issuer, const std::string& responder, bool nonce);
    // The refresh lookups that came back since the last call, remembered
    // (a revoked answer then waits in take_learned_revocations()); returns
    // how many failed, with the first failure in `first_failure`.
    std::size_t collect_refreshes(std::string& first_failure);

    const OcspClientSettings& settings() const { return settings_; }

  private:
    using Key = CertDigest;
    struct KeyHash {
        std::size_t operator()(const Key& key) const;
    };
    // A good or unknown answer, until evicted; revocations are in revoked_.
    struct Remembered {
        OcspCertStatus status = OcspCertStatus::unknown;
        std::int64_t next_update = 0;
        bool has_issuer = false;
        Key issuer{};  // the digest of the certificate that issued it
    };
    static constexpr std::size_t max_refreshes_in_flight = 256;

    bool key_of(X509* cert, Key& key) const;
    void remember(const Key& key, const OcspAnswer& answer, X509* issuer);
    bool revoked_along(Key key) const;
    std::string shared_path(X509* cert) const;  // "" without a shared cache
    // The answer another worker kept in the shared cache, when it passes
    // every check (never with nonces).
    bool read_shared(const std::string& path, X509* cert, X509* issuer, bool nonce,
                     std::int64_t now, OcspAnswer& answer) const;
    std::shared_ptr<OcspLookup> make_lookup(X509* cert, X509* issuer, const std::string& url,
                                            bool nonce, const std::string& cache_path) const;
    void enqueue(std::shared_ptr<OcspLookup> lookup);
    void run_lookups();
    void look_up(OcspLookup& lookup);

    OcspTransport transport_;
    OcspClientSettings settings_;
    std::unordered_map<Key, Remembered, KeyHash> memory_;
    std::deque<Key> arrival_order_;             // the oldest goes first when memory is full
    std::unordered_set<Key, KeyHash> revoked_;  // never evicted
    std::vector<Key> learned_;  // revocations take_learned_revocations() has not given

    // Refresh lookups in flight (loop thread), and those done (lookup threads
    // add under refreshed_mutex_, the loop thread takes them).
    std::unordered_set<Key, KeyHash> refreshing_;
    std::mutex refreshed_mutex_;
    std::vector<std::shared_ptr<OcspLookup>> refreshed_;

    std::mutex queue_mutex_;
    std::condition_variable queue_ready_;
    std::deque<std::shared_ptr<OcspLookup>> queue_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace portcullis::crypto
