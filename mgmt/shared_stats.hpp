// The per-worker counter slots, in anonymous shared mappings made by the
// supervisor before it forks; each worker writes its own slot only. A slot is
// the dataplane's counters plus the worker's HSM signing service's.
#pragma once

#include <cstddef>
#include <string>

#include "dataplane/worker_stats.hpp"
#include "hsm/hsm_stats.hpp"
#include "mgmt/fetch_stats.hpp"

namespace portcullis::mgmt {

class SharedStats {
  public:
    explicit SharedStats(std::size_t slots);
    ~SharedStats();
    SharedStats(const SharedStats&) = delete;
    SharedStats& operator=(const SharedStats&) = delete;

    dataplane::WorkerStats& slot(std::size_t index) { return slots_[index]; }
    const dataplane::WorkerStats& slot(std::size_t index) const { return slots_[index]; }
    hsm::HsmStats& hsm(std::size_t index) { return hsm_slots_[index]; }
    const hsm::HsmStats& hsm(std::size_t index) const { return hsm_slots_[index]; }
    std::size_t size() const { return count_; }
    FetchStats& crl(std::size_t source) { return crl_slots_[source]; }
    const FetchStats& crl(std::size_t source) const { return crl_slots_[source]; }
    FetchStats& staple(std::size_t source) { return crl_slots_[max_crl_sources + source]; }
    const FetchStats& staple(std::size_t source) const {
        return crl_slots_[max_crl_sources + source];
    }

    // One log line with every counter summed over the slots.
    std::string summary() const;

  private:
    dataplane::WorkerStats* slots_;
    hsm::HsmStats* hsm_slots_;
    FetchStats* crl_slots_;  // max_crl_sources, then max_staple_sources
    std::size_t count_;
};

}  // namespace portcullis::mgmt
