// Everything one listener needs, as plain values (parsed by mgmt/config).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "crypto/tls_policy.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::dataplane {

struct UpstreamSettings {
    std::vector<SocketAddress> backends;  // round robin, at least one
    int connect_timeout_ms = 2000;
    int fail_threshold = 3;       // consecutive connect failures that mark a backend down
    int retry_after_ms = 5000;    // a down backend is tried again after this
    bool proxy_protocol = false;  // send a PROXY v2 header with the client identity
};

struct ListenerSettings {
    std::string name;
    SocketAddress address;
    int backlog = 1024;
    int handshake_timeout_ms = 10000;
    int idle_timeout_ms = 300000;
    std::size_t buffer_bytes = 64 * 1024;  // per direction per connection
    crypto::TlsPolicy tls;
    UpstreamSettings upstream;
};

}  // namespace portcullis::dataplane
