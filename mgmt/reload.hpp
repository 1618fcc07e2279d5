// The checks a new configuration passes before anything serves it.
#pragma once

#include <string>

#include "mgmt/child_process.hpp"
#include "mgmt/config.hpp"

namespace portcullis::mgmt {

// Builds every listener's TLS contexts the way a worker will (certificates,
// keys, trust stores, CRLs). Returns "" or the first problem, naming the listener.
std::string check_tls_material(const Config& config);

// Same, in a short-lived child process (forked with `setup`), so that the
// caller (the supervisor) never holds OpenSSL or key state that its later
// forks would inherit.
std::string check_tls_material_in_child(const Config& config, ChildSetup setup);

// "" when `fresh` can replace `running` in place; otherwise what needs a
// restart (listener addresses, worker count, admin address, ...).
std::string restart_only_changes(const Config& running, const Config& fresh);

}  // namespace portcullis::mgmt
