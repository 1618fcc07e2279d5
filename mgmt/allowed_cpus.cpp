#include "mgmt/allowed_cpus.hpp"

#include <sched.h>
#include <unistd.h>

namespace portcullis::mgmt {

std::vector<int> allowed_cpus() {
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

}  // namespace portcullis::mgmt
