// The kernel transport: one SO_REUSEPORT listening socket per listener in
// each worker (the kernel spreads new connections), non-blocking sockets
// registered edge-triggered with the worker's reactor, each socket the
// handler of its own readiness. Runs anywhere, no root; the reference the
// DPDK transport is measured against.
#pragma once

#include <memory>
#include <vector>

#include "base/unique_fd.hpp"
#include "dataplane/keepalive_settings.hpp"
#include "dataplane/log_limiter.hpp"
#include "dataplane/reactor.hpp"
#include "dataplane/transport.hpp"

namespace portcullis::dataplane::kernel {

class SocketTransport final : public Transport {
  public:
    // `reactor` outlives the transport (it holds the handlers' addresses).
    SocketTransport(Reactor& reactor, TransportHost& host, const KeepaliveSettings& keepalive = {});
    ~SocketTransport() override;

    void listen(ListenerRuntime& listener) override;
    void stop_listening() override;
    std::unique_ptr<ByteStream> connect(const SocketAddress& backend, Connection& owner,
                                        int& error) override;
    std::string describe() const override { return "kernel"; }

  private:
    struct Listening;
    void accept_from(Listening& listening);

    Reactor& reactor_;
    TransportHost& host_;
    KeepaliveSettings keepalive_;
    // Kept after stop_listening (only their sockets close): an accept event
    // later in the same batch may still name one.
    std::vector<std::unique_ptr<Listening>> listening_;
    LogLimiter log_limiter_;  // accept failures; the default size
};

}  // namespace portcullis::dataplane::kernel
