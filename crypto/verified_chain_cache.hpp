// Client chains that passed X509_verify_cert, remembered by one ServerTlsContext
// so that a returning partner's chain is not built and verified again (on a
// leaf -> intermediate -> root chain with CRLs: two certificate signatures and
// one CRL signature per issuer, plus the path building around them).
//
// The contract: a hit never accepts a chain that X509_verify_cert would refuse
// at that moment. It rests on these facts, each kept by the code named:
//  - the key is the SHA-256 over the store's generation and the DER of every
//    presented certificate in order (leaf and intermediates as sent): one key,
//    one input to the verification;
//  - the store's CAs and CRLs are those the entry was verified against: the
//    generation changes whenever the cache sees the store's content change
//    (an X509_STORE only grows, so its object count tells), which empties the
//    cache; a reload builds a new context and so a new cache; a hashed trust
//    directory, which OpenSSL reads while it verifies, gets no cache at all
//    (ServerTlsContext);
//  - the verification parameters are the context's and never change; with
//    extended CRL support (CRL issuers off the chain's path) the cache stands
//    aside;
//  - the verify callback is a function of the chain and the listener's policy
//    (client_verifier.hpp);
//  - time is the only other input, and an entry is used only within
//    [verified_at, expires_at), where expires_at is the first instant, from the
//    verification on, at which a time-dependent input can change the outcome:
//    the notAfter of a certificate of the verified chain, the notBefore of a
//    presented or stored certificate still to come (it may then become the
//    preferred issuer), the lastUpdate or nextUpdate of a stored CRL. The time
//    is the one X509_verify_cert uses: the parameters' fixed time when set,
//    else the clock; an entry is stored only if the clock did not move during
//    its verification.
// On a hit the cache re-checks every certificate within the CRL scope against
// the store's CRLs (a lookup by serial, without a signature check: the
// verification that made the entry checked those very CRL objects), runs the
// verify callback at every depth as a successful X509_verify_cert ends, so the
// EKU and allow-list checks run on hits too, and hands OpenSSL the chain a
// full verification builds (this handshake's presented certificates and the
// store's anchor). Anything unexpected is a miss: the full verification
// decides, and only its successes are stored.
//
// Bounded (the least recently used entry goes first). One cache per context,
// used only by the thread that runs that context's handshakes: no locks.
#pragma once

#include <openssl/x509.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {

class TlsEventSink;

enum class ChainCacheEvent {
    hit,       // a stored chain was used
    miss,      // verified in full: unknown chain, expired entry, or any doubt
    eviction,  // the least recently used entry made room for a new one
};

class VerifiedChainCache {
  public:
    // `store` is what every handshake of the owning context verifies against
    // (the cache holds a reference). `events` may be null, else must outlive
    // the cache.
    VerifiedChainCache(X509_STORE* store, std::size_t capacity, TlsEventSink* events);
    ~VerifiedChainCache();
    VerifiedChainCache(const VerifiedChainCache&) = delete;
    VerifiedChainCache& operator=(const VerifiedChainCache&) = delete;

    // The body of SSL_CTX_set_cert_verify_callback(ctx, verify_callback, cache):
    // what X509_verify_cert(store_ctx) would return, through the cache.
    static int verify_callback(X509_STORE_CTX* store_ctx, void* cache);
    int verify(X509_STORE_CTX* store_ctx);

    std::size_t size() const { return index_.size(); }
    std::size_t capacity() const { return capacity_; }

  private:
    using Key = std::array<unsigned char, 32>;
    struct KeyHash {
        std::size_t operator()(const Key& key) const;
    };
    // One certificate of a verified chain: the presented certificate at that
    // index in this handshake, or (presented < 0) an object kept from the
    // store, such as the trust anchor.
    struct Link {
        int presented = -1;
        UniqueX509 kept;
    };
    struct Entry {
        Key key;
        std::int64_t verified_at = 0;
        std::int64_t expires_at = 0;  // first instant the entry is no longer used
        std::vector<Link> chain;      // leaf first, as X509_STORE_CTX_get0_chain
    };
    using Lru = std::list<Entry>;  // most recently used first
    enum class Answer { accepted, refused, doubt };

    void read_store();
    int store_object_count() const;
    bool usable_for(X509_STORE_CTX* store_ctx) const;
    bool collect_presented(X509_STORE_CTX* store_ctx);
    bool key_of_presented(Key& key);
    int verify_in_full(X509_STORE_CTX* store_ctx, const Key* key);
    Answer answer_from(const Entry& entry, X509_STORE_CTX* store_ctx);
    bool still_unrevoked(unsigned long flags) const;
    void store(const Key& key, std::int64_t verified_at, X509_STORE_CTX* store_ctx);
    std::int64_t next_store_change_from(std::int64_t t) const;
    void erase(Lru::iterator entry);
    void report(ChainCacheEvent event) const;

    UniqueX509Store store_;
    std::size_t capacity_;
    TlsEventSink* events_;
    std::uint64_t generation_ = 0;     // of the store's content last read; part of every key
    int store_objects_ = -1;           // the store's object count when last read
    bool store_times_known_ = false;   // every time of the store parsed
    std::vector<UniqueX509Crl> crls_;  // every CRL of the store
    std::vector<std::int64_t> store_changes_;  // instants at which the store's verdicts change
    std::unique_ptr<EVP_MD_CTX, OpenSslDeleter<EVP_MD_CTX_free>> digest_;
    Lru lru_;
    std::unordered_map<Key, Lru::iterator, KeyHash> index_;
    // Scratch of the handshake being verified, kept to spare an allocation each.
    std::vector<X509*> presented_;  // leaf first, then the untrusted certificates as sent
    std::vector<X509*> chain_;      // a hit's chain
};

}  // namespace portcullis::crypto
