#include "dataplane/dpdk/port.hpp"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_memzone.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace portcullis::dataplane::dpdk {
namespace {

std::string error_text(int code) {
    return rte_strerror(code < 0 ? -code : code);
}

std::string pool_name(std::uint16_t port, std::uint16_t queue) {
    return "pcl_pool_" + std::to_string(port) + "_" + std::to_string(queue);
}

std::string ring_name(std::uint16_t port, std::uint16_t queue) {
    return "pcl_handoff_" + std::to_string(port) + "_" + std::to_string(queue);
}

std::string group_name(std::uint16_t port) {
    return "pcl_group_" + std::to_string(port);
}

constexpr unsigned handoff_slots = 1024;

// The EAL keeps the hugepage files of a process that secondaries may map
// ("PREFIXmap_N" on each hugetlbfs mount) after rte_eal_cleanup.
void remove_hugepage_files(const std::string& prefix) {
    std::ifstream mounts("/proc/mounts");
    std::string line;
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string device, directory, type;
        fields >> device >> directory >> type;
        if (type != "hugetlbfs") continue;
        std::error_code error;
        for (std::filesystem::directory_iterator it(directory, error), end; !error && it != end;
             it.increment(error))
            if (it->path().filename().string().starts_with(prefix + "map_"))
                std::filesystem::remove(it->path(), error);
    }
}

// How long the primary waits at stop for the secondaries to let go of the
// port: they drain their connections first, as the primary did.
constexpr auto secondaries_grace = std::chrono::seconds(5);

}  // namespace

struct Port::Group {
    std::atomic<std::uint32_t> attached;  // secondaries polling a queue
    PortOffloads offloads;                // as the primary configured the port
};

