#include "dataplane/dpdk/dpdk_transport.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/allowed_cpus.hpp"
#include "dataplane/connection.hpp"
#include "dataplane/dpdk/port.hpp"
#include "dataplane/dpdk/stack.hpp"

namespace portcullis::dataplane::dpdk {
namespace {

net::Ipv4Address ipv4_of(const SocketAddress& address) {
    return ntohl(reinterpret_cast<const sockaddr_in*>(address.sa())->sin_addr.s_addr);
}

std::string dotted(std::uint32_t address) {
    in_addr a{htonl(address)};
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &a, text, sizeof text);
    return text;
}

bool shares_queues(const DpdkSettings& settings, const WorkerPlacement& placement) {
    return placement.count > 1 && settings.queues_per_worker();
}

// A secondary process's EAL finds the port only once the primary started it.
std::vector<std::string> eal_arguments_once_primary_ready(const DpdkSettings& settings,
                                                          const WorkerPlacement& placement) {
    if (shares_queues(settings, placement) && placement.index > 0 && placement.primary_ready) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (!placement.primary_ready()) {
            if (std::chrono::steady_clock::now() > deadline)
                throw DpdkError(
                    "worker 0, the DPDK primary process, did not start the port in 60 s");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    return eal_arguments(settings, placement);
}

class DpdkTransport final : public Transport, private Reactor::Poller {
  public:
    DpdkTransport(const DpdkSettings& settings, const KeepaliveSettings& keepalive,
                  const WorkerPlacement& placement, Reactor& reactor, TransportHost& host,
                  PacketStats* stats)
        : settings_(settings),
          host_(host),
          stats_(stats),
          eal_(eal_arguments_once_primary_ready(settings, placement)),
          port_(port_settings(settings, placement)),
          stack_(port_, StackAddress{settings.address, settings.netmask, settings.gateway},
                 tcp_config(settings, keepalive, host.buffers())) {
        if (!shares_queues(settings, placement))
            stack_.set_steering(static_cast<unsigned>(placement.index),
                                static_cast<unsigned>(placement.count));
        stack_.set_syn_backlog(settings.syn_backlog);
        stack_.on_activity([this](TcpStream& stream) {
            if (stream.owner != nullptr) host_.activity(*stream.owner);
        });
        reactor.set_poller(*this);
    }

    void listen(ListenerRuntime& listener) override {
        stack_.listen(
            listener.settings.address.port(),
            [this, &listener](std::unique_ptr<TcpStream> stream, const SocketAddress& peer) {
                TcpStream& raw = *stream;
                Connection* connection = host_.accept(listener, std::move(stream), peer);
                // Refused: the stream reset when it was dropped.
                if (connection != nullptr) raw.owner = connection;
            });
        // The first client should not wait for ARP toward its backend.
        for (const auto& backend : listener.settings.upstream.backends)
            if (backend.family() == AF_INET) stack_.resolve(ipv4_of(backend), now_ms());
    }

    void stop_listening() override { stack_.stop_listening(); }

    std::unique_ptr<ByteStream> connect(const SocketAddress& backend, Connection& owner,
                                        int& error) override {
        if (backend.family() != AF_INET) {
            error = EAFNOSUPPORT;
            return nullptr;
        }
        auto stream = stack_.connect(ipv4_of(backend), backend.port(), error);
        if (!stream) return nullptr;
        stream->owner = &owner;
        return stream;
    }

    void publish_stats() override {
        if (stats_ == nullptr) return;
        const auto& s = stack_.stats();
        auto& p = *stats_;
        p.rx_packets.set(s.rx_packets);
        p.tx_packets.set(s.tx_packets);
        p.rx_bytes.set(s.rx_bytes);
        p.tx_bytes.set(s.tx_bytes);
        for (std::size_t r = 0; r < s.rx_drops.size(); ++r) p.rx_drops[r].set(s.rx_drops[r]);
        p.not_for_us.set(s.not_for_us);
        p.steered_away.set(s.steered_away);
        p.tx_full.set(s.tx_full);
        p.mbuf_exhausted.set(s.mbuf_exhausted);
        p.mbufs_in_use.set(port_.mbufs_in_use());
        p.tcp_connections.set(stack_.connections());
        p.tcp_time_wait.set(stack_.time_wait_connections());
        p.tcp_retransmissions.set(s.retransmissions);
        p.resets_sent.set(s.resets_sent);
        p.syn_cookies_sent.set(s.syn_cookies_sent);
        p.syn_cookies_validated.set(s.syn_cookies_validated);
        p.time_wait_reused.set(s.time_wait_reused);
        p.poll_iterations.set(s.poll_iterations);
        p.busy_iterations.set(s.busy_iterations);
        if (port_.queue() == 0 && ++publications_ % port_stats_every == 0) {
            const auto losses = port_.receive_losses();
            p.port_rx_missed.set(losses.missed);
            p.port_rx_errors.set(losses.errors);
            p.port_rx_no_mbuf.set(losses.no_mbuf);
        }
    }

    std::string describe() const override {
        const auto& offloads = port_.offloads();
        return "dpdk device=" + settings_.device + " address=" + dotted(settings_.address) +
               " queue=" + std::to_string(port_.queue()) + "/" + std::to_string(port_.queues()) +
               (Eal::secondary() ? " (secondary process)" : "") +
               " rss=" + (offloads.rss ? "on" : "off") + " checksums: tx " +
               (offloads.tx_checksums ? "offloaded" : "software") + ", rx " +
               (offloads.rx_checksums ? "offloaded" : "software");
    }

  private:
    bool poll(Reactor::Clock::time_point now) override {
        return stack_.poll(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count()));
    }

    static PortSettings port_settings(const DpdkSettings& settings,
                                      const WorkerPlacement& placement) {
        PortSettings port;
        port.mbufs = settings.mbufs;
        port.mtu = settings.mtu;
        port.checksum_offload = settings.checksum_offload;
        if (shares_queues(settings, placement)) {
            port.queues = static_cast<std::uint16_t>(placement.count);
            port.queue = static_cast<std::uint16_t>(placement.index);
        }
        return port;
    }

    static tcp::TcpConfig tcp_config(const DpdkSettings& settings,
                                     const KeepaliveSettings& keepalive,
                                     base::BufferPool& buffers) {
        tcp::TcpConfig config;
        config.buffers = &buffers;
        config.mss = static_cast<std::uint16_t>(settings.mtu - 40);  // IPv4 + TCP headers
        config.keepalive_idle_ms = static_cast<std::uint32_t>(keepalive.idle_s) * 1000;
        config.keepalive_interval_ms = static_cast<std::uint32_t>(keepalive.interval_s) * 1000;
        config.keepalive_probes = keepalive.probes;
        return config;
    }

    static std::uint64_t now_ms() {
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::steady_clock::now().time_since_epoch())
                                              .count());
    }

    // publish_stats() runs every worker tick (100 ms): the port's own
    // counters are read on every tenth.
    static constexpr std::uint64_t port_stats_every = 10;

    DpdkSettings settings_;
    TransportHost& host_;
    PacketStats* stats_;
    Eal eal_;
    Port port_;
    Stack stack_;
    std::uint64_t publications_ = 0;
};

}  // namespace

