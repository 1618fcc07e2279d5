// The CPUs this process may run on: its affinity mask as the kernel reports
// it (taskset, systemd's CPUAffinity=, a cgroup cpuset), in ascending order.
// The supervisor pins workers inside this set, one CPU each in turn, so a
// daemon started on a subset of the machine stays there; a DPDK worker with
// no CPU of its own takes the first.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <vector>

namespace portcullis::base {

// Never empty: where the mask cannot be read, every online CPU.
inline std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
    if (cpus.empty()) {
        const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
        for (int cpu = 0; cpu < (online > 0 ? online : 1); ++cpu) cpus.push_back(cpu);
    }
    return cpus;
}

}  // namespace portcullis::base