Eal::Eal(const std::vector<std::string>& arguments) {
    std::vector<std::string> copy = {"portcullis"};
    copy.insert(copy.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (rte_eal_init(static_cast<int>(copy.size()), argv.data()) < 0)
        throw DpdkError("DPDK EAL initialisation failed: " + error_text(rte_errno));
}

Eal::~Eal() {
    // rte_eal_cleanup leaves the runtime directory (/var/run/dpdk/PREFIX)
    // behind; it belongs to the primary process, the last one to stop.
    const bool owner = !secondary();
    const std::string runtime = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    if (!owner || runtime.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(runtime, ignored);
    remove_hugepage_files(std::filesystem::path(runtime).filename().string());
}

bool Eal::secondary() {
    return rte_eal_process_type() == RTE_PROC_SECONDARY;
}

Port::Port(const PortSettings& settings) : settings_(settings) {
    if (settings.queues == 0 || settings.queue >= settings.queues)
        throw DpdkError("DPDK queue " + std::to_string(settings.queue) + " of " +
                        std::to_string(settings.queues) + " does not exist");
    if (!rte_eth_dev_is_valid_port(settings.port_id))
        throw DpdkError("DPDK port " + std::to_string(settings.port_id) +
                        " does not exist (no --vdev or PCI device for it)");
    primary_ = !Eal::secondary();
    if (primary_ != (settings.queue == 0))
        throw DpdkError("DPDK queue " + std::to_string(settings.queue) + " needs a " +
                        (settings.queue == 0 ? "primary" : "secondary") + " process");
    if (primary_)
        start_primary();
    else
        attach_secondary();
    rte_eth_macaddr_get(settings.port_id, &mac_);
}

void Port::start_primary() {
    const std::uint16_t port = settings_.port_id;
    const int socket = rte_eth_dev_socket_id(port);
    for (std::uint16_t q = 0; q < settings_.queues; ++q) {
        rte_mempool* pool = rte_pktmbuf_pool_create(pool_name(port, q).c_str(), settings_.mbufs,
                                                    256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
        if (pool == nullptr) throw DpdkError("mbuf pool: " + error_text(rte_errno));
        pools_.push_back(pool);
    }
    pool_ = pools_[0];

    rte_eth_dev_info info{};
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc < 0) throw DpdkError("rte_eth_dev_info_get: " + error_text(rc));
    if (settings_.queues > std::min(info.max_rx_queues, info.max_tx_queues))
        throw DpdkError("the port has " + std::to_string(info.max_rx_queues) +
                        " RX queues, fewer than the " + std::to_string(settings_.queues) +
                        " workers sharing it");
    rte_eth_conf conf{};
    constexpr std::uint64_t tx_checksums =
        RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    if (settings_.checksum_offload && (info.tx_offload_capa & tx_checksums) == tx_checksums)
        conf.txmode.offloads |= tx_checksums;
    if (settings_.checksum_offload &&
        (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_CHECKSUM) == RTE_ETH_RX_OFFLOAD_CHECKSUM)
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_CHECKSUM;
    // The PMD's own key: ownership does not depend on which queue a flow's
    // frames reach (see Stack), so any hash that keeps a flow together works.
    const std::uint64_t rss_types =
        info.flow_type_rss_offloads & (RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_IPV4);
    if (settings_.queues > 1 && (rss_types & RTE_ETH_RSS_NONFRAG_IPV4_TCP) != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss_types;
    }
    rc = rte_eth_dev_configure(port, settings_.queues, settings_.queues, &conf);
    if (rc < 0) throw DpdkError("rte_eth_dev_configure: " + error_text(rc));
    std::uint16_t rx = settings_.rx_descriptors;
    std::uint16_t tx = settings_.tx_descriptors;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &rx, &tx);
    for (std::uint16_t q = 0; q < settings_.queues; ++q) {
        rc = rte_eth_rx_queue_setup(port, q, rx, static_cast<unsigned>(socket), nullptr, pools_[q]);
        if (rc < 0) throw DpdkError("rx queue: " + error_text(rc));
        rc = rte_eth_tx_queue_setup(port, q, tx, static_cast<unsigned>(socket), nullptr);
        if (rc < 0) throw DpdkError("tx queue: " + error_text(rc));
        rte_ring* ring =
            rte_ring_create(ring_name(port, q).c_str(), handoff_slots, socket, RING_F_SC_DEQ);
        if (ring == nullptr) throw DpdkError("handoff ring: " + error_text(rte_errno));
        handoffs_.push_back(ring);
    }
    const rte_memzone* zone =
        rte_memzone_reserve(group_name(port).c_str(), sizeof(Group), socket, 0);
    if (zone == nullptr) throw DpdkError("shared port state: " + error_text(rte_errno));
    group_ = new (zone->addr) Group{};
    rte_eth_dev_set_mtu(port, settings_.mtu);  // not every PMD supports it
    rc = rte_eth_dev_start(port);
    if (rc < 0) throw DpdkError("rte_eth_dev_start: " + error_text(rc));
    started_ = true;
    offloads_ = {(conf.txmode.offloads & tx_checksums) != 0,
                 (conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_CHECKSUM) != 0,
                 conf.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS};
    group_->offloads = offloads_;
}

void Port::attach_secondary() {
    const std::uint16_t port = settings_.port_id;
    pool_ = rte_mempool_lookup(pool_name(port, settings_.queue).c_str());
    const rte_memzone* zone = rte_memzone_lookup(group_name(port).c_str());
    for (std::uint16_t q = 0; q < settings_.queues; ++q)
        handoffs_.push_back(rte_ring_lookup(ring_name(port, q).c_str()));
    if (pool_ == nullptr || zone == nullptr ||
        std::find(handoffs_.begin(), handoffs_.end(), nullptr) != handoffs_.end())
        throw DpdkError("the primary process has not set up queue " +
                        std::to_string(settings_.queue) + " of DPDK port " + std::to_string(port));
    group_ = static_cast<Group*>(zone->addr);
    offloads_ = group_->offloads;
    group_->attached.fetch_add(1);
}

Port::~Port() {
    if (!primary_) {
        group_->attached.fetch_sub(1);
        return;
    }
    if (group_ != nullptr) {
        const auto deadline = std::chrono::steady_clock::now() + secondaries_grace;
        while (group_->attached.load() > 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (started_) rte_eth_dev_stop(settings_.port_id);
    rte_eth_dev_close(settings_.port_id);
    for (rte_ring* ring : handoffs_) rte_ring_free(ring);
    for (rte_mempool* pool : pools_) rte_mempool_free(pool);
    if (const rte_memzone* zone = rte_memzone_lookup(group_name(settings_.port_id).c_str()))
        rte_memzone_free(zone);
}

unsigned Port::mbufs_in_use() const {
    return rte_mempool_in_use_count(pool_);
}

Port::ReceiveLosses Port::receive_losses() const {
    rte_eth_stats stats{};
    if (rte_eth_stats_get(settings_.port_id, &stats) != 0) return {};
    return {stats.imissed, stats.ierrors, stats.rx_nombuf};
}

}  // namespace portcullis::dataplane::dpdk
