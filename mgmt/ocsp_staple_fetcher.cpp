#include "mgmt/ocsp_staple_fetcher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "crypto/ocsp_response.hpp"

namespace portcullis::mgmt {
namespace {

std::vector<unsigned char> read_bytes(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return {};
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

}  // namespace

OcspStapleFetcher::OcspStapleFetcher(const Config& config, FetchStats* stats)
    : timeout_(config.revocation.fetch_timeout_ms) {
    const auto now = Clock::now();
    for (const auto& source : config.staple_sources) {
        Source entry;
        if (stats != nullptr && sources_.size() < max_staple_sources)
            entry.counters = &stats[sources_.size()];
        entry.config = source;
        entry.listener = config.listeners.at(source.listener).name;
        entry.due = now;
        const auto chain = crypto::read_pem_certificates(source.chain_file);
        if (chain.size() >= 2) {
            X509* leaf = chain[0].get();
            const auto kept = read_bytes(crypto::ocsp_response_path(source.cache_dir, leaf));
            const auto answer =
                crypto::check_ocsp_response(kept, leaf, chain[1].get(), Clock::to_time_t(now));
            if (answer.problem.empty()) {
                entry.status.this_update = answer.this_update;
                entry.status.next_update = answer.next_update;
            }
        }
        publish(entry.status, entry.counters);
        sources_.push_back(std::move(entry));
    }
    std::error_code error;
    if (!sources_.empty()) std::filesystem::create_directories(config.revocation.cache_dir, error);
}

bool OcspStapleFetcher::fetch_due(Clock::time_point now) {
    return fetch_sources_due(sources_, now, [&](Source& source) { return fetch(source, now); });
}

OcspStapleFetcher::Clock::time_point OcspStapleFetcher::next_due() const {
    return earliest_due(sources_);
}

bool OcspStapleFetcher::fetch(Source& source, Clock::time_point now) {
    const std::int64_t unix_now = Clock::to_time_t(now);
    const auto& url = source.config.responder;
    auto& status = source.status;
    status.last_attempt = unix_now;
    const auto fail = [&](const std::string& why) {
        status.last_result = why;
        ++status.fetches_failed;
        source.due = retry_due(now, source.config.refresh_s);
        const bool fresh_kept = status.next_update > unix_now;
        spdlog::warn(
            "ocsp staple fetch failed listener={} certificate={} responder={} "
            "reason=\"{}\"{}",
            source.listener, source.config.chain_file, url, why,
            fresh_kept ? " (stapling the response kept until its nextUpdate)" : "");
        return false;
    };
    const auto chain = crypto::read_pem_certificates(source.config.chain_file);
    if (chain.size() < 2) return fail("the chain file holds no issuer after the leaf");
    X509* leaf = chain[0].get();
    X509* issuer = chain[1].get();
    const auto request = crypto::ocsp_request(leaf, issuer);
    if (request.empty()) return fail("cannot build the OCSP request");
    const auto answer =
        http_post(url, timeout_, "application/ocsp-request",
                  std::string_view(reinterpret_cast<const char*>(request.data()), request.size()));
    if (!answer.error.empty()) return fail(answer.error);
    if (answer.status != 200) return fail("HTTP status " + std::to_string(answer.status));
    const std::span<const unsigned char> der(
        reinterpret_cast<const unsigned char*>(answer.body.data()), answer.body.size());
    const auto checked = crypto::check_ocsp_response(der, leaf, issuer, unix_now);
    if (!checked.problem.empty()) return fail("response refused: " + checked.problem);
    const auto path = crypto::ocsp_response_path(source.config.cache_dir, leaf);
    const auto kept = read_bytes(path);
    const auto kept_answer = crypto::check_ocsp_response(kept, leaf, issuer, unix_now);
    if (kept_answer.problem.empty() && checked.this_update < kept_answer.this_update)
        return fail("response refused: older than the one kept (a rollback)");
    status.last_success = unix_now;
    status.last_result = "ok";
    ++status.fetches_ok;
    source.due = refresh_due(now, source.config.refresh_s, checked.next_update);
    if (std::equal(kept.begin(), kept.end(), der.begin(), der.end())) return false;
    std::string error;
    if (!write_file_atomically(path, answer.body, error)) return fail(error);
    status.this_update = checked.this_update;
    status.next_update = checked.next_update;
    ++status.updates;
    const auto log_level =
        checked.status == crypto::OcspCertStatus::good ? spdlog::level::info : spdlog::level::err;
    spdlog::log(log_level,
                "ocsp staple updated listener={} certificate={} responder={} cert_status={} "
                "next_update={}",
                source.listener, source.config.chain_file, url, crypto::to_string(checked.status),
                checked.next_update);
    return true;
}

}  // namespace portcullis::mgmt
