// The per-lcore network stack of the DPDK transport, run to completion on
// one RX/TX queue pair: rx burst -> frame codec -> ARP / ICMP echo / TCP ->
// the owners of the connections that saw activity -> tx burst.
//
// Connections surface as TcpStreams (ByteStream): accepted ones through a
// listening port's handler, opened ones through connect() (active open, ARP
// for the next hop, gateway outside the subnet). The worker's Connection
// drives them exactly like kernel sockets. A timer wheel visits only the
// connections whose timers are due, so idle and TIME_WAIT connections cost
// nothing per poll.
//
// Several worker processes share a port in one of two ways:
// - a queue each (DPDK primary/secondary processes, RSS where the port has
//   it): a flow a client opens belongs to the worker whose queue its frames
//   reach; a flow we open belongs to the worker its local port names (port
//   mod workers), and its frames reaching another queue are handed to the
//   owner through the owner's ring. ARP is shared with every worker.
// - a virtual device that hands each of them every frame (af_packet on a
//   veth): software steering keeps a flow on the worker its 4-tuple hashes
//   to, and a worker picks local ports for its active opens that hash back
//   to itself.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "dataplane/byte_stream.hpp"
#include "dataplane/dpdk/port.hpp"
#include "dataplane/net/frame.hpp"
#include "dataplane/socket_address.hpp"
#include "dataplane/tcp/syn_cookie.hpp"
#include "dataplane/tcp/tcp_connection.hpp"
#include "dataplane/tcp/timestamp_clock.hpp"

namespace portcullis::dataplane {
class Connection;
}

namespace portcullis::dataplane::dpdk {

struct StackStats {
    std::uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
    std::array<std::uint64_t, net::drop_reason_count> rx_drops{};  // by net::Drop
    std::uint64_t not_for_us = 0;
    std::uint64_t steered_away = 0;  // another worker's flow: left to it, or handed to its queue
    std::uint64_t tx_full = 0;       // frames the NIC did not take
    std::uint64_t mbuf_exhausted = 0;
    std::uint64_t resets_sent = 0;
    std::uint64_t injected_drops = 0, injected_reorders = 0;
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_opened = 0, arp_requests = 0;
    std::uint64_t syn_cookies_sent = 0, syn_cookies_validated = 0;
    std::uint64_t time_wait_reused = 0;
    std::uint64_t retransmissions = 0;                       // TCP segments sent again
    std::uint64_t poll_iterations = 0, busy_iterations = 0;  // busy = did work
};

// Loss and reordering on input, for tests on kernels without netem: a
// dropped frame is freed unseen; a held frame is delivered after the next one.
struct FaultInjection {
    double drop = 0;     // probability per received TCP frame
    double reorder = 0;  // probability per received TCP frame
};

struct StackAddress {
    net::Ipv4Address address = 0;
    net::Ipv4Address netmask = 0xffffff00;
    net::Ipv4Address gateway = 0;  // 0: only the local subnet is reachable
};

class Stack;

// One TCP connection of the stack as a ByteStream. Owned by its user; the
// stack's flow and the stream let go of each other when either ends.
class TcpStream final : public ByteStream {
  public:
    ~TcpStream() override;
    Io read(std::span<std::uint8_t> into) override;
    Io write(std::span<const std::uint8_t> bytes) override;
    void shutdown_write() override;
    int connect_result() override;

    Connection* owner = nullptr;  // told about activity by the stack's handler

  private:
    friend class Stack;
    struct FlowState;
    explicit TcpStream(FlowState* flow) : flow_(flow) {}
    FlowState* flow_;
    int final_error_ = 0;  // once the flow is gone: 0 = ended cleanly
    bool ever_connected_ = false;
};

class Stack {
    friend class TcpStream;

  public:
    using AcceptHandler = std::function<void(
        std::unique_ptr<TcpStream> stream, const SocketAddress& peer, const SocketAddress& local)>;
    using ActivityHandler = std::function<void(TcpStream& stream)>;

    Stack(Port& port, const StackAddress& address, const tcp::TcpConfig& tcp_config = {});
    ~Stack();
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    // One poll-loop iteration; returns whether it did any work.
    bool poll(std::uint64_t now_ms);

    // Connections to `port` are handed to `handler` once established.
    void listen(std::uint16_t port, AcceptHandler handler);
    void stop_listening();
    // What arrives on `port` goes straight back (the probe's echo service).
    void serve_echo(std::uint16_t port) { echo_port_ = port; }
    // Called when a stream became readable, writable, connected or closed.
    void on_activity(ActivityHandler handler) { on_activity_ = std::move(handler); }
    // Active open. Null with `error` set when no local port is free or the
    // destination is off-subnet with no gateway.
    std::unique_ptr<TcpStream> connect(net::Ipv4Address address, std::uint16_t port, int& error);
    // Resolves `address` ahead of the first connection that needs it.
    void resolve(net::Ipv4Address address, std::uint64_t now_ms);

