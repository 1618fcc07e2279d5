// The PKCS#11 side of one worker process: the module, opened and logged in by
// this process after fork (no handle ever crosses a fork), a pool of session
// threads that run C_Sign, a bounded number of signatures in flight per key,
// per-operation timeouts, and failover to a standby token while the primary
// is unhealthy. OpenSSL never waits here: the TLS handshake pauses (async
// job) and the operation's KeyCompletionSink (the worker's) wakes the worker.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "crypto/pending_key_operation.hpp"
#include "hsm/hsm_settings.hpp"
#include "hsm/hsm_stats.hpp"
#include "hsm/pkcs11_uri.hpp"

namespace portcullis::hsm {

struct HsmError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Pkcs11Module;

enum class Mechanism { rsa_pkcs1, rsa_raw, ecdsa };

struct KeyInfo {
    int type = 0;  // EVP_PKEY_RSA or EVP_PKEY_EC
    std::vector<std::uint8_t> rsa_modulus, rsa_exponent;
    std::vector<std::uint8_t> ec_params, ec_point;  // DER ECParameters, DER OCTET STRING point
};

struct KeyEntry;  // one key, on both tokens

class SigningService;

// One signature on its way through a session thread. Who touches what:
//   - the submitter fills key, mechanism, input and sink before submit();
//     submit() sets service, started and deadline before queueing it; after
//     that nobody writes them.
//   - the session thread running it owns the result fields (output, rv,
//     failure) until it publishes completion: a compare-exchange of `state`
//     pending -> done with release order. Nobody writes them afterwards.
//   - abandon() (the worker: timeout, client left) only moves `state` from
//     pending to an abandoned_* value by compare-exchange and never writes a
//     result field; a session thread that then loses the race drops its
//     results and reports to nobody.
//   - whoever reads the results does so only after observing `done` with
//     acquire order (finished(), why_failed() and the key method do).
struct SignOperation final : crypto::PendingKeyOperation {
    enum State : int { pending = 0, done = 1, abandoned_timeout = 2, abandoned_cancelled = 3 };

    KeyEntry* key = nullptr;
    Mechanism mechanism = Mechanism::ecdsa;
    std::vector<std::uint8_t> input;
    crypto::KeyCompletionSink* sink = nullptr;  // null: a blocking caller waits on `state`
    SigningService* service = nullptr;
    Clock::time_point started;
    Clock::time_point deadline_at;

    std::vector<std::uint8_t> output;
    unsigned long rv = 0;  // CKR_* of the operation; 0 = CKR_OK
    std::string failure;   // set when it did not produce a signature

    std::atomic<int> state{pending};

    Clock::time_point deadline() const override { return deadline_at; }
    bool finished() const override { return state.load(std::memory_order_acquire) != pending; }
    void abandon(crypto::KeyAbandonReason why) override;
    std::string why_failed() const override;
};

class SigningService {
  public:
    // Opens the module, finds the token(s) and logs in. Throws HsmError naming
    // the module, token or URI (never the PIN).
    SigningService(const HsmSettings& settings, HsmStats* stats);
    ~SigningService();
    SigningService(const SigningService&) = delete;
    SigningService& operator=(const SigningService&) = delete;

    // Finds the key on the primary token (and the standby, if configured).
    KeyEntry& key(const Pkcs11Uri& uri);
    const KeyInfo& info(const KeyEntry& key) const;
    std::string name(const KeyEntry& key) const;

    // Queues a signature. False (op not queued, counted as queue_full) when
    // the key already has max_in_flight signatures in flight.
    bool submit(const std::shared_ptr<SignOperation>& op);
    // Records the outcome of a finished operation in the stats (worker thread).
    void account(const SignOperation& op);
    // Why an abandoned operation produced no signature.
    std::string abandoned_reason(int state) const;

    const HsmSettings& settings() const { return settings_; }
    bool primary_healthy() const { return primary_healthy_.load(); }

    struct Token;

  private:
    friend struct SignOperation;
    void count_abandoned(const SignOperation& op, SignResult why);
    void run_session_thread(std::size_t index);
    void execute(SignOperation& op, std::size_t thread_index);
    void note_error(unsigned long rv);
    bool token_usable(Token& token);

    HsmSettings settings_;
    HsmStats* stats_;
    std::string pin_;
    std::shared_ptr<Pkcs11Module> module_;
    std::vector<std::unique_ptr<Token>> tokens_;  // [0] primary, [1] standby
    std::atomic<bool> primary_healthy_{true};
    std::mutex keys_mutex_;
    std::vector<std::unique_ptr<KeyEntry>> keys_;

    std::mutex queue_mutex_;
    std::condition_variable queue_ready_;
    std::deque<std::shared_ptr<SignOperation>> queue_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

// The CKR_* name ("CKR_DEVICE_REMOVED") or hex.
std::string ckr_name(unsigned long rv);

}  // namespace portcullis::hsm
