#include "dataplane/socket_address.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace portcullis::dataplane {

std::optional<SocketAddress> SocketAddress::parse(std::string_view text) {
    std::string_view host;
    std::string_view port_text;
    bool bracketed = false;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::nullopt;
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
        bracketed = true;
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
    }
    unsigned port = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
        return std::nullopt;
    }
    SocketAddress address;
    const std::string host_string(host);
    if (bracketed) {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
        if (::inet_pton(AF_INET6, host_string.c_str(), &v6->sin6_addr) != 1) return std::nullopt;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<std::uint16_t>(port));
        address.length = sizeof(sockaddr_in6);
        return address;
    }
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
    if (host == "*") {
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (::inet_pton(AF_INET, host_string.c_str(), &v4->sin_addr) != 1) {
        return std::nullopt;
    }
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    address.length = sizeof(sockaddr_in);
    return address;
}

SocketAddress SocketAddress::from(const sockaddr* sa, socklen_t len) {
    SocketAddress address;
    const auto n = std::min<std::size_t>(len, sizeof address.storage);
    std::memcpy(&address.storage, sa, n);
    address.length = static_cast<socklen_t>(n);
    return address;
}

std::uint16_t SocketAddress::port() const {
    if (family() == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
    return 0;
}

bool SocketAddress::is_wildcard() const {
    if (family() == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr);
    if (family() == AF_INET)
        return reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr.s_addr == htonl(INADDR_ANY);
    return false;
}

std::string SocketAddress::host() const {
    char text[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET6) {
        ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, text,
                    sizeof text);
    } else if (family() == AF_INET) {
        ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, text,
                    sizeof text);
    }
    return text;
}

std::string SocketAddress::to_string() const {
    if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
    return host() + ":" + std::to_string(port());
}

}  // namespace portcullis::dataplane
