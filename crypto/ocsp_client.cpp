#include "crypto/ocsp_client.hpp"

#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <ctime>
#include <utility>

namespace portcullis::crypto {

// One responder lookup: the loop thread makes it and waits (its handshake
// paused), a lookup thread fills it in. The outputs are written before the
// state leaves `pending` (release) and read only after finished() (acquire);
// an abandoned lookup's outputs are never read.
class OcspLookup final : public PendingKeyOperation {
  public:
    enum State : int { pending = 0, done = 1, abandoned = 2 };

    std::string url;
    std::vector<unsigned char> request;
    UniqueX509 cert;
    UniqueX509 issuer;
    std::string cache_path;  // "" = not kept on disk
    KeyCompletionSink* sink = nullptr;
    std::shared_ptr<OcspLookup> self;     // what the sink is handed
    bool background = false;              // a refresh: nobody waits, collect_refreshes() takes it
    std::array<unsigned char, 32> key{};  // a refresh's certificate digest
    Clock::time_point deadline_at;

    OcspAnswer answer;
    std::string failure;  // set when there is no usable answer

    std::atomic<int> state{pending};

    Clock::time_point deadline() const override { return deadline_at; }
    bool finished() const override { return state.load(std::memory_order_acquire) != pending; }
    void abandon(KeyAbandonReason) override {
        int expected = pending;
        if (state.compare_exchange_strong(expected, abandoned, std::memory_order_acq_rel))
            state.notify_all();
    }
    std::string why_failed() const override {
        return state.load(std::memory_order_acquire) == abandoned ? "no answer in time" : failure;
    }
    // On the lookup thread: false when the loop thread gave up first.
    bool complete() {
        int expected = pending;
        if (!state.compare_exchange_strong(expected, done, std::memory_order_acq_rel)) return false;
        state.notify_all();
        return true;
    }
};

namespace {

// Fetched once per process: an implicit fetch per handshake would take
// OpenSSL's name-lookup lock every time.
const EVP_MD* sha256() {
    static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(
        EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
    return md.get();
}

OcspVerdict verdict_of(OcspCertStatus status, OcspSource source, std::string detail = {}) {
    OcspVerdict verdict;
    verdict.source = source;
    verdict.detail = std::move(detail);
    verdict.kind = status == OcspCertStatus::good      ? OcspVerdict::Kind::good
                   : status == OcspCertStatus::revoked ? OcspVerdict::Kind::revoked
                                                       : OcspVerdict::Kind::unknown;
    return verdict;
}

OcspVerdict unavailable(std::string why) {
    OcspVerdict verdict;
    verdict.kind = OcspVerdict::Kind::unavailable;
    verdict.detail = std::move(why);
    return verdict;
}

UniqueX509 up_ref(X509* cert) {
    return UniqueX509(X509_up_ref(cert) == 1 ? cert : nullptr);
}

}  // namespace

const char* to_string(OcspVerdict::Kind kind) {
    switch (kind) {
        case OcspVerdict::Kind::good:
            return "good";
        case OcspVerdict::Kind::revoked:
            return "revoked";
        case OcspVerdict::Kind::unknown:
            return "unknown";
        case OcspVerdict::Kind::unavailable:
            break;
    }
    return "unavailable";
}

const char* to_string(OcspSource source) {
    switch (source) {
        case OcspSource::memory:
            return "memory";
        case OcspSource::shared_cache:
            return "shared_cache";
        case OcspSource::responder:
            break;
    }
    return "responder";
}

std::size_t OcspClient::KeyHash::operator()(const Key& key) const {
    std::size_t h;
    std::memcpy(&h, key.data(), sizeof h);  // a SHA-256 prefix is already uniform
    return h;
}

OcspClient::OcspClient(OcspTransport transport, OcspClientSettings settings)
    : transport_(std::move(transport)), settings_(std::move(settings)) {
    const std::size_t threads = settings_.threads == 0 ? 1 : settings_.threads;
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run_lookups(); });
}

