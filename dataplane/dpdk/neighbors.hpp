// ARP and ICMP echo for the stack's one IPv4 address: the neighbour cache
// (learned from the sender of every ARP frame seen), who-has requests for a
// next hop (at most one per 100 ms), replies to who-has for our address and
// replies to ping. Frames leave through the stack's TxBurst.
//
// Which of several workers sharing the address answers is the stack's
// decision; so is what waits for a next hop's MAC. Owned by the stack; one
// worker's thread only.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "dataplane/dpdk/stack_stats.hpp"
#include "dataplane/dpdk/tx_burst.hpp"
#include "dataplane/net/frame.hpp"

namespace portcullis::dataplane::dpdk {

class Neighbors {
  public:
    Neighbors(TxBurst& tx, StackStats& stats, const net::MacAddress& mac, net::Ipv4Address address)
        : tx_(tx), stats_(stats), mac_(mac), address_(address) {}

    // Null until `ip` has been heard from.
    const net::MacAddress* find(net::Ipv4Address ip) const {
        const auto found = cache_.find(ip);
        return found == cache_.end() ? nullptr : &found->second;
    }
    // Remembers the sender of `arp`; false when it names none (a probe from 0.0.0.0).
    bool learn(const net::ArpMessage& arp);

    // Who-has `target`, unless one went out less than 100 ms ago.
    void request(net::Ipv4Address target, std::uint64_t now_ms);
    // Who-has `target` now, whatever the last request's time.
    void request_now(net::Ipv4Address target, std::uint64_t now_ms) {
        last_request_ = 0;
        request(target, now_ms);
    }

    // The reply to a who-has for our address; anything else is counted as not for us.
    void answer(const net::ArpMessage& arp);
    // The echo reply to an ICMP echo request addressed to us.
    void answer_echo(const net::Frame& request);

  private:
    bool send_arp(const net::ArpMessage& message, const net::MacAddress& destination);

    TxBurst& tx_;
    StackStats& stats_;
    net::MacAddress mac_;
    net::Ipv4Address address_;
    std::unordered_map<net::Ipv4Address, net::MacAddress> cache_;
    std::uint64_t last_request_ = 0;
};

}  // namespace portcullis::dataplane::dpdk
