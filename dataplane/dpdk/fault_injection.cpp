#include "dataplane/dpdk/fault_injection.hpp"

#include <rte_random.h>

namespace portcullis::dataplane::dpdk {

FaultInjector::~FaultInjector() {
    if (held_ != nullptr) rte_pktmbuf_free(held_);
}

bool FaultInjector::intercept(rte_mbuf* mbuf) {
    if (faults_.drop <= 0 && faults_.reorder <= 0) return false;
    const double roll = static_cast<double>(rte_rand() % 1'000'000) / 1e6;
    if (roll < faults_.drop) {
        ++stats_.injected_drops;
        rte_pktmbuf_free(mbuf);
        return true;
    }
    if (held_ == nullptr && roll < faults_.drop + faults_.reorder) {
        ++stats_.injected_reorders;
        held_ = mbuf;
        return true;
    }
    return false;
}

}  // namespace portcullis::dataplane::dpdk
