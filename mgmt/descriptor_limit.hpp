// The daemon's open-file limit, sized for its connection limit before any
// worker forks (workers inherit it). Each connection a worker holds takes two
// descriptors (client and backend); a worker that runs out of descriptors
// cannot accept, and the kernel keeps the client waiting in the listen
// queue. raise_descriptor_limit() lifts the soft limit to what
// workers.max_connections needs (up to the hard limit, or past it when the
// process may), and warns, naming the numbers, when that is not enough.
#pragma once

#include <cstdint>

namespace portcullis::mgmt {

struct DescriptorLimit {
    std::uint64_t needed = 0;  // per worker
    std::uint64_t soft = 0;    // after raising
    std::uint64_t hard = 0;
};

// Descriptors a worker needs for `max_connections`: two per connection plus
// its own (listeners, epoll, signal and event fds, logs, HSM sessions).
std::uint64_t descriptors_needed(int max_connections);

DescriptorLimit raise_descriptor_limit(int max_connections);

}  // namespace portcullis::mgmt
