#include "dataplane/dpdk/stack.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_random.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "crypto/tls_connection.hpp"
#include "dataplane/upstream/proxy_v2.hpp"

namespace portcullis::dataplane::dpdk {

struct Stack::Flow {
    Flow(tcp::TcpConnection connection, const net::Route& path, std::uint16_t local,
         std::uint16_t peer)
        : tcp(std::move(connection)), route(path), local_port(local), peer_port(peer) {}

    tcp::TcpConnection tcp;
    net::Route route;
    std::uint16_t local_port;
    std::uint16_t peer_port;
    bool closing = false;
    std::unique_ptr<crypto::TlsConnection> tls;  // null: plain echo
    std::vector<std::uint8_t> pending;           // plaintext the TLS core could not take yet
    Flow* partner = nullptr;                     // client <-> upstream, both owned by flows_
    bool upstream = false;                       // this is the backend side of a partner
    bool wants_upstream = false;                 // handshake done, waiting for ARP or a free port
    bool half_open = false;  // counted in the SYN backlog until it leaves SYN-RECEIVED
    std::vector<std::uint8_t> to_upstream;  // plaintext the upstream TCP could not take yet
};

namespace {

constexpr std::uint16_t burst = 32;

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

SocketAddress ipv4_address(net::Ipv4Address address, std::uint16_t port) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(address);
    return SocketAddress::from(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

}  // namespace

Stack::Stack(Port& port, net::Ipv4Address address, std::uint16_t echo_port,
             const tcp::TcpConfig& tcp_config, const crypto::ServerTlsContext* tls,
             std::uint16_t tls_port)
    : port_(port),
      address_(address),
      echo_port_(echo_port),
      tcp_config_(tcp_config),
      tls_(tls),
      tls_port_(tls_port),
      cookies_(random_secret()) {
    std::copy_n(port.mac().addr_bytes, 6, mac_.begin());
}

Stack::~Stack() {
    for (std::uint16_t i = 0; i < tx_count_; ++i) rte_pktmbuf_free(tx_[i]);
    if (held_ != nullptr) rte_pktmbuf_free(held_);
}

rte_mbuf* Stack::allocate() {
    rte_mbuf* mbuf = rte_pktmbuf_alloc(port_.pool());
    if (mbuf == nullptr) ++stats_.mbuf_exhausted;
    return mbuf;
}

void Stack::send_frame(rte_mbuf* mbuf) {
    if (tx_count_ == tx_.size()) flush_tx();
    tx_[tx_count_++] = mbuf;
}

void Stack::flush_tx() {
    if (tx_count_ == 0) return;
    const std::uint16_t sent = rte_eth_tx_burst(port_.id(), 0, tx_.data(), tx_count_);
    for (std::uint16_t i = 0; i < sent; ++i) stats_.tx_bytes += tx_[i]->pkt_len;
    stats_.tx_packets += sent;
    for (std::uint16_t i = sent; i < tx_count_; ++i) {
        ++stats_.tx_full;
        rte_pktmbuf_free(tx_[i]);
    }
    tx_count_ = 0;
}

bool Stack::poll(std::uint64_t now_ms) {
    ++stats_.poll_iterations;
    std::array<rte_mbuf*, burst> rx{};
    const std::uint16_t received = rte_eth_rx_burst(port_.id(), 0, rx.data(), burst);
    bool work = received > 0;
    for (std::uint16_t i = 0; i < received; ++i) {
        ++stats_.rx_packets;
        stats_.rx_bytes += rx[i]->pkt_len;
        const auto frame = net::parse_frame(
            {rte_pktmbuf_mtod(rx[i], const std::uint8_t*), rte_pktmbuf_data_len(rx[i])});
        if (frame.kind == net::Frame::Kind::tcp && (faults_.drop > 0 || faults_.reorder > 0)) {
            const double roll = static_cast<double>(rte_rand() % 1'000'000) / 1e6;
            if (roll < faults_.drop) {
                ++stats_.injected_drops;
                rte_pktmbuf_free(rx[i]);
                continue;
            }
            if (held_ == nullptr && roll < faults_.drop + faults_.reorder) {
                ++stats_.injected_reorders;
                held_ = rx[i];  // delivered after the next frame
                continue;
            }
        }
        handle(frame, now_ms);  // copies what it keeps: the mbuf can go
        rte_pktmbuf_free(rx[i]);
        if (held_ != nullptr) {
            const auto late = net::parse_frame(
                {rte_pktmbuf_mtod(held_, const std::uint8_t*), rte_pktmbuf_data_len(held_)});
            handle(late, now_ms);
            rte_pktmbuf_free(held_);
            held_ = nullptr;
        }
    }
    for (auto it = flows_.begin(); it != flows_.end();) {
        Flow& flow = *it->second;
        if (flow.half_open && flow.tcp.state() != tcp::TcpState::syn_received) {
            flow.half_open = false;
            --half_open_;
        }
        if (flow.tcp.next_timer() <= now_ms) {
            flow.tcp.on_timer(now_ms);
            work = true;
        }
        if (flow.tls) {
            serve_tls(flow, now_ms);
        } else if (!flow.upstream) {
            serve_echo(flow);
        } else if (flow.partner == nullptr && !flow.closing) {
            flow.tcp.close();  // its client is gone
            flow.closing = true;
        }
        flow.tcp.push(now_ms);
        flush_flow(flow);
        if (flow.tcp.state() == tcp::TcpState::closed) {
            if (flow.partner != nullptr) flow.partner->partner = nullptr;
            if (flow.half_open) --half_open_;
            it = flows_.erase(it);
        } else {
            ++it;
        }
    }
    flush_tx();
    if (work) ++stats_.busy_iterations;
    return work;
}

std::uint16_t Stack::allocate_port() {
    for (int attempts = 0; attempts < 28232; ++attempts) {
        const std::uint16_t port = next_port_;
        next_port_ = next_port_ >= 60999 ? 32768 : static_cast<std::uint16_t>(next_port_ + 1);
        if (flows_.find(flow_key(upstream_address_, upstream_port_, port)) == flows_.end())
            return port;
    }
    return 0;
}

void Stack::send_arp_request(net::Ipv4Address target, std::uint64_t now_ms) {
    if (now_ms - last_arp_request_ < 100 && last_arp_request_ != 0) return;
    last_arp_request_ = now_ms;
    rte_mbuf* mbuf = allocate();
    if (mbuf == nullptr) return;
    auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(mbuf, 60));
    const net::ArpMessage request{1, mac_, address_, {}, target};
    const auto length = net::build_arp({data, 60}, request, mac_, net::broadcast_mac);
    std::fill(data + length, data + 60, 0);
    ++stats_.arp_requests;
    send_frame(mbuf);
}

// Active open toward the backend through this stack. False while the next
// hop's MAC is unknown (an ARP request is out) or no local port is free.
bool Stack::open_upstream(Flow& client, std::uint64_t now_ms) {
    const auto mac = arp_cache_.find(upstream_address_);
    if (mac == arp_cache_.end()) {
        send_arp_request(upstream_address_, now_ms);
        return false;
    }
    const std::uint16_t port = allocate_port();
    if (port == 0) return false;
    auto flow = std::unique_ptr<Flow>(
        new Flow(tcp::TcpConnection(tcp_config_, static_cast<std::uint32_t>(rte_rand()), now_ms),
                 net::Route{mac_, mac->second, address_, upstream_address_}, port, upstream_port_));
    flow->partner = &client;
    flow->upstream = true;
    if (proxy_protocol_) {
        const auto header =
            proxy_v2::encode(ipv4_address(client.route.destination_ip, client.peer_port),
                             ipv4_address(address_, client.local_port), client.tls->peer());
        flow->tcp.send(header);  // queued until the connection is established
    }
    client.partner = flow.get();
    ++stats_.upstream_connects;
    flows_.emplace(flow_key(upstream_address_, upstream_port_, port), std::move(flow));
    return true;
}

// What arrives goes straight back; the peer's FIN ends it.
void Stack::serve_echo(Flow& flow) {
    while (flow.tcp.readable() > 0 && flow.tcp.writable() > 0) {
        const auto n = flow.tcp.receive(
            std::span(scratch_).first(std::min<std::size_t>(scratch_.size(), flow.tcp.writable())));
        flow.tcp.send(std::span(scratch_).first(n));
    }
    if (flow.tcp.peer_closed() && flow.tcp.readable() == 0 && !flow.closing) {
        flow.tcp.close();
        flow.closing = true;
    }
}

// The TLS core over the userspace TCP, exactly as over a kernel socket:
// ciphertext from TCP into the core, plaintext echoed, ciphertext back out.
void Stack::serve_tls(Flow& flow, std::uint64_t now_ms) {
    auto& tls = *flow.tls;
    auto& tcp = flow.tcp;
    bool progress = true;
    while (progress && !flow.closing) {
        progress = false;
        while (tcp.readable() > 0) {
            const auto space = tls.inbound_space();
            if (space.empty()) break;
            const auto n = tcp.receive(space);
            if (n == 0) break;
            tls.commit_inbound(n);
            progress = true;
        }
        if (!tls.established()) {
            const auto step = tls.handshake();
            if (step == crypto::TlsConnection::Step::done) {
                ++stats_.tls_handshakes;
                progress = true;
            } else if (step == crypto::TlsConnection::Step::failed) {
                ++stats_.tls_failures;
                flow.closing = true;  // after the alert below
            }
        }
        if (tls.established() && upstream_port_ != 0 && flow.partner == nullptr && !flow.closing &&
            (flow.wants_upstream || !flow.upstream)) {
            flow.wants_upstream = !open_upstream(flow, now_ms);
        }
        if (tls.established()) {
            Flow* up = flow.partner;
            while (true) {
                // Toward the client: what the backend (or the echo) produced.
                if (!flow.pending.empty()) {
                    const auto w = tls.write_plaintext(flow.pending);
                    if (w.status != crypto::TlsConnection::IoStatus::ok) break;
                    flow.pending.erase(flow.pending.begin(),
                                       flow.pending.begin() + static_cast<std::ptrdiff_t>(w.bytes));
                    if (!flow.pending.empty()) break;
                    progress = true;
                }
                if (up != nullptr && up->tcp.readable() > 0) {
                    const auto n = up->tcp.receive(std::span(scratch_).first(1024));
                    flow.pending.assign(scratch_.begin(),
                                        scratch_.begin() + static_cast<std::ptrdiff_t>(n));
                    progress = true;
                    continue;
                }
                // Toward the backend.
                if (up != nullptr && !flow.to_upstream.empty()) {
                    const auto n = up->tcp.send(flow.to_upstream);
                    flow.to_upstream.erase(
                        flow.to_upstream.begin(),
                        flow.to_upstream.begin() + static_cast<std::ptrdiff_t>(n));
                    if (!flow.to_upstream.empty()) break;
                    progress = true;
                }
                if (upstream_port_ != 0 && up == nullptr) break;  // not connected yet
                const auto r = tls.read_plaintext(std::span(scratch_).first(1024));
                if (r.status == crypto::TlsConnection::IoStatus::closed) {
                    if (up != nullptr)
                        up->tcp.close();  // the client is done sending
                    else {
                        tls.close();
                        flow.closing = true;
                    }
                    break;
                }
                if (r.status != crypto::TlsConnection::IoStatus::ok || r.bytes == 0) break;
                auto& sink = up != nullptr ? flow.to_upstream : flow.pending;
                sink.insert(sink.end(), scratch_.begin(),
                            scratch_.begin() + static_cast<std::ptrdiff_t>(r.bytes));
                progress = true;
            }
            // The backend finished and everything it sent is on its way: end the TLS side.
            if (up != nullptr && up->tcp.peer_closed() && up->tcp.readable() == 0 &&
                flow.pending.empty() && !flow.closing) {
                tls.close();
                flow.closing = true;
            }
            if (up != nullptr) up->tcp.push(now_ms);
        }
        while (true) {
            const auto out = tls.outbound();
            if (out.empty()) break;
            const auto n = tcp.send(out);
            if (n == 0) break;
            tls.consume_outbound(n);
            progress = true;
        }
    }
    if ((flow.closing || (tcp.peer_closed() && tcp.readable() == 0)) &&
        tcp.state() != tcp::TcpState::closed) {
        flow.closing = true;
        tcp.close();
    }
}

void Stack::handle(const net::Frame& frame, std::uint64_t now_ms) {
    switch (frame.kind) {
        case net::Frame::Kind::dropped:
            ++stats_.rx_drops[static_cast<std::size_t>(frame.drop)];
            return;
        case net::Frame::Kind::arp: {
            if (frame.arp.sender_ip != 0) arp_cache_[frame.arp.sender_ip] = frame.arp.sender_mac;
            if (frame.arp.operation != 1 || frame.arp.target_ip != address_) {
                ++stats_.not_for_us;
                return;
            }
            rte_mbuf* mbuf = allocate();
            if (mbuf == nullptr) return;
            const net::ArpMessage reply{2, mac_, address_, frame.arp.sender_mac,
                                        frame.arp.sender_ip};
            auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(mbuf, 60));
            const auto length = net::build_arp({data, 60}, reply, mac_, frame.arp.sender_mac);
            std::fill(data + length, data + 60, 0);  // minimum Ethernet frame
            send_frame(mbuf);
            return;
        }
        case net::Frame::Kind::icmp_echo_request: {
            if (frame.destination_ip != address_) {
                ++stats_.not_for_us;
                return;
            }
            rte_mbuf* mbuf = allocate();
            if (mbuf == nullptr) return;
            const std::size_t length =
                net::ethernet_header_bytes + net::ipv4_header_bytes + frame.icmp.size();
            auto* data = reinterpret_cast<std::uint8_t*>(
                rte_pktmbuf_append(mbuf, static_cast<std::uint16_t>(length)));
            if (data == nullptr || net::build_icmp_echo_reply({data, length}, frame, mac_) == 0) {
                rte_pktmbuf_free(mbuf);
                return;
            }
            send_frame(mbuf);
            return;
        }
        case net::Frame::Kind::tcp:
            if (frame.destination_ip != address_) {
                ++stats_.not_for_us;
                return;
            }
            handle_tcp(frame, now_ms);
            return;
    }
}

