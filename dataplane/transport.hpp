// The seam between the transport-neutral worker (connections, TLS, HSM,
// reload) and the two ways bytes reach it: kernel sockets under epoll
// (dataplane/kernel) or the DPDK poll-mode stack with its userspace TCP
// (dataplane/dpdk). A worker owns exactly one transport, on its one thread.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/byte_stream.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::dataplane {

class Connection;
struct ListenerRuntime;

// The worker's epoll is shared: the low two bits of epoll_event.data.u64 say
// whose a descriptor is (objects are 8-byte aligned). `control` descriptors
// (signals, reload, HSM completions) are the worker's; the rest the transport's.
inline constexpr std::uint64_t epoll_tag_mask = 3;
inline constexpr std::uint64_t epoll_tag_control = 3;

// What a transport calls back into its worker.
class TransportHost {
  public:
    virtual ~TransportHost() = default;
    // A client connected to `listener`. Null: refused (over the connection
    // limit); the stream is dropped, which closes it.
    virtual Connection* accept(ListenerRuntime& listener, std::unique_ptr<ByteStream>& client,
                               const SocketAddress& peer, const SocketAddress& local) = 0;
    // One of the connection's streams became readable, writable, connected or closed.
    virtual void activity(Connection& connection) = 0;
};

class Transport {
  public:
    virtual ~Transport() = default;
    // Starts accepting for `listener` (throws with the reason: bind failure...).
    virtual void listen(ListenerRuntime& listener) = 0;
    // Accepts nothing more; established connections carry on (drain).
    virtual void stop_listening() = 0;
    // Starts opening a connection to a backend on behalf of `owner`; null with
    // `error` set when it fails at once (no route, no local port).
    virtual std::unique_ptr<ByteStream> connect(const SocketAddress& backend, Connection& owner,
                                                int& error) = 0;
    // Poll mode (DPDK): the worker spins on poll() and looks at its control
    // descriptors only now and then. Otherwise it sleeps in epoll_wait and
    // hands every transport event to on_epoll_event().
    virtual bool polls() const = 0;
    // One poll-mode iteration; true when it did work (the busy fraction).
    virtual bool poll(std::chrono::steady_clock::time_point now) = 0;
    virtual void on_epoll_event(const epoll_event& event) = 0;
    // The transport's own counters and gauges are published (called on the tick).
    virtual void publish_stats() {}
    virtual std::string describe() const = 0;  // for the startup log line
};

}  // namespace portcullis::dataplane
