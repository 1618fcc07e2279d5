// OCSP responses for the server certificates of listeners with
// tls.ocsp_stapling, fetched ahead of expiry by the revocation fetcher
// process and kept on disk for the workers to staple (the workers never
// touch the network).
//
// Per certificate, each fetch:
//   - reads the leaf and its issuer from the certificate's chain file (so a
//     renewed certificate is asked about from the next fetch on);
//   - POSTs an OCSP request to the responder (ocsp_stapling_responder, or the
//     leaf's Authority Information Access) with revocation.fetch_timeout_ms
//     for connecting and for reading;
//   - keeps the response only when crypto::check_ocsp_response passes it
//     (signed by the issuer or its delegated responder, about this leaf,
//     fresh), writing it atomically to the leaf's file in cache_dir, where a
//     restart without network still finds it;
//   - schedules the next fetch at ocsp_stapling_refresh_s or halfway to the
//     response's nextUpdate, whichever comes first; after a failure, in 30 s
//     at most. A kept response past its nextUpdate is not stapled.
// fetch_due() returns true when a kept response changed: the caller then has
// the workers build their contexts again (a reload of the same configuration).
#pragma once

#include <string>
#include <vector>

#include "mgmt/config.hpp"
#include "mgmt/http_fetch.hpp"

namespace portcullis::mgmt {

class OcspStapleFetcher {
  public:
    using Clock = FetchClock;

    // `stats`: max_staple_sources slots, zeroed here; null = not counted.
    OcspStapleFetcher(const Config& config, FetchStats* stats = nullptr);

    bool fetch_due(Clock::time_point now = Clock::now());
    Clock::time_point next_due() const;

  private:
    struct Source {
        OcspStapleSource config;
        std::string listener;
        Clock::time_point due;
        FetchStatus status;
        FetchStats* counters = nullptr;
    };
    bool fetch(Source& source, Clock::time_point now);

    std::vector<Source> sources_;
    std::chrono::milliseconds timeout_;
};

}  // namespace portcullis::mgmt