void Stack::handle_tcp(const net::Frame& frame, std::uint64_t now_ms) {
    const auto key = flow_key(frame.source_ip, frame.source_port, frame.destination_port);
    auto found = flows_.find(key);
    if (found != flows_.end()) {
        found->second->tcp.input(frame.segment, now_ms);
        return;
    }
    const auto& segment = frame.segment;
    const bool tls = tls_ != nullptr && frame.destination_port == tls_port_;
    const bool served = frame.destination_port == echo_port_ || tls;
    const tcp::FourTuple tuple{frame.source_ip, frame.source_port, address_,
                               frame.destination_port};
    const auto accept = [&](tcp::TcpConnection connection) {
        auto flow = std::unique_ptr<Flow>(new Flow(
            std::move(connection), net::Route{mac_, frame.source_mac, address_, frame.source_ip},
            frame.destination_port, frame.source_port));
        if (tls) flow->tls = std::make_unique<crypto::TlsConnection>(*tls_);
        ++stats_.connections_accepted;
        return flows_.emplace(key, std::move(flow)).first->second.get();
    };
    if (segment.has(tcp::flag::syn) && !segment.has(tcp::flag::ack) && served) {
        if (half_open_ >= syn_backlog_) {
            send_cookie(frame, tuple, now_ms);  // no state until the ACK proves the peer is real
            return;
        }
        Flow* flow = accept(tcp::TcpConnection(tcp_config_, segment,
                                               static_cast<std::uint32_t>(rte_rand()), now_ms));
        flow->half_open = true;
        ++half_open_;
        return;
    }
    if (served && segment.has(tcp::flag::ack) && !segment.has(tcp::flag::syn) &&
        !segment.has(tcp::flag::rst)) {
        if (const auto mss = cookies_.check(tuple, segment.seq, segment.ack, now_ms)) {
            ++stats_.syn_cookies_validated;
            Flow* flow = accept(tcp::TcpConnection(
                tcp_config_,
                tcp::TcpConnection::CookieHandshake{segment.seq - 1, segment.ack - 1,
                                                    std::min(*mss, tcp_config_.mss)},
                now_ms));
            flow->tcp.input(segment, now_ms);  // the ACK may carry data
            return;
        }
    }
    if (!segment.has(tcp::flag::rst)) send_reset(frame);
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
    rte_mbuf* mbuf = allocate();
    if (mbuf == nullptr) return false;
    constexpr std::size_t room = 64;
    constexpr std::size_t minimum = 60;
    auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(mbuf, room));
    const net::Route route{mac_, frame.source_mac, address_, frame.source_ip};
    const auto written =
        net::build_tcp({data, room}, route, frame.destination_port, frame.source_port, segment);
    std::fill(data + written, data + room, 0);
    rte_pktmbuf_trim(mbuf, static_cast<std::uint16_t>(room - std::max(written, minimum)));
    send_frame(mbuf);
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
    for (const auto& out : flow.tcp.output()) {
        rte_mbuf* mbuf = allocate();
        if (mbuf == nullptr) break;  // the retransmission timer recovers
        tcp::TcpSegment segment = out.header;
        flow.tcp.copy_payload(out, std::span(scratch_).first(out.payload_length));
        segment.payload = std::span(scratch_).first(out.payload_length);
        const std::size_t room = rte_pktmbuf_tailroom(mbuf);
        auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_mtod(mbuf, std::uint8_t*));
        std::size_t length =
            net::build_tcp({data, room}, flow.route, flow.local_port, flow.peer_port, segment);
        if (length == 0) {
            rte_pktmbuf_free(mbuf);
            continue;
        }
        if (length < 60) {  // pad to the Ethernet minimum
            std::fill(data + length, data + 60, 0);
            length = 60;
        }
        rte_pktmbuf_append(mbuf, static_cast<std::uint16_t>(length));
        send_frame(mbuf);
    }
    flow.tcp.clear_output();
}

}  // namespace portcullis::dataplane::dpdk
