// DPDK bring-up with RAII: the EAL (initialised once per process, cleaned up
// so nothing stays in /var/run/dpdk or hugepage files) and one Ethernet port
// with its own mbuf pool and one RX/TX queue pair.
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
    Eal(const Eal&) = delete;
    Eal& operator=(const Eal&) = delete;
};

struct PortSettings {
    std::uint16_t port_id = 0;
    unsigned mbufs = 8191;  // per-port pool
    std::uint16_t rx_descriptors = 1024;
    std::uint16_t tx_descriptors = 1024;
    std::uint16_t mtu = 1500;
};

class Port {
  public:
    explicit Port(const PortSettings& settings);
    ~Port();
    Port(const Port&) = delete;
    Port& operator=(const Port&) = delete;

    std::uint16_t id() const { return settings_.port_id; }
    const rte_ether_addr& mac() const { return mac_; }
    rte_mempool* pool() const { return pool_; }
    unsigned mbufs_in_use() const;

  private:
    PortSettings settings_;
    rte_mempool* pool_ = nullptr;
    rte_ether_addr mac_{};
    bool started_ = false;
};

}  // namespace portcullis::dataplane::dpdk