OcspClient::~OcspClient() {
    {
        const std::lock_guard lock(queue_mutex_);
        stopping_ = true;
    }
    queue_ready_.notify_all();
    for (auto& thread : threads_) thread.join();
}

bool OcspClient::key_of(X509* cert, Key& key) const {
    return digest_of(cert, key);
}

bool OcspClient::digest_of(X509* cert, CertDigest& key) {
    unsigned int length = 0;
    if (X509_digest(cert, sha256(), key.data(), &length) != 1 || length != key.size()) {
        ERR_clear_error();
        return false;
    }
    return true;
}

void OcspClient::remember(const Key& key, const OcspAnswer& answer, X509* issuer) {
    if (answer.status == OcspCertStatus::revoked) {
        if (revoked_.insert(key).second) learned_.push_back(key);
        memory_.erase(key);  // its arrival_order_ slot goes when it comes round
        return;
    }
    // A revocation is final: a good answer that comes later (a lookup that
    // was in flight) does not undo it.
    if (revoked_.contains(key)) return;
    auto [entry, inserted] = memory_.try_emplace(key);
    entry->second.status = answer.status;
    entry->second.next_update = answer.next_update;
    entry->second.has_issuer = issuer != nullptr && key_of(issuer, entry->second.issuer);
    if (!inserted) return;
    arrival_order_.push_back(key);
    // The newest is last in arrival order: it stays while memory_entries >= 1.
    while (memory_.size() > settings_.memory_entries && arrival_order_.size() > 1) {
        memory_.erase(arrival_order_.front());
        arrival_order_.pop_front();
    }
}

bool OcspClient::revoked_along(Key key) const {
    // Bounded: a chain is no longer than the verification depth allows,
    // and a loop of issuers (none a real chain has) ends the walk.
    for (int depth = 0; depth < 16; ++depth) {
        if (revoked_.contains(key)) return true;
        const auto found = memory_.find(key);
        if (found == memory_.end() || !found->second.has_issuer || found->second.issuer == key)
            return false;
        key = found->second.issuer;
    }
    return false;
}

bool OcspClient::known_revoked(X509* cert) const {
    if (revoked_.empty()) return false;
    Key key;
    return key_of(cert, key) && revoked_.contains(key);
}

bool OcspClient::known_revoked_along_chain(X509* cert) const {
    if (revoked_.empty()) return false;
    Key key;
    return key_of(cert, key) && revoked_along(key);
}

bool OcspClient::has_current_answer(X509* cert, std::int64_t now) const {
    Key key;
    if (!key_of(cert, key)) return false;
    if (revoked_.contains(key)) return true;
    const auto found = memory_.find(key);
    return found != memory_.end() && found->second.status == OcspCertStatus::good &&
           now < found->second.next_update;
}

std::vector<OcspClient::CertDigest> OcspClient::take_learned_revocations() {
    return std::exchange(learned_, {});
}

bool OcspClient::learn_revoked(const CertDigest& digest) {
    if (!revoked_.insert(digest).second) return false;
    memory_.erase(digest);
    return true;
}

