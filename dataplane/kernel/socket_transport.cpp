#include "dataplane/kernel/socket_transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <system_error>

#include "base/heap_policy.hpp"
#include "base/os_error.hpp"
#include "dataplane/connection.hpp"
#include "dataplane/kernel/socket_stream.hpp"

namespace portcullis::dataplane::kernel {
namespace {

constexpr int accept_batch = 64;

// Best effort on a backend socket: a connection without them still works.
void set_nodelay(int fd) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_keepalive(int fd, const KeepaliveSettings& keepalive) {
    if (keepalive.idle_s == 0) return;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepalive.idle_s, sizeof keepalive.idle_s);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &keepalive.interval_s,
                 sizeof keepalive.interval_s);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &keepalive.probes, sizeof keepalive.probes);
}

void set_or_throw(int fd, int level, int option, int value, const char* name) {
    if (::setsockopt(fd, level, option, &value, sizeof value) != 0) throw base::os_error(name);
}

constexpr std::uint32_t edge_events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

// Linux copies a listener's TCP_NODELAY, SO_KEEPALIVE and TCP_KEEPIDLE,
// TCP_KEEPINTVL and TCP_KEEPCNT into every socket accept() returns (the
// kernel transport's unit test reads them back from accepted sockets), so
// they are set here once instead of five setsockopt calls per connection.
base::UniqueFd open_listener(const ListenerSettings& settings, const KeepaliveSettings& keepalive) {
    const auto& address = settings.address;
    base::UniqueFd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw base::os_error("socket");
    const int one = 1;
    // Every worker binds its own socket; the kernel spreads new connections.
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        throw base::os_error("SO_REUSEPORT");
    if (address.family() == AF_INET6)
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    set_or_throw(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    if (keepalive.idle_s != 0) {
        set_or_throw(fd.get(), SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
        set_or_throw(fd.get(), IPPROTO_TCP, TCP_KEEPIDLE, keepalive.idle_s, "TCP_KEEPIDLE");
        set_or_throw(fd.get(), IPPROTO_TCP, TCP_KEEPINTVL, keepalive.interval_s, "TCP_KEEPINTVL");
        set_or_throw(fd.get(), IPPROTO_TCP, TCP_KEEPCNT, keepalive.probes, "TCP_KEEPCNT");
    }
    if (::bind(fd.get(), address.sa(), address.length) != 0)
        throw base::os_error("bind " + address.to_string());
    if (::listen(fd.get(), settings.backlog) != 0)
        throw base::os_error("listen " + address.to_string());
    return fd;
}

}  // namespace

struct SocketTransport::Listening final : Reactor::Handler {
    Listening(SocketTransport& transport, ListenerRuntime& listener, base::UniqueFd socket)
        : transport(transport), listener(listener), socket(std::move(socket)) {
        // Bound to one address, every client reaches that one; on a wildcard
        // only getsockname can say which, asked when something needs it.
        if (!listener.settings.address.is_wildcard()) local = listener.settings.address;
    }
    void on_ready(unsigned, std::uint32_t) override {
        if (socket) transport.accept_from(*this);
    }

    SocketTransport& transport;
    ListenerRuntime& listener;
    base::UniqueFd socket;
    std::optional<SocketAddress> local;
};

SocketTransport::SocketTransport(Reactor& reactor, TransportHost& host,
                                 const KeepaliveSettings& keepalive)
    : reactor_(reactor), host_(host), keepalive_(keepalive) {
    // Connections come and go all the time: their memory must not cost
    // brk() calls and page faults on every few of them.
    base::keep_heap_resident();
}

SocketTransport::~SocketTransport() = default;

void SocketTransport::listen(ListenerRuntime& listener) {
    auto listening =
        std::make_unique<Listening>(*this, listener, open_listener(listener.settings, keepalive_));
    reactor_.add(listening->socket.get(), EPOLLIN, *listening);
    listening_.push_back(std::move(listening));
}

void SocketTransport::stop_listening() {
    for (auto& listening : listening_) listening->socket.reset();  // closing leaves the epoll set
}

std::unique_ptr<ByteStream> SocketTransport::connect(const SocketAddress& backend,
                                                     Connection& owner, int& error) {
    base::UniqueFd fd(::socket(backend.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        error = errno;
        return nullptr;
    }
    set_nodelay(fd.get());
    set_keepalive(fd.get(), keepalive_);
    if (::connect(fd.get(), backend.sa(), backend.length) != 0 && errno != EINPROGRESS) {
        error = errno;
        return nullptr;
    }
    auto stream = std::make_unique<SocketStream>(std::move(fd), true, host_);
    stream->owner = &owner;
    reactor_.add(stream->fd(), edge_events, *stream);
    return stream;
}

void SocketTransport::accept_from(Listening& listening) {
    auto& listener = listening.listener;
    for (int i = 0; i < accept_batch; ++i) {
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof peer;
        base::UniqueFd fd(::accept4(listening.socket.get(), reinterpret_cast<sockaddr*>(&peer),
                                    &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            // EMFILE/ENFILE/ENOBUFS: stop for this round rather than spin.
            if (log_limiter_.allow(std::chrono::steady_clock::now()))
                spdlog::warn("accept failed listener={} error={}", listener.settings.name,
                             std::strerror(errno));
            return;
        }
        auto stream = std::make_unique<SocketStream>(std::move(fd), false, host_, listening.local);
        SocketStream& raw = *stream;
        Connection* connection =
            host_.accept(listener, std::move(stream),
                         SocketAddress::from(reinterpret_cast<sockaddr*>(&peer), peer_len));
        if (connection == nullptr) continue;  // refused: the stream closed with it
        raw.owner = connection;
        // Registered after the first pump: readiness that arrived meanwhile
        // is reported by the add itself (edge-triggered epoll checks the
        // current state), so nothing is missed.
        reactor_.add(raw.fd(), edge_events, raw);
    }
}

}  // namespace portcullis::dataplane::kernel
