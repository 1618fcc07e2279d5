// Counters of the CRL fetcher (mgmt/crl_fetcher.hpp), one slot per
// crl_urls source in configuration order, in a shared mapping the supervisor
// makes before it forks: the fetcher process is their one writer, the admin
// process reads them for /metrics.
#pragma once

#include <cstddef>

#include "base/counter.hpp"

namespace portcullis::mgmt {

inline constexpr std::size_t max_crl_sources = 64;

struct CrlFetchStats {
    base::Counter fetches_ok;      // usable CRL or 304 Not Modified
    base::Counter fetches_failed;  // no answer, HTTP error, or a CRL refused
    base::Counter updates;         // a new CRL kept
    base::Counter last_attempt_unix;
    base::Counter last_success_unix;
    base::Counter this_update_unix;  // of the CRL kept; 0 = none yet
    base::Counter next_update_unix;
};

}  // namespace portcullis::mgmt
