#include "dataplane/dpdk/queue_handoff.hpp"

#include <rte_ring.h>

namespace portcullis::dataplane::dpdk {

unsigned QueueHandoff::receive(std::span<rte_mbuf*> into) {
    return rte_ring_sc_dequeue_burst(port_.handoff(port_.queue()),
                                     reinterpret_cast<void**>(into.data()),
                                     static_cast<unsigned>(into.size()), nullptr);
}

void QueueHandoff::share(rte_mbuf* mbuf, unsigned self, unsigned workers) {
    for (unsigned worker = 0; worker < workers; ++worker) {
        if (worker == self) continue;
        rte_mbuf_refcnt_update(mbuf, 1);  // one reference per reader
        enqueue(mbuf, worker);
    }
}

void QueueHandoff::pass(rte_mbuf* mbuf, unsigned owner) {
    enqueue(mbuf, owner);
}

void QueueHandoff::enqueue(rte_mbuf* mbuf, unsigned worker) {
    if (rte_ring_mp_enqueue(port_.handoff(static_cast<std::uint16_t>(worker)), mbuf) == 0) return;
    ++stats_.rx_drops[static_cast<std::size_t>(net::Drop::handoff_full)];
    rte_pktmbuf_free(mbuf);
}

}  // namespace portcullis::dataplane::dpdk
