// DPDK bring-up with RAII: the EAL (initialised once per process, cleaned up
// so nothing stays in /var/run/dpdk or hugepage files) and one Ethernet port:
// a process polls one RX/TX queue pair of it, with its own mbuf pool.
#pragma once

#include <rte_ether.h>
#include <rte_mbuf.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace portcullis::dataplane::dpdk {

struct DpdkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Eal {
  public:
    explicit Eal(const std::vector<std::string>& arguments);  // e.g. --no-huge -m 256 --vdev ...
    ~Eal();
    static bool secondary();
    Eal(const Eal&) = delete;
    Eal& operator=(const Eal&) = delete;
};

struct PortSettings {
    std::uint16_t port_id = 0;
    unsigned mbufs = 8191;  // per queue's pool
    std::uint16_t rx_descriptors = 1024;
    std::uint16_t tx_descriptors = 1024;
    std::uint16_t mtu = 1500;
    // RX/TX queue pairs, one per worker process. With more than one, the
    // primary process (queue 0) configures them all, with RSS where the port
    // offers it, and the others attach as DPDK secondary processes.
    std::uint16_t queues = 1;
    std::uint16_t queue = 0;       // the one this process polls
    bool checksum_offload = true;  // where the port offers it
};

// What the port does for us, found from its capabilities at start.
struct PortOffloads {
    bool tx_checksums = false;  // IPv4 and TCP checksums filled in on send
    bool rx_checksums = false;  // IPv4 and TCP checksums checked on receive
    bool rss = false;           // flows spread over the queues by the NIC's hash
};

class Port {
  public:
    // Queue 0 (or a port of one queue) starts the port; any other queue
    // attaches to the port its primary process started.
    explicit Port(const PortSettings& settings);
    ~Port();
    Port(const Port&) = delete;
    Port& operator=(const Port&) = delete;

    std::uint16_t id() const { return settings_.port_id; }
    std::uint16_t queue() const { return settings_.queue; }
    std::uint16_t queues() const { return settings_.queues; }
    const rte_ether_addr& mac() const { return mac_; }
    rte_mempool* pool() const { return pool_; }
    unsigned mbufs_in_use() const;
    // What the device itself lost on receive (rte_eth_stats), port-wide:
    // frames dropped with its ring full, bad frames, frames it had no mbuf
    // for. A driver may read registers or ask the kernel for them, so once a
    // second, not per poll; devices that keep no such count report 0
    // (DPDK's af_packet device among them).
    struct ReceiveLosses {
        std::uint64_t missed = 0;
        std::uint64_t errors = 0;
        std::uint64_t no_mbuf = 0;
    };
    ReceiveLosses receive_losses() const;
    const PortOffloads& offloads() const { return offloads_; }
    // Frames for queue `queue`'s worker that arrived on another queue; any
    // process enqueues, only the owner dequeues.
    rte_ring* handoff(std::uint16_t queue) const { return handoffs_[queue]; }

  private:
    void start_primary();
    void attach_secondary();

    struct Group;  // shared by the processes polling one port
    PortSettings settings_;
    bool primary_ = true;
    rte_mempool* pool_ = nullptr;
    std::vector<rte_mempool*> pools_;  // the primary's: one per queue
    std::vector<rte_ring*> handoffs_;
    Group* group_ = nullptr;
    rte_ether_addr mac_{};
    PortOffloads offloads_;
    bool started_ = false;
};

}  // namespace portcullis::dataplane::dpdk
