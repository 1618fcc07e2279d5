// Counters of the revocation fetcher (mgmt/crl_fetcher.hpp,
// mgmt/ocsp_staple_fetcher.hpp): one slot per crl_urls source and one per
// stapled server certificate, in configuration order, in a shared mapping
// the supervisor makes before it forks. The fetcher process is their one
// writer; the admin process reads them for /metrics.
#pragma once

#include <cstddef>

#include "base/counter.hpp"

namespace portcullis::mgmt {

inline constexpr std::size_t max_crl_sources = 64;
inline constexpr std::size_t max_staple_sources = 64;

struct FetchStats {
    base::Counter fetches_ok;      // usable answer (or 304 Not Modified for a CRL)
    base::Counter fetches_failed;  // no answer, HTTP error, or an answer refused
    base::Counter updates;         // a new CRL or OCSP response kept
    base::Counter last_attempt_unix;
    base::Counter last_success_unix;
    base::Counter this_update_unix;  // of what is kept; 0 = nothing yet
    base::Counter next_update_unix;
    base::Counter last_failed;  // 1: the last fetch gave nothing usable
};

}  // namespace portcullis::mgmt
