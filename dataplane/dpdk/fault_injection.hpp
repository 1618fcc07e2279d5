// Loss and reordering on input, for tests on kernels without netem: a
// dropped frame is freed unseen; a held frame is delivered after the next
// one. Compiled only into the stack that the probe (and so the integration
// tests that drive it) links, where PORTCULLIS_FAULT_INJECTION is defined:
// the daemon's stack has no hook and no check on its receive path.
// One per stack, used by its worker's thread only.
#pragma once

#include <rte_mbuf.h>

#include "dataplane/dpdk/stack_stats.hpp"

namespace portcullis::dataplane::dpdk {

struct FaultInjection {
    double drop = 0;     // probability per received TCP frame
    double reorder = 0;  // probability per received TCP frame
};

class FaultInjector {
  public:
    explicit FaultInjector(StackStats& stats) : stats_(stats) {}
    ~FaultInjector();  // frees a frame still held
    FaultInjector(const FaultInjector&) = delete;
    FaultInjector& operator=(const FaultInjector&) = delete;

    void configure(const FaultInjection& faults) { faults_ = faults; }
    // Whether the received TCP frame in `mbuf` was taken: dropped (freed) or held back.
    bool intercept(rte_mbuf* mbuf);
    // The frame held back, to be handled after the one that followed it (the caller frees it).
    rte_mbuf* release() {
        rte_mbuf* held = held_;
        held_ = nullptr;
        return held;
    }

  private:
    StackStats& stats_;
    FaultInjection faults_;
    rte_mbuf* held_ = nullptr;
};

}  // namespace portcullis::dataplane::dpdk
