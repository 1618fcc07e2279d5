// EC_KEY_METHOD is deprecated in OpenSSL 3.0 but remains the way to give
// libssl a key whose signature happens elsewhere without writing a provider;
// hsm/ uses it for the same reason, and this file alone among the tests
// builds with the deprecation allowed (tests/support/meson.build).
#include "tests/support/paused_key_source.hpp"

#include <openssl/async.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

namespace portcullis::testing {

struct PausedKeySource::Binding {
    PausedKeySource* source = nullptr;
    crypto::UniqueEvpPkey private_key;
};

namespace {

int ec_index() {
    static const int index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

constexpr const char* cancelled_text = "the connection closed while its signature was pending";
constexpr const char* timeout_text = "the test key did not answer in time";

}  // namespace

PausedKeyOperation::PausedKeyOperation(EVP_PKEY* private_key, std::vector<std::uint8_t> digest,
                                       crypto::KeyCompletionSink& sink, Clock::time_point deadline)
    : private_key_(private_key), digest_(std::move(digest)), sink_(sink), deadline_(deadline) {}

void PausedKeyOperation::abandon(crypto::KeyAbandonReason why) {
    int expected = pending;
    state_.compare_exchange_strong(
        expected,
        why == crypto::KeyAbandonReason::timeout ? abandoned_timeout : abandoned_cancelled,
        std::memory_order_acq_rel);
}

std::string PausedKeyOperation::why_failed() const {
    switch (state_.load(std::memory_order_acquire)) {
        case abandoned_timeout:
            return timeout_text;
        case abandoned_cancelled:
            return cancelled_text;
        case completed:
            return signature_.empty() ? "the test key could not sign" : "";
        default:
            return "";
    }
}

bool PausedKeyOperation::complete() {
    if (state_.load(std::memory_order_acquire) != pending) return false;
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
        EVP_PKEY_CTX_new(private_key_, nullptr), &EVP_PKEY_CTX_free);
    std::size_t length = 0;
    if (ctx && EVP_PKEY_sign_init(ctx.get()) == 1 &&
        EVP_PKEY_sign(ctx.get(), nullptr, &length, digest_.data(), digest_.size()) == 1) {
        signature_.resize(length);
        if (EVP_PKEY_sign(ctx.get(), signature_.data(), &length, digest_.data(), digest_.size()) ==
            1) {
            signature_.resize(length);
        } else {
            signature_.clear();
        }
    }
    int expected = pending;
    if (!state_.compare_exchange_strong(expected, completed, std::memory_order_acq_rel))
        return false;  // abandoned while signing: nobody waits for it any more
    sink_.completed(shared_from_this());
    return true;
}

std::optional<crypto::KeyAbandonReason> PausedKeyOperation::abandoned() const {
    switch (state_.load(std::memory_order_acquire)) {
        case abandoned_timeout:
            return crypto::KeyAbandonReason::timeout;
        case abandoned_cancelled:
            return crypto::KeyAbandonReason::cancelled;
        default:
            return std::nullopt;
    }
}

namespace {

// Inside the handshake's async job: hands the operation over and pauses until
// the test completes it or the transport abandons it.
ECDSA_SIG* paused_sign_sig(const unsigned char* digest, int digest_length, const BIGNUM*,
                           const BIGNUM*, EC_KEY* ec) {
    auto* binding = static_cast<PausedKeySource::Binding*>(EC_KEY_get_ex_data(ec, ec_index()));
    if (binding == nullptr) return nullptr;
    if (ASYNC_get_current_job() == nullptr) {
        crypto::raise_key_failure("the paused test key signs only inside an async job");
        return nullptr;
    }
    auto op = binding->source->start(binding->private_key.get(), {digest, digest + digest_length});
    while (!op->finished()) {
        if (ASYNC_pause_job() == 0) break;
    }
    // Nobody will resume this job for the operation: stop waiting for it.
    op->abandon(crypto::KeyAbandonReason::cancelled);
    if (const auto why = op->why_failed(); !why.empty()) {
        crypto::raise_key_failure(why);
        return nullptr;
    }
    const unsigned char* der = op->signature().data();
    return d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(op->signature().size()));
}

int paused_sign_setup(EC_KEY*, BN_CTX*, BIGNUM**, BIGNUM**) {
    return 1;
}

const EC_KEY_METHOD* paused_ec_method() {
    static EC_KEY_METHOD* method = [] {
        EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_get_default_method());
        int (*default_sign)(int, const unsigned char*, int, unsigned char*, unsigned int*,
                            const BIGNUM*, const BIGNUM*, EC_KEY*) = nullptr;
        EC_KEY_METHOD_get_sign(m, &default_sign, nullptr, nullptr);
        // The DER-producing sign wraps sign_sig, which pauses.
        EC_KEY_METHOD_set_sign(m, default_sign, paused_sign_setup, paused_sign_sig);
        return m;
    }();
    return method;
}

}  // namespace

PausedKeySource::PausedKeySource(crypto::KeyCompletionSink& sink, std::chrono::milliseconds timeout)
    : sink_(sink), timeout_(timeout) {}

PausedKeySource::~PausedKeySource() = default;

crypto::UniqueEvpPkey PausedKeySource::load(const std::string& reference) {
    auto binding = std::make_unique<Binding>(Binding{this, files_.load(reference)});
    const EC_KEY* full = EVP_PKEY_get0_EC_KEY(binding->private_key.get());
    if (full == nullptr) throw crypto::KeyLoadError("key " + reference + ": not an EC key");
    EC_KEY* ec = EC_KEY_new();
    if (ec == nullptr || EC_KEY_set_group(ec, EC_KEY_get0_group(full)) != 1 ||
        EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(full)) != 1) {
        EC_KEY_free(ec);
        throw crypto::KeyLoadError("key " + reference + ": cannot copy the public half");
    }
    EC_KEY_set_method(ec, paused_ec_method());
    EC_KEY_set_ex_data(ec, ec_index(), binding.get());
    crypto::UniqueEvpPkey key(EVP_PKEY_new());
    if (!key || EVP_PKEY_assign_EC_KEY(key.get(), ec) != 1) {
        EC_KEY_free(ec);
        throw crypto::KeyLoadError("key " + reference + ": EVP_PKEY_assign_EC_KEY failed");
    }
    bindings_.push_back(std::move(binding));
    return key;
}

std::shared_ptr<PausedKeyOperation> PausedKeySource::start(EVP_PKEY* private_key,
                                                           std::vector<std::uint8_t> digest) {
    auto op = std::make_shared<PausedKeyOperation>(private_key, std::move(digest), sink_,
                                                   PausedKeyOperation::Clock::now() + timeout_);
    {
        std::lock_guard lock(mutex_);
        operations_.push_back(op);
    }
    sink_.paused(op);
    return op;
}

std::vector<std::shared_ptr<PausedKeyOperation>> PausedKeySource::operations() const {
    std::lock_guard lock(mutex_);
    return operations_;
}

}  // namespace portcullis::testing
