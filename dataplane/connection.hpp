// One client connection, from accept to close, on either transport: the
// client stream, its TLS core, the upstream stream, and the two bounded
// plaintext queues between them (blocks from the worker's pool, held only
// while bytes are in flight). Owned by one worker for life; every method
// runs on that worker's thread. The streams come from the worker's Transport
// (kernel sockets or the DPDK path's userspace TCP); this file never knows which.
//
// Data flow (each arrow stops when the buffer after it is full):
//   client stream -> TlsConnection -> to_upstream_ -> upstream stream
//   upstream stream -> to_client_ -> TlsConnection -> client stream
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "base/buffer_pool.hpp"
#include "base/byte_queue.hpp"
#include "base/intrusive_fifo.hpp"
#include "crypto/key_completion_queue.hpp"
#include "crypto/pending_key_operation.hpp"
#include "crypto/server_tls_context.hpp"
#include "crypto/tls_connection.hpp"
#include "dataplane/access_log.hpp"
#include "dataplane/byte_stream.hpp"
#include "dataplane/listener_settings.hpp"
#include "dataplane/log_limiter.hpp"
#include "dataplane/socket_address.hpp"
#include "dataplane/transport.hpp"
#include "dataplane/upstream/backend_pool.hpp"
#include "dataplane/worker_stats.hpp"

namespace portcullis::dataplane {

using Clock = std::chrono::steady_clock;

class Connection;

// Per-worker facilities a connection uses.
struct WorkerRuntime {
    int index = 0;
    Transport* transport = nullptr;
    Clock::time_point now;  // refreshed once per loop iteration
    WorkerStats* stats = nullptr;
    LogLimiter log_limiter;
    AccessLog* access_log = nullptr;
    // Where key operations (HSM signatures) report; null with PEM keys only.
    crypto::KeyCompletionQueue* key_completions = nullptr;
    // Handshakes paused on a key operation, by the operation they wait for.
    std::unordered_map<const crypto::PendingKeyOperation*, Connection*> awaiting_key;
    // Every connection's buffers; its budget spent, reads pause.
    base::BufferPool* buffers = nullptr;
    // Connections that stopped reading because the pool refused a block,
    // oldest first: pumped again once blocks come back (edge-triggered
    // events would never wake them).
    base::IntrusiveFifo<Connection> starved;
};

// One listener inside one worker.
struct ListenerRuntime {
    ListenerSettings settings;
    // Shared with the connections started under them: a reload swaps in new
    // ones while established connections finish on the old.
    std::shared_ptr<const crypto::ServerTlsContext> tls;
    std::shared_ptr<BackendPool> backends;
    ListenerStats* stats = nullptr;  // this listener's slot in the worker's shared stats
    std::unique_ptr<crypto::TlsEventSink> events;  // resumption events into `stats`
};

class Connection {
  public:
    Connection(WorkerRuntime& worker, ListenerRuntime& listener, std::unique_ptr<ByteStream> client,
               SocketAddress peer);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Moves bytes in every direction that can progress (the transport saw
    // activity on a stream), then checks for the end.
    void pump();
    // Enforces the handshake, connect, idle and key-operation deadlines.
    // Returns the earliest time a later tick can have anything to do here,
    // so the worker can pass an idle connection by without touching it: its
    // idle deadline (which activity only moves later), or "every tick"
    // while a handshake, an upstream connect or a key operation is pending.
    Clock::time_point on_tick();
    // The signature this connection's handshake waits for is ready.
    void on_key_operation_done();
    // The listener's TLS context was replaced (a reload, new CRLs): an
    // established connection whose client certificate the new CRLs revoke
    // ends now, with close_notify, counted and logged as revoked_live.
    void recheck_revocation();
    // With tls.ocsp: refreshes, in the background, the answers about this
    // established connection's client certificates that have expired.
    void refresh_ocsp(crypto::OcspClient& ocsp) const;

    bool finished() const { return finished_; }

    std::size_t slot = 0;                  // position in the worker's connection table
    base::FifoLink<Connection> fifo_link;  // in WorkerRuntime::starved

  private:
    enum class Upstream { none, connecting, connected, failed };

    bool move_client_to_tls();
    bool advance_handshake();
    bool move_tls_to_upstream();
    bool move_upstream_to_tls();
    bool flush_tls_to_client();
    void on_established();
    void end_revoked();
    void connect_upstream();
    void on_upstream_connect_result(int error);
    void check_upstream_connect();
    void publish_backend_state();
    // The backend's connection gauge follows upstream_ (a source port each).
    void count_upstream();
    void uncount_upstream();
    void maybe_finish();
    // A fatal TLS error after the handshake: the alert OpenSSL wrote, then FIN.
    void fail_with_alert(const char* why);
    void finish(const char* why);
    // The client is served no backend: close_notify to it, then finish.
    void give_up_on_upstream(const char* why);
    void closed_during_handshake(const char* why);
    void log_rejection();
    void forget_key_operation();
    void cancel_key_operation();
    void write_access_log(const char* result);
    void touch() { last_activity_ = worker_.now; }

    WorkerRuntime& worker_;
    ListenerRuntime& listener_;
    std::unique_ptr<ByteStream> client_;
    SocketAddress peer_;
    std::shared_ptr<const crypto::ServerTlsContext> tls_context_;
    std::shared_ptr<BackendPool> backends_;
    ListenerStats& stats_;
    crypto::TlsConnection tls_;
    std::shared_ptr<crypto::PendingKeyOperation>
        key_operation_;  // while the handshake waits for it

    std::unique_ptr<ByteStream> upstream_;
    Upstream upstream_state_ = Upstream::none;
    std::size_t backend_ = 0;
    bool upstream_counted_ = false;  // in backend_connections[backend_]
    std::vector<std::size_t> failed_backends_;
    Clock::time_point connect_started_;

    base::ByteQueue to_upstream_;
    base::ByteQueue to_client_;

    Clock::time_point accepted_at_;
    Clock::time_point first_byte_at_;  // handshake latency starts at the ClientHello
    Clock::time_point last_activity_;
    std::uint64_t ciphertext_received_ = 0;
    std::uint64_t plaintext_from_client_ = 0;
    std::uint64_t plaintext_to_client_ = 0;
    bool backend_connected_ = false;

    bool client_eof_ = false;            // TCP FIN from the client
    bool client_close_notify_ = false;   // TLS close_notify from the client
    bool client_input_drained_ = false;  // FIN seen and the TLS core has no plaintext left
    bool upstream_write_shut_ = false;
    bool upstream_eof_ = false;
    bool close_notify_sent_ = false;
    bool finished_ = false;
};

}  // namespace portcullis::dataplane
