// Process-wide log setup: one line per event on stderr, UTC timestamps, the
// process role in brackets ("supervisor", "worker-3") so interleaved lines
// from forked workers stay attributable.
#pragma once

#include <string>

namespace portcullis::mgmt {

// Throws std::invalid_argument for an unknown level name.
void configure_logging(const std::string& role, const std::string& level);

}  // namespace portcullis::mgmt
