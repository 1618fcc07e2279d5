// The counters of one worker's DPDK stack. Written only by the worker that
// polls the stack (the stack and the parts it is built from: TxBurst,
// QueueHandoff, Neighbors, FaultInjector), read by the same worker when it
// publishes its metrics.
#pragma once

#include <array>
#include <cstdint>

#include "dataplane/net/frame.hpp"

namespace portcullis::dataplane::dpdk {

struct StackStats {
    std::uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
    std::array<std::uint64_t, net::drop_reason_count> rx_drops{};  // by net::Drop
    std::uint64_t not_for_us = 0;
    std::uint64_t steered_away = 0;  // another worker's flow: left to it, or handed to its queue
    std::uint64_t tx_full = 0;       // frames the NIC did not take
    std::uint64_t mbuf_exhausted = 0;
    std::uint64_t resets_sent = 0;
    std::uint64_t injected_drops = 0, injected_reorders = 0;  // 0 unless built with the test hook
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_opened = 0, arp_requests = 0;
    std::uint64_t syn_cookies_sent = 0, syn_cookies_validated = 0;
    std::uint64_t time_wait_reused = 0;
    std::uint64_t retransmissions = 0;                       // TCP segments sent again
    std::uint64_t poll_iterations = 0, busy_iterations = 0;  // busy = did work
};

}  // namespace portcullis::dataplane::dpdk
