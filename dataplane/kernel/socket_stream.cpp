#include "dataplane/kernel/socket_stream.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>

namespace portcullis::dataplane::kernel {
namespace {

bool would_block(int err) {
    return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

SocketStream::SocketStream(base::UniqueFd fd, bool connecting, TransportHost& host,
                           std::optional<SocketAddress> local)
    : fd_(std::move(fd)),
      host_(host),
      local_(local),
      readable_(!connecting),
      writable_(!connecting),
      connect_result_(connecting ? EINPROGRESS : 0) {}

void SocketStream::on_ready(unsigned, std::uint32_t events) {
    on_events(events);
    if (owner != nullptr) host_.activity(*owner);
}

void SocketStream::on_events(std::uint32_t events) {
    if (connect_result_ == EINPROGRESS) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            int error = 0;
            socklen_t len = sizeof error;
            ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &len);
            connect_result_ = error != 0 ? error : ECONNREFUSED;
        } else if (events & EPOLLOUT) {
            connect_result_ = 0;
        } else {
            return;
        }
    }
    // Errors and hang-ups surface through recv/send, so they count as readiness.
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_end_seen_ = true;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable_ = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) writable_ = true;
}

ByteStream::Io SocketStream::read(std::span<std::uint8_t> into) {
    while (readable_) {
        const ssize_t n = ::recv(fd_.get(), into.data(), into.size(), 0);
        if (n > 0) {
            if (static_cast<std::size_t>(n) < into.size() && !read_end_seen_) readable_ = false;
            return {Status::ok, static_cast<std::size_t>(n), 0};
        }
        if (n == 0) return {Status::eof, 0, 0};
        if (would_block(errno)) {
            readable_ = false;
        } else if (errno != EINTR) {
            return {Status::error, 0, errno};
        }
    }
    return {Status::would_block, 0, 0};
}

ByteStream::Io SocketStream::write(std::span<const std::uint8_t> bytes) {
    while (writable_) {
        const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n > 0) return {Status::ok, static_cast<std::size_t>(n), 0};
        if (n < 0 && would_block(errno)) {
            writable_ = false;
        } else if (n < 0 && errno != EINTR) {
            return {Status::error, 0, errno};
        }
    }
    return {Status::would_block, 0, 0};
}

void SocketStream::shutdown_write() {
    ::shutdown(fd_.get(), SHUT_WR);
}

SocketAddress SocketStream::local_address() {
    if (!local_) {
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
            return {};
        local_ = SocketAddress::from(reinterpret_cast<sockaddr*>(&address), length);
    }
    return *local_;
}

}  // namespace portcullis::dataplane::kernel
