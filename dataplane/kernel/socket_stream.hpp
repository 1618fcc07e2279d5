// A ByteStream over a non-blocking kernel TCP socket registered
// edge-triggered with the worker's reactor, as the handler of its own
// descriptor: readiness goes straight to the connection that owns it.
//
// Readiness is remembered in flags, so a full buffer can pause a direction
// without any epoll_ctl call, and no recv() is spent only to hear EAGAIN: a
// read shorter than the space offered emptied the receive queue, and any
// segment after it raises a new edge. Only when the peer's FIN or an error
// has already been reported does the next read go to the kernel at once (it
// returns the end of the stream or the error, which no later edge would).
// (nginx's event loop reads the same way.) A connect in progress is decided
// by its first event: EPOLLOUT alone means connected (a failed connect
// always comes with EPOLLERR); getsockopt(SO_ERROR) is asked only then, for
// the reason.
#pragma once

#include <cstdint>
#include <optional>

#include "base/unique_fd.hpp"
#include "dataplane/byte_stream.hpp"
#include "dataplane/reactor.hpp"
#include "dataplane/socket_address.hpp"
#include "dataplane/transport.hpp"

namespace portcullis::dataplane {
class Connection;
}

namespace portcullis::dataplane::kernel {

class SocketStream final : public ByteStream, public Reactor::Handler {
  public:
    // `connecting`: a non-blocking connect() is under way. `host` hears of
    // the readiness of the stream once `owner` is set. `local`: our address
    // when it is already known (accepted by a listener bound to one
    // address); otherwise the kernel is asked the first time it is needed.
    SocketStream(base::UniqueFd fd, bool connecting, TransportHost& host,
                 std::optional<SocketAddress> local = std::nullopt);

    Io read(std::span<std::uint8_t> into) override;
    Io write(std::span<const std::uint8_t> bytes) override;
    void shutdown_write() override;
    int connect_result() override { return connect_result_; }
    // Empty (family 0) if the kernel cannot say (the socket is already reset).
    SocketAddress local_address() override;

    // Records what epoll reported, then tells the owner's worker.
    void on_ready(unsigned tag, std::uint32_t events) override;
    int fd() const { return fd_.get(); }

    Connection* owner = nullptr;

  private:
    void on_events(std::uint32_t events);

    base::UniqueFd fd_;
    TransportHost& host_;
    std::optional<SocketAddress> local_;
    bool readable_ = true;  // a fresh socket may already hold data
    bool writable_ = true;
    bool read_end_seen_ = false;  // FIN, hang-up or error reported: read until recv says so
    int connect_result_ = 0;
};

}  // namespace portcullis::dataplane::kernel
