// What the revocation fetcher's two kinds of source (CRLs, mgmt/crl_fetcher.hpp;
// OCSP responses to staple, mgmt/ocsp_staple_fetcher.hpp) share: one HTTP
// exchange with a deadline, the hand-over of a file to the workers, the
// schedule of the next fetch, and the status that /metrics mirrors.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "mgmt/fetch_stats.hpp"

namespace portcullis::mgmt {

using FetchClock = std::chrono::system_clock;

struct HttpAnswer {
    std::string error;  // "" = the server answered
    int status = 0;
    std::string body;
    std::string last_modified;
};

// `url` is http://host[:port][/path]; `timeout` bounds connecting and reading.
HttpAnswer http_get(const std::string& url, std::chrono::milliseconds timeout,
                    const std::string& if_modified_since = "");
HttpAnswer http_post(const std::string& url, std::chrono::milliseconds timeout,
                     const std::string& content_type, std::string_view body);

// Temporary file, fsync, mode 0644, rename: a worker reads the old file or
// the new one, whole. False with `error` set when any step fails.
bool write_file_atomically(const std::string& path, std::string_view bytes, std::string& error);

// After a usable answer: in `refresh_s`, or halfway to `next_update` (Unix
// seconds, 0 = none) when that comes first, but not sooner than 1 s.
FetchClock::time_point refresh_due(FetchClock::time_point now, int refresh_s,
                                   std::int64_t next_update);
// After a failure: in 30 s, or in `refresh_s` when that is shorter.
FetchClock::time_point retry_due(FetchClock::time_point now, int refresh_s);

// One source as the fetcher last saw it.
struct FetchStatus {
    std::string last_result;        // "" before the first fetch; "ok", "not modified" or why not
    std::int64_t last_attempt = 0;  // Unix seconds, 0 = never
    std::int64_t last_success = 0;
    std::int64_t this_update = 0;  // of what is kept, 0 = nothing yet
    std::int64_t next_update = 0;
    std::uint64_t fetches_ok = 0, fetches_failed = 0, updates = 0;
};
// Copies `status` into its shared counters; null = not counted.
void publish(const FetchStatus& status, FetchStats* counters);

// The round both fetchers run over their sources (each with due, status and
// counters): `fetch` every source whose time has come, publish what it saw;
// true when any fetch changed a file on disk.
template <typename Sources, typename Fetch>
bool fetch_sources_due(Sources& sources, FetchClock::time_point now, Fetch fetch) {
    bool changed = false;
    for (auto& source : sources) {
        if (source.due > now) continue;
        changed |= fetch(source);
        publish(source.status, source.counters);
    }
    return changed;
}

template <typename Sources>
FetchClock::time_point earliest_due(const Sources& sources) {
    auto next = FetchClock::time_point::max();
    for (const auto& source : sources) next = std::min(next, source.due);
    return next;
}

}  // namespace portcullis::mgmt
