// A transport's byte stream, as the connection logic sees it: the client's
// TCP connection or the one to a backend, over a kernel socket or over the
// DPDK path's userspace TCP. Calls never block; would_block means "wait for
// the transport to report activity on this stream again".
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/socket_address.hpp"

namespace portcullis::dataplane {

class ByteStream {
  public:
    enum class Status { ok, would_block, eof, error };
    struct Io {
        Status status = Status::would_block;
        std::size_t bytes = 0;
        int error = 0;  // errno-style, with Status::error
    };

    virtual ~ByteStream() = default;
    virtual Io read(std::span<std::uint8_t> into) = 0;
    virtual Io write(std::span<const std::uint8_t> bytes) = 0;
    // No more bytes from us (TCP FIN); reading goes on.
    virtual void shutdown_write() = 0;
    // For a stream being opened: EINPROGRESS while the handshake runs, 0 once
    // connected, else why it failed (ECONNREFUSED, ETIMEDOUT...).
    virtual int connect_result() = 0;
    // Our end's address; for a client's stream, the address the client
    // reached. It may cost a system call (a listener on a wildcard address
    // learns it per connection from the kernel), so only what needs it asks.
    virtual SocketAddress local_address() = 0;
};

}  // namespace portcullis::dataplane
