#include "dataplane/dpdk/tx_burst.hpp"

#include <rte_ethdev.h>

namespace portcullis::dataplane::dpdk {

TxBurst::~TxBurst() {
    for (std::uint16_t i = 0; i < count_; ++i) rte_pktmbuf_free(pending_[i]);
}

rte_mbuf* TxBurst::allocate() {
    rte_mbuf* mbuf = rte_pktmbuf_alloc(port_.pool());
    if (mbuf == nullptr) ++stats_.mbuf_exhausted;
    return mbuf;
}

void TxBurst::send(rte_mbuf* mbuf) {
    if (count_ == pending_.size()) flush();
    pending_[count_++] = mbuf;
}

void TxBurst::flush() {
    if (count_ == 0) return;
    const std::uint16_t sent = rte_eth_tx_burst(port_.id(), port_.queue(), pending_.data(), count_);
    for (std::uint16_t i = 0; i < sent; ++i) stats_.tx_bytes += pending_[i]->pkt_len;
    stats_.tx_packets += sent;
    for (std::uint16_t i = sent; i < count_; ++i) {
        ++stats_.tx_full;
        rte_pktmbuf_free(pending_[i]);
    }
    count_ = 0;
}

}  // namespace portcullis::dataplane::dpdk
