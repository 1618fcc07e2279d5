// portcullis-test-backend: the backend the tests and the quickstart put behind
// Portcullis. Echo or minimal HTTP/1.1, optionally expecting a PROXY v2
// header (decoded into a JSON line per connection with --record), optionally
// slow (--read-delay-ms) to exercise backpressure. One thread per connection:
// a test tool, not a server.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "dataplane/socket_address.hpp"
#include "tests/support/proxy_v2_parser.hpp"

namespace {

using portcullis::base::UniqueFd;
using portcullis::dataplane::SocketAddress;

struct Options {
    std::string listen = "127.0.0.1:0";
    std::string mode = "echo";
    bool proxy_protocol = false;
    std::string record;
    std::string ready_file;
    int read_delay_ms = 0;
};

std::mutex record_mutex;
std::atomic<bool> stopping{false};

bool send_all(int fd, const char* data, std::size_t n) {
    while (n > 0) {
        const ssize_t sent = ::send(fd, data, n, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return false;
        data += sent;
        n -= static_cast<std::size_t>(sent);
    }
    return true;
}

// Reads into `buffer`; 0 on EOF, -1 on error.
ssize_t read_some(int fd, std::string& buffer, const Options& options) {
    char chunk[16384];
    const std::size_t limit = options.read_delay_ms > 0 ? 1024 : sizeof chunk;
    if (options.read_delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(options.read_delay_ms));
    ssize_t n;
    do n = ::recv(fd, chunk, limit, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) buffer.append(chunk, static_cast<std::size_t>(n));
    return n;
}

void serve_echo(int fd, std::string pending, const Options& options) {
    if (!pending.empty() && !send_all(fd, pending.data(), pending.size())) return;
    std::string buffer;
    while (true) {
        buffer.clear();
        const ssize_t n = read_some(fd, buffer, options);
        if (n <= 0) break;
        if (!send_all(fd, buffer.data(), buffer.size())) return;
    }
    ::shutdown(fd, SHUT_WR);  // echo of a half-closed stream: finish, then FIN
}

void serve_http(int fd, std::string buffer, const Options& options,
                const portcullis::testing::ProxyHeader* proxy) {
    while (true) {
        std::size_t header_end;
        while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
            if (read_some(fd, buffer, options) <= 0) return;
        }
        std::string head = buffer.substr(0, header_end);
        for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::size_t body_length = 0;
        if (const auto at = head.find("content-length:"); at != std::string::npos) {
            body_length = std::stoul(head.substr(at + 15));
        }
        while (buffer.size() < header_end + 4 + body_length) {
            if (read_some(fd, buffer, options) <= 0) return;
        }
        buffer.erase(0, header_end + 4 + body_length);
        const bool close = head.find("connection: close") != std::string::npos;
        std::string body = "hello from the portcullis test backend\n";
        if (proxy) {
            body +=
                "client=" + proxy->source_address + ":" + std::to_string(proxy->source_port) + "\n";
            body +=
                "verified=" + std::string(proxy->has_ssl && proxy->ssl_verify == 0 ? "yes" : "no") +
                "\n";
            body += "subject=" + proxy->subject_dn + "\n";
            body += "tls=" + proxy->ssl_version + " " + proxy->ssl_cipher + "\n";
        }
        const std::string response =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\nConnection: " + (close ? "close" : "keep-alive") +
            "\r\n\r\n" + body;
        if (!send_all(fd, response.data(), response.size()) || close) return;
    }
}

void serve(UniqueFd client, const Options& options) {
    std::string buffer;
    std::optional<portcullis::testing::ProxyHeader> proxy;
    if (options.proxy_protocol) {
        while (true) {
            const auto outcome = portcullis::testing::parse_proxy_v2(
                {reinterpret_cast<const std::uint8_t*>(buffer.data()), buffer.size()});
            if (outcome.header) {
                proxy = outcome.header;
                buffer.erase(0, proxy->total_length);
                break;
            }
            if (!outcome.incomplete) {
                std::cerr << "test-backend: bad PROXY header: " << outcome.error << "\n";
                return;
            }
            if (read_some(client.get(), buffer, options) <= 0) return;
        }
        if (!options.record.empty()) {
            std::lock_guard lock(record_mutex);
            std::ofstream out(options.record, std::ios::app);
            out << proxy->to_json() << "\n";
        }
    }
    if (options.mode == "http") {
        serve_http(client.get(), std::move(buffer), options, proxy ? &*proxy : nullptr);
    } else {
        serve_echo(client.get(), std::move(buffer), options);
    }
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    CLI::App app{"Portcullis test backend"};
    app.add_option("--listen", options.listen, "numeric address:port (port 0 = any)");
    app.add_option("--mode", options.mode, "echo or http")->check(CLI::IsMember({"echo", "http"}));
    app.add_flag("--proxy-protocol", options.proxy_protocol, "expect a PROXY v2 header first");
    app.add_option("--record", options.record,
                   "append one JSON line per connection with the PROXY fields");
    app.add_option("--ready-file", options.ready_file, "write the bound port here once listening");
    app.add_option("--read-delay-ms", options.read_delay_ms,
                   "sleep this long before each read of at most 1 KiB");
    CLI11_PARSE(app, argc, argv);

    ::signal(SIGPIPE, SIG_IGN);
    // Port 0 is not a valid config address but is what tests want here.
    std::string listen = options.listen;
    const bool any_port = listen.ends_with(":0");
    if (any_port) listen.back() = '1';
    auto address = SocketAddress::parse(listen);
    if (!address) {
        std::cerr << "test-backend: bad --listen " << options.listen << "\n";
        return 2;
    }
    if (any_port)
        reinterpret_cast<sockaddr_in*>(&address->storage)->sin_port = 0;  // same offset for v6

    UniqueFd listener(::socket(address->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int one = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener.get(), address->sa(), address->length) != 0 ||
        ::listen(listener.get(), 1024) != 0) {
        std::perror("test-backend: bind/listen");
        return 1;
    }
    sockaddr_storage bound{};
    socklen_t bound_len = sizeof bound;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len);
    const auto port = SocketAddress::from(reinterpret_cast<sockaddr*>(&bound), bound_len).port();
    if (!options.ready_file.empty()) {
        const std::string tmp = options.ready_file + ".tmp";
        std::ofstream(tmp) << port << "\n";
        std::rename(tmp.c_str(), options.ready_file.c_str());
    }
    std::cerr << "test-backend: listening on port " << port << " mode=" << options.mode << "\n";

    ::signal(SIGTERM, [](int) { stopping = true; });
    ::signal(SIGINT, [](int) { stopping = true; });
    while (!stopping) {
        pollfd pfd{listener.get(), POLLIN, 0};
        if (::poll(&pfd, 1, 200) <= 0) continue;
        UniqueFd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) continue;
        std::thread(serve, std::move(client), std::cref(options)).detach();
    }
    return 0;
}
