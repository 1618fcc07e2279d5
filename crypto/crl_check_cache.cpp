#include "crypto/crl_check_cache.hpp"

#include <openssl/objects.h>

#include <ctime>
#include <stdexcept>
#include <vector>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {
namespace {

// OpenSSL's own check, the one a context gets from a store without one.
X509_STORE_CTX_check_crl_fn openssl_check_crl() {
    static const X509_STORE_CTX_check_crl_fn check = [] {
        UniqueX509Store store(X509_STORE_new());
        UniqueX509StoreCtx ctx(X509_STORE_CTX_new());
        if (!store || !ctx || X509_STORE_CTX_init(ctx.get(), store.get(), nullptr, nullptr) != 1)
            return X509_STORE_CTX_check_crl_fn{};
        return X509_STORE_CTX_get_check_crl(ctx.get());
    }();
    return check;
}

class CrlCheckCache {
  public:
    explicit CrlCheckCache(X509_STORE_CTX_check_crl_fn next) : next_(next) {}

    int check(X509_STORE_CTX* ctx, X509_CRL* crl) {
        const X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
        const unsigned long flags = X509_VERIFY_PARAM_get_flags(param);
        X509* subject = X509_STORE_CTX_get_current_cert(ctx);
        X509* issuer = X509_STORE_CTX_get0_current_issuer(ctx);
        if (!eligible(ctx, crl, flags, subject, issuer)) {
            ++stats_.misses;
            return next_(ctx, crl);
        }
        const X509_NAME* subject_issuer = X509_get_issuer_name(subject);
        const bool known = find(crl, issuer, subject_issuer);
        if (known && inside_validity(crl, param, flags)) {
            ++stats_.hits;
            return 1;
        }
        ++stats_.misses;
        const int verdict = next_(ctx, crl);
        // Only a clean pass is worth remembering: a check that raised an
        // error the verify callback chose to tolerate must be seen again.
        if (verdict == 1 && !known && X509_STORE_CTX_get_error(ctx) == X509_V_OK &&
            entries_.size() < crl_check_cache_max_entries)
            remember(crl, issuer, subject_issuer);
        return verdict;
    }

    CrlCheckCacheStats stats() const {
        auto s = stats_;
        s.entries = entries_.size();
        return s;
    }

  private:
    struct Entry {
        UniqueX509Crl crl;
        UniqueX509 issuer;
        UniqueX509Name subject_issuer;
    };

    // Direct CRLs of the certificate's own issuer in the path being built
    // (the anchor's own for the anchor),
    // nothing OpenSSL scores by the certificate itself (distribution points)
    // or completes from elsewhere (deltas, indirect CRLs).
    static bool eligible(X509_STORE_CTX* ctx, X509_CRL* crl, unsigned long flags, X509* subject,
                         X509* issuer) {
        if (subject == nullptr || issuer == nullptr) return false;
        if (X509_STORE_CTX_get_error(ctx) != X509_V_OK) return false;
        if ((flags & (X509_V_FLAG_NO_CHECK_TIME | X509_V_FLAG_USE_DELTAS |
                      X509_V_FLAG_EXTENDED_CRL_SUPPORT)) != 0)
            return false;
        if (X509_CRL_get_ext_by_NID(crl, NID_issuing_distribution_point, -1) >= 0 ||
            X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0)
            return false;
        STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
        const int depth = X509_STORE_CTX_get_error_depth(ctx);
        const int length = chain == nullptr ? 0 : sk_X509_num(chain);
        if (depth < 0 || depth >= length || sk_X509_value(chain, depth) != subject) return false;
        // The top of the path is a trust anchor checked against its own CRL.
        X509* above = depth + 1 < length ? sk_X509_value(chain, depth + 1) : subject;
        return above == issuer;
    }

    // Strictly after thisUpdate and strictly before nextUpdate; the edges,
    // a missing nextUpdate and unreadable times are OpenSSL's to judge.
    static bool inside_validity(X509_CRL* crl, const X509_VERIFY_PARAM* param,
                                unsigned long flags) {
        std::time_t at_time = 0;
        std::time_t* at = nullptr;
        if ((flags & X509_V_FLAG_USE_CHECK_TIME) != 0) {
            at_time = X509_VERIFY_PARAM_get_time(param);
            at = &at_time;
        }
        const ASN1_TIME* last = X509_CRL_get0_lastUpdate(crl);
        const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl);
        return last != nullptr && next != nullptr && X509_cmp_time(last, at) == -1 &&
               X509_cmp_time(next, at) == 1;
    }

    // X509_cmp compares the whole signed part of the certificates, so an
    // issuer that differs in any byte of its key, name or extensions misses.
    bool find(const X509_CRL* crl, const X509* issuer, const X509_NAME* subject_issuer) const {
        for (const auto& e : entries_)
            if (e.crl.get() == crl && X509_cmp(e.issuer.get(), issuer) == 0 &&
                X509_NAME_cmp(e.subject_issuer.get(), subject_issuer) == 0)
                return true;
        return false;
    }

    void remember(X509_CRL* crl, X509* issuer, const X509_NAME* subject_issuer) {
        UniqueX509Name name(X509_NAME_dup(subject_issuer));
        if (!name || X509_CRL_up_ref(crl) != 1) return;
        UniqueX509Crl pinned(crl);
        if (X509_up_ref(issuer) != 1) return;
        entries_.push_back({std::move(pinned), UniqueX509(issuer), std::move(name)});
    }

    X509_STORE_CTX_check_crl_fn next_;
    std::vector<Entry> entries_;
    CrlCheckCacheStats stats_;
};

void free_cache(void*, void* cache, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<CrlCheckCache*>(cache);
}

int cache_index() {
    static const int index = X509_STORE_get_ex_new_index(0, nullptr, nullptr, nullptr, free_cache);
    return index;
}

CrlCheckCache* cache_of(const X509_STORE* store) {
    if (store == nullptr || cache_index() < 0) return nullptr;
    return static_cast<CrlCheckCache*>(X509_STORE_get_ex_data(store, cache_index()));
}

int check_crl_with_cache(X509_STORE_CTX* ctx, X509_CRL* crl) {
    CrlCheckCache* cache = cache_of(X509_STORE_CTX_get0_store(ctx));
    if (cache == nullptr) return openssl_check_crl()(ctx, crl);
    return cache->check(ctx, crl);
}

}  // namespace

void install_crl_check_cache(X509_STORE* store) {
    if (cache_of(store) != nullptr) return;
    X509_STORE_CTX_check_crl_fn next = X509_STORE_get_check_crl(store);
    if (next == nullptr) next = openssl_check_crl();
    if (next == nullptr || cache_index() < 0)
        throw std::runtime_error("CRL check cache: OpenSSL's CRL check is not reachable");
    // The store's ex_data owns the cache from here: free_cache runs with X509_STORE_free.
    auto cache = std::make_unique<CrlCheckCache>(next);
    if (X509_STORE_set_ex_data(store, cache_index(), cache.get()) != 1)
        throw std::runtime_error("CRL check cache: cannot attach to the trust store");
    cache.release();
    X509_STORE_set_check_crl(store, check_crl_with_cache);
}

CrlCheckCacheStats crl_check_cache_stats(const X509_STORE* store) {
    const CrlCheckCache* cache = cache_of(store);
    return cache == nullptr ? CrlCheckCacheStats{} : cache->stats();
}

}  // namespace portcullis::crypto
