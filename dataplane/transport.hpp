// The seam between the transport-neutral worker (connections, TLS, HSM,
// reload) and the two ways bytes reach it: kernel sockets under epoll
// (dataplane/kernel) or the DPDK poll-mode stack with its userspace TCP
// (dataplane/dpdk). A worker owns exactly one transport, on its one thread.
//
// A transport hooks itself into the worker's Reactor when it is built: the
// kernel transport registers its listening and connection sockets, the DPDK
// transport registers its poller. Nothing here says which loop shape runs.
#pragma once

#include <memory>
#include <string>

#include "base/buffer_pool.hpp"
#include "dataplane/byte_stream.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::dataplane {

class Connection;
struct ListenerRuntime;

// What a transport calls back into its worker.
class TransportHost {
  public:
    virtual ~TransportHost() = default;
    // A client connected to `listener`: the worker applies its limits, counts
    // it, makes the Connection and serves whatever the client already sent.
    // Null: refused (draining, or over the connection limit); the stream was
    // dropped, which closes it.
    virtual Connection* accept(ListenerRuntime& listener, std::unique_ptr<ByteStream> client,
                               const SocketAddress& peer) = 0;
    // One of the connection's streams became readable, writable, connected or closed.
    virtual void activity(Connection& connection) = 0;
    // The worker's buffer pool: a transport that buffers bytes itself (the
    // DPDK path's TCP) takes its memory and budget from it too.
    virtual base::BufferPool& buffers() = 0;
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
    // The transport's own counters and gauges are published (called on the tick).
    virtual void publish_stats() {}
    virtual std::string describe() const = 0;  // for the startup log line
};

}  // namespace portcullis::dataplane