    // Every worker sees every frame; this one takes the flows whose 4-tuple
    // hashes to `index` of `count`. (A port of several queues needs nothing:
    // the stack shares it by queue.)
    void set_steering(unsigned index, unsigned count) {
        steering_index_ = index;
        steering_count_ = count == 0 ? 1 : count;
        sharing_ = steering_count_ > 1 ? Sharing::every_frame : Sharing::alone;
    }
    // Half-open connections kept before SYN cookies take over.
    void set_syn_backlog(std::size_t backlog) { syn_backlog_ = backlog; }
    void inject_faults(const FaultInjection& faults) { faults_ = faults; }

    const StackStats& stats() const { return stats_; }
    std::size_t connections() const { return flows_.size(); }

  private:
    using Flow = TcpStream::FlowState;
    enum class Sharing { alone, every_frame, queue_per_worker };
    void receive_burst(std::uint64_t now_ms);
    void receive(rte_mbuf* mbuf, bool handed, std::uint64_t now_ms);
    bool hand_off(rte_mbuf* mbuf, const net::Frame& frame);
    void handle(const net::Frame& frame, bool handed, std::uint64_t now_ms);
    void handle_arp(const net::Frame& frame, bool handed);
    void handle_tcp(const net::Frame& frame, std::uint64_t now_ms);
    Flow* accept_flow(const net::Frame& frame, tcp::TcpConnection connection);
    void send_reset(const net::Frame& frame);
    void send_cookie(const net::Frame& frame, const tcp::FourTuple& tuple, std::uint64_t now_ms);
    bool reply_statelessly(const net::Frame& frame, const tcp::TcpSegment& segment);
    void service(Flow& flow, std::uint64_t now_ms);
    void schedule(Flow& flow);
    void unschedule(Flow& flow);
    void count_retransmissions(Flow& flow);
    void retire(Flow& flow);
    void serve_echo_flow(Flow& flow);
    void flush_flow(Flow& flow);
    void send_arp_request(net::Ipv4Address target, std::uint64_t now_ms);
    net::Ipv4Address next_hop(net::Ipv4Address destination) const;
    bool owns(net::Ipv4Address peer, std::uint16_t peer_port, std::uint16_t local_port) const;
    bool serves(std::uint16_t local_port) const;
    void prepare_checksums(rte_mbuf* mbuf) const;
    std::uint16_t allocate_port(net::Ipv4Address peer, std::uint16_t peer_port);
    tcp::TcpConfig tcp_config_for(net::Ipv4Address peer) const;
    void send_frame(rte_mbuf* mbuf);
    rte_mbuf* allocate();
    void flush_tx();

    Port& port_;
    StackAddress address_;
    net::MacAddress mac_{};
    tcp::TcpConfig tcp_config_;
    tcp::TimestampClock timestamp_clock_{tcp::TimestampClock::boot_key()};
    std::uint16_t echo_port_ = 0;
    std::vector<std::pair<std::uint16_t, AcceptHandler>> listeners_;
    ActivityHandler on_activity_;
    std::unordered_map<std::uint64_t, std::unique_ptr<Flow>> flows_;
    std::vector<std::unique_ptr<Flow>> opened_;  // connect() during a poll: joins flows_ after it
    std::vector<Flow*> touched_;                 // flows to visit in this iteration
    std::vector<Flow*> unresolved_;              // active opens waiting for ARP
    std::vector<std::unique_ptr<Flow>> graveyard_;  // retired in this poll
    // Timer wheel: one slot per millisecond; later deadlines wait in the last
    // slot of the horizon and are rescheduled from there.
    static constexpr std::size_t wheel_slots = 1024;
    std::array<std::vector<Flow*>, wheel_slots> wheel_;
    std::uint64_t wheel_now_ = 0;  // the slot time processed last
    std::vector<Flow*> due_;
    std::array<rte_mbuf*, 64> tx_{};
    std::uint16_t tx_count_ = 0;
    std::array<std::uint8_t, 2048> scratch_{};
    StackStats stats_;
    FaultInjection faults_;
    std::unordered_map<net::Ipv4Address, net::MacAddress> arp_cache_;
    std::uint64_t last_arp_request_ = 0;
    std::uint16_t next_port_;  // starts at random: a restart does not replay the last run's ports
    tcp::SynCookies cookies_;
    std::size_t syn_backlog_ = 1024;
    std::size_t half_open_ = 0;
    Sharing sharing_ = Sharing::alone;
    unsigned steering_index_ = 0, steering_count_ = 1;
    net::Checksums tx_checksums_ = net::Checksums::computed;
    rte_mbuf* held_ = nullptr;  // a reordered frame waiting for the next one
    std::uint64_t now_ms_ = 0;
};

}  // namespace portcullis::dataplane::dpdk
