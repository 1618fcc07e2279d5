// Frames on their way out of one worker's TX queue: mbufs come from the
// queue's pool and are sent in bursts of up to 64 (one rte_eth_tx_burst per
// burst or per poll, never per frame). Frames the NIC does not take are
// freed and counted. Owned by the stack; one worker's thread only.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <cstdint>

#include "dataplane/dpdk/port.hpp"
#include "dataplane/dpdk/stack_stats.hpp"

namespace portcullis::dataplane::dpdk {

class TxBurst {
  public:
    TxBurst(Port& port, StackStats& stats) : port_(port), stats_(stats) {}
    ~TxBurst();  // frees what was never sent
    TxBurst(const TxBurst&) = delete;
    TxBurst& operator=(const TxBurst&) = delete;

    // An empty mbuf from the queue's pool; null (and counted) when it is exhausted.
    rte_mbuf* allocate();
    // Takes ownership of `mbuf`; a full burst goes to the NIC first.
    void send(rte_mbuf* mbuf);
    void flush();

  private:
    Port& port_;
    StackStats& stats_;
    std::array<rte_mbuf*, 64> pending_{};
    std::uint16_t count_ = 0;
};

}  // namespace portcullis::dataplane::dpdk
