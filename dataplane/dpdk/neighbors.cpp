#include "dataplane/dpdk/neighbors.hpp"

#include <algorithm>

namespace portcullis::dataplane::dpdk {

namespace {

constexpr std::uint16_t arp_frame_bytes = 60;  // the Ethernet minimum

}  // namespace

bool Neighbors::learn(const net::ArpMessage& arp) {
    if (arp.sender_ip == 0) return false;
    cache_[arp.sender_ip] = arp.sender_mac;
    return true;
}

void Neighbors::request(net::Ipv4Address target, std::uint64_t now_ms) {
    if (now_ms - last_request_ < 100 && last_request_ != 0) return;
    last_request_ = now_ms;
    if (send_arp({1, mac_, address_, {}, target}, net::broadcast_mac)) ++stats_.arp_requests;
}

void Neighbors::answer(const net::ArpMessage& arp) {
    if (arp.operation != 1 || arp.target_ip != address_) {
        ++stats_.not_for_us;
        return;
    }
    send_arp({2, mac_, address_, arp.sender_mac, arp.sender_ip}, arp.sender_mac);
}

bool Neighbors::send_arp(const net::ArpMessage& message, const net::MacAddress& destination) {
    rte_mbuf* mbuf = tx_.allocate();
    if (mbuf == nullptr) return false;
    auto* data = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(mbuf, arp_frame_bytes));
    const auto length = net::build_arp({data, arp_frame_bytes}, message, mac_, destination);
    std::fill(data + length, data + arp_frame_bytes, 0);
    tx_.send(mbuf);
    return true;
}

void Neighbors::answer_echo(const net::Frame& request) {
    rte_mbuf* mbuf = tx_.allocate();
    if (mbuf == nullptr) return;
    const std::size_t length =
        net::ethernet_header_bytes + net::ipv4_header_bytes + request.icmp.size();
    auto* data = reinterpret_cast<std::uint8_t*>(
        rte_pktmbuf_append(mbuf, static_cast<std::uint16_t>(length)));
    if (data == nullptr || net::build_icmp_echo_reply({data, length}, request, mac_) == 0) {
        rte_pktmbuf_free(mbuf);
        return;
    }
    tx_.send(mbuf);
}

}  // namespace portcullis::dataplane::dpdk
