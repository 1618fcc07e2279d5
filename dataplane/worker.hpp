// A worker: one process, one thread, one reactor (dataplane/reactor.hpp),
// one transport registered in it (kernel sockets under epoll, or a DPDK port
// polled to completion), and every connection it accepts for life. The supervisor forks it before
// any TLS context exists; the worker builds its own contexts, so no OpenSSL state is shared between
// processes (OpenSSL 3.0's process-wide locks then cost nothing across cores).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "crypto/key_source.hpp"
#include "crypto/ocsp_client.hpp"
#include "crypto/pending_key_operation.hpp"
#include "crypto/ticket_keys.hpp"
#include "dataplane/listener_settings.hpp"
#include "dataplane/log_limiter.hpp"
#include "dataplane/reactor.hpp"
#include "dataplane/transport.hpp"
#include "dataplane/worker_stats.hpp"

namespace portcullis::crypto {
class SharedSessionCache;
}

namespace portcullis::dataplane {

// A configuration generation to switch to on SIGHUP.
struct ReloadedSettings {
    std::uint64_t generation = 0;
    std::vector<ListenerSettings> listeners;  // same names and addresses as before
    std::string log_level;
    int connection_lines_per_second = 0;  // 0 = keep the running bucket
    int connection_lines_burst = 0;
};

struct WorkerOptions {
    int index = 0;
    int max_connections = 10000;
    int drain_timeout_ms = 10000;  // after SIGTERM, established connections get this long
    // Bytes all connections' queues may hold together (base/buffer_pool.hpp).
    std::size_t buffer_budget_bytes = std::size_t{64} << 20;
    std::vector<ListenerSettings> listeners;
    WorkerStats* stats = nullptr;  // this worker's shared-memory slot
    int ready_fd = -1;             // gets one byte once every listener accepts
    int cpu = -1;                  // pin to this CPU; -1 = leave to the scheduler
    std::string access_log;        // "" off, "-" stderr, else a file (see AccessLog)
    // The token bucket of per-connection log lines (LogLimiter).
    int connection_lines_per_second = kDefaultLogLinesPerSecond;
    int connection_lines_burst = kDefaultLogLinesBurst;
    // Runs on the worker's reload thread (off the event loop); throws with the
    // reason when the new configuration cannot be read. Empty: SIGHUP ignored.
    std::function<ReloadedSettings()> load_reloaded;
    // Polled every tick: fills `keys` and returns true when the ticket keys'
    // generation differs from `generation` (which it updates). Empty: each
    // worker keeps OpenSSL's own random key (no cross-worker resumption).
    std::function<bool(std::uint64_t& generation, std::vector<crypto::TicketKey>& keys)>
        poll_ticket_keys;
    crypto::SharedSessionCache* session_cache = nullptr;  // TLS 1.2 session IDs; null = off
    bool stateful_tickets = false;          // TLS 1.3 tickets are IDs into session_cache
    std::size_t local_session_entries = 0;  // decoded sessions per listener context; 0 = off
    // Where the listeners' keys come from, built inside the worker after fork
    // (PKCS#11 handles do not survive fork: the source opens the module, logs
    // in and starts its session threads here). Key operations that pause a
    // handshake report to `completions`, which the worker owns and keeps
    // alive until the source is gone. Throws with the reason when the keys
    // cannot be used. Empty: PEM files only.
    std::function<std::unique_ptr<crypto::KeySource>(crypto::KeyCompletionSink& completions)>
        make_key_source;
    // Builds the transport inside the worker process (after fork: a DPDK EAL
    // and its port are per process); it registers what it needs in the
    // worker's `reactor`, which outlives it.
    std::function<std::unique_ptr<Transport>(Reactor& reactor, TransportHost& host)> make_transport;
    // How the worker's OCSP client (listeners with tls.ocsp) reaches
    // responders and the shared cache; without `post`, tls.ocsp is refused.
    crypto::OcspTransport ocsp_transport;
    crypto::OcspClientSettings ocsp_settings;
    // How often established connections have their expired OCSP answers
    // asked again (OcspClient::refresh).
    std::chrono::seconds ocsp_live_check{5};
    // Revocations learned from OCSP answers, shared by the workers: each tick
    // hands on what this worker learned and takes in what the others did,
    // and the live connections of a revoked certificate end either way.
    // Empty: a worker acts on the answers it fetched or read itself.
    std::function<void(const std::vector<crypto::OcspClient::CertDigest>&)> publish_revocations;
    std::function<std::vector<crypto::OcspClient::CertDigest>()> poll_revocations;
    // Called once the listeners are bound, the access log open, the keys
    // loaded and the transport started, before the first connection: gives
    // up what only that set-up needed (mgmt/privileges.hpp). Throws when it
    // cannot, and the worker then exits without serving. Empty: nothing.
    std::function<void()> drop_privileges;
};

// Exit codes of a worker process.
inline constexpr int worker_exit_ok = 0;
inline constexpr int worker_exit_startup_failed = 3;  // bad TLS material, bind failure...

// Runs until SIGTERM or SIGINT; returns the process exit code.
int run_worker(const WorkerOptions& options);

}  // namespace portcullis::dataplane
