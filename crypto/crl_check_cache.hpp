// OpenSSL checks a CRL before using it (its issuer's key usage, its scope,
// its validity period and its signature) every time it verifies a chain
// against it: one signature verification per CRL per handshake, ~0.86 M of
// the ~8 M instructions of a full TLS 1.3 mTLS handshake. Of those checks
// only the validity period can change between two handshakes.
//
// install_crl_check_cache(store) puts a check in front of OpenSSL's own for
// every chain verified with `store`:
//   - the first time a CRL passes OpenSSL's check, with no error raised, for
//     a given issuer certificate (by its DER) and a given issuer name of the
//     certificate being checked, that combination is remembered;
//   - a later check of the same combination whose verification time lies
//     strictly inside the CRL's thisUpdate..nextUpdate succeeds without
//     verifying the signature again;
//   - everything else goes to OpenSSL's check unchanged: an unknown
//     combination, a time at or outside the window, a CRL with an issuing
//     distribution point or a delta indicator, a context that already holds
//     an error, X509_V_FLAG_NO_CHECK_TIME, delta or extended CRL support.
// Whether the certificate is on the CRL is a separate OpenSSL step and
// always runs. The cache pins the CRLs it names, is freed with the store and
// holds at most max_entries combinations; beyond that, checks are OpenSSL's.
// A store with a cache is used by one thread at a time (each worker process
// verifies on its own thread).
#pragma once

#include <openssl/x509_vfy.h>

#include <cstddef>
#include <cstdint>

namespace portcullis::crypto {

struct CrlCheckCacheStats {
    std::uint64_t hits = 0;    // checks answered from the cache
    std::uint64_t misses = 0;  // checks handed to OpenSSL (remembered or not)
    std::size_t entries = 0;
};

inline constexpr std::size_t crl_check_cache_max_entries = 256;

// Throws std::runtime_error if OpenSSL cannot attach the cache.
void install_crl_check_cache(X509_STORE* store);

// Zeroes when `store` has no cache.
CrlCheckCacheStats crl_check_cache_stats(const X509_STORE* store);

}  // namespace portcullis::crypto
