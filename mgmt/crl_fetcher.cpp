#include "mgmt/crl_fetcher.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/unique_fd.hpp"
#include "crypto/openssl_handles.hpp"

namespace portcullis::mgmt {
namespace {

namespace fs = std::filesystem;
using crypto::UniqueBio;
using crypto::UniqueX509;
using crypto::UniqueX509Crl;

constexpr auto clock_skew = std::chrono::seconds(60);
constexpr auto retry_after_failure = std::chrono::seconds(30);

std::int64_t unix_time(const ASN1_TIME* time) {
    if (time == nullptr) return 0;
    std::tm tm{};
    if (ASN1_TIME_to_tm(time, &tm) != 1) return 0;
    return static_cast<std::int64_t>(::timegm(&tm));
}

UniqueX509Crl parse_crl(const std::string& bytes) {
    UniqueBio pem(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    UniqueX509Crl crl(PEM_read_bio_X509_CRL(pem.get(), nullptr, nullptr, nullptr));
    if (!crl) {
        const auto* der = reinterpret_cast<const unsigned char*>(bytes.data());
        crl.reset(d2i_X509_CRL(nullptr, &der, static_cast<long>(bytes.size())));
    }
    ERR_clear_error();
    return crl;
}

UniqueX509Crl read_kept(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return nullptr;
    std::ostringstream text;
    text << file.rdbuf();
    return parse_crl(text.str());
}

std::vector<UniqueX509> read_certificates(const std::string& path) {
    std::vector<UniqueX509> certificates;
    UniqueBio file(BIO_new_file(path.c_str(), "r"));
    while (file) {
        UniqueX509 certificate(PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr));
        if (!certificate) break;
        certificates.push_back(std::move(certificate));
    }
    ERR_clear_error();
    return certificates;
}

// Why `crl` must not be used, or "".
std::string unusable(X509_CRL* crl, const std::string& trust_file, std::int64_t now) {
    bool named = false;
    for (const auto& ca : read_certificates(trust_file)) {
        if (X509_NAME_cmp(X509_get_subject_name(ca.get()), X509_CRL_get_issuer(crl)) != 0) continue;
        named = true;
        if (X509_CRL_verify(crl, X509_get0_pubkey(ca.get())) == 1) {
            ERR_clear_error();
            const std::int64_t this_update = unix_time(X509_CRL_get0_lastUpdate(crl));
            const std::int64_t next_update = unix_time(X509_CRL_get0_nextUpdate(crl));
            if (this_update > now + clock_skew.count()) return "thisUpdate is in the future";
            if (next_update != 0 && next_update < now) return "nextUpdate has passed";
            return "";
        }
        ERR_clear_error();
    }
    return named ? "signature does not verify with any trusted CA of its issuer name"
                 : "its issuer is no CA of the trust bundle";
}

// Temporary file, fsync, rename: a reader sees the old CRL or the new, whole.
bool write_atomically(const std::string& path, X509_CRL* crl, std::string& error) {
    const std::string temporary = path + ".tmp";
    {
        UniqueBio out(BIO_new_file(temporary.c_str(), "w"));
        if (!out || PEM_write_bio_X509_CRL(out.get(), crl) != 1) {
            error = "cannot write " + temporary;
            ERR_clear_error();
            return false;
        }
    }
    const base::UniqueFd fd(::open(temporary.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0 || ::chmod(temporary.c_str(), 0644) != 0 ||
        ::rename(temporary.c_str(), path.c_str()) != 0) {
        error = "cannot put " + path + " in place: " + std::strerror(errno);
        return false;
    }
    return true;
}

bool same_crl(X509_CRL* a, X509_CRL* b) {
    unsigned char* der_a = nullptr;
    unsigned char* der_b = nullptr;
    const int length_a = i2d_X509_CRL(a, &der_a);
    const int length_b = i2d_X509_CRL(b, &der_b);
    const bool same =
        length_a > 0 && length_a == length_b && std::equal(der_a, der_a + length_a, der_b);
    OPENSSL_free(der_a);
    OPENSSL_free(der_b);
    return same;
}

}  // namespace

void CrlFetcher::publish(Source& source) {
    if (source.counters == nullptr) return;
    auto& c = *source.counters;
    const auto& s = source.status;
    c.fetches_ok.set(s.fetches_ok);
    c.fetches_failed.set(s.fetches_failed);
    c.updates.set(s.updates);
    c.last_attempt_unix.set(static_cast<std::uint64_t>(s.last_attempt));
    c.last_success_unix.set(static_cast<std::uint64_t>(s.last_success));
    c.this_update_unix.set(static_cast<std::uint64_t>(s.this_update));
    c.next_update_unix.set(static_cast<std::uint64_t>(s.next_update));
}

CrlFetcher::CrlFetcher(const Config& config, CrlFetchStats* stats)
    : timeout_(config.revocation.fetch_timeout_ms) {
    const auto now = Clock::now();
    for (const auto& source : config.crl_sources) {
        Source entry;
        if (stats != nullptr && sources_.size() < max_crl_sources)
            entry.counters = &stats[sources_.size()];
        entry.config = source;
        entry.listener = config.listeners.at(source.listener).name;
        entry.due = now;
        entry.status.url = source.url;
        entry.status.listener = entry.listener;
        if (const auto kept = read_kept(source.cache_file)) {
            entry.status.this_update = unix_time(X509_CRL_get0_lastUpdate(kept.get()));
            entry.status.next_update = unix_time(X509_CRL_get0_nextUpdate(kept.get()));
        }
        publish(entry);
        sources_.push_back(std::move(entry));
    }
    std::error_code error;
    if (!sources_.empty()) fs::create_directories(config.revocation.cache_dir, error);
}

bool CrlFetcher::fetch_due(Clock::time_point now) {
    bool changed = false;
    for (auto& source : sources_) {
        if (source.due > now) continue;
        changed |= fetch(source, now);
        publish(source);
    }
    return changed;
}

CrlFetcher::Clock::time_point CrlFetcher::next_due() const {
    auto next = Clock::time_point::max();
    for (const auto& source : sources_) next = std::min(next, source.due);
    return next;
}

std::vector<CrlSourceStatus> CrlFetcher::status() const {
    const std::lock_guard lock(mutex_);
    std::vector<CrlSourceStatus> all;
    for (const auto& source : sources_) all.push_back(source.status);
    return all;
}

bool CrlFetcher::fetch(Source& source, Clock::time_point now) {
    const std::int64_t unix_now = Clock::to_time_t(now);
    const auto& url = source.config.url;
    const auto slash = url.find('/', 7);
    httplib::Client client(url.substr(0, slash));
    client.set_connection_timeout(timeout_);
    client.set_read_timeout(timeout_);
    httplib::Headers headers;
    if (!source.last_modified.empty()) headers.emplace("If-Modified-Since", source.last_modified);
    const auto answer = client.Get(url.substr(slash), headers);

    const auto schedule = [&](std::int64_t next_update) {
        auto due = now + std::chrono::seconds(source.config.refresh_s);
        if (next_update > unix_now) {
            const auto halfway = now + std::chrono::seconds((next_update - unix_now) / 2);
            due = std::min(due, std::max(halfway, now + std::chrono::seconds(1)));
        }
        source.due = due;
    };
    const std::lock_guard lock(mutex_);
    auto& status = source.status;
    status.last_attempt = unix_now;
    const auto fail = [&](const std::string& why) {
        status.last_result = why;
        ++status.fetches_failed;
        source.due = now + std::min<std::chrono::seconds>(
                               retry_after_failure, std::chrono::seconds(source.config.refresh_s));
        spdlog::warn("crl fetch failed listener={} url={} reason=\"{}\"{}", source.listener, url,
                     why, status.this_update != 0 ? " (keeping the CRL already loaded)" : "");
        return false;
    };
    if (!answer) return fail("no answer: " + httplib::to_string(answer.error()));
    if (answer->status == 304) {
        status.last_result = "not modified";
        status.last_success = unix_now;
        ++status.fetches_ok;
        schedule(status.next_update);
        return false;
    }
    if (answer->status != 200) return fail("HTTP status " + std::to_string(answer->status));
    const auto crl = parse_crl(answer->body);
    if (!crl) return fail("the answer is no CRL (PEM or DER)");
    if (const auto why = unusable(crl.get(), source.config.trust_file, unix_now); !why.empty())
        return fail("CRL refused: " + why);
    const std::int64_t this_update = unix_time(X509_CRL_get0_lastUpdate(crl.get()));
    const std::int64_t next_update = unix_time(X509_CRL_get0_nextUpdate(crl.get()));
    const auto kept = read_kept(source.config.cache_file);
    if (kept && this_update < unix_time(X509_CRL_get0_lastUpdate(kept.get())))
        return fail("CRL refused: older than the one kept (a rollback)");
    status.last_success = unix_now;
    status.last_result = "ok";
    ++status.fetches_ok;
    source.last_modified = answer->get_header_value("Last-Modified");
    schedule(next_update);
    if (kept && same_crl(kept.get(), crl.get())) return false;
    std::string error;
    if (!write_atomically(source.config.cache_file, crl.get(), error)) return fail(error);
    status.this_update = this_update;
    status.next_update = next_update;
    ++status.updates;
    const auto* revoked = X509_CRL_get_REVOKED(crl.get());
    spdlog::info("crl updated listener={} url={} revoked={} next_update={}", source.listener, url,
                 revoked ? sk_X509_REVOKED_num(revoked) : 0, next_update);
    return true;
}

}  // namespace portcullis::mgmt
