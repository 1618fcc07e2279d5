#include "crypto/verified_chain_cache.hpp"

#include <openssl/x509v3.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>

#include "crypto/asn1_time.hpp"
#include "crypto/server_tls_context.hpp"

namespace portcullis::crypto {
namespace {

constexpr std::int64_t forever = std::numeric_limits<std::int64_t>::max();
// verify_depth is at most 16; a peer that sends more certificates than this
// is verified in full every time rather than given an entry.
constexpr std::size_t max_presented = 20;

// Fetched once per process: an implicit fetch per handshake would take
// OpenSSL's name-lookup lock every time.
const EVP_MD* sha256() {
    static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(
        EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
    return md.get();
}

bool to_posix(const ASN1_TIME* time, std::int64_t& out) {
    const auto seconds = unix_seconds(time);
    if (seconds) out = *seconds;
    return seconds.has_value();
}

// The instant X509_verify_cert checks validity at, in whole seconds as it does.
std::int64_t verification_time(X509_STORE_CTX* store_ctx) {
    const X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(store_ctx);
    if ((X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_USE_CHECK_TIME) != 0)
        return static_cast<std::int64_t>(X509_VERIFY_PARAM_get_time(param));
    return static_cast<std::int64_t>(::time(nullptr));
}

// Every reading of every store in this process gets its own, so a verdict
// reached against one is never looked up under another. Contexts are built on
// the worker's loop thread and on its reload thread.
std::uint64_t next_generation() {
    static std::atomic<std::uint64_t> generation{0};
    return generation.fetch_add(1, std::memory_order_relaxed) + 1;
}

}  // namespace

std::size_t VerifiedChainCache::KeyHash::operator()(const Key& key) const {
    std::size_t h;
    std::memcpy(&h, key.data(), sizeof h);  // a SHA-256 prefix is already uniform
    return h;
}

VerifiedChainCache::VerifiedChainCache(X509_STORE* store, std::size_t capacity,
                                       TlsEventSink* events)
    : store_(X509_STORE_up_ref(store) == 1 ? store : nullptr),
      capacity_(capacity),
      events_(events),
      digest_(EVP_MD_CTX_new()) {
    read_store();
}

VerifiedChainCache::~VerifiedChainCache() = default;

int VerifiedChainCache::verify_callback(X509_STORE_CTX* store_ctx, void* cache) {
    return static_cast<VerifiedChainCache*>(cache)->verify(store_ctx);
}

int VerifiedChainCache::verify(X509_STORE_CTX* store_ctx) {
    if (store_ && store_object_count() != store_objects_) read_store();
    Key key;
    if (!usable_for(store_ctx) || !collect_presented(store_ctx) || !key_of_presented(key)) {
        report(ChainCacheEvent::miss);
        return verify_in_full(store_ctx, nullptr);
    }
    if (const auto found = index_.find(key); found != index_.end()) {
        const auto entry = found->second;
        const std::int64_t now = verification_time(store_ctx);
        if (now >= entry->verified_at && now < entry->expires_at) {
            const Answer answer = answer_from(*entry, store_ctx);
            if (answer == Answer::accepted) {
                lru_.splice(lru_.begin(), lru_, entry);
                report(ChainCacheEvent::hit);
                return 1;
            }
            if (answer == Answer::refused) {
                // The callback no longer accepts what it accepted: the next
                // visit is verified in full.
                erase(entry);
                report(ChainCacheEvent::hit);
                return 0;
            }
        }
        erase(entry);
    }
    report(ChainCacheEvent::miss);
    return verify_in_full(store_ctx, &key);
}

// Forgets every entry and takes the store's current CAs, CRLs and their
// instants of change, under a new generation.
void VerifiedChainCache::read_store() {
    lru_.clear();
    index_.clear();
    crls_.clear();
    store_changes_.clear();
    generation_ = next_generation();
    STACK_OF(X509_OBJECT)* objects = store_ ? X509_STORE_get1_objects(store_.get()) : nullptr;
    store_objects_ = objects != nullptr ? sk_X509_OBJECT_num(objects) : -1;
    store_times_known_ = objects != nullptr && digest_ != nullptr;
    for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
        X509_OBJECT* object = sk_X509_OBJECT_value(objects, i);
        std::int64_t t = 0;
        if (X509* cert = X509_OBJECT_get0_X509(object)) {
            // A CA not yet valid may become the preferred issuer when it is.
            store_times_known_ &= to_posix(X509_get0_notBefore(cert), t);
            store_changes_.push_back(t);
        } else if (X509_CRL* crl = X509_OBJECT_get0_X509_CRL(object)) {
            if (X509_CRL_up_ref(crl) != 1) {
                store_times_known_ = false;
                continue;
            }
            crls_.emplace_back(crl);
            // OpenSSL prefers a CRL within its validity to one outside it.
            store_times_known_ &= to_posix(X509_CRL_get0_lastUpdate(crl), t);
            store_changes_.push_back(t);
            if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl)) {
                store_times_known_ &= to_posix(next, t);
                store_changes_.push_back(t);
            }
        }
    }
    sk_X509_OBJECT_pop_free(objects, X509_OBJECT_free);
    std::sort(store_changes_.begin(), store_changes_.end());
}

