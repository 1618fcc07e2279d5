// The DPDK transport of a worker: an EAL instance, the port, and the
// userspace stack on one RX/TX queue pair, polled to completion by the
// worker's thread pinned to its core (the transport is its reactor's poller,
// so that reactor runs in poll mode). Several workers share a port either by
// queues (worker 0 is the DPDK primary process that starts the port, the
// others attach as secondaries, each polling its own queue) or, on virtual
// devices, by each being a primary of its own that sees every frame and keeps
// its own flows (software steering in the stack).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/dpdk/dpdk_settings.hpp"
#include "dataplane/keepalive_settings.hpp"
#include "dataplane/reactor.hpp"
#include "dataplane/transport.hpp"
#include "dataplane/worker_stats.hpp"

namespace portcullis::dataplane::dpdk {

struct WorkerPlacement {
    int index = 0;  // this worker
    int count = 1;  // workers sharing the device
    int cpu = -1;   // the EAL core (-l); -1 = the first one the process may use
    int group = 0;  // names the EAL runtime the workers of one daemon share; 0 = this pid
    // Queue sharing: whether worker 0, the primary, has started the port
    // (a secondary waits for it before its EAL starts).
    std::function<bool()> primary_ready;
};

// The EAL arguments one worker runs with (exposed for tests and the docs).
std::vector<std::string> eal_arguments(const DpdkSettings& settings,
                                       const WorkerPlacement& placement);

// Throws DpdkError when the EAL or the port cannot start. `reactor`
// outlives the transport (it calls the transport's poller).
std::unique_ptr<Transport> make_dpdk_transport(const DpdkSettings& settings,
                                               const KeepaliveSettings& keepalive,
                                               const WorkerPlacement& placement, Reactor& reactor,
                                               TransportHost& host, PacketStats* stats);

}  // namespace portcullis::dataplane::dpdk
