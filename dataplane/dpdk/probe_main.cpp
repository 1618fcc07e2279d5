// portcullis-dpdk-probe: the DPDK transport's network stack on one port and
// one lcore, answering ARP and ping and serving a TCP echo port. The veth
// integration tests run it against the Linux kernel's TCP; operators can use
// it to check a port before pointing the daemon's DPDK transport at it.
//   portcullis-dpdk-probe --eal "--no-huge -m 256 --no-pci --in-memory
//       --vdev net_af_packet0,iface=veth0" --ip 10.9.0.1 --echo-port 7
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_cycles.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "base/unique_fd.hpp"
#include "dataplane/dpdk/stack.hpp"

namespace {

std::atomic<bool> stop{false};

void on_signal(int) {
    stop = true;
}

std::vector<std::string> split(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    return words;
}

std::uint64_t cpu_ns() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    const auto ns = [](const timeval& t) {
        return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000ULL +
               static_cast<std::uint64_t>(t.tv_usec) * 1000ULL;
    };
    return ns(usage.ru_utime) + ns(usage.ru_stime);
}

// The same echo service on the kernel's TCP (epoll, non-blocking sockets):
// the baseline the benchmark compares the userspace stack with.
int run_kernel_echo(const in_addr& address, int port, double seconds) {
    using portcullis::base::UniqueFd;
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    const int one = 1;
    ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(static_cast<std::uint16_t>(port));
    sin.sin_addr = address;
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        ::listen(listener.get(), 4096) != 0) {
        std::perror("portcullis-dpdk-probe: kernel listener");
        return 1;
    }
    UniqueFd epoll(::epoll_create1(0));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener.get();
    ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev);
    std::printf("portcullis-dpdk-probe ready transport=kernel echo=%d\n", port);
    std::fflush(stdout);
    std::uint64_t accepted = 0;
    const auto start = std::chrono::steady_clock::now();
    std::array<epoll_event, 64> events{};
    std::array<char, 16384> buffer{};
    while (!stop) {
        if (seconds > 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::duration<double>(seconds))
            break;
        const int n = ::epoll_wait(epoll.get(), events.data(), 64, 100);
        for (int i = 0; i < n; ++i) {
            const int fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == listener.get()) {
                int client;
                while ((client = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK)) >= 0) {
                    ++accepted;
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = client;
                    ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, client, &cev);
                }
                continue;
            }
            const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
            if (got > 0) {
                [[maybe_unused]] const auto sent =
                    ::send(fd, buffer.data(), static_cast<std::size_t>(got), MSG_NOSIGNAL);
            } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                ::close(fd);  // also leaves the epoll set
            }
        }
    }
    std::printf("portcullis-dpdk-probe stopped transport=kernel accepted=%lu cpu_ns=%lu\n",
                static_cast<unsigned long>(accepted), static_cast<unsigned long>(cpu_ns()));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace portcullis::dataplane;
    CLI::App app{"DPDK port probe: ARP, ping and a TCP echo port on the userspace stack"};
    std::string eal, ip;
    int echo_port = 7;
    double seconds = 0;
    app.add_option("--eal", eal, "EAL arguments, space separated");
    app.add_option("--ip", ip, "IPv4 address of the port")->required();
    app.add_option("--echo-port", echo_port, "TCP port served as echo")
        ->check(CLI::Range(1, 65535));
    app.add_option("--seconds", seconds, "stop after this long (0 = on SIGINT/SIGTERM)");
    std::size_t syn_backlog = 1024;
    app.add_option("--syn-backlog", syn_backlog, "half-open connections before SYN cookies");
    dpdk::FaultInjection faults;
    app.add_option("--drop", faults.drop, "test hook: drop this fraction of received TCP frames");
    app.add_option("--reorder", faults.reorder,
                   "test hook: deliver this fraction of received TCP frames one frame late");
    bool kernel = false;
    app.add_flag(
        "--kernel", kernel,
        "benchmark baseline: serve the echo port on the kernel's TCP instead (--eal unused)");
    CLI11_PARSE(app, argc, argv);
    in_addr address{};
    if (::inet_pton(AF_INET, ip.c_str(), &address) != 1) {
        std::cerr << "--ip: not an IPv4 address: " << ip << "\n";
        return 2;
    }
    ::signal(SIGINT, on_signal);
    ::signal(SIGTERM, on_signal);
    if (kernel) return run_kernel_echo(address, echo_port, seconds);
    if (eal.empty()) {
        std::cerr << "--eal is required (unless --kernel)\n";
        return 2;
    }
    try {
        dpdk::Eal environment(split(eal));
        dpdk::Port port(dpdk::PortSettings{});
        dpdk::Stack stack(port, dpdk::StackAddress{ntohl(address.s_addr), 0xffffff00, 0});
        stack.serve_echo(static_cast<std::uint16_t>(echo_port));
        stack.inject_faults(faults);
        stack.set_syn_backlog(syn_backlog);
        const auto& mac = port.mac().addr_bytes;
        std::printf(
            "portcullis-dpdk-probe ready port=0 mac=%02x:%02x:%02x:%02x:%02x:%02x ip=%s echo=%d\n",
            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], ip.c_str(), echo_port);
        std::fflush(stdout);
        const auto start = std::chrono::steady_clock::now();
        std::uint64_t busy_ns = 0;  // time in iterations that did work: the lcore's real cost
        while (!stop) {
            const auto now = std::chrono::steady_clock::now();
            if (seconds > 0 && now - start > std::chrono::duration<double>(seconds)) break;
            if (stack.poll(static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                        .count()))) {
                busy_ns +=
                    static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   std::chrono::steady_clock::now() - now)
                                                   .count());
            }
        }
        const auto& s = stack.stats();
        std::uint64_t drops = 0;
        for (auto d : s.rx_drops) drops += d;
        std::printf(
            "portcullis-dpdk-probe stopped rx=%lu tx=%lu drops=%lu accepted=%lu resets=%lu "
            "busy=%lu/%lu mbufs_in_use=%u injected_drops=%lu injected_reorders=%lu "
            "syn_cookies_sent=%lu syn_cookies_validated=%lu busy_ns=%lu cpu_ns=%lu\n",
            static_cast<unsigned long>(s.rx_packets), static_cast<unsigned long>(s.tx_packets),
            static_cast<unsigned long>(drops), static_cast<unsigned long>(s.connections_accepted),
            static_cast<unsigned long>(s.resets_sent),
            static_cast<unsigned long>(s.busy_iterations),
            static_cast<unsigned long>(s.poll_iterations), port.mbufs_in_use(),
            static_cast<unsigned long>(s.injected_drops),
            static_cast<unsigned long>(s.injected_reorders),
            static_cast<unsigned long>(s.syn_cookies_sent),
            static_cast<unsigned long>(s.syn_cookies_validated),
            static_cast<unsigned long>(busy_ns), static_cast<unsigned long>(cpu_ns()));
    } catch (const std::exception& e) {
        std::cerr << "portcullis-dpdk-probe: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
