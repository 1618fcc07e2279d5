// The per-worker counter slots, in one anonymous shared mapping made by the
// supervisor before it forks; each worker writes its own slot only.
#pragma once

#include <cstddef>
#include <string>

#include "dataplane/worker_stats.hpp"

namespace portcullis::mgmt {

class SharedStats {
  public:
    explicit SharedStats(std::size_t slots);
    ~SharedStats();
    SharedStats(const SharedStats&) = delete;
    SharedStats& operator=(const SharedStats&) = delete;

    dataplane::WorkerStats& slot(std::size_t index) { return slots_[index]; }
    const dataplane::WorkerStats& slot(std::size_t index) const { return slots_[index]; }
    std::size_t size() const { return count_; }

    // One log line with every counter summed over the slots.
    std::string summary() const;

  private:
    dataplane::WorkerStats* slots_;
    std::size_t count_;
};

}  // namespace portcullis::mgmt