// An X509_STORE only ever grows (OpenSSL has no call that removes an object),
// so an unchanged count is an unchanged store.
int VerifiedChainCache::store_object_count() const {
    if (X509_STORE_lock(store_.get()) != 1) return -1;
    const int count = sk_X509_OBJECT_num(X509_STORE_get0_objects(store_.get()));
    X509_STORE_unlock(store_.get());
    return count;
}

// Settings under which the reasoning of the header does not hold get no help
// from the cache: another store, or CRLs from outside the chain's path
// (extended CRL support validates CRL issuers on paths of their own).
bool VerifiedChainCache::usable_for(X509_STORE_CTX* store_ctx) const {
    return store_times_known_ && capacity_ > 0 && store_objects_ >= 0 &&
           X509_STORE_CTX_get0_store(store_ctx) == store_.get() &&
           (X509_VERIFY_PARAM_get_flags(X509_STORE_CTX_get0_param(store_ctx)) &
            X509_V_FLAG_EXTENDED_CRL_SUPPORT) == 0;
}

bool VerifiedChainCache::collect_presented(X509_STORE_CTX* store_ctx) {
    presented_.clear();
    X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
    if (leaf == nullptr) return false;
    presented_.push_back(leaf);
    STACK_OF(X509)* untrusted = X509_STORE_CTX_get0_untrusted(store_ctx);
    for (int i = 0; i < sk_X509_num(untrusted); ++i) {
        X509* cert = sk_X509_value(untrusted, i);
        if (i == 0 && cert == leaf) continue;  // libssl passes the peer chain with its leaf
        presented_.push_back(cert);
    }
    return presented_.size() <= max_presented;
}

bool VerifiedChainCache::key_of_presented(Key& key) {
    EVP_MD_CTX* digest = digest_.get();
    unsigned char generation[8];
    for (int i = 0; i < 8; ++i)
        generation[i] = static_cast<unsigned char>(generation_ >> (56 - 8 * i));
    if (EVP_DigestInit_ex(digest, sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(digest, generation, sizeof generation) != 1) {
        return false;
    }
    for (X509* cert : presented_) {
        unsigned char* der = nullptr;
        const int length = i2d_X509(cert, &der);
        if (length <= 0) return false;
        const unsigned char prefix[4] = {
            static_cast<unsigned char>(length >> 24), static_cast<unsigned char>(length >> 16),
            static_cast<unsigned char>(length >> 8), static_cast<unsigned char>(length)};
        const bool hashed = EVP_DigestUpdate(digest, prefix, sizeof prefix) == 1 &&
                            EVP_DigestUpdate(digest, der, static_cast<std::size_t>(length)) == 1;
        OPENSSL_free(der);
        if (!hashed) return false;
    }
    unsigned int size = 0;
    return EVP_DigestFinal_ex(digest, key.data(), &size) == 1 && size == key.size();
}

int VerifiedChainCache::verify_in_full(X509_STORE_CTX* store_ctx, const Key* key) {
    const std::int64_t before = verification_time(store_ctx);
    const int verdict = X509_verify_cert(store_ctx);
    // Stored only when every check of the verification saw the same second,
    // the one the entry's interval starts at.
    if (verdict == 1 && key != nullptr && X509_STORE_CTX_get_error(store_ctx) == X509_V_OK &&
        verification_time(store_ctx) == before) {
        store(*key, before, store_ctx);
    }
    return verdict < 0 ? 0 : verdict;  // as libssl: an error is a failure to verify
}

VerifiedChainCache::Answer VerifiedChainCache::answer_from(const Entry& entry,
                                                           X509_STORE_CTX* store_ctx) {
    chain_.clear();
    for (const Link& link : entry.chain) {
        X509* cert = link.presented < 0 ? link.kept.get()
                     : static_cast<std::size_t>(link.presented) < presented_.size()
                         ? presented_[static_cast<std::size_t>(link.presented)]
                         : nullptr;
        if (cert == nullptr) return Answer::doubt;
        chain_.push_back(cert);
    }
    if (chain_.empty() ||
        !still_unrevoked(X509_VERIFY_PARAM_get_flags(X509_STORE_CTX_get0_param(store_ctx)))) {
        return Answer::doubt;
    }
    STACK_OF(X509)* verified = sk_X509_new_reserve(nullptr, static_cast<int>(chain_.size()));
    if (verified == nullptr) return Answer::doubt;
    for (X509* cert : chain_) {
        if (X509_up_ref(cert) != 1) {
            OSSL_STACK_OF_X509_free(verified);
            return Answer::doubt;
        }
        sk_X509_push(verified, cert);  // cannot fail: the room was reserved
    }
    X509_STORE_CTX_set0_verified_chain(store_ctx, verified);
    X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
    // What a successful X509_verify_cert ends with: the callback at each
    // depth, anchor first, told the certificate is good.
    const X509_STORE_CTX_verify_cb callback = X509_STORE_CTX_get_verify_cb(store_ctx);
    for (int depth = static_cast<int>(chain_.size()) - 1; depth >= 0; --depth) {
        X509_STORE_CTX_set_error_depth(store_ctx, depth);
        X509_STORE_CTX_set_current_cert(store_ctx, chain_[static_cast<std::size_t>(depth)]);
        if (callback != nullptr && callback(1, store_ctx) == 0) {
            if (X509_STORE_CTX_get_error(store_ctx) == X509_V_OK)
                X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
            return Answer::refused;
        }
    }
    return Answer::accepted;
}

// The certificates X509_verify_cert checks against CRLs (the leaf, or the
// whole chain with CRL_CHECK_ALL) are on no CRL of their issuer's name. Any
// entry at all, removeFromCRL included, is a doubt for the full verification.
bool VerifiedChainCache::still_unrevoked(unsigned long flags) const {
    if ((flags & X509_V_FLAG_CRL_CHECK) == 0) return true;
    const std::size_t checked = (flags & X509_V_FLAG_CRL_CHECK_ALL) != 0 ? chain_.size() : 1;
    for (std::size_t i = 0; i < checked; ++i) {
        X509* cert = chain_[i];
        const X509_NAME* issuer = X509_get_issuer_name(cert);
        for (const auto& crl : crls_) {
            if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), issuer) != 0) continue;
            X509_REVOKED* revoked = nullptr;
            if (X509_CRL_get0_by_cert(crl.get(), &revoked, cert) != 0) return false;
        }
    }
    return true;
}

