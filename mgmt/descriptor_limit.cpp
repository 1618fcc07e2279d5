#include "mgmt/descriptor_limit.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>

namespace portcullis::mgmt {

namespace {
constexpr std::uint64_t own_descriptors = 256;
}

std::uint64_t descriptors_needed(int max_connections) {
    return 2 * static_cast<std::uint64_t>(max_connections) + own_descriptors;
}

DescriptorLimit raise_descriptor_limit(int max_connections) {
    DescriptorLimit limit;
    limit.needed = descriptors_needed(max_connections);
    rlimit current{};
    if (::getrlimit(RLIMIT_NOFILE, &current) != 0) return limit;
    // Past the hard limit only with CAP_SYS_RESOURCE (root, mostly).
    if (current.rlim_max != RLIM_INFINITY && current.rlim_max < limit.needed) {
        const rlimit wanted{limit.needed, limit.needed};
        if (::setrlimit(RLIMIT_NOFILE, &wanted) == 0) current = wanted;
    }
    if (current.rlim_cur != RLIM_INFINITY && current.rlim_cur < limit.needed) {
        rlimit raised = current;
        raised.rlim_cur = current.rlim_max == RLIM_INFINITY
                              ? limit.needed
                              : std::min<rlim_t>(current.rlim_max, limit.needed);
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) current = raised;
    }
    limit.soft = current.rlim_cur;
    limit.hard = current.rlim_max;
    if (current.rlim_cur != RLIM_INFINITY && limit.soft < limit.needed) {
        spdlog::warn(
            "open-file limit {} (hard {}) is below the {} descriptors a worker needs for "
            "workers.max_connections = {}: a worker will stop accepting at about {} connections "
            "(raise LimitNOFILE or ulimit -n)",
            limit.soft, limit.hard, limit.needed, max_connections,
            limit.soft > own_descriptors ? (limit.soft - own_descriptors) / 2 : 0);
    }
    return limit;
}

}  // namespace portcullis::mgmt
