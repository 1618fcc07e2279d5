// One server-side TLS connection over a pair of in-memory buffers. It never
// touches a socket: the transport (kernel epoll worker or DPDK lcore) moves
// ciphertext in and out, the upstream side moves plaintext. The ciphertext
// buffers are two bounded queues of blocks from the worker's pool
// (base/byte_queue.hpp) behind a BIO of our own: a full queue, or a spent
// pool budget, is backpressure, not growth, and an idle connection holds no
// ciphertext buffer at all (OpenSSL's record buffers are released when empty
// too, SSL_MODE_RELEASE_BUFFERS).
//
// The SSL itself is made only once the client's first record (its
// ClientHello) is whole: until then a client that trickles it in (slowloris)
// or sends nothing (a port scan) holds the bytes it sent, in a buffer of the
// record's size, instead of an SSL and OpenSSL's handshake buffers (~48 KiB).
//
// Contract for the transport, per readiness event:
//   1. copy received ciphertext into inbound_space(), then commit_inbound(n);
//   2. call handshake() until it returns Step::done (then read_plaintext /
//      write_plaintext), or Step::failed (then failure()); on
//      Step::key_operation_pending, the transport's KeyCompletionSink got the
//      operation the handshake waits for (see pending_key_operation.hpp):
//      call handshake() again once it is finished(), or after abandoning it;
//   3. after every call, send outbound() and consume_outbound(n) — output may
//      be ready in any state (alerts are output too);
//   4. when done with the event, release_unused_buffers() gives back a block
//      inbound_space() took for a read that found nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/buffer_pool.hpp"
#include "base/byte_queue.hpp"
#include "crypto/openssl_handles.hpp"
#include "crypto/peer_identity.hpp"
#include "crypto/reject_reason.hpp"

namespace portcullis::crypto {

class KeyCompletionSink;
class OcspClient;
class ServerTlsContext;
class TlsEventSink;
struct TlsPolicy;

// What the verify callback needs for this connection (see client_verifier.hpp).
struct VerifyState {
    const TlsPolicy* policy = nullptr;
    struct TlsFailure* failure = nullptr;
    // The verified leaf goes here, so what the allow-list reads from it is
    // kept for the connection's identity. Null: nothing is kept.
    PeerCertificate* leaf = nullptr;
    TlsEventSink* events = nullptr;  // null: nothing counted
    // Asked about the chain when the policy's ocsp is not off; a lookup
    // pauses the handshake through `completions`. Null: no OCSP checks.
    OcspClient* ocsp = nullptr;
    KeyCompletionSink* completions = nullptr;
};

struct TlsFailure {
    RejectReason reason = RejectReason::none;
    std::string detail;        // verify error text or OpenSSL reason
    std::string peer_subject;  // subject of the offending client cert, if any
};

// The two directions of ciphertext behind a connection's BIO.
struct CiphertextQueues {
    base::ByteQueue inbound;   // from the peer, read by OpenSSL
    base::ByteQueue outbound;  // written by OpenSSL, for the peer
    // The start of the first record when it came in pieces; read first.
    std::vector<std::uint8_t> staged;
    std::size_t staged_read = 0;
};

class TlsConnection {
  public:
    enum class Step {
        need_input,             // handshake needs more ciphertext from the peer
        key_operation_pending,  // paused on an asynchronous private-key operation
        done,                   // handshake complete; peer() is valid
        failed,                 // see failure(); flush outbound() (the alert) then close
    };

    enum class IoStatus {
        ok,          // bytes moved (count may be 0 only for empty spans)
        need_input,  // nothing to read until more ciphertext arrives
        full,        // outbound buffer full: flush outbound() first
        closed,      // peer sent close_notify
        failed,      // fatal TLS error, see failure()
    };

    struct IoResult {
        IoStatus status;
        std::size_t bytes;
    };

    // buffer_bytes: capacity of each direction's ciphertext queue, whose
    // blocks come from `pool`.
    explicit TlsConnection(const ServerTlsContext& context,
                           base::BufferPool& pool = base::BufferPool::thread_default(),
                           std::size_t buffer_bytes = 34 * 1024);
    ~TlsConnection();
    TlsConnection(const TlsConnection&) = delete;
    TlsConnection& operator=(const TlsConnection&) = delete;

    // Ciphertext from the peer. An empty span means the buffer is full:
    // drive the connection before reading more from the wire.
    std::span<std::uint8_t> inbound_space();
    void commit_inbound(std::size_t n);

    // Ciphertext for the peer.
    std::span<const std::uint8_t> outbound();
    void consume_outbound(std::size_t n);

    void release_unused_buffers();
    // Whether the SSL exists (the first record was whole).
    bool started() const { return ssl_ != nullptr; }
    // Bytes of a first record still waiting for its end.
    std::size_t staged_bytes() const { return queues_.staged.size(); }
    // Pool blocks the two ciphertext queues hold now.
    std::size_t buffer_blocks() const {
        return queues_.inbound.blocks() + queues_.outbound.blocks();
    }

    Step handshake();
    bool established() const { return established_; }

    IoResult read_plaintext(std::span<std::uint8_t> out);
    IoResult write_plaintext(std::span<const std::uint8_t> in);

    // Queues close_notify in outbound().
    void close();

    // Whether `context`'s CRLs (a reload's, which may differ from the ones
    // this connection was verified with) revoke the client's certificate, or
    // with crl_scope = "chain" one of the CA certificates of its chain.
    bool revoked_by(const ServerTlsContext& context) const;

    // With tls.ocsp: has `ocsp` refresh, in the background, its answers about
    // the certificates in scope whose issuer this connection knows (the
    // verified chain; a session resumed from a ticket keeps none).
    void refresh_ocsp(const ServerTlsContext& context, OcspClient& ocsp) const;

    const PeerIdentity& peer() const { return peer_; }
    const TlsFailure& failure() const { return failure_; }

  private:
    Step fail_from_ssl_error();
    // Moves a partial first record out of the pool; true once it is whole
    // (or is no record we know, which OpenSSL then refuses).
    bool first_record_complete();
    void start();
    void capture_identity();

    // Before ssl_: its BIO reads and writes these until the SSL is freed.
    CiphertextQueues queues_;
    const ServerTlsContext* context_;
    UniqueSsl ssl_;
    bool established_ = false;
    bool failed_ = false;
    PeerIdentity peer_;
    TlsFailure failure_;
    VerifyState verify_state_;
};

}  // namespace portcullis::crypto