std::vector<std::string> eal_arguments(const DpdkSettings& settings,
                                       const WorkerPlacement& placement) {
    std::vector<std::string> args = settings.eal_args;
    const auto has = [&args](const std::string& flag) {
        return std::find(args.begin(), args.end(), flag) != args.end();
    };
    const int cpu = placement.cpu >= 0 ? placement.cpu : base::allowed_cpus().front();
    if (shares_queues(settings, placement)) {
        // One EAL runtime for the daemon's workers; lcore ids of their own
        // (the worker's index, run on its CPU) keep the processes' per-lcore
        // mempool caches apart even when two share a CPU.
        const bool primary = placement.index == 0;
        args.insert(
            args.end(),
            {"--lcores", std::to_string(placement.index) + "@" + std::to_string(cpu),
             "--file-prefix",
             "portcullis-" + std::to_string(placement.group > 0 ? placement.group : ::getpid()),
             "--proc-type", primary ? "primary" : "secondary"});
        if (settings.is_pci()) {
            args.insert(args.end(), {"-a", settings.device});
        } else {
            if (!has("--no-pci")) args.push_back("--no-pci");
            if (primary) args.insert(args.end(), {"--vdev", settings.device});
        }
        return args;
    }
    args.insert(args.end(), {"-l", std::to_string(cpu)});
    // Every worker is its own DPDK primary process: a prefix of its own keeps
    // their runtime files apart (and they are removed on exit).
    args.insert(args.end(), {"--file-prefix", "portcullis-" + std::to_string(::getpid()) + "-" +
                                                  std::to_string(placement.index)});
    if (settings.is_pci()) {
        args.insert(args.end(), {"-a", settings.device});
    } else {
        if (!has("--no-pci")) args.push_back("--no-pci");
        args.insert(args.end(), {"--vdev", settings.device});
    }
    return args;
}

std::unique_ptr<Transport> make_dpdk_transport(const DpdkSettings& settings,
                                               const KeepaliveSettings& keepalive,
                                               const WorkerPlacement& placement, Reactor& reactor,
                                               TransportHost& host, PacketStats* stats) {
    return std::make_unique<DpdkTransport>(settings, keepalive, placement, reactor, host, stats);
}

}  // namespace portcullis::dataplane::dpdk
