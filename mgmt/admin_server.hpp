// The admin process: a child of the supervisor serving /metrics, /healthz,
// /readyz, /status and POST /reload on its own (loopback by default) address.
// It only reads the shared stats and control block, so neither the workers
// nor the single-threaded supervisor ever share a thread with HTTP handling.
#pragma once

#include "dataplane/socket_address.hpp"
#include "mgmt/config.hpp"
#include "mgmt/control_block.hpp"
#include "mgmt/shared_stats.hpp"

namespace portcullis::crypto {
class SharedSessionCache;
}

namespace portcullis::mgmt {

inline constexpr int admin_exit_cannot_listen = 4;

struct AdminOptions {
    dataplane::SocketAddress address;
    Config config;  // the generation at start; later ones come from the control block
    const SharedStats* stats = nullptr;
    const ControlBlock* control = nullptr;
    const crypto::SharedSessionCache* session_cache = nullptr;
    int reload_request_fd = -1;  // a byte written here asks the supervisor to reload
};

// Runs until SIGTERM/SIGINT; returns the process exit code.
int run_admin(const AdminOptions& options);

}  // namespace portcullis::mgmt
