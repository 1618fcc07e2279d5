// The CPUs this process may run on: its affinity mask as the kernel reports
// it (taskset, systemd's CPUAffinity=, a cgroup cpuset), in ascending order.
// Workers are pinned inside this set, one CPU each in turn, so a daemon
// started on a subset of the machine stays there; `workers.count = 0` means
// one worker per CPU of the set.
#pragma once

#include <vector>

namespace portcullis::mgmt {

// Never empty: where the mask cannot be read, every online CPU.
std::vector<int> allowed_cpus();

}  // namespace portcullis::mgmt
