// Least privilege for the processes that face the network. A worker calls
// drop_privileges once its listeners are bound, its access log open, its keys
// loaded and its transport started (for DPDK: the EAL initialised and the
// port running); the admin process once its port is bound. From then on the
// process runs as workers.user and workers.group with no supplementary
// groups, an empty capability bounding set, no capabilities, and
// PR_SET_NO_NEW_PRIVS, so nothing it executes or is tricked into executing
// can gain any. The supervisor stays root: it forks and restarts them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "mgmt/config.hpp"

namespace portcullis::mgmt {

// Throws std::system_error when a step fails (the process must then not
// serve). Without `run_as`, or when not started as root, the user stays
// as it is and only PR_SET_NO_NEW_PRIVS is set.
void drop_privileges(const std::optional<RunAs>& run_as, std::string_view process);

// The access log file, created if missing and handed to `run_as` while the
// supervisor is still root, so that a worker can reopen it on reload.
void prepare_access_log(const std::string& path, const std::optional<RunAs>& run_as);

}  // namespace portcullis::mgmt
