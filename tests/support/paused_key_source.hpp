// A KeySource whose EC keys sign asynchronously, for tests of the paused
// handshake without hsm/ (dataplane's tests must not depend on it): load()
// reads a PEM private key and returns an EVP_PKEY holding only its public
// half, whose key method hands every signature to the KeyCompletionSink as a
// PausedKeyOperation and pauses the handshake's async job, as
// hsm/Pkcs11KeySource does. The test decides when the signature is made:
// complete() signs with the in-memory private key on whichever thread calls
// it. Ownership as in hsm's SignOperation: the completing thread owns the
// signature until it publishes completion (release), the handshake reads it
// after seeing that (acquire); abandon() only changes the state, and a
// completion that loses the race to it is dropped, never given to the sink.
// The source (and its sink) must outlive the keys it loaded and the TLS
// contexts holding them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "crypto/key_source.hpp"
#include "crypto/pending_key_operation.hpp"

namespace portcullis::testing {

class PausedKeyOperation final : public crypto::PendingKeyOperation,
                                 public std::enable_shared_from_this<PausedKeyOperation> {
  public:
    PausedKeyOperation(EVP_PKEY* private_key, std::vector<std::uint8_t> digest,
                       crypto::KeyCompletionSink& sink, Clock::time_point deadline);

    Clock::time_point deadline() const override { return deadline_; }
    bool finished() const override { return state_.load(std::memory_order_acquire) != pending; }
    void abandon(crypto::KeyAbandonReason why) override;
    std::string why_failed() const override;

    // Signs and hands the operation to the sink, unless it was abandoned
    // first (then the signature is dropped). Returns whether it completed.
    // Once per operation, from any thread.
    bool complete();
    // How the transport gave up on it, if it did.
    std::optional<crypto::KeyAbandonReason> abandoned() const;
    // Once completed: the DER ECDSA signature (read by the resumed job).
    const std::vector<std::uint8_t>& signature() const { return signature_; }

  private:
    enum State : int { pending, completed, abandoned_timeout, abandoned_cancelled };

    EVP_PKEY* private_key_;  // owned by the source, which outlives its operations
    std::vector<std::uint8_t> digest_;
    crypto::KeyCompletionSink& sink_;
    Clock::time_point deadline_;
    std::vector<std::uint8_t> signature_;  // the completing thread's until published
    std::atomic<int> state_{pending};
};

class PausedKeySource final : public crypto::KeySource {
  public:
    // Each operation's deadline is `timeout` after it started.
    explicit PausedKeySource(crypto::KeyCompletionSink& sink,
                             std::chrono::milliseconds timeout = std::chrono::hours(1));
    ~PausedKeySource() override;
    // `reference`: a PEM file with an EC private key. Throws KeyLoadError.
    crypto::UniqueEvpPkey load(const std::string& reference) override;
    bool asynchronous(const std::string&) const override { return true; }

    // Every operation the keys started, oldest first (any thread).
    std::vector<std::shared_ptr<PausedKeyOperation>> operations() const;

    struct Binding;
    // From the key method, inside the handshake's job: a new operation,
    // recorded and given to the sink's paused().
    std::shared_ptr<PausedKeyOperation> start(EVP_PKEY* private_key,
                                              std::vector<std::uint8_t> digest);

  private:
    crypto::KeyCompletionSink& sink_;
    std::chrono::milliseconds timeout_;
    crypto::PemFileKeySource files_;
    std::vector<std::unique_ptr<Binding>> bindings_;
    mutable std::mutex mutex_;
    std::vector<std::shared_ptr<PausedKeyOperation>> operations_;
};

}  // namespace portcullis::testing
