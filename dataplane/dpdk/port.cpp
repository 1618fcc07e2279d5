#include "dataplane/dpdk/port.hpp"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mempool.h>

#include <filesystem>

namespace portcullis::dataplane::dpdk {
namespace {

std::string error_text(int code) {
    return rte_strerror(code < 0 ? -code : code);
}

}  // namespace

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
    // rte_eal_cleanup leaves the runtime directory (/var/run/dpdk/PREFIX) behind.
    const std::string runtime = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    std::error_code ignored;
    if (!runtime.empty()) std::filesystem::remove_all(runtime, ignored);
}

Port::Port(const PortSettings& settings) : settings_(settings) {
    if (!rte_eth_dev_is_valid_port(settings.port_id))
        throw DpdkError("DPDK port " + std::to_string(settings.port_id) +
                        " does not exist (no --vdev or PCI device for it)");
    const std::string pool_name = "pcl_pool_" + std::to_string(settings.port_id);
    pool_ = rte_pktmbuf_pool_create(pool_name.c_str(), settings.mbufs, 256, 0,
                                    RTE_MBUF_DEFAULT_BUF_SIZE,
                                    static_cast<int>(rte_eth_dev_socket_id(settings.port_id)));
    if (pool_ == nullptr) throw DpdkError("mbuf pool: " + error_text(rte_errno));
    rte_eth_conf conf{};
    int rc = rte_eth_dev_configure(settings.port_id, 1, 1, &conf);
    if (rc < 0) throw DpdkError("rte_eth_dev_configure: " + error_text(rc));
    std::uint16_t rx = settings.rx_descriptors;
    std::uint16_t tx = settings.tx_descriptors;
    rte_eth_dev_adjust_nb_rx_tx_desc(settings.port_id, &rx, &tx);
    const int socket = rte_eth_dev_socket_id(settings.port_id);
    rc = rte_eth_rx_queue_setup(settings.port_id, 0, rx, static_cast<unsigned>(socket), nullptr,
                                pool_);
    if (rc < 0) throw DpdkError("rx queue: " + error_text(rc));
    rc = rte_eth_tx_queue_setup(settings.port_id, 0, tx, static_cast<unsigned>(socket), nullptr);
    if (rc < 0) throw DpdkError("tx queue: " + error_text(rc));
    rte_eth_dev_set_mtu(settings.port_id, settings.mtu);  // not every PMD supports it
    rc = rte_eth_dev_start(settings.port_id);
    if (rc < 0) throw DpdkError("rte_eth_dev_start: " + error_text(rc));
    started_ = true;
    rte_eth_macaddr_get(settings.port_id, &mac_);
}

Port::~Port() {
    if (started_) rte_eth_dev_stop(settings_.port_id);
    rte_eth_dev_close(settings_.port_id);
    if (pool_ != nullptr) rte_mempool_free(pool_);
}

unsigned Port::mbufs_in_use() const {
    return rte_mempool_in_use_count(pool_);
}

}  // namespace portcullis::dataplane::dpdk
