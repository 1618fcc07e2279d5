// Counters of one worker, living in a shared-memory slot that the supervisor
// maps before fork. Exactly one writer (the worker) per slot, so updates are
// relaxed load+store, never a locked read-modify-write; readers (the admin
// process's /metrics scrape, the supervisor's summary line) sum the slots.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "base/counter.hpp"
#include "crypto/reject_reason.hpp"
#include "dataplane/net/frame.hpp"

namespace portcullis::dataplane {

using base::Counter;

// Fixed-size slots: the layout must not depend on the configuration, because
// a reload may change listeners' settings while the mapping stays.
inline constexpr std::size_t max_listeners = 16;
inline constexpr std::size_t max_backends_per_listener = 32;

// Upper bounds in seconds; the last bucket is +Inf. Spans a resumed handshake
// on loopback (~1 ms) to a slow mobile client (seconds).
inline constexpr std::array<double, 12> handshake_duration_buckets = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

class DurationHistogram {
  public:
    void observe(std::chrono::nanoseconds duration) {
        const double seconds = std::chrono::duration<double>(duration).count();
        std::size_t bucket = 0;
        while (bucket < handshake_duration_buckets.size() &&
               seconds > handshake_duration_buckets[bucket]) {
            ++bucket;
        }
        counts[bucket].add();
        sum_ns.add(static_cast<std::uint64_t>(duration.count()));
    }
    std::array<Counter, handshake_duration_buckets.size() + 1> counts;  // not cumulative
    Counter sum_ns;
};

enum class HandshakeKind : std::size_t { full = 0, resumed = 1 };

inline constexpr std::size_t ocsp_sources = 3;   // crypto::OcspSource
inline constexpr std::size_t ocsp_verdicts = 4;  // crypto::OcspVerdict::Kind
inline constexpr std::size_t ocsp_check_slots = ocsp_sources * ocsp_verdicts;
constexpr std::size_t ocsp_check_slot(std::size_t source, std::size_t verdict) {
    return source * ocsp_verdicts + verdict;
}

struct ListenerStats {
    Counter connections_accepted;
    Counter connections_refused;  // over workers.max_connections
    Counter connections_active;   // gauge
    Counter connections_revoked;  // established, ended because a CRL or OCSP answer now revokes the
                                  // client
    Counter handshakes_full;
    Counter handshakes_resumed;
    std::array<Counter, crypto::reject_reason_count> handshakes_rejected;  // by RejectReason
    Counter handshakes_abandoned;  // client closed mid-handshake (scans, impatient clients)
    std::array<DurationHistogram, 2> handshake_duration;  // by HandshakeKind
    Counter resumptions_refused_revoked;         // session's client certificate revoked since
    Counter resumptions_refused_expired;         // session's client certificate expired since
    Counter resumptions_refused_ocsp_unchecked;  // no current OCSP answer (tls.ocsp, hard)
    Counter chain_cache_hits;       // client chains accepted from the verified-chain cache
    Counter chain_cache_misses;     // client chains verified in full with the cache on
    Counter chain_cache_evictions;  // cached chains dropped to make room
    Counter stale_crl_accepted;     // clients verified against a CRL past nextUpdate (soft)
    Counter ocsp_staples_sent;      // handshakes that stapled an OCSP response
    // Client certificates checked by OCSP, by OcspSource x OcspVerdict::Kind.
    std::array<Counter, ocsp_check_slots> ocsp_checks;
    Counter ocsp_soft_accepted;  // clients served without a usable answer (ocsp_failure soft)
    Counter upstream_connect_failures;
    Counter upstream_unavailable;  // no backend could take the connection
    Counter bytes_from_clients;    // plaintext
    Counter bytes_to_clients;      // plaintext
    std::array<Counter, max_backends_per_listener>
        backend_down;  // gauge 0/1 as this worker sees it
    std::array<Counter, max_backends_per_listener>
        backend_connections;  // gauge: open or opening, each holding a source port
};

// The DPDK transport's per-lcore counters, copied from the lcore's stack on
// every tick (all zero on the kernel transport). Poll iterations that did
// work over all iterations is the lcore's busy fraction: a polling core is
// always at 100% on top.
struct PacketStats {
    Counter rx_packets, tx_packets, rx_bytes, tx_bytes;
    std::array<Counter, net::drop_reason_count> rx_drops;  // by net::Drop
    Counter not_for_us;                                    // other hosts' or other workers' frames
    Counter steered_away;     // another worker's flow (software steering)
    Counter tx_full;          // frames the port did not take
    Counter mbuf_exhausted;   // allocations that failed
    Counter mbufs_in_use;     // gauge
    Counter tcp_connections;  // gauge: the lcore's connection table
    Counter tcp_time_wait;    // gauge: of which compact TIME_WAIT entries
    Counter tcp_retransmissions;
    Counter resets_sent;
    Counter syn_cookies_sent, syn_cookies_validated;
    Counter time_wait_reused;
    Counter poll_iterations, busy_iterations;
    // The device's own receive losses (Port::receive_losses), port-wide:
    // the worker of queue 0 reports them, the others 0.
    Counter port_rx_missed, port_rx_errors, port_rx_no_mbuf;
};

enum class TicketKeyAge : std::size_t { current = 0, previous = 1, unknown = 2 };

struct WorkerStats {
    std::array<ListenerStats, max_listeners> listeners;
    std::array<Counter, 3> ticket_decryptions;  // by TicketKeyAge
    Counter busy_ns;            // time outside epoll_wait: rate() is the core's busy fraction
    Counter restarts;           // times this slot's worker was started again
    Counter config_generation;  // the configuration generation this worker serves
    Counter reload_failures;    // reloads the supervisor validated but this worker could not apply
    Counter ticket_key_generation;  // the ticket key generation this worker uses
    // Session-ID lookups (TLS 1.2, stateful TLS 1.3 tickets) answered from
    // the worker's own decoded sessions, or passed on to the shared cache.
    Counter local_session_hits, local_session_misses, local_session_evictions;
    // Connection buffers (base/buffer_pool.hpp), as of the last tick.
    Counter buffer_bytes_in_use;      // gauge
    Counter buffer_bytes_high_water;  // gauge: most ever in use at once
    Counter buffer_bytes_free;        // gauge: blocks kept for reuse
    Counter buffer_budget_bytes;      // gauge
    Counter buffer_denials;           // blocks refused: reads paused on the budget
    Counter resident_bytes;           // gauge: the worker process's RSS, once a second
    Counter heap_trims;               // times freed memory went back to the kernel
    PacketStats packets;              // DPDK transport only
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace portcullis::dataplane
