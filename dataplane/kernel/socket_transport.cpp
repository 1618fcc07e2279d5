#include "dataplane/kernel/socket_transport.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "base/os_error.hpp"
#include "dataplane/connection.hpp"
#include "dataplane/kernel/socket_stream.hpp"

namespace portcullis::dataplane::kernel {
namespace {

enum Tag : std::uint64_t { client_tag = 0, upstream_tag = 1, listener_tag = 2 };
static_assert(listener_tag != epoll_tag_control);

constexpr int accept_batch = 64;

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

void add_to_epoll(int epoll_fd, int fd, const void* owner, std::uint64_t tag,
                  std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = reinterpret_cast<std::uintptr_t>(owner) | tag;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) throw base::os_error("epoll_ctl add");
}

constexpr std::uint32_t edge_events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

base::UniqueFd open_listener(const ListenerSettings& settings) {
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
    if (::bind(fd.get(), address.sa(), address.length) != 0)
        throw base::os_error("bind " + address.to_string());
    if (::listen(fd.get(), settings.backlog) != 0)
        throw base::os_error("listen " + address.to_string());
    return fd;
}

}  // namespace

struct SocketTransport::Listening {
    ListenerRuntime& listener;
    base::UniqueFd socket;
};

SocketTransport::SocketTransport(int epoll_fd, TransportHost& host,
                                 const KeepaliveSettings& keepalive)
    : epoll_fd_(epoll_fd), host_(host), keepalive_(keepalive) {}

SocketTransport::~SocketTransport() = default;

void SocketTransport::listen(ListenerRuntime& listener) {
    auto listening =
        std::make_unique<Listening>(Listening{listener, open_listener(listener.settings)});
    add_to_epoll(epoll_fd_, listening->socket.get(), listening.get(), listener_tag, EPOLLIN);
    listening_.push_back(std::move(listening));
}

void SocketTransport::stop_listening() {
    listening_.clear();  // closing leaves the epoll set
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
    auto stream = std::make_unique<SocketStream>(std::move(fd), true);
    stream->owner = &owner;
    add_to_epoll(epoll_fd_, stream->fd(), stream.get(), upstream_tag, edge_events);
    return stream;
}

void SocketTransport::on_epoll_event(const epoll_event& event) {
    const auto tag = event.data.u64 & epoll_tag_mask;
    void* object = reinterpret_cast<void*>(event.data.u64 & ~epoll_tag_mask);
    if (tag == listener_tag) {
        accept_from(*static_cast<Listening*>(object));
        return;
    }
    auto* stream = static_cast<SocketStream*>(object);
    stream->on_events(event.events);
    host_.activity(*stream->owner);
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
        sockaddr_storage local{};
        socklen_t local_len = sizeof local;
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len);
        set_nodelay(fd.get());
        set_keepalive(fd.get(), keepalive_);
        auto socket_stream = std::make_unique<SocketStream>(std::move(fd), false);
        SocketStream* raw = socket_stream.get();
        std::unique_ptr<ByteStream> stream = std::move(socket_stream);
        Connection* connection = host_.accept(
            listener, stream, SocketAddress::from(reinterpret_cast<sockaddr*>(&peer), peer_len),
            SocketAddress::from(reinterpret_cast<sockaddr*>(&local), local_len));
        if (connection == nullptr) continue;  // refused: the stream closed with it
        raw->owner = connection;
        add_to_epoll(epoll_fd_, raw->fd(), raw, client_tag, edge_events);
        // A client that already sent its ClientHello is served without
        // waiting for another epoll round.
        host_.activity(*connection);
    }
}

}  // namespace portcullis::dataplane::kernel
