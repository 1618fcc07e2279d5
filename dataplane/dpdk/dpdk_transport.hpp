// The DPDK transport of a worker: its own EAL instance (a --file-prefix of
// its own), the port, and the userspace stack on one RX/TX queue pair, polled
// to completion by the worker's thread pinned to its core. Several workers on
// one virtual device each see every frame and keep their own flows (software
// steering in the stack); a PCI port is served by one worker.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dataplane/dpdk/dpdk_settings.hpp"
#include "dataplane/keepalive_settings.hpp"
#include "dataplane/transport.hpp"
#include "dataplane/worker_stats.hpp"

namespace portcullis::dataplane::dpdk {

struct WorkerPlacement {
    int index = 0;  // this worker
    int count = 1;  // workers sharing the device
    int cpu = -1;   // the EAL core (-l); -1 = the first one the process may use
};

// The EAL arguments one worker runs with (exposed for tests and the docs).
std::vector<std::string> eal_arguments(const DpdkSettings& settings,
                                       const WorkerPlacement& placement);

// Throws DpdkError when the EAL or the port cannot start.
std::unique_ptr<Transport> make_dpdk_transport(const DpdkSettings& settings,
                                               const KeepaliveSettings& keepalive,
                                               const WorkerPlacement& placement,
                                               TransportHost& host, PacketStats* stats);

}  // namespace portcullis::dataplane::dpdk
