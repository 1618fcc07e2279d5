// CRLs a listener fetches over HTTP (listener[].tls.crl_urls), kept current
// on disk for the workers to load. The revocation fetcher process runs it,
// so a slow or dead CRL server never holds up anything else; the workers
// never touch the network.
//
// Per source, each fetch:
//   - GETs the URL (If-Modified-Since the last answer's Last-Modified) with
//     revocation.fetch_timeout_ms for connecting and for reading;
//   - takes a PEM or DER CRL only when it is signed by a CA of the
//     listener's trust bundle with the CRL's issuer name, its thisUpdate is
//     not in the future (60 s of clock skew allowed), its nextUpdate is not
//     past, and it is not older than the copy already kept (no rollback);
//   - writes a new one to the source's cache file (temporary file, fsync,
//     rename), where a restart without network still finds it;
//   - schedules the next fetch at the refresh period or halfway to the CRL's
//     nextUpdate, whichever comes first; after a failure, in 30 s at most.
// fetch_due() returns true when a cache file changed: the caller then has
// the workers load their CRLs again (a reload of the same configuration),
// and reloaded CRLs end the connections they revoke.
#pragma once

#include <string>
#include <vector>

#include "mgmt/config.hpp"
#include "mgmt/http_fetch.hpp"

namespace portcullis::mgmt {

class CrlFetcher {
  public:
    using Clock = FetchClock;

    // `stats`: max_crl_sources slots, zeroed here; null = not counted.
    CrlFetcher(const Config& config, FetchStats* stats = nullptr);

    // Fetches every source whose time has come; true when a CRL on disk changed.
    bool fetch_due(Clock::time_point now = Clock::now());
    Clock::time_point next_due() const;

  private:
    struct Source {
        CrlSource config;
        std::string listener;
        std::string last_modified;
        Clock::time_point due;
        FetchStatus status;
        FetchStats* counters = nullptr;
    };
    bool fetch(Source& source, Clock::time_point now);

    std::vector<Source> sources_;
    std::chrono::milliseconds timeout_;
};

}  // namespace portcullis::mgmt