void VerifiedChainCache::store(const Key& key, std::int64_t verified_at,
                               X509_STORE_CTX* store_ctx) {
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
    const int length = sk_X509_num(chain);
    if (length <= 0) return;
    Entry entry;
    entry.key = key;
    entry.verified_at = verified_at;
    std::int64_t expires = next_store_change_from(verified_at);
    for (X509* cert : presented_) {
        // A presented certificate not yet valid may become the preferred issuer.
        std::int64_t not_before = 0;
        if (!to_posix(X509_get0_notBefore(cert), not_before)) return;
        if (not_before >= verified_at) expires = std::min(expires, not_before);
    }
    entry.chain.reserve(static_cast<std::size_t>(length));
    for (int i = 0; i < length; ++i) {
        X509* cert = sk_X509_value(chain, i);
        std::int64_t not_after = 0;
        if (!to_posix(X509_get0_notAfter(cert), not_after)) return;
        expires = std::min(expires, not_after);
        Link link;
        const auto at = std::find(presented_.begin(), presented_.end(), cert);
        if (at != presented_.end()) {
            link.presented = static_cast<int>(at - presented_.begin());
        } else {
            if (X509_up_ref(cert) != 1) return;
            link.kept.reset(cert);
        }
        entry.chain.push_back(std::move(link));
    }
    if (expires <= verified_at) return;
    entry.expires_at = expires;
    if (const auto stale = index_.find(key); stale != index_.end()) erase(stale->second);
    if (index_.size() >= capacity_) {
        erase(std::prev(lru_.end()));
        report(ChainCacheEvent::eviction);
    }
    lru_.push_front(std::move(entry));
    index_.emplace(key, lru_.begin());
}

// The first change at or after `t`: a change at `t` itself may already apply.
std::int64_t VerifiedChainCache::next_store_change_from(std::int64_t t) const {
    const auto next = std::lower_bound(store_changes_.begin(), store_changes_.end(), t);
    return next == store_changes_.end() ? forever : *next;
}

void VerifiedChainCache::erase(Lru::iterator entry) {
    index_.erase(entry->key);
    lru_.erase(entry);
}

void VerifiedChainCache::report(ChainCacheEvent event) const {
    if (events_ != nullptr) events_->chain_cache(event);
}

}  // namespace portcullis::crypto