OcspVerdict OcspClient::check(X509* cert, X509* issuer, const std::string& responder, bool nonce,
                              KeyCompletionSink* sink) {
    const std::int64_t now = std::time(nullptr);
    Key key;
    const bool keyed = key_of(cert, key);
    if (keyed) {
        if (revoked_.contains(key)) return verdict_of(OcspCertStatus::revoked, OcspSource::memory);
        if (const auto found = memory_.find(key);
            found != memory_.end() && now < found->second.next_update) {
            return verdict_of(found->second.status, OcspSource::memory);
        }
    }
    const std::string cache_path = shared_path(cert);
    OcspAnswer kept;
    if (read_shared(cache_path, cert, issuer, nonce, now, kept)) {
        if (keyed) remember(key, kept, issuer);
        return verdict_of(kept.status, OcspSource::shared_cache);
    }

    const std::string url = responder.empty() ? ocsp_responder_of(cert) : responder;
    if (url.rfind("http://", 0) != 0) {
        return unavailable(url.empty() ? "the certificate names no responder"
                                       : "responder " + url + " is not http://");
    }
    auto lookup = make_lookup(cert, issuer, url, nonce, cache_path);
    if (!lookup) return unavailable("cannot build the OCSP request");
    const bool in_job = ASYNC_get_current_job() != nullptr && sink != nullptr;
    if (in_job) {
        lookup->sink = sink;
        lookup->self = lookup;
    }
    enqueue(lookup);
    if (in_job) {
        sink->paused(lookup);
        while (!lookup->finished()) {
            if (ASYNC_pause_job() == 0) break;
        }
        // Nobody will resume this job for the lookup: stop waiting for it.
        lookup->abandon(KeyAbandonReason::cancelled);
    } else {
        while (lookup->state.load(std::memory_order_acquire) == OcspLookup::pending)
            lookup->state.wait(OcspLookup::pending, std::memory_order_acquire);
    }
    if (lookup->state.load(std::memory_order_acquire) != OcspLookup::done)
        return unavailable(url + ": no answer in time");
    if (!lookup->failure.empty()) return unavailable(lookup->failure);
    if (keyed) remember(key, lookup->answer, issuer);
    // An answer that came back good after another worker's news arrived:
    // the revocation stands.
    if (keyed && lookup->answer.status != OcspCertStatus::revoked && revoked_.contains(key))
        return verdict_of(OcspCertStatus::revoked, OcspSource::memory);
    return verdict_of(lookup->answer.status, OcspSource::responder, url);
}

std::string OcspClient::shared_path(X509* cert) const {
    return settings_.cache_dir.empty() ? std::string()
                                       : ocsp_response_path(settings_.cache_dir, cert);
}

bool OcspClient::read_shared(const std::string& path, X509* cert, X509* issuer, bool nonce,
                             std::int64_t now, OcspAnswer& answer) const {
    // A nonce proves the answer was made for this request, which a response
    // kept by another worker cannot: with nonces only this worker's memory of
    // what it asked itself counts.
    if (nonce || path.empty()) return false;
    const auto kept = read_ocsp_response(path);
    if (kept.empty()) return false;
    answer = check_ocsp_response(kept, cert, issuer, now);
    return answer.problem.empty();
}

std::shared_ptr<OcspLookup> OcspClient::make_lookup(X509* cert, X509* issuer,
                                                    const std::string& url, bool nonce,
                                                    const std::string& cache_path) const {
    auto lookup = std::make_shared<OcspLookup>();
    lookup->url = url;
    lookup->request = ocsp_request(cert, issuer, nonce);
    lookup->cert = up_ref(cert);
    lookup->issuer = up_ref(issuer);
    lookup->cache_path = cache_path;
    // The lookup thread's own timeout comes first; the margin lets its answer
    // arrive before the transport gives up.
    lookup->deadline_at =
        PendingKeyOperation::Clock::now() + settings_.timeout + std::chrono::milliseconds(250);
    if (lookup->request.empty() || !lookup->cert || !lookup->issuer) return nullptr;
    return lookup;
}

void OcspClient::enqueue(std::shared_ptr<OcspLookup> lookup) {
    {
        const std::lock_guard lock(queue_mutex_);
        // A paused handshake goes ahead of every background refresh.
        if (lookup->background) {
            queue_.push_back(std::move(lookup));
        } else {
            const auto first_refresh = std::find_if(
                queue_.begin(), queue_.end(),
                [](const std::shared_ptr<OcspLookup>& queued) { return queued->background; });
            queue_.insert(first_refresh, std::move(lookup));
        }
    }
    queue_ready_.notify_one();
}

