// The parent process: forks the workers before any TLS context or key exists,
// restarts a worker that dies, reports readiness, and stops everything on
// SIGTERM/SIGINT. It never touches a client connection.
#pragma once

#include <string>

#include "mgmt/config.hpp"

namespace portcullis::mgmt {

// Runs until told to stop; returns the process exit code (0 after a clean
// stop, 1 when the workers cannot start).
struct Overrides {  // command-line flags that win over the file, reloads included
    int workers = -1;
    std::string log_level;
};
int run_supervisor(const Config& config, const Overrides& overrides = {});

}  // namespace portcullis::mgmt
