// The DPDK transport's settings as plain values (parsed by mgmt/config; no
// DPDK headers, so the configuration reader builds without DPDK).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace portcullis::dataplane::dpdk {

struct DpdkSettings {
    // EAL arguments for every worker. Each worker adds its own core (-l), a
    // --file-prefix of its own and the device; give memory options here
    // (e.g. "--no-huge", "-m", "256" where there are no hugepages).
    std::vector<std::string> eal_args;
    // A PCI address ("0000:03:00.0", the NIC bound to vfio-pci) or a virtual
    // device ("net_af_packet0,iface=veth0", "net_af_xdp0,iface=eth1").
    std::string device;
    std::uint32_t address = 0;  // IPv4, host byte order
    std::uint32_t netmask = 0;
    std::uint32_t gateway = 0;  // 0: only the local subnet
    std::uint16_t mtu = 1500;
    unsigned mbufs = 8191;           // per worker's pool
    std::size_t syn_backlog = 1024;  // half-open connections before SYN cookies
    // Several workers on one port: each polls an RX/TX queue pair of its own
    // (DPDK primary and secondary processes; RSS spreads flows where the port
    // has it; needs hugepages) instead of each opening the device and seeing
    // every frame (virtual devices only). Unset: queues on PCI ports.
    std::optional<bool> queue_per_worker;
    bool checksum_offload = true;  // where the port offers it

    bool queues_per_worker() const { return queue_per_worker.value_or(is_pci()); }

    // "dddd:bb:dd.f" or "bb:dd.f"; virtual devices are named "net_...".
    bool is_pci() const {
        return device.find(':') != std::string::npos && device.find('.') != std::string::npos &&
               device.find(',') == std::string::npos && device.find('=') == std::string::npos;
    }
};

}  // namespace portcullis::dataplane::dpdk
