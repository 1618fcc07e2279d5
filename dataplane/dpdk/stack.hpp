// The per-lcore network stack of the DPDK transport, run to completion on
// one RX/TX queue pair: rx burst -> frame codec -> ARP / ICMP echo / TCP ->
// the owners of the connections that saw activity -> tx burst.
//
// Connections surface as TcpStreams (ByteStream): accepted ones through a
// listening port's handler, opened ones through connect() (active open, ARP
// for the next hop, gateway outside the subnet). The worker's Connection
// drives them exactly like kernel sockets. A timer wheel (TimerWheel) visits
// only the connections whose timers are due, so idle connections cost
// nothing per poll. A connection in TIME_WAIT whose user has let go of it
// becomes a compact entry (tcp/time_wait_table.hpp) outside the heap: its
// kilobyte of flow is freed at once, and the heap pages it shared with the
// connections of its time can go back to the kernel. ARP and ping are
// Neighbors', frames for another worker's queue QueueHandoff's, output
// TxBurst's; the stack decides which frame is whose.
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
#include "dataplane/dpdk/neighbors.hpp"
#include "dataplane/dpdk/port.hpp"
#include "dataplane/dpdk/queue_handoff.hpp"
#include "dataplane/dpdk/stack_stats.hpp"
#include "dataplane/dpdk/tx_burst.hpp"
#include "dataplane/net/frame.hpp"
#include "dataplane/socket_address.hpp"
#include "dataplane/tcp/syn_cookie.hpp"
#include "dataplane/tcp/tcp_connection.hpp"
#include "dataplane/tcp/time_wait_table.hpp"
#include "dataplane/tcp/timestamp_clock.hpp"
#include "dataplane/timer_wheel.hpp"
#ifdef PORTCULLIS_FAULT_INJECTION
#include "dataplane/dpdk/fault_injection.hpp"
#endif

namespace portcullis::dataplane {
class Connection;
}

namespace portcullis::dataplane::dpdk {

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
    SocketAddress local_address() override { return local_; }

    Connection* owner = nullptr;  // told about activity by the stack's handler

  private:
    friend class Stack;
    struct FlowState;
    TcpStream(FlowState* flow, const SocketAddress& local) : flow_(flow), local_(local) {}
    FlowState* flow_;
    SocketAddress local_;  // kept: the flow may be gone before anyone asks
    int final_error_ = 0;  // once the flow is gone: 0 = ended cleanly
    bool ever_connected_ = false;
};

class Stack {
    friend class TcpStream;

  public:
    using AcceptHandler =
        std::function<void(std::unique_ptr<TcpStream> stream, const SocketAddress& peer)>;
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

    const StackStats& stats() const { return stats_; }
    // Every connection in the table, TIME_WAIT ones included.
    std::size_t connections() const { return flows_.size() + time_wait_.size(); }
    std::size_t time_wait_connections() const { return time_wait_.size(); }

#ifdef PORTCULLIS_FAULT_INJECTION
    void inject_faults(const FaultInjection& faults) { faults_.configure(faults); }
#endif

  private:
    using Flow = TcpStream::FlowState;
    enum class Sharing { alone, every_frame, queue_per_worker };
    void receive_burst(std::uint64_t now_ms);
    void receive(rte_mbuf* mbuf, bool handed, std::uint64_t now_ms);
    bool hand_off(rte_mbuf* mbuf, const net::Frame& frame);
    void handle(const net::Frame& frame, bool handed, std::uint64_t now_ms);
    void handle_arp(const net::Frame& frame, bool handed);
    void handle_icmp(const net::Frame& frame);
    void handle_tcp(const net::Frame& frame, std::uint64_t now_ms);
    bool answer_time_wait(const net::Frame& frame, std::uint64_t key, std::uint64_t now_ms);
    Flow* accept_flow(const net::Frame& frame, tcp::TcpConnection connection);
    void send_reset(const net::Frame& frame);
    void send_cookie(const net::Frame& frame, const tcp::FourTuple& tuple, std::uint64_t now_ms);
    bool reply_statelessly(const net::Frame& frame, const tcp::TcpSegment& segment);
    void service(Flow& flow, std::uint64_t now_ms);
    void schedule(Flow& flow);
    void count_retransmissions(Flow& flow);
    void retire(Flow& flow);
    void serve_echo_flow(Flow& flow);
    void flush_flow(Flow& flow);
    net::Ipv4Address next_hop(net::Ipv4Address destination) const;
    bool owns(net::Ipv4Address peer, std::uint16_t peer_port, std::uint16_t local_port) const;
    bool serves(std::uint16_t local_port) const;
    void prepare_checksums(rte_mbuf* mbuf) const;
    std::uint16_t allocate_port(net::Ipv4Address peer, std::uint16_t peer_port);
    tcp::TcpConfig tcp_config_for(net::Ipv4Address peer) const;

    Port& port_;
    StackAddress address_;
    net::MacAddress mac_{};
    StackStats stats_;
    TxBurst tx_{port_, stats_};
    QueueHandoff handoff_{port_, stats_};
    Neighbors neighbors_;
#ifdef PORTCULLIS_FAULT_INJECTION
    FaultInjector faults_{stats_};
#endif
    tcp::TcpConfig tcp_config_;
    tcp::TimestampClock timestamp_clock_{tcp::TimestampClock::boot_key()};
    std::uint16_t echo_port_ = 0;
    std::vector<std::pair<std::uint16_t, AcceptHandler>> listeners_;
    ActivityHandler on_activity_;
    // Before the flows, which are its timers: it outlives every one of them.
    TimerWheel wheel_;
    std::unordered_map<std::uint64_t, std::unique_ptr<Flow>> flows_;
    tcp::TimeWaitTable time_wait_{tcp_config_.time_wait_ms};  // flows_'s keys never in it
    std::vector<std::unique_ptr<Flow>> opened_;  // connect() during a poll: joins flows_ after it
    std::vector<Flow*> touched_;                 // flows to visit in this iteration
    std::vector<Flow*> unresolved_;              // active opens waiting for ARP
    std::vector<std::unique_ptr<Flow>> graveyard_;  // retired in this poll
    std::array<std::uint8_t, 2048> scratch_{};
    std::uint16_t next_port_;  // starts at random: a restart does not replay the last run's ports
    tcp::SynCookies cookies_;
    std::size_t syn_backlog_ = 1024;
    std::size_t half_open_ = 0;
    Sharing sharing_ = Sharing::alone;
    unsigned steering_index_ = 0, steering_count_ = 1;
    net::Checksums tx_checksums_ = net::Checksums::computed;
    std::uint64_t now_ms_ = 0;
};

}  // namespace portcullis::dataplane::dpdk
