#include "mgmt/crl_fetcher.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "crypto/asn1_time.hpp"
#include "crypto/openssl_handles.hpp"

namespace portcullis::mgmt {
namespace {

namespace fs = std::filesystem;
using crypto::UniqueBio;
using crypto::UniqueX509Crl;

constexpr std::int64_t clock_skew_s = 60;

std::int64_t unix_time(const ASN1_TIME* time) {
    return crypto::unix_seconds(time).value_or(0);
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

// Why `crl` must not be used, or "".
std::string unusable(X509_CRL* crl, const std::string& trust_file, std::int64_t now) {
    bool named = false;
    for (const auto& ca : crypto::read_pem_certificates(trust_file)) {
        if (X509_NAME_cmp(X509_get_subject_name(ca.get()), X509_CRL_get_issuer(crl)) != 0) continue;
        named = true;
        if (X509_CRL_verify(crl, X509_get0_pubkey(ca.get())) == 1) {
            ERR_clear_error();
            const std::int64_t this_update = unix_time(X509_CRL_get0_lastUpdate(crl));
            const std::int64_t next_update = unix_time(X509_CRL_get0_nextUpdate(crl));
            if (this_update > now + clock_skew_s) return "thisUpdate is in the future";
            if (next_update != 0 && next_update < now) return "nextUpdate has passed";
            return "";
        }
        ERR_clear_error();
    }
    return named ? "signature does not verify with any trusted CA of its issuer name"
                 : "its issuer is no CA of the trust bundle";
}

std::string pem_of(X509_CRL* crl) {
    UniqueBio out(BIO_new(BIO_s_mem()));
    if (!out || PEM_write_bio_X509_CRL(out.get(), crl) != 1) {
        ERR_clear_error();
        return {};
    }
    char* data = nullptr;
    const long length = BIO_get_mem_data(out.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
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

CrlFetcher::CrlFetcher(const Config& config, FetchStats* stats)
    : timeout_(config.revocation.fetch_timeout_ms) {
    const auto now = Clock::now();
    for (const auto& source : config.crl_sources) {
        Source entry;
        if (stats != nullptr && sources_.size() < max_crl_sources)
            entry.counters = &stats[sources_.size()];
        entry.config = source;
        entry.listener = config.listeners.at(source.listener).name;
        entry.due = now;
        if (const auto kept = read_kept(source.cache_file)) {
            entry.status.this_update = unix_time(X509_CRL_get0_lastUpdate(kept.get()));
            entry.status.next_update = unix_time(X509_CRL_get0_nextUpdate(kept.get()));
        }
        publish(entry.status, entry.counters);
        sources_.push_back(std::move(entry));
    }
    std::error_code error;
    if (!sources_.empty()) fs::create_directories(config.revocation.cache_dir, error);
}

bool CrlFetcher::fetch_due(Clock::time_point now) {
    return fetch_sources_due(sources_, now, [&](Source& source) { return fetch(source, now); });
}

CrlFetcher::Clock::time_point CrlFetcher::next_due() const {
    return earliest_due(sources_);
}

bool CrlFetcher::fetch(Source& source, Clock::time_point now) {
    const std::int64_t unix_now = Clock::to_time_t(now);
    const auto& url = source.config.url;
    const auto answer = http_get(url, timeout_, source.last_modified);
    auto& status = source.status;
    status.last_attempt = unix_now;
    const auto fail = [&](const std::string& why) {
        status.last_result = why;
        ++status.fetches_failed;
        source.due = retry_due(now, source.config.refresh_s);
        spdlog::warn("crl fetch failed listener={} url={} reason=\"{}\"{}", source.listener, url,
                     why, status.this_update != 0 ? " (keeping the CRL already loaded)" : "");
        return false;
    };
    if (!answer.error.empty()) return fail(answer.error);
    if (answer.status == 304) {
        status.last_result = "not modified";
        status.last_success = unix_now;
        ++status.fetches_ok;
        source.due = refresh_due(now, source.config.refresh_s, status.next_update);
        return false;
    }
    if (answer.status != 200) return fail("HTTP status " + std::to_string(answer.status));
    const auto crl = parse_crl(answer.body);
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
    source.last_modified = answer.last_modified;
    source.due = refresh_due(now, source.config.refresh_s, next_update);
    if (kept && same_crl(kept.get(), crl.get())) return false;
    const std::string pem = pem_of(crl.get());
    std::string error;
    if (pem.empty()) return fail("cannot encode the CRL as PEM");
    if (!write_file_atomically(source.config.cache_file, pem, error)) return fail(error);
    status.this_update = this_update;
    status.next_update = next_update;
    ++status.updates;
    const auto* revoked = X509_CRL_get_REVOKED(crl.get());
    spdlog::info("crl updated listener={} url={} revoked={} next_update={}", source.listener, url,
                 revoked ? sk_X509_REVOKED_num(revoked) : 0, next_update);
    return true;
}

}  // namespace portcullis::mgmt
