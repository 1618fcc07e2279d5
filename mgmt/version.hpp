// What `portcullis --version` prints: Portcullis's own version and the
// versions of the libraries that decide its behaviour, as loaded at run time
// (a host may carry a newer OpenSSL than the one it was built against).
#pragma once

#include <string>

namespace portcullis::mgmt {

// Several lines, newline-terminated: portcullis, OpenSSL (runtime and build
// headers), DPDK (or that this build has no DPDK transport).
std::string version_text();

}  // namespace portcullis::mgmt
