// A private-key operation that finishes on another thread (an HSM signature),
// as the TLS core sees it; in the spirit of Envoy's private-key-method
// callbacks. The key (hsm/ implements it) runs inside the handshake's OpenSSL
// async job and is bound to the transport's KeyCompletionSink. When it has to
// wait, it hands the operation to sink.paused() and pauses the job; the
// handshake returns Step::key_operation_pending and the transport takes the
// operation from its sink (OpenSSL 3.5 gives an SSL's ASYNC_WAIT_CTX to its
// job but not to the application, so the sink, which the transport owns, is
// the meeting point). Then the transport:
//   - learns of completion through sink.completed(), which runs on the thread
//     that finished the operation, so the sink does the hand-over (a locked
//     list and an eventfd the worker polls: one lock per operation, never per
//     packet);
//   - gives up on it with abandon() at its deadline or when the client left;
//   - calls handshake() again once finished() is true: the job resumes and
//     either completes or fails with RejectReason::key_unavailable.
// Why a key operation failed (a timeout, a full queue, an HSM error) reaches
// the core on the OpenSSL error queue, raised with raise_key_failure() by the
// key method on the handshake's thread (an async job shares its thread's
// queue): TlsConnection finds it with drain_key_failure(), and so does a
// blocking caller outside a handshake (portcullis-keytool).
// Threads: the transport thread calls deadline(), finished() and abandon();
// the implementation makes abandon() safe against a completion racing it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace portcullis::crypto {

enum class KeyAbandonReason { timeout, cancelled };

class PendingKeyOperation {
  public:
    using Clock = std::chrono::steady_clock;
    virtual ~PendingKeyOperation() = default;
    // After it the transport abandons the operation.
    virtual Clock::time_point deadline() const = 0;
    // Completed or abandoned: resuming the handshake will not pause on it again.
    virtual bool finished() const = 0;
    // The transport no longer waits (deadline, or the client left): a
    // completion still in progress is dropped and never reaches the sink.
    // No effect once the operation completed.
    virtual void abandon(KeyAbandonReason why) = 0;
    // Once finished(): why it produced no result ("" when it did).
    virtual std::string why_failed() const = 0;
};

// The transport's side, owned by it and given to the key source.
class KeyCompletionSink {
  public:
    virtual ~KeyCompletionSink() = default;
    // On the handshake's thread, inside its async job, right before the job
    // pauses on `operation`.
    virtual void paused(std::shared_ptr<PendingKeyOperation> operation) = 0;
    // From any thread, at most once per operation and never for an
    // abandoned one.
    virtual void completed(std::shared_ptr<PendingKeyOperation> operation) = 0;
};

// Puts why a key operation failed on this thread's OpenSSL error queue.
void raise_key_failure(const std::string& why);
// Empties this thread's error queue. Returns the text raise_key_failure() put
// there, if it did; `others` gets the other entries' text (as
// drain_openssl_errors() writes it).
std::optional<std::string> drain_key_failure(std::string& others);

}  // namespace portcullis::crypto
