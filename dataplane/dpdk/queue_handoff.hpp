// The hand-off between the workers that share a port a queue each: a frame
// one worker's queue received for another worker (ARP, which every worker's
// neighbour cache must see, or a segment of a flow another worker opened)
// goes into that worker's ring (Port::handoff). Any worker enqueues into a
// ring, only its owner dequeues (single consumer); a full ring drops the
// frame, counted as net::Drop::handoff_full.
//
// It moves mbufs only: which frame belongs to whom is the stack's decision.
// One per stack, used by its worker's thread only.
#pragma once

#include <rte_mbuf.h>

#include <span>

#include "dataplane/dpdk/port.hpp"
#include "dataplane/dpdk/stack_stats.hpp"

namespace portcullis::dataplane::dpdk {

class QueueHandoff {
  public:
    QueueHandoff(Port& port, StackStats& stats) : port_(port), stats_(stats) {}

    // Frames other workers handed to this one: at most `into.size()`, owned by the caller.
    unsigned receive(std::span<rte_mbuf*> into);
    // A reference to `mbuf` for each of the other `workers`; the caller keeps its own.
    void share(rte_mbuf* mbuf, unsigned self, unsigned workers);
    // `mbuf` leaves this worker for `owner`.
    void pass(rte_mbuf* mbuf, unsigned owner);

  private:
    void enqueue(rte_mbuf* mbuf, unsigned worker);

    Port& port_;
    StackStats& stats_;
};

}  // namespace portcullis::dataplane::dpdk