void OcspClient::refresh(X509* cert, X509* issuer, const std::string& responder, bool nonce) {
    const std::int64_t now = std::time(nullptr);
    Key key;
    if (!key_of(cert, key) || revoked_.contains(key) || refreshing_.contains(key) ||
        refreshing_.size() >= max_refreshes_in_flight)
        return;
    // Any answer before its nextUpdate, unknown included, is not asked again.
    if (const auto found = memory_.find(key);
        found != memory_.end() && now < found->second.next_update)
        return;
    const std::string cache_path = shared_path(cert);
    if (OcspAnswer kept; read_shared(cache_path, cert, issuer, nonce, now, kept)) {
        remember(key, kept, issuer);
        return;
    }
    const std::string url = responder.empty() ? ocsp_responder_of(cert) : responder;
    if (url.rfind("http://", 0) != 0) return;
    auto lookup = make_lookup(cert, issuer, url, nonce, cache_path);
    if (!lookup) return;
    lookup->background = true;
    lookup->key = key;
    refreshing_.insert(key);
    enqueue(std::move(lookup));
}

std::size_t OcspClient::collect_refreshes(std::string& first_failure) {
    std::vector<std::shared_ptr<OcspLookup>> done;
    {
        const std::lock_guard lock(refreshed_mutex_);
        done.swap(refreshed_);
    }
    std::size_t failed = 0;
    for (const auto& lookup : done) {
        refreshing_.erase(lookup->key);
        if (!lookup->failure.empty()) {
            if (failed++ == 0) first_failure = lookup->failure;
            continue;
        }
        remember(lookup->key, lookup->answer, lookup->issuer.get());
    }
    return failed;
}

void OcspClient::run_lookups() {
    for (;;) {
        std::shared_ptr<OcspLookup> lookup;
        {
            std::unique_lock lock(queue_mutex_);
            queue_ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            // Stopping: a refresh has nobody waiting for it.
            if (stopping_)
                std::erase_if(queue_, [](const auto& queued) { return queued->background; });
            if (queue_.empty()) return;
            lookup = std::move(queue_.front());
            queue_.pop_front();
        }
        if (!lookup->finished()) look_up(*lookup);
        if (lookup->background) {
            const std::lock_guard lock(refreshed_mutex_);
            refreshed_.push_back(std::move(lookup));
            continue;
        }
        auto sink = lookup->sink;
        auto self = std::move(lookup->self);
        if (lookup->complete() && sink != nullptr) sink->completed(std::move(self));
    }
}

void OcspClient::look_up(OcspLookup& lookup) {
    const auto& request = lookup.request;
    const auto reply = transport_.post(
        lookup.url, std::string_view(reinterpret_cast<const char*>(request.data()), request.size()),
        settings_.timeout);
    const auto fail = [&](std::string why) { lookup.failure = lookup.url + ": " + std::move(why); };
    if (!reply.error.empty()) return fail(reply.error);
    if (reply.status != 200) return fail("HTTP status " + std::to_string(reply.status));
    const std::span<const unsigned char> der(
        reinterpret_cast<const unsigned char*>(reply.body.data()), reply.body.size());
    lookup.answer = check_ocsp_response(der, lookup.cert.get(), lookup.issuer.get(),
                                        std::time(nullptr), request);
    if (!lookup.answer.problem.empty()) return fail("response refused: " + lookup.answer.problem);
    // A failed write costs the other workers a lookup of their own, no more.
    // A revoked answer another worker kept stays: a revocation is final.
    if (lookup.cache_path.empty() || !transport_.keep) return;
    if (lookup.answer.status != OcspCertStatus::revoked) {
        const auto kept = read_ocsp_response(lookup.cache_path);
        if (!kept.empty() &&
            check_ocsp_response(kept, lookup.cert.get(), lookup.issuer.get(), std::time(nullptr))
                    .status == OcspCertStatus::revoked) {
            lookup.answer.status = OcspCertStatus::revoked;
            return;
        }
    }
    transport_.keep(lookup.cache_path, reply.body);
}

}  // namespace portcullis::crypto
