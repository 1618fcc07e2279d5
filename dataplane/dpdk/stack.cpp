#include "dataplane/dpdk/stack.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_ethdev.h>
#include <rte_random.h>

#include <algorithm>
#include <cstring>

#include "base/heap_policy.hpp"

namespace portcullis::dataplane::dpdk {

// A flow is its own timer on the stack's wheel.
struct TcpStream::FlowState : TimerWheel::Timer {
    FlowState(Stack& owner, tcp::TcpConnection connection, const net::Route& path,
              std::uint16_t local, std::uint16_t peer, std::uint64_t flow_key)
        : stack(owner),
          tcp(std::move(connection)),
          route(path),
          local_port(local),
          peer_port(peer),
          key(flow_key) {}

    Stack& stack;
    tcp::TcpConnection tcp;
    net::Route route;
    std::uint16_t local_port;
    std::uint16_t peer_port;
    std::uint64_t key;
    TcpStream* stream = nullptr;
    int listener = -1;         // index into the stack's listeners; -1: opened by us or echo
    bool echo = false;         // the probe's echo service
    bool accepted = false;     // handed to its listener
    bool half_open = false;    // counted in the SYN backlog until it leaves SYN-RECEIVED
    bool resolved = true;      // next hop's MAC known (an active open may wait for ARP)
    net::Ipv4Address hop = 0;  // the next hop while unresolved
    bool established_once = false;
    bool closing = false;                       // echo: our FIN is queued
    bool notify = false;                        // input since the owner last heard of it
    bool queued = false;                        // in the stack's touched list
    bool dead = false;                          // retired: memory kept until the end of this poll
    std::uint64_t retransmissions_counted = 0;  // already in the stack's total
};

namespace {

constexpr std::uint16_t burst = 32;
constexpr std::uint16_t first_ephemeral_port = 32768;
constexpr std::uint16_t last_ephemeral_port = 60999;

std::uint64_t flow_key(net::Ipv4Address peer, std::uint16_t peer_port, std::uint16_t local_port) {
    return (std::uint64_t{peer} << 32) | (std::uint64_t{peer_port} << 16) | local_port;
}

std::array<std::uint8_t, 16> random_secret() {
    std::array<std::uint8_t, 16> secret{};
    for (std::size_t i = 0; i < secret.size(); i += 8) {
        const std::uint64_t r = rte_rand();
        std::memcpy(secret.data() + i, &r, 8);
    }
    return secret;
}

net::MacAddress mac_of(const Port& port) {
    net::MacAddress mac{};
    std::copy_n(port.mac().addr_bytes, mac.size(), mac.begin());
    return mac;
}

SocketAddress ipv4_address(net::Ipv4Address address, std::uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(address);
    return SocketAddress::from(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

bool is_open(tcp::TcpState state) {
    return state != tcp::TcpState::closed && state != tcp::TcpState::syn_sent &&
           state != tcp::TcpState::syn_received;
}

}  // namespace

// ---- TcpStream: the connection's user side --------------------------------

TcpStream::~TcpStream() {
    if (flow_ == nullptr) return;
    flow_->stream = nullptr;
    auto& tcp = flow_->tcp;
    // Like close() on a kernel socket: unread input or an unfinished
    // handshake end in RST, otherwise FIN after what is queued.
    if (tcp.state() == tcp::TcpState::syn_sent || tcp.state() == tcp::TcpState::syn_received ||
        tcp.readable() > 0) {
        tcp.abort();
    } else if (tcp.state() != tcp::TcpState::closed && tcp.state() != tcp::TcpState::time_wait) {
        tcp.close();
    }
    flow_->stack.schedule(*flow_);
}

ByteStream::Io TcpStream::read(std::span<std::uint8_t> into) {
    if (flow_ == nullptr) return {final_error_ ? Status::error : Status::eof, 0, final_error_};
    auto& tcp = flow_->tcp;
    const std::size_t n = tcp.receive(into);
    if (n > 0) {
        flow_->stack.schedule(*flow_);  // the window opened: the peer may hear of it
        return {Status::ok, n, 0};
    }
    if (tcp.reset()) return {Status::error, 0, ECONNRESET};
    if (tcp.peer_closed()) return {Status::eof, 0, 0};
    return {Status::would_block, 0, 0};
}

ByteStream::Io TcpStream::write(std::span<const std::uint8_t> bytes) {
    if (flow_ == nullptr || flow_->tcp.reset()) return {Status::error, 0, EPIPE};
    const std::size_t n = flow_->tcp.send(bytes);
    if (n == 0) return {Status::would_block, 0, 0};
    flow_->stack.schedule(*flow_);
    return {Status::ok, n, 0};
}

void TcpStream::shutdown_write() {
    if (flow_ == nullptr) return;
    flow_->tcp.close();
    flow_->stack.schedule(*flow_);
}

int TcpStream::connect_result() {
    if (flow_ == nullptr) return ever_connected_ ? 0 : (final_error_ ? final_error_ : ECONNREFUSED);
    const auto state = flow_->tcp.state();
    if (state == tcp::TcpState::syn_sent) return EINPROGRESS;
    if (flow_->tcp.reset() && !flow_->established_once) return ECONNREFUSED;
    ever_connected_ = true;
    return 0;
}

// ---- Stack -----------------------------------------------------------------

Stack::Stack(Port& port, const StackAddress& address, const tcp::TcpConfig& tcp_config)
    : port_(port),
      address_(address),
      mac_(mac_of(port)),
      neighbors_(tx_, stats_, mac_, address.address),
      tcp_config_(tcp_config),
      next_port_(static_cast<std::uint16_t>(
          first_ephemeral_port + rte_rand() % (last_ephemeral_port - first_ephemeral_port + 1))),
      cookies_(random_secret()) {
    // Flows come and go at line rate; their buffers must not cost page faults.
    base::keep_heap_resident();
    if (port.queues() > 1) {
        sharing_ = Sharing::queue_per_worker;
        steering_index_ = port.queue();
        steering_count_ = port.queues();
    }
    if (port.offloads().tx_checksums) tx_checksums_ = net::Checksums::offloaded;
    touched_.reserve(256);
}

Stack::~Stack() {
    // Streams still held by their users must not reach freed flows.
    for (auto& [key, flow] : flows_)
        if (flow->stream != nullptr) flow->stream->flow_ = nullptr;
    for (auto& flow : opened_)
        if (flow->stream != nullptr) flow->stream->flow_ = nullptr;
}

void Stack::listen(std::uint16_t port, AcceptHandler handler) {
    listeners_.emplace_back(port, std::move(handler));
}

void Stack::stop_listening() {
    // Established flows keep their index; only new SYNs look the port up.
    for (auto& listener : listeners_) listener.first = 0;
}

// Marks a flow for a visit in this poll (or the next one, when called from
// outside poll): its owner wrote, read or closed.
void Stack::schedule(Flow& flow) {
    if (flow.queued || flow.dead) return;
    flow.queued = true;
    touched_.push_back(&flow);
}

bool Stack::poll(std::uint64_t now_ms) {
    now_ms_ = now_ms;
    ++stats_.poll_iterations;
    const auto packets_before = stats_.rx_packets;
    for (auto& flow : opened_) {
        if (flow->dead) continue;  // aborted before its first poll
        const auto key = flow->key;
        flows_.emplace(key, std::move(flow));
    }
    opened_.clear();
    receive_burst(now_ms);
    bool work = stats_.rx_packets != packets_before || !touched_.empty();

    // Timers due since the last poll.
    time_wait_.expire(now_ms);
    wheel_.advance(now_ms, [this, now_ms, &work](TimerWheel::Timer& timer) {
        work = true;
        service(static_cast<Flow&>(timer), now_ms);
    });
    // Flows with input or with writes from their owners; servicing one may
    // touch others (a relay writes into its partner), so this grows as it goes.
    for (std::size_t i = 0; i < touched_.size(); ++i) {
        Flow* flow = touched_[i];
        flow->queued = false;
        service(*flow, now_ms);
    }
    touched_.clear();
    tx_.flush();
    graveyard_.clear();
    if (work) ++stats_.busy_iterations;
    return work;
}

void Stack::receive_burst(std::uint64_t now_ms) {
    std::array<rte_mbuf*, burst> rx{};
    const std::uint16_t received = rte_eth_rx_burst(port_.id(), port_.queue(), rx.data(), burst);
    for (std::uint16_t i = 0; i < received; ++i) receive(rx[i], false, now_ms);
    if (sharing_ != Sharing::queue_per_worker) return;
    const unsigned handed = handoff_.receive(rx);
    for (unsigned i = 0; i < handed; ++i) receive(rx[i], true, now_ms);
}

// `handed`: another worker received the frame and passed it on.
void Stack::receive(rte_mbuf* mbuf, bool handed, std::uint64_t now_ms) {
    if (!handed) {
        ++stats_.rx_packets;
        stats_.rx_bytes += mbuf->pkt_len;
    }
    const bool verified =
        port_.offloads().rx_checksums &&
        (mbuf->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
        (mbuf->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD;
    const auto frame = net::parse_frame(
        {rte_pktmbuf_mtod(mbuf, const std::uint8_t*), rte_pktmbuf_data_len(mbuf)}, verified);
    if (!handed && sharing_ == Sharing::queue_per_worker && hand_off(mbuf, frame)) return;
#ifdef PORTCULLIS_FAULT_INJECTION
    if (frame.kind == net::Frame::Kind::tcp && faults_.intercept(mbuf)) return;
#endif
    handle(frame, handed, now_ms);  // copies what it keeps: the mbuf can go
    rte_pktmbuf_free(mbuf);
#ifdef PORTCULLIS_FAULT_INJECTION
    if (rte_mbuf* held = faults_.release()) {
        const auto late = net::parse_frame(
            {rte_pktmbuf_mtod(held, const std::uint8_t*), rte_pktmbuf_data_len(held)});
        handle(late, false, now_ms);
        rte_pktmbuf_free(held);
    }
#endif
}

// A frame on this worker's queue that another worker must see: ARP (each
// keeps its own cache; a copy goes to every other worker and this one
// handles it too) or a segment of a flow another worker opened (its local
// port names the owner). Returns whether the frame left this worker.
bool Stack::hand_off(rte_mbuf* mbuf, const net::Frame& frame) {
    if (frame.kind == net::Frame::Kind::arp) {
        handoff_.share(mbuf, steering_index_, steering_count_);
        return false;
    }
    if (frame.kind != net::Frame::Kind::tcp || frame.destination_ip != address_.address)
        return false;
    const std::uint16_t local = frame.destination_port;
    // Clients' flows stay where their frames land; so do closed ports' resets.
    if (local < first_ephemeral_port || local > last_ephemeral_port || serves(local)) return false;
    const unsigned owner = local % steering_count_;
    const auto key = flow_key(frame.source_ip, frame.source_port, local);
    if (owner == steering_index_ || flows_.find(key) != flows_.end() ||
        time_wait_.find(key) != nullptr)
        return false;
    ++stats_.steered_away;
    handoff_.pass(mbuf, owner);
    return true;
}

bool Stack::serves(std::uint16_t local_port) const {
    if (echo_port_ != 0 && local_port == echo_port_) return true;
    return std::any_of(listeners_.begin(), listeners_.end(),
                       [local_port](const auto& listener) { return listener.first == local_port; });
}

// One visit: timers, the SYN backlog, handing an established connection to
// its listener, telling the owner, then sending what is queued.
void Stack::service(Flow& flow, std::uint64_t now_ms) {
    if (flow.dead) return;
    auto& tcp = flow.tcp;
    bool tell_owner = flow.notify;
    flow.notify = false;
    if (tcp.next_timer() <= now_ms) {
        tcp.on_timer(now_ms);
        tell_owner = true;
    }
    if (is_open(tcp.state())) flow.established_once = true;
    if (flow.half_open && tcp.state() != tcp::TcpState::syn_received) {
        flow.half_open = false;
        --half_open_;
    }
    if (flow.listener >= 0 && !flow.accepted && is_open(tcp.state())) {
        flow.accepted = true;
        auto& handler = listeners_[static_cast<std::size_t>(flow.listener)].second;
        auto stream = std::unique_ptr<TcpStream>(
            new TcpStream(&flow, ipv4_address(address_.address, flow.local_port)));
        flow.stream = stream.get();
        ++stats_.connections_accepted;
        handler(std::move(stream), ipv4_address(flow.route.destination_ip, flow.peer_port));
        tell_owner = false;  // the handler served it already
    }
    if (flow.echo) serve_echo_flow(flow);
    if (tell_owner && flow.stream != nullptr && on_activity_) on_activity_(*flow.stream);
    if (flow.dead) return;
    tcp.push(now_ms);
    flush_flow(flow);
    count_retransmissions(flow);
    if (tcp.state() == tcp::TcpState::closed) {
        retire(flow);
        return;
    }
    if (tcp.state() == tcp::TcpState::time_wait && flow.stream == nullptr && flow.resolved) {
        time_wait_.insert(tcp.time_wait_entry(flow.key));
        retire(flow);
        return;
    }
    // Back on the wheel at its next deadline. A flow already due no later
    // than that stays where it is: an early visit only re-checks, and the
    // retransmission deadline, which moves on with every ACK, would
    // otherwise relink the flow on almost every visit.
    const auto deadline = tcp.next_timer();
    if (flow.scheduled() && flow.deadline() <= deadline) return;
    if (deadline == tcp::TcpConnection::no_timer) {
        TimerWheel::cancel(flow);
        return;
    }
    wheel_.schedule(flow, deadline);
}

// Every retransmission leaves through a visit, so the running total is kept
// there instead of walking the table when the metrics ask.
void Stack::count_retransmissions(Flow& flow) {
    const auto total = flow.tcp.stats().retransmissions;
    stats_.retransmissions += total - flow.retransmissions_counted;
    flow.retransmissions_counted = total;
}

// The flow leaves the table now (its key can be used again at once); its
// memory lives until the end of this poll, since lists may still name it.
void Stack::retire(Flow& flow) {
    if (flow.dead) return;
    flow.dead = true;
    count_retransmissions(flow);
    if (flow.half_open) --half_open_;
    TimerWheel::cancel(flow);
    std::erase(unresolved_, &flow);
    if (TcpStream* stream = flow.stream) {
        stream->flow_ = nullptr;
        stream->ever_connected_ = flow.established_once;
        stream->final_error_ = !flow.tcp.reset()       ? 0
                               : flow.established_once ? ECONNRESET
                                                       : ECONNREFUSED;
        flow.stream = nullptr;
        if (on_activity_) on_activity_(*stream);
    }
    const auto found = flows_.find(flow.key);
    if (found != flows_.end() && found->second.get() == &flow) {
        graveyard_.push_back(std::move(found->second));
        flows_.erase(found);
    }
}

// Another worker's flow, by the hash of its 4-tuple (our address is fixed).
bool Stack::owns(net::Ipv4Address peer, std::uint16_t peer_port, std::uint16_t local_port) const {
    if (sharing_ != Sharing::every_frame) return true;  // a queue of its own: handed its frames
    std::uint32_t h = peer * 0x9e3779b1u;
    h ^= ((std::uint32_t{peer_port} << 16) | local_port) * 0x85ebca77u;
    h ^= h >> 15;
    h *= 0xc2b2ae3du;
    h ^= h >> 13;
    return h % steering_count_ == steering_index_;
}

tcp::TcpConfig Stack::tcp_config_for(net::Ipv4Address peer) const {
    auto config = tcp_config_;
    config.timestamp_offset = timestamp_clock_.offset(address_.address, peer);
    return config;
}

net::Ipv4Address Stack::next_hop(net::Ipv4Address destination) const {
    if ((destination & address_.netmask) == (address_.address & address_.netmask))
        return destination;
    return address_.gateway;
}

// A free local port whose flow hashes to this worker. A port whose last
// connection to the same peer sits in TIME_WAIT is taken over (our
// timestamps keep rising, so the peer tells old segments from new ones):
// TIME_WAIT never exhausts the ports.
std::uint16_t Stack::allocate_port(net::Ipv4Address peer, std::uint16_t peer_port) {
    const int range = last_ephemeral_port - first_ephemeral_port + 1;
    for (int attempts = 0; attempts < range; ++attempts) {
        const std::uint16_t port = next_port_;
        next_port_ = next_port_ >= last_ephemeral_port ? first_ephemeral_port
                                                       : static_cast<std::uint16_t>(next_port_ + 1);
        const bool ours = sharing_ == Sharing::queue_per_worker
                              ? port % steering_count_ == steering_index_
                              : owns(peer, peer_port, port);
        if (!ours) continue;
        const auto key = flow_key(peer, peer_port, port);
        if (time_wait_.erase(key)) {
            ++stats_.time_wait_reused;
            return port;
        }
        const auto found = flows_.find(key);
        if (found == flows_.end()) return port;
        if (found->second->tcp.state() == tcp::TcpState::time_wait) {
            ++stats_.time_wait_reused;
            retire(*found->second);
            return port;
        }
    }
    return 0;
}

std::unique_ptr<TcpStream> Stack::connect(net::Ipv4Address address, std::uint16_t port,
                                          int& error) {
    const auto hop = next_hop(address);
    if (hop == 0) {
        error = ENETUNREACH;
        return nullptr;
    }
    const std::uint16_t local = allocate_port(address, port);
    if (local == 0) {
        error = EADDRNOTAVAIL;
        return nullptr;
    }
    auto flow =
        std::make_unique<Flow>(*this,
                               tcp::TcpConnection(tcp_config_for(address),
                                                  static_cast<std::uint32_t>(rte_rand()), now_ms_),
                               net::Route{mac_, {}, address_.address, address}, local, port,
                               flow_key(address, port, local));
    if (const auto* mac = neighbors_.find(hop)) {
        flow->route.destination_mac = *mac;
    } else {
        flow->resolved = false;
        flow->hop = hop;
        unresolved_.push_back(flow.get());
        neighbors_.request(hop, now_ms_);
    }
    auto stream = std::unique_ptr<TcpStream>(
        new TcpStream(flow.get(), ipv4_address(address_.address, local)));
    flow->stream = stream.get();
    schedule(*flow);
    ++stats_.connections_opened;
    opened_.push_back(std::move(flow));
    return stream;
}

void Stack::resolve(net::Ipv4Address address, std::uint64_t now_ms) {
    const auto hop = next_hop(address);
    if (hop != 0 && neighbors_.find(hop) == nullptr) neighbors_.request_now(hop, now_ms);
}

// What arrives goes straight back; the peer's FIN ends it.
void Stack::serve_echo_flow(Flow& flow) {
    auto& tcp = flow.tcp;
    while (tcp.readable() > 0 && tcp.writable() > 0) {
        const auto n = tcp.receive(
            std::span(scratch_).first(std::min<std::size_t>(scratch_.size(), tcp.writable())));
        tcp.send(std::span(scratch_).first(n));
    }
    if (tcp.peer_closed() && tcp.readable() == 0 && !flow.closing) {
        tcp.close();
        flow.closing = true;
    }
}

void Stack::handle(const net::Frame& frame, bool handed, std::uint64_t now_ms) {
    // Other workers on the same port transmit with our MAC; their frames
    // come back to us on virtual devices.
    if (frame.kind != net::Frame::Kind::dropped && frame.source_mac == mac_) {
        ++stats_.not_for_us;
        return;
    }
    switch (frame.kind) {
        case net::Frame::Kind::dropped:
            ++stats_.rx_drops[static_cast<std::size_t>(frame.drop)];
            return;
        case net::Frame::Kind::arp:
            handle_arp(frame, handed);
            return;
        case net::Frame::Kind::icmp_echo_request:
            handle_icmp(frame);
            return;
        case net::Frame::Kind::tcp:
            if (frame.destination_ip != address_.address) {
                ++stats_.not_for_us;
                return;
            }
            handle_tcp(frame, now_ms);
            return;
    }
}

void Stack::handle_arp(const net::Frame& frame, bool handed) {
    const auto& arp = frame.arp;
    if (neighbors_.learn(arp)) {
        for (std::size_t i = 0; i < unresolved_.size();) {
            Flow* flow = unresolved_[i];
            if (flow->hop == arp.sender_ip) {
                flow->route.destination_mac = arp.sender_mac;
                flow->resolved = true;
                schedule(*flow);
                unresolved_[i] = unresolved_.back();
                unresolved_.pop_back();
            } else {
                ++i;
            }
        }
    }
    // One answer: from the worker whose queue the request reached, or the
    // first worker where every worker sees it.
    const bool answers = sharing_ == Sharing::every_frame ? steering_index_ == 0 : !handed;
    if (answers) {
        neighbors_.answer(arp);
    } else {
        ++stats_.not_for_us;
    }
}

void Stack::handle_icmp(const net::Frame& frame) {
    // Where every worker sees it, the first answers.
    if (frame.destination_ip != address_.address ||
        (sharing_ == Sharing::every_frame && steering_index_ != 0)) {
        ++stats_.not_for_us;
        return;
    }
    neighbors_.answer_echo(frame);
}

Stack::Flow* Stack::accept_flow(const net::Frame& frame, tcp::TcpConnection connection) {
    const auto key = flow_key(frame.source_ip, frame.source_port, frame.destination_port);
    auto flow = std::make_unique<Flow>(
        *this, std::move(connection),
        net::Route{mac_, frame.source_mac, address_.address, frame.source_ip},
        frame.destination_port, frame.source_port, key);
    Flow* raw = flow.get();
    if (frame.destination_port == echo_port_ && echo_port_ != 0) {
        raw->echo = true;
        ++stats_.connections_accepted;
    } else {
        for (std::size_t i = 0; i < listeners_.size(); ++i)
            if (listeners_[i].first == frame.destination_port) raw->listener = static_cast<int>(i);
    }
    flows_.emplace(key, std::move(flow));
    raw->notify = true;
    schedule(*raw);
    return raw;
}

void Stack::handle_tcp(const net::Frame& frame, std::uint64_t now_ms) {
    const auto& segment = frame.segment;
    const auto key = flow_key(frame.source_ip, frame.source_port, frame.destination_port);
    const auto found = flows_.find(key);
    if (found != flows_.end()) {
        Flow& flow = *found->second;
        // RFC 6191 in spirit: a new SYN on a tuple in TIME_WAIT starts a new
        // connection instead of waiting out 2 MSL.
        if (flow.tcp.state() == tcp::TcpState::time_wait && segment.has(tcp::flag::syn) &&
            !segment.has(tcp::flag::ack)) {
            ++stats_.time_wait_reused;
            retire(flow);
        } else {
            flow.tcp.input(segment, now_ms);
            flow.notify = true;
            schedule(flow);
            return;
        }
    }
    if (answer_time_wait(frame, key, now_ms)) return;
    if (!owns(frame.source_ip, frame.source_port, frame.destination_port)) {
        ++stats_.steered_away;
        return;
    }
    const bool served = serves(frame.destination_port);
    const tcp::FourTuple tuple{frame.source_ip, frame.source_port, address_.address,
                               frame.destination_port};
    if (segment.has(tcp::flag::syn) && !segment.has(tcp::flag::ack) && served) {
        if (half_open_ >= syn_backlog_) {
            send_cookie(frame, tuple, now_ms);  // no state until the ACK proves the peer is real
            return;
        }
        Flow* flow =
            accept_flow(frame, tcp::TcpConnection(tcp_config_for(frame.source_ip), segment,
                                                  static_cast<std::uint32_t>(rte_rand()), now_ms));
        flow->half_open = true;
        ++half_open_;
        return;
    }
    if (served && segment.has(tcp::flag::ack) && !segment.has(tcp::flag::syn) &&
        !segment.has(tcp::flag::rst)) {
        if (const auto mss = cookies_.check(tuple, segment.seq, segment.ack, now_ms)) {
            ++stats_.syn_cookies_validated;
            Flow* flow = accept_flow(
                frame, tcp::TcpConnection(
                           tcp_config_for(frame.source_ip),
                           tcp::TcpConnection::CookieHandshake{segment.seq - 1, segment.ack - 1,
                                                               std::min(*mss, tcp_config_.mss)}));
            flow->tcp.input(segment, now_ms);  // the ACK may carry data
            return;
        }
    }
    if (!segment.has(tcp::flag::rst)) send_reset(frame);
}

// A segment for a 4-tuple in TIME_WAIT: answered from its entry, unless it
// is a new connection's SYN (RFC 6191 in spirit, as for a flow above).
// Returns whether the segment was the entry's.
bool Stack::answer_time_wait(const net::Frame& frame, std::uint64_t key, std::uint64_t now_ms) {
    if (time_wait_.size() == 0) return false;
    const auto& segment = frame.segment;
    if (segment.has(tcp::flag::syn) && !segment.has(tcp::flag::ack)) {
        if (time_wait_.erase(key)) ++stats_.time_wait_reused;
        return false;
    }
    if (time_wait_.find(key) == nullptr) return false;
    if (const auto reply = time_wait_.answer(key, segment, now_ms))
        reply_statelessly(frame, *reply);
    return true;
}

// The SYN-ACK of a SYN cookie: the ISS is the cookie; MSS only (no window
// scaling or timestamps: the cookie cannot carry them).
void Stack::send_cookie(const net::Frame& frame, const tcp::FourTuple& tuple,
                        std::uint64_t now_ms) {
    tcp::TcpSegment synack;
    synack.seq = cookies_.make(tuple, frame.segment.seq,
                               frame.segment.options.mss ? frame.segment.options.mss : 536, now_ms);
    synack.ack = frame.segment.seq + 1;
    synack.flags = tcp::flag::syn | tcp::flag::ack;
    synack.window = 65535;
    synack.options.mss = tcp_config_.mss;
    if (reply_statelessly(frame, synack)) ++stats_.syn_cookies_sent;
}

// A segment answering `frame` that belongs to no connection (RST, cookie
// SYN-ACK), padded to the Ethernet minimum.
bool Stack::reply_statelessly(const net::Frame& frame, const tcp::TcpSegment& segment) {
    rte_mbuf* mbuf = tx_.allocate();
    if (mbuf == nullptr) return false;
    // Headers, and options up to a timestamp (TIME_WAIT's ACK).
    constexpr std::size_t room = 80;
    constexpr std::size_t minimum = 60;
    auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(mbuf, room));
    const net::Route route{mac_, frame.source_mac, address_.address, frame.source_ip};
    const auto written = net::build_tcp({data, room}, route, frame.destination_port,
                                        frame.source_port, segment, tx_checksums_);
    if (written == 0) {
        rte_pktmbuf_free(mbuf);
        return false;
    }
    prepare_checksums(mbuf);
    std::fill(data + written, data + room, 0);
    rte_pktmbuf_trim(mbuf, static_cast<std::uint16_t>(room - std::max(written, minimum)));
    tx_.send(mbuf);
    return true;
}

// RFC 9293 3.10.7.1: nobody listens here.
void Stack::send_reset(const net::Frame& frame) {
    tcp::TcpSegment rst;
    const auto& s = frame.segment;
    if (s.has(tcp::flag::ack)) {
        rst.seq = s.ack;
        rst.flags = tcp::flag::rst;
    } else {
        rst.seq = 0;
        rst.ack = s.seq + s.length();
        rst.flags = tcp::flag::rst | tcp::flag::ack;
    }
    if (reply_statelessly(frame, rst)) ++stats_.resets_sent;
}

void Stack::flush_flow(Flow& flow) {
    if (!flow.resolved) return;  // its SYN waits in the output for the next hop's MAC
    for (const auto& out : flow.tcp.output()) {
        rte_mbuf* mbuf = tx_.allocate();
        if (mbuf == nullptr) break;  // the retransmission timer recovers
        tcp::TcpSegment segment = out.header;
        flow.tcp.copy_payload(out, std::span(scratch_).first(out.payload_length));
        segment.payload = std::span(scratch_).first(out.payload_length);
        const std::size_t room = rte_pktmbuf_tailroom(mbuf);
        auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_mtod(mbuf, std::uint8_t*));
        std::size_t length = net::build_tcp({data, room}, flow.route, flow.local_port,
                                            flow.peer_port, segment, tx_checksums_);
        if (length == 0) {
            rte_pktmbuf_free(mbuf);
            continue;
        }
        if (length < 60) {  // pad to the Ethernet minimum
            std::fill(data + length, data + 60, 0);
            length = 60;
        }
        rte_pktmbuf_append(mbuf, static_cast<std::uint16_t>(length));
        prepare_checksums(mbuf);
        tx_.send(mbuf);
    }
    flow.tcp.clear_output();
}

// Tells the NIC to fill in the checksums build_tcp left to it.
void Stack::prepare_checksums(rte_mbuf* mbuf) const {
    if (tx_checksums_ != net::Checksums::offloaded) return;
    mbuf->l2_len = net::ethernet_header_bytes;
    mbuf->l3_len = net::ipv4_header_bytes;
    mbuf->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
}

}  // namespace portcullis::dataplane::dpdk
