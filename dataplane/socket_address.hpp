// An IPv4 or IPv6 address with port, as a value.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace portcullis::dataplane {

struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;

    // "192.0.2.1:443", "[2001:db8::1]:443", "*:443" (IPv4 any), "[::]:443".
    // Numeric only: an edge appliance must not depend on DNS to start.
    static std::optional<SocketAddress> parse(std::string_view text);
    static SocketAddress from(const sockaddr* sa, socklen_t len);

    int family() const { return storage.ss_family; }
    std::uint16_t port() const;
    // 0.0.0.0 or ::: a socket bound to it serves every local address, so only
    // the kernel knows which one a given client reached.
    bool is_wildcard() const;
    std::string host() const;       // "192.0.2.1" or "2001:db8::1"
    std::string to_string() const;  // "192.0.2.1:443" or "[2001:db8::1]:443"
    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

}  // namespace portcullis::dataplane
