#include "mgmt/metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <cstring>
#include <ctime>
#include <deque>
#include <iterator>
#include <limits>

#include "crypto/ocsp_client.hpp"
#include "crypto/session_cache.hpp"
#include "hsm/signing_service.hpp"

namespace portcullis::mgmt {
namespace {

using dataplane::ListenerStats;
using dataplane::WorkerStats;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

class Families {
  public:
    MetricFamily& family(const std::string& name, const std::string& help, MetricType type) {
        families_.push_back({name, help, type, {}});
        return families_.back();
    }
    void counter(const std::string& name, const std::string& help, double value,
                 Labels labels = {}) {
        add(family(name, help, MetricType::Counter), value, std::move(labels));
    }
    void gauge(const std::string& name, const std::string& help, double value, Labels labels = {}) {
        add(family(name, help, MetricType::Gauge), value, std::move(labels));
    }
    static void add(MetricFamily& family, double value, Labels labels) {
        ClientMetric metric;
        metric.label = std::move(labels);
        if (family.type == MetricType::Counter) {
            metric.counter.value = value;
        } else {
            metric.gauge.value = value;
        }
        family.metric.push_back(std::move(metric));
    }
    std::vector<MetricFamily> take() {
        return {std::make_move_iterator(families_.begin()),
                std::make_move_iterator(families_.end())};
    }

  private:
    std::deque<MetricFamily> families_;  // stable references while families fill in
};

class Summer {
  public:
    explicit Summer(const SharedStats& stats) : stats_(stats) {}
    template <typename Member>
    double listener(std::size_t index, Member member) const {
        std::uint64_t total = 0;
        for (std::size_t w = 0; w < stats_.size(); ++w)
            total += (stats_.slot(w).listeners[index].*member).get();
        return static_cast<double>(total);
    }
    template <typename Pick>
    double listener_by(std::size_t index, Pick pick) const {
        std::uint64_t total = 0;
        for (std::size_t w = 0; w < stats_.size(); ++w)
            total += pick(stats_.slot(w).listeners[index]).get();
        return static_cast<double>(total);
    }
    template <typename Pick>
    double worker_by(Pick pick) const {
        std::uint64_t total = 0;
        for (std::size_t w = 0; w < stats_.size(); ++w) total += pick(stats_.slot(w)).get();
        return static_cast<double>(total);
    }

