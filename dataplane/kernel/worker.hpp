// A kernel-transport worker: one process, one epoll, one SO_REUSEPORT socket
// per listener. The supervisor forks it before any TLS context exists; the
// worker builds its own contexts, so no OpenSSL state is shared between
// processes (OpenSSL 3.0's process-wide locks then cost nothing across cores).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/listener_settings.hpp"
#include "dataplane/worker_stats.hpp"

namespace portcullis::dataplane::kernel {

struct WorkerOptions {
    int index = 0;
    int max_connections = 10000;
    int drain_timeout_ms = 10000;  // after SIGTERM, established connections get this long
    std::vector<ListenerSettings> listeners;
    WorkerStats* stats = nullptr;  // this worker's shared-memory slot
    int ready_fd = -1;             // gets one byte once every listener accepts
    int cpu = -1;                  // pin to this CPU; -1 = leave to the scheduler
    std::string access_log;        // "" off, "-" stderr, else a file (see AccessLog)
    // Session-ticket key shared by all workers (80 bytes, empty = per-worker
    // random): a returning client resumes whichever worker accepts it.
    std::vector<std::uint8_t> ticket_key;
};

// Exit codes of a worker process.
inline constexpr int worker_exit_ok = 0;
inline constexpr int worker_exit_startup_failed = 3;  // bad TLS material, bind failure...

// Runs until SIGTERM or SIGINT; returns the process exit code.
int run_worker(const WorkerOptions& options);

}  // namespace portcullis::dataplane::kernel
