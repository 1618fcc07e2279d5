// The per-lcore network stack of the DPDK transport, run to completion on
// one RX/TX queue pair: rx burst -> frame codec -> ARP / ICMP echo / TCP ->
// tx burst. This first version serves a TCP echo port (the integration tests
// run it against the Linux kernel's TCP over a veth pair); the TLS core and
// the upstream side plug in where the echo is.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "crypto/server_tls_context.hpp"
#include "dataplane/dpdk/port.hpp"
#include "dataplane/net/frame.hpp"
#include "dataplane/tcp/syn_cookie.hpp"
#include "dataplane/tcp/tcp_connection.hpp"

namespace portcullis::dataplane::dpdk {

struct StackStats {
    std::uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
    std::array<std::uint64_t, net::drop_reason_count> rx_drops{};  // by net::Drop
    std::uint64_t not_for_us = 0;
    std::uint64_t tx_full = 0;  // frames the NIC did not take
    std::uint64_t mbuf_exhausted = 0;
    std::uint64_t resets_sent = 0;
    std::uint64_t injected_drops = 0, injected_reorders = 0;
    std::uint64_t connections_accepted = 0;
    std::uint64_t tls_handshakes = 0, tls_failures = 0;
    std::uint64_t upstream_connects = 0, arp_requests = 0;
    std::uint64_t syn_cookies_sent = 0, syn_cookies_validated = 0;
    std::uint64_t poll_iterations = 0, busy_iterations = 0;  // busy = did work
};

// Loss and reordering on input, for tests on kernels without netem: a
// dropped frame is freed unseen; a held frame is delivered after the next one.
struct FaultInjection {
    double drop = 0;     // probability per received TCP frame
    double reorder = 0;  // probability per received TCP frame
};

class Stack {
  public:
    // `tls` (optional): connections to `tls_port` are TLS-terminated by the
    // TLS core and their plaintext is echoed back (the upstream side comes next).
    Stack(Port& port, net::Ipv4Address address, std::uint16_t echo_port,
          const tcp::TcpConfig& tcp_config = {}, const crypto::ServerTlsContext* tls = nullptr,
          std::uint16_t tls_port = 0);
    ~Stack();
    // One poll-loop iteration; returns whether it did any work.
    bool poll(std::uint64_t now_ms);
    const StackStats& stats() const { return stats_; }
    std::size_t connections() const { return flows_.size(); }
    void inject_faults(const FaultInjection& faults) { faults_ = faults; }
    // Half-open connections kept before SYN cookies take over.
    void set_syn_backlog(std::size_t backlog) { syn_backlog_ = backlog; }
    // TLS connections relay their plaintext to this backend, opened through
    // this same stack (active open, ARP for the next hop), with a PROXY v2
    // header first when asked. Without it, plaintext is echoed.
    void set_upstream(net::Ipv4Address address, std::uint16_t port, bool proxy_protocol) {
        upstream_address_ = address;
        upstream_port_ = port;
        proxy_protocol_ = proxy_protocol;
    }

  private:
    struct Flow;
    void handle(const net::Frame& frame, std::uint64_t now_ms);
    void handle_tcp(const net::Frame& frame, std::uint64_t now_ms);
    void send_reset(const net::Frame& frame);
    void send_cookie(const net::Frame& frame, const tcp::FourTuple& tuple, std::uint64_t now_ms);
    bool reply_statelessly(const net::Frame& frame, const tcp::TcpSegment& segment);
    void flush_flow(Flow& flow);
    void serve_echo(Flow& flow);
    void serve_tls(Flow& flow, std::uint64_t now_ms);
    bool open_upstream(Flow& client, std::uint64_t now_ms);
    void send_arp_request(net::Ipv4Address target, std::uint64_t now_ms);
    std::uint16_t allocate_port();
    void send_frame(rte_mbuf* mbuf);
    rte_mbuf* allocate();
    void flush_tx();

    Port& port_;
    net::Ipv4Address address_;
    net::MacAddress mac_{};
    std::uint16_t echo_port_;
    tcp::TcpConfig tcp_config_;
    const crypto::ServerTlsContext* tls_;
    std::uint16_t tls_port_;
    std::unordered_map<std::uint64_t, std::unique_ptr<Flow>> flows_;
    std::array<rte_mbuf*, 64> tx_{};
    std::uint16_t tx_count_ = 0;
    std::array<std::uint8_t, 2048> scratch_{};
    StackStats stats_;
    FaultInjection faults_;
    net::Ipv4Address upstream_address_ = 0;
    std::uint16_t upstream_port_ = 0;
    bool proxy_protocol_ = false;
    std::unordered_map<net::Ipv4Address, net::MacAddress> arp_cache_;
    std::uint64_t last_arp_request_ = 0;
    std::uint16_t next_port_ = 32768;
    tcp::SynCookies cookies_;
    std::size_t syn_backlog_ = 1024;
    std::size_t half_open_ = 0;
    rte_mbuf* held_ = nullptr;  // a reordered frame waiting for the next one
};

}  // namespace portcullis::dataplane::dpdk