  private:
    const SharedStats& stats_;
};

bool is_certificate_reason(crypto::RejectReason reason) {
    return reason != crypto::RejectReason::none && reason != crypto::RejectReason::protocol &&
           reason != crypto::RejectReason::timeout &&
           reason != crypto::RejectReason::key_unavailable;
}

// One fetched CRL or OCSP-response source: its labels and its counters.
struct FetchedSource {
    Labels labels;
    const FetchStats* stats;
};

// The same five families for either kind of fetched source, named
// <prefix>_fetches_total, <prefix>_fetch_updates_total, ... .
void add_fetch_metrics(Families& out, const std::string& prefix, const std::string& what,
                       const std::string& usable, const std::vector<FetchedSource>& sources) {
    if (sources.empty()) return;
    auto& fetches = out.family(prefix + "_fetches_total",
                               what + " fetches by result: ok (" + usable +
                                   ") or failed (no answer, HTTP error, answer refused).",
                               MetricType::Counter);
    auto& updates = out.family(prefix + "_fetch_updates_total",
                               "New " + what + "s kept from a source and loaded by the workers.",
                               MetricType::Counter);
    auto& attempt =
        out.family(prefix + "_fetch_last_attempt_timestamp_seconds",
                   "When the source was last asked, as unix time (0: never).", MetricType::Gauge);
    auto& success = out.family(prefix + "_fetch_last_success_timestamp_seconds",
                               "When the source last answered usably, as unix time (0: never).",
                               MetricType::Gauge);
    auto& next_update = out.family(
        prefix + "_fetched_next_update_timestamp_seconds",
        "nextUpdate of the " + what + " kept from the source, as unix time (0: none kept).",
        MetricType::Gauge);
    for (const auto& source : sources) {
        const auto& c = *source.stats;
        auto with_result = [&](const char* result) {
            Labels labels = source.labels;
            labels.push_back({"result", result});
            return labels;
        };
        Families::add(fetches, static_cast<double>(c.fetches_ok.get()), with_result("ok"));
        Families::add(fetches, static_cast<double>(c.fetches_failed.get()), with_result("failed"));
        Families::add(updates, static_cast<double>(c.updates.get()), source.labels);
        Families::add(attempt, static_cast<double>(c.last_attempt_unix.get()), source.labels);
        Families::add(success, static_cast<double>(c.last_success_unix.get()), source.labels);
        Families::add(next_update, static_cast<double>(c.next_update_unix.get()), source.labels);
    }
}

// Keys are named by their canonical URI as each worker registered them;
// workers agree on the order (configuration order), the first one names it.
void add_hsm_metrics(Families& out, const SharedStats& stats) {
    const std::size_t workers = stats.size();
    auto& signs = out.family("portcullis_hsm_signatures_total",
                             "Private-key operations sent to the HSM, by key and result.",
                             MetricType::Counter);
    auto& durations = out.family("portcullis_hsm_sign_duration_seconds",
                                 "Time from queueing a signature to its result (queue + HSM).",
                                 MetricType::Histogram);
    auto& in_flight = out.family("portcullis_hsm_in_flight",
                                 "Signatures queued or running, by key.", MetricType::Gauge);
    std::size_t keys = 0;
    for (std::size_t w = 0; w < workers; ++w)
        keys = std::max<std::size_t>(keys, stats.hsm(w).key_count.get());
    for (std::size_t k = 0; k < keys && k < hsm::max_hsm_keys; ++k) {
        std::string name;
        for (std::size_t w = 0; w < workers && name.empty(); ++w) {
            // key_count's acquire load orders the name's bytes after it.
            if (stats.hsm(w).key_count.get() <= k) continue;
            const auto& raw = stats.hsm(w).key_names[k];
            name.assign(raw.data(), strnlen(raw.data(), raw.size()));
        }
        for (std::size_t r = 0; r < hsm::sign_result_count; ++r) {
            std::uint64_t n = 0;
            for (std::size_t w = 0; w < workers; ++w) n += stats.hsm(w).keys[k].signs[r].get();
            Families::add(signs, static_cast<double>(n),
                          {{"key", name}, {"result", hsm::sign_result_names[r]}});
        }
        ClientMetric metric;
        metric.label = {{"key", name}};
        std::uint64_t cumulative = 0;
        double sum_ns = 0;
        std::uint64_t active = 0;
        for (std::size_t b = 0; b <= hsm::sign_duration_buckets.size(); ++b) {
            for (std::size_t w = 0; w < workers; ++w)
                cumulative += stats.hsm(w).keys[k].duration_counts[b].get();
            metric.histogram.bucket.push_back(
                {cumulative, b < hsm::sign_duration_buckets.size()
                                 ? hsm::sign_duration_buckets[b]
                                 : std::numeric_limits<double>::infinity()});
        }
        for (std::size_t w = 0; w < workers; ++w) {
            sum_ns += static_cast<double>(stats.hsm(w).keys[k].duration_sum_ns.get());
            active += stats.hsm(w).keys[k].in_flight.get();
        }
        metric.histogram.sample_count = cumulative;
        metric.histogram.sample_sum = sum_ns / 1e9;
        durations.metric.push_back(std::move(metric));
        Families::add(in_flight, static_cast<double>(active), {{"key", name}});
    }
    const auto total = [&](auto pick) {
        std::uint64_t n = 0;
        for (std::size_t w = 0; w < workers; ++w) n += pick(stats.hsm(w)).get();
        return static_cast<double>(n);
    };
    out.gauge("portcullis_hsm_queued", "Signatures waiting for a free PKCS#11 session.",
              total([](const hsm::HsmStats& h) -> const auto& { return h.queued; }));
    out.gauge("portcullis_hsm_sessions_open", "PKCS#11 sessions open, all workers.",
              total([](const hsm::HsmStats& h) -> const auto& { return h.sessions_open; }));
    auto& errors =
        out.family("portcullis_hsm_errors_total",
                   "PKCS#11 errors returned by the module, by CKR code.", MetricType::Counter);
    for (std::size_t c = 0; c <= hsm::tracked_ckr_codes.size(); ++c) {
        Families::add(
            errors, total([c](const hsm::HsmStats& h) -> const auto& { return h.errors[c]; }),
            {{"code", c < hsm::tracked_ckr_codes.size() ? hsm::ckr_name(hsm::tracked_ckr_codes[c])
                                                        : std::string("other")}});
    }
    out.counter("portcullis_hsm_failovers_total",
                "Times a worker switched signing to the failover token.",
                total([](const hsm::HsmStats& h) -> const auto& { return h.failovers; }));
    out.counter("portcullis_hsm_failbacks_total",
                "Times a worker returned to the primary token after it recovered.",
                total([](const hsm::HsmStats& h) -> const auto& { return h.failbacks; }));
    out.counter("portcullis_hsm_session_reopens_total",
                "PKCS#11 sessions closed after an error, to be reopened and logged in again.",
                total([](const hsm::HsmStats& h) -> const auto& { return h.relogins; }));
    double healthy = workers > 0 ? 1 : 0;
    for (std::size_t w = 0; w < workers; ++w)
        if (stats.hsm(w).primary_healthy.get() == 0) healthy = 0;
    out.gauge("portcullis_hsm_primary_token_healthy",
              "1 when every worker's primary token answers; 0 while any worker fails over or "
              "cannot sign.",
              healthy);
}

// The DPDK transport's per-lcore (per-worker) packet and TCP counters.
void add_packet_metrics(Families& out, const MetricsInput& input) {
    struct Field {
        const char* name;
        const char* help;
        MetricType type;
        dataplane::Counter dataplane::PacketStats::* member;
    };
    using P = dataplane::PacketStats;
    static constexpr Field fields[] = {
        {"portcullis_dpdk_rx_packets_total", "Frames received by the lcore.", MetricType::Counter,
         &P::rx_packets},
        {"portcullis_dpdk_tx_packets_total", "Frames sent by the lcore.", MetricType::Counter,
         &P::tx_packets},
        {"portcullis_dpdk_rx_bytes_total", "Bytes received by the lcore.", MetricType::Counter,
         &P::rx_bytes},
        {"portcullis_dpdk_tx_bytes_total", "Bytes sent by the lcore.", MetricType::Counter,
         &P::tx_bytes},
        {"portcullis_dpdk_not_for_us_total",
         "Frames for other hosts, or other workers' own transmissions.", MetricType::Counter,
         &P::not_for_us},
        {"portcullis_dpdk_steered_away_total",
         "TCP frames of flows that software steering gives to another worker.", MetricType::Counter,
         &P::steered_away},
        {"portcullis_dpdk_tx_full_total", "Frames dropped because the port's TX ring was full.",
         MetricType::Counter, &P::tx_full},
        {"portcullis_dpdk_mbuf_alloc_failures_total", "Packet buffer allocations that failed.",
         MetricType::Counter, &P::mbuf_exhausted},
        {"portcullis_dpdk_mbufs_in_use", "Packet buffers of the lcore's pool in use.",
         MetricType::Gauge, &P::mbufs_in_use},
        {"portcullis_dpdk_port_rx_missed_total",
         "Frames the device dropped because its receive ring was full (port-wide, on the "
         "worker of queue 0).",
         MetricType::Counter, &P::port_rx_missed},
        {"portcullis_dpdk_port_rx_errors_total",
         "Erroneous frames the device received (port-wide, on the worker of queue 0).",
         MetricType::Counter, &P::port_rx_errors},
        {"portcullis_dpdk_port_rx_no_mbuf_total",
         "Frames the device dropped for want of a packet buffer (port-wide, on the worker of "
         "queue 0).",
         MetricType::Counter, &P::port_rx_no_mbuf},
        {"portcullis_dpdk_tcp_connections", "Connections in the lcore's TCP table (any state).",
         MetricType::Gauge, &P::tcp_connections},
        {"portcullis_dpdk_tcp_time_wait",
         "Of those, connections in TIME_WAIT, kept as compact entries outside the heap.",
         MetricType::Gauge, &P::tcp_time_wait},
        {"portcullis_dpdk_tcp_retransmissions_total", "TCP segments sent again.",
         MetricType::Counter, &P::tcp_retransmissions},
        {"portcullis_dpdk_tcp_resets_sent_total", "RSTs for segments that matched no connection.",
         MetricType::Counter, &P::resets_sent},
        {"portcullis_dpdk_syn_cookies_sent_total",
         "SYN-ACKs carrying a SYN cookie (the SYN backlog was full).", MetricType::Counter,
         &P::syn_cookies_sent},
        {"portcullis_dpdk_syn_cookies_validated_total",
         "Connections established from a valid SYN cookie.", MetricType::Counter,
         &P::syn_cookies_validated},
        {"portcullis_dpdk_time_wait_reused_total",
         "Connections that took over a 4-tuple still in TIME_WAIT.", MetricType::Counter,
         &P::time_wait_reused},
        {"portcullis_dpdk_poll_iterations_total", "Poll-loop iterations of the lcore.",
         MetricType::Counter, &P::poll_iterations},
        {"portcullis_dpdk_busy_iterations_total",
         "Poll-loop iterations that did work; over poll iterations it is the busy fraction.",
         MetricType::Counter, &P::busy_iterations},
    };
    for (const auto& field : fields) {
        auto& family = out.family(field.name, field.help, field.type);
        for (std::size_t w = 0; w < input.stats.size(); ++w) {
            Families::add(family,
                          static_cast<double>((input.stats.slot(w).packets.*field.member).get()),
                          {{"worker", std::to_string(w)}});
        }
    }
    auto& drops = out.family(
        "portcullis_dpdk_rx_drops_total",
        "Received frames dropped (by the packet parser, or a full handoff ring), by reason.",
        MetricType::Counter);
    for (std::size_t w = 0; w < input.stats.size(); ++w) {
        const auto& packets = input.stats.slot(w).packets;
        for (std::size_t r = 1; r < dataplane::net::drop_reason_count; ++r) {
            Families::add(
                drops, static_cast<double>(packets.rx_drops[r].get()),
                {{"worker", std::to_string(w)},
                 {"reason", dataplane::net::to_string(static_cast<dataplane::net::Drop>(r))}});
        }
    }
}

}  // namespace

std::string render_metrics(const MetricsInput& input) {
    Families out;
    const Summer sum(input.stats);
    const auto& listeners = input.config.listeners;

    out.gauge("portcullis_build_info", "Version of the running binary.", 1,
              {{"version", PORTCULLIS_VERSION}});
    out.gauge("portcullis_workers", "Worker processes configured.",
              static_cast<double>(input.stats.size()));
    {
        auto& busy = out.family("portcullis_worker_busy_seconds_total",
                                "Time each worker spent handling events (outside epoll_wait); "
                                "its rate is the core's busy fraction.",
                                MetricType::Counter);
        auto& restarts =
            out.family("portcullis_worker_restarts_total",
                       "Times a worker was started again after dying.", MetricType::Counter);
        for (std::size_t w = 0; w < input.stats.size(); ++w) {
            const Labels labels{{"worker", std::to_string(w)}};
            Families::add(busy, static_cast<double>(input.stats.slot(w).busy_ns.get()) / 1e9,
                          labels);
            Families::add(restarts, static_cast<double>(input.stats.slot(w).restarts.get()),
                          labels);
        }
    }
    {
        struct Gauge {
            const char* name;
            const char* help;
            MetricType type;
            dataplane::Counter WorkerStats::* field;
        };
        const Gauge memory[] = {
            {"portcullis_worker_resident_bytes",
             "Resident memory of each worker process (RSS), read once a second.", MetricType::Gauge,
             &WorkerStats::resident_bytes},
            {"portcullis_buffer_bytes_in_use",
             "Bytes of connection buffer blocks (ciphertext and plaintext queues) held now.",
             MetricType::Gauge, &WorkerStats::buffer_bytes_in_use},
            {"portcullis_buffer_bytes_high_water",
             "Most connection buffer bytes held at once since the worker started.",
             MetricType::Gauge, &WorkerStats::buffer_bytes_high_water},
            {"portcullis_buffer_bytes_free",
             "Connection buffer blocks kept for reuse, in bytes (given back after a burst).",
             MetricType::Gauge, &WorkerStats::buffer_bytes_free},
            {"portcullis_buffer_budget_bytes",
             "The per-worker limit on connection buffer bytes (workers.buffer_budget_bytes).",
             MetricType::Gauge, &WorkerStats::buffer_budget_bytes},
            {"portcullis_buffer_denials_total",
             "Buffer blocks refused because the budget was spent: each one paused a read.",
             MetricType::Counter, &WorkerStats::buffer_denials},
            {"portcullis_heap_trims_total",
             "Times a worker gave its free heap pages back to the kernel after its load "
             "fell or its heap freed memory after its connections.",
             MetricType::Counter, &WorkerStats::heap_trims},
        };
        for (const auto& gauge : memory) {
            auto& family = out.family(gauge.name, gauge.help, gauge.type);
            for (std::size_t w = 0; w < input.stats.size(); ++w) {
                Families::add(family, static_cast<double>((input.stats.slot(w).*gauge.field).get()),
                              {{"worker", std::to_string(w)}});
            }
        }
    }
    if (input.config.dataplane.transport == DataplaneTransport::dpdk)
        add_packet_metrics(out, input);

    auto& accepted = out.family("portcullis_connections_accepted_total",
                                "Client TCP connections accepted.", MetricType::Counter);
    auto& refused =
        out.family("portcullis_connections_refused_total",
                   "Client connections closed at once, by reason.", MetricType::Counter);
    auto& active = out.family("portcullis_connections_active", "Client connections open now.",
                              MetricType::Gauge);
    auto& stale_crl =
        out.family("portcullis_stale_crl_handshakes_total",
                   "Client chains accepted although a CRL that covers them is past its nextUpdate "
                   "(crl_stale = \"soft\"); with \"hard\" they are refused as crl_unavailable.",
                   MetricType::Counter);
    auto& stapled = out.family(
        "portcullis_ocsp_staples_sent_total",
        "Handshakes that stapled an OCSP response for the server certificate (the client asked "
        "for one and a fresh response was kept).",
        MetricType::Counter);
    auto& ocsp_checks = out.family(
        "portcullis_ocsp_client_checks_total",
        "Client certificates checked by OCSP (tls.ocsp), by where the answer came from (memory: "
        "this worker's, shared_cache: another worker's kept answer, responder: asked during the "
        "handshake) and what it said (good, revoked, unknown, unavailable).",
        MetricType::Counter);
    auto& ocsp_soft = out.family(
        "portcullis_ocsp_client_soft_accepted_total",
        "Clients served without a usable OCSP answer (ocsp_failure = \"soft\"); with \"hard\" "
        "they are refused as ocsp_unavailable.",
        MetricType::Counter);
    auto& revoked_live = out.family(
        "portcullis_connections_revoked_total",
        "Established connections ended because newly loaded CRLs revoke their client certificate.",
        MetricType::Counter);
    auto& handshakes =
        out.family("portcullis_handshakes_total",
                   "TLS handshakes by kind (full/resumed) and result.", MetricType::Counter);
    auto& durations = out.family(
        "portcullis_handshake_duration_seconds",
        "Successful handshakes, first ClientHello byte to completion (server wall time).",
        MetricType::Histogram);
    auto& rejections = out.family(
        "portcullis_client_certificate_rejections_total",
        "Handshakes refused because of the client certificate, by reason.", MetricType::Counter);
    auto& resumptions_refused =
        out.family("portcullis_resumptions_refused_total",
                   "Resumptions refused because the session's client certificate was revoked or "
                   "expired since, or (tls.ocsp, hard) the worker held no current OCSP answer "
                   "about it; the client falls back to a full handshake.",
                   MetricType::Counter);
    auto& chain_cache_lookups = out.family(
        "portcullis_verified_chain_cache_lookups_total",
        "Client chains looked up in the verified-chain cache: hit (accepted without a full "
        "verification) or miss (verified in full).",
        MetricType::Counter);
    auto& chain_cache_evictions = out.family(
        "portcullis_verified_chain_cache_evictions_total",
        "Verified client chains dropped from the cache to make room.", MetricType::Counter);
    auto& bytes_in =
        out.family("portcullis_client_bytes_received_total",
                   "Plaintext application bytes received from clients.", MetricType::Counter);
    auto& bytes_out =
        out.family("portcullis_client_bytes_sent_total",
                   "Plaintext application bytes sent to clients.", MetricType::Counter);
    auto& connect_failures =
        out.family("portcullis_upstream_connect_failures_total",
                   "Failed connection attempts to backends.", MetricType::Counter);
    auto& unavailable = out.family("portcullis_upstream_unavailable_total",
                                   "Client connections closed because no backend could take them.",
                                   MetricType::Counter);
    auto& backend_up =
        out.family("portcullis_backend_up", "1 when no worker currently marks the backend down.",
                   MetricType::Gauge);
    auto& backend_connections =
        out.family("portcullis_backend_connections",
                   "Connections to the backend open or being opened now, over all workers: each "
                   "holds a local source port towards that address.",
                   MetricType::Gauge);

    for (std::size_t i = 0; i < listeners.size() && i < dataplane::max_listeners; ++i) {
        const std::string& name = listeners[i].name;
        const Labels listener{{"listener", name}};
        Families::add(accepted, sum.listener(i, &ListenerStats::connections_accepted), listener);
        Families::add(refused, sum.listener(i, &ListenerStats::connections_refused),
                      {{"listener", name}, {"reason", "max_connections"}});
        Families::add(active, sum.listener(i, &ListenerStats::connections_active), listener);
        Families::add(revoked_live, sum.listener(i, &ListenerStats::connections_revoked), listener);
        Families::add(stale_crl, sum.listener(i, &ListenerStats::stale_crl_accepted), listener);
        Families::add(stapled, sum.listener(i, &ListenerStats::ocsp_staples_sent), listener);
        if (listeners[i].tls.ocsp != crypto::OcspCheck::off) {
            Families::add(ocsp_soft, sum.listener(i, &ListenerStats::ocsp_soft_accepted), listener);
            for (std::size_t source = 0; source < dataplane::ocsp_sources; ++source) {
                for (std::size_t verdict = 0; verdict < dataplane::ocsp_verdicts; ++verdict) {
                    const double n = sum.listener_by(i, [&](const ListenerStats& s) -> const auto& {
                        return s.ocsp_checks[dataplane::ocsp_check_slot(source, verdict)];
                    });
                    Families::add(
                        ocsp_checks, n,
                        {{"listener", name},
                         {"source", crypto::to_string(static_cast<crypto::OcspSource>(source))},
                         {"status",
                          crypto::to_string(static_cast<crypto::OcspVerdict::Kind>(verdict))}});
                }
            }
        }

        double rejected = 0;
        double failed = 0;
        for (int r = 1; r < crypto::reject_reason_count; ++r) {
            const auto reason = static_cast<crypto::RejectReason>(r);
            const double n = sum.listener_by(i, [r](const ListenerStats& s) -> const auto& {
                return s.handshakes_rejected[static_cast<std::size_t>(r)];
            });
            if (is_certificate_reason(reason)) {
                rejected += n;
                Families::add(
                    rejections, n,
                    {{"listener", name}, {"reason", std::string(crypto::to_string(reason))}});
            } else {
                failed += n;
            }
        }
        const auto handshake = [&](const char* kind, const char* result, double n) {
            Families::add(handshakes, n, {{"listener", name}, {"kind", kind}, {"result", result}});
        };
        handshake("full", "ok", sum.listener(i, &ListenerStats::handshakes_full));
        handshake("resumed", "ok", sum.listener(i, &ListenerStats::handshakes_resumed));
        handshake("full", "rejected", rejected);
        handshake("full", "abandoned", sum.listener(i, &ListenerStats::handshakes_abandoned));
        handshake("full", "failed", failed);

        for (const auto kind :
             {dataplane::HandshakeKind::full, dataplane::HandshakeKind::resumed}) {
            ClientMetric metric;
            metric.label = {{"listener", name},
                            {"kind", kind == dataplane::HandshakeKind::full ? "full" : "resumed"}};
            std::uint64_t cumulative = 0;
            const auto k = static_cast<std::size_t>(kind);
            for (std::size_t b = 0; b <= dataplane::handshake_duration_buckets.size(); ++b) {
                cumulative += static_cast<std::uint64_t>(
                    sum.listener_by(i, [&](const ListenerStats& s) -> const auto& {
                        return s.handshake_duration[k].counts[b];
                    }));
                metric.histogram.bucket.push_back(
                    {cumulative, b < dataplane::handshake_duration_buckets.size()
                                     ? dataplane::handshake_duration_buckets[b]
                                     : std::numeric_limits<double>::infinity()});
            }
            metric.histogram.sample_count = cumulative;
            metric.histogram.sample_sum =
                sum.listener_by(i,
                                [&](const ListenerStats& s) -> const auto& {
                                    return s.handshake_duration[k].sum_ns;
                                }) /
                1e9;
            durations.metric.push_back(std::move(metric));
        }
        Families::add(resumptions_refused,
                      sum.listener(i, &ListenerStats::resumptions_refused_revoked),
                      {{"listener", name}, {"reason", "revoked"}});
        Families::add(resumptions_refused,
                      sum.listener(i, &ListenerStats::resumptions_refused_expired),
                      {{"listener", name}, {"reason", "expired"}});
        Families::add(resumptions_refused,
                      sum.listener(i, &ListenerStats::resumptions_refused_ocsp_unchecked),
                      {{"listener", name}, {"reason", "ocsp_unchecked"}});
        Families::add(chain_cache_lookups, sum.listener(i, &ListenerStats::chain_cache_hits),
                      {{"listener", name}, {"result", "hit"}});
        Families::add(chain_cache_lookups, sum.listener(i, &ListenerStats::chain_cache_misses),
                      {{"listener", name}, {"result", "miss"}});
        Families::add(chain_cache_evictions, sum.listener(i, &ListenerStats::chain_cache_evictions),
                      listener);
        Families::add(bytes_in, sum.listener(i, &ListenerStats::bytes_from_clients), listener);
        Families::add(bytes_out, sum.listener(i, &ListenerStats::bytes_to_clients), listener);
        Families::add(connect_failures, sum.listener(i, &ListenerStats::upstream_connect_failures),
                      listener);
        Families::add(unavailable, sum.listener(i, &ListenerStats::upstream_unavailable), listener);
        const auto& backends = listeners[i].upstream.backends;
        for (std::size_t b = 0; b < backends.size() && b < dataplane::max_backends_per_listener;
             ++b) {
            const double down = sum.listener_by(
                i, [b](const ListenerStats& s) -> const auto& { return s.backend_down[b]; });
            Families::add(backend_up, down > 0 ? 0 : 1,
                          {{"listener", name}, {"backend", backends[b].to_string()}});
            Families::add(backend_connections,
                          sum.listener_by(i,
                                          [b](const ListenerStats& s) -> const auto& {
                                              return s.backend_connections[b];
                                          }),
                          {{"listener", name}, {"backend", backends[b].to_string()}});
        }
    }

    if (input.session_cache != nullptr) {
        const auto c = input.session_cache->counters();
        out.counter("portcullis_session_cache_hits_total", "TLS 1.2 session-ID cache hits.",
                    static_cast<double>(c.hits));
        out.counter("portcullis_session_cache_misses_total", "TLS 1.2 session-ID cache misses.",
                    static_cast<double>(c.misses));
        out.counter("portcullis_session_cache_stores_total", "Sessions stored in the cache.",
                    static_cast<double>(c.stores));
        out.counter("portcullis_session_cache_evictions_total",
                    "Live sessions evicted because the cache was full.",
                    static_cast<double>(c.evictions));
        out.counter("portcullis_session_cache_expired_total", "Sessions that expired in the cache.",
                    static_cast<double>(c.expired));
        out.gauge("portcullis_session_cache_entries", "Sessions in the cache now.",
                  static_cast<double>(c.entries));
        out.gauge("portcullis_session_cache_bytes", "Bytes of encoded sessions in the cache now.",
                  static_cast<double>(c.bytes));
        out.gauge("portcullis_session_cache_capacity_entries", "Cache capacity in sessions.",
                  static_cast<double>(input.session_cache->limits().max_entries));
    }

    {
        auto& lookups = out.family(
            "portcullis_worker_session_cache_lookups_total",
            "Session-ID lookups (TLS 1.2 session IDs, stateful TLS 1.3 tickets) by worker: hit "
            "(the worker's own decoded session) or miss (passed on to the shared cache).",
            MetricType::Counter);
        auto& evictions =
            out.family("portcullis_worker_session_cache_evictions_total",
                       "Live sessions a worker dropped from its own session cache to make room.",
                       MetricType::Counter);
        for (std::size_t w = 0; w < input.stats.size(); ++w) {
            const auto& s = input.stats.slot(w);
            const std::string worker = std::to_string(w);
            Families::add(lookups, static_cast<double>(s.local_session_hits.get()),
                          {{"worker", worker}, {"result", "hit"}});
            Families::add(lookups, static_cast<double>(s.local_session_misses.get()),
                          {{"worker", worker}, {"result", "miss"}});
            Families::add(evictions, static_cast<double>(s.local_session_evictions.get()),
                          {{"worker", worker}});
        }
    }

    {
        auto& decrypts = out.family("portcullis_ticket_decryptions_total",
                                    "Session tickets presented, by the age of the key that "
                                    "encrypted them (unknown: full handshake).",
                                    MetricType::Counter);
        const char* ages[] = {"current", "previous", "unknown"};
        for (std::size_t a = 0; a < 3; ++a) {
            Families::add(decrypts, sum.worker_by([a](const WorkerStats& s) -> const auto& {
                return s.ticket_decryptions[a];
            }),
                          {{"key_age", ages[a]}});
        }
        const auto keys = input.control.ticket_keys();
        out.counter("portcullis_ticket_key_rotations_total",
                    "Times a new ticket encryption key took over.",
                    static_cast<double>(keys.rotations));
        out.gauge("portcullis_ticket_key_age_seconds", "Age of the current ticket encryption key.",
                  static_cast<double>(::time(nullptr) - keys.current_created_unix));
    }

    auto& cert_expiry =
        out.family("portcullis_certificate_expiry_timestamp_seconds",
                   "notAfter of each server certificate, as unix time.", MetricType::Gauge);
    auto& crl_next = out.family("portcullis_crl_next_update_timestamp_seconds",
                                "nextUpdate of each loaded CRL, as unix time.", MetricType::Gauge);
    for (const auto& listener : input.inventory) {
        for (const auto& cert : listener.certificates) {
            Families::add(
                cert_expiry, static_cast<double>(cert.not_after_unix),
                {{"listener", listener.name}, {"file", cert.file}, {"subject", cert.subject}});
        }
        for (const auto& crl : listener.crls) {
            Families::add(
                crl_next, static_cast<double>(crl.next_update_unix),
                {{"listener", listener.name}, {"file", crl.file}, {"issuer", crl.issuer}});
        }
    }

    std::vector<FetchedSource> crl_sources, staple_sources;
    for (std::size_t i = 0; i < input.config.crl_sources.size() && i < max_crl_sources; ++i) {
        const auto& source = input.config.crl_sources[i];
        crl_sources.push_back(
            {{{"listener", input.config.listeners.at(source.listener).name}, {"url", source.url}},
             &input.stats.crl(i)});
    }
    for (std::size_t i = 0; i < input.config.staple_sources.size() && i < max_staple_sources; ++i) {
        const auto& source = input.config.staple_sources[i];
        staple_sources.push_back({{{"listener", input.config.listeners.at(source.listener).name},
                                   {"certificate", source.chain_file},
                                   {"responder", source.responder}},
                                  &input.stats.staple(i)});
    }
    add_fetch_metrics(out, "portcullis_crl", "CRL", "a usable CRL or 304 Not Modified",
                      crl_sources);
    add_fetch_metrics(out, "portcullis_ocsp_staple", "OCSP response",
                      "a response that passed every check", staple_sources);

    if (input.config.hsm.enabled()) add_hsm_metrics(out, input.stats);

    const auto reload = input.control.reload_status();
    auto& reloads = out.family("portcullis_reloads_total",
                               "Configuration reloads (SIGHUP or POST /reload) by result.",
                               MetricType::Counter);
    Families::add(reloads, static_cast<double>(reload.successes), {{"result", "success"}});
    Families::add(reloads, static_cast<double>(reload.failures), {{"result", "failure"}});
    out.gauge("portcullis_config_last_reload_successful",
              "1 when the last reload was applied (or none was tried), 0 when it was rejected.",
              reload.last_ok ? 1 : 0);
    out.gauge("portcullis_config_last_reload_timestamp_seconds",
              "When the last reload was tried, as unix time (0: never).",
              static_cast<double>(reload.last_unix));
    out.gauge("portcullis_config_generation", "Configuration generation being served.",
              static_cast<double>(input.control.config_generation()));

    return prometheus::TextSerializer().Serialize(out.take());
}

}  // namespace portcullis::mgmt
