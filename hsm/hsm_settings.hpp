// The [hsm] section as plain values (parsed by mgmt/config).
#pragma once

#include <string>

namespace portcullis::hsm {

struct HsmSettings {
    std::string module;          // PKCS#11 library path; "" = no HSM configured
    std::string token;           // token label used when a key URI names none
    std::string failover_token;  // standby token holding the same keys; "" = none
    std::string pin_file;        // PIN read from this file (first line), or
    std::string pin_env;         // from this environment variable; never in the config text
    int sessions = 4;            // PKCS#11 sessions (and threads) per worker and token
    int max_in_flight = 256;     // per key and worker: queued + running signatures
    int operation_timeout_ms = 2000;
    int retry_interval_ms = 1000;  // how often an unhealthy token is probed

    bool enabled() const { return !module.empty(); }
};

}  // namespace portcullis::hsm
