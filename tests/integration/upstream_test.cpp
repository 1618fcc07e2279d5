// The upstream side against the real daemon: PROXY v2 identity fields,
// backend failure and recovery, backpressure, half-close.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "dataplane/socket_address.hpp"
#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

std::string record_line_for(const std::filesystem::path& record, int client_port) {
    const auto text = read_file(record);
    const std::string key = "\"src_port\":" + std::to_string(client_port) + ",";
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = text.find('\n', start);
        const auto line = text.substr(start, end - start);
        if (line.find(key) != std::string::npos) return line;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return "";
}

std::string json_string(const std::string& line, const std::string& field) {
    const std::string key = "\"" + field + "\":\"";
    const auto start = line.find(key);
    if (start == std::string::npos) return "<missing>";
    const auto value = start + key.size();
    return line.substr(value, line.find('"', value) - value);
}

long vm_rss_kib(pid_t pid) {
    const auto status = read_file("/proc/" + std::to_string(pid) + "/status");
    const auto at = status.find("VmRSS:");
    return at == std::string::npos ? -1 : std::stol(status.substr(at + 6));
}

class Upstream : public ::testing::Test {
  protected:
    void SetUp() override {
        env = std::make_unique<TestDeployment>();
        client = std::make_unique<IssuedCert>(env->client("upstream-client"));
    }
    ClientOptions good() const { return env->options_for(*client); }
    std::unique_ptr<TestDeployment> env;
    std::unique_ptr<IssuedCert> client;
};

TEST_F(Upstream, ProxyV2CarriesTheVerifiedClientIdentity) {
    const int port = free_port();
    Daemon daemon(
        env->write_config("proxy", env->listener("edge", port, "alpn = [\"http/1.1\"]\n")));
    auto o = good();
    o.alpn = {"http/1.1"};
    const auto r = run_client(port, o);
    ASSERT_TRUE(r.exchanged) << r.error;
    std::string line;
    for (int i = 0; i < 100 && line.empty(); ++i) {
        line = record_line_for(env->backend->record_path(), r.local_port);
        if (line.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_FALSE(line.empty()) << read_file(env->backend->record_path());
    unsigned char digest[32];
    unsigned int length = 0;
    X509_digest(client->cert.get(), EVP_sha256(), digest, &length);
    std::string hex;
    for (unsigned i = 0; i < length; ++i) {
        char b[3];
        std::snprintf(b, sizeof b, "%02x", digest[i]);
        hex += b;
    }
    EXPECT_NE(line.find("\"family\":4"), std::string::npos) << line;
    EXPECT_EQ(json_string(line, "src"), "127.0.0.1");
    EXPECT_NE(line.find("\"dst_port\":" + std::to_string(port)), std::string::npos) << line;
    EXPECT_NE(line.find("\"verified\":true"), std::string::npos) << line;
    EXPECT_NE(line.find("\"client_flags\":3"), std::string::npos) << "SSL + CERT_CONN: " << line;
    EXPECT_EQ(json_string(line, "version"), r.version);
    EXPECT_EQ(json_string(line, "cipher"), r.cipher);
    EXPECT_EQ(json_string(line, "cn"), "upstream-client");
    EXPECT_EQ(json_string(line, "subject_dn"), "CN=upstream-client,O=Portcullis Test,C=GB");
    EXPECT_EQ(json_string(line, "sha256"), hex);
    EXPECT_EQ(json_string(line, "alpn"), "http/1.1");
    EXPECT_EQ(json_string(line, "authority"), "localhost");
}

// A certificate the CA signed whose subject alone is longer than a PROXY v2
// TLV can hold: that client is refused, logged, and the worker serves on.
TEST_F(Upstream, ClientWhoseIdentityOutgrowsProxyV2IsRefusedAndTheWorkerServesOn) {
    CertOptions huge;
    huge.organizational_units.assign(1200, std::string(60, 'u'));  // ~74 KiB of subject
    const auto big = env->client("oversized-subject", huge);
    const int port = free_port();
    Daemon daemon(env->write_config("oversized", env->listener("edge", port)));
    const auto workers_before = daemon.worker_pids();
    // TLS 1.2 by session ID: a TLS 1.3 ticket (at most 64 KiB) cannot hold
    // such a certificate, and OpenSSL fails that handshake before it ends.
    auto options = env->options_for(big);
    options.min_version = options.max_version = TLS1_2_VERSION;
    options.no_ticket = true;
    const auto refused = run_client(port, options);
    EXPECT_TRUE(refused.handshake_ok) << refused.error;
    EXPECT_FALSE(refused.exchanged);
    EXPECT_TRUE(daemon.wait_for_log("PROXY v2 TLV value longer than 65535 bytes"))
        << daemon.log().substr(0, 2000);
    EXPECT_TRUE(run_client(port, good()).exchanged);
    EXPECT_EQ(daemon.worker_pids(), workers_before);
    EXPECT_EQ(daemon.log().find("restart"), std::string::npos);
}

TEST_F(Upstream, BackendDownThenUp) {
    const int port = free_port();
    const int backend_port = free_port();
    const std::string config = env->listener(
        "edge", port, "", "", "fail_threshold = 1\nretry_after_ms = 200\n", backend_port);
    Daemon daemon(env->write_config("down", config));
    const auto refused = run_client(port, good());
    EXPECT_TRUE(refused.handshake_ok);
    EXPECT_FALSE(refused.exchanged) << "no backend is listening, nothing can be echoed";
    EXPECT_TRUE(daemon.wait_for_log("no backend available listener=edge")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("backend=down")) << daemon.log();

    Backend revived(env->dir, {"--mode", "echo", "--proxy-protocol"}, backend_port);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past retry_after_ms
    const auto served = run_client(port, good());
    EXPECT_TRUE(served.exchanged) << served.error << "\n" << daemon.log();
}

// The backend's connection gauge counts each connection from its connect to
// its end, over all workers: what shows an operator one backend address
// running short of source ports (operations.md#sizing).
TEST_F(Upstream, BackendConnectionsGaugeFollowsTheOpenConnections) {
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(
        env->write_config("gauge", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                                       "\"\n\n" + env->listener("edge", port)),
        2);
    const std::string gauge =
        "portcullis_backend_connections{listener=\"edge\",backend=\"127.0.0.1:" +
        std::to_string(env->backend->port()) + "\"}";
    const auto scrape = [&] {
        return metric_value(http_request(admin, "GET", "/metrics").body, gauge);
    };
    std::vector<TlsSession> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(open_tls_session(port, good()));
        ASSERT_TRUE(held.back().ok);
        ASSERT_EQ(echo_on(held.back(), "ping\n"), "ping\n");  // its backend connection is up
    }
    EXPECT_EQ(scrape(), 3);
    held.pop_back();
    held.pop_back();
    const auto closed = std::chrono::steady_clock::now();
    while (scrape() != 1 && std::chrono::steady_clock::now() - closed < std::chrono::seconds(5))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(scrape(), 1);
    held.clear();
    while (scrape() != 0 && std::chrono::steady_clock::now() - closed < std::chrono::seconds(10))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(scrape(), 0);
    // A backend that refuses: the failed attempt leaves nothing counted.
    const int refusing_port = free_port();
    const int refusing_admin = free_port();
    const int dead_backend = free_port();
    Daemon refusing(env->write_config(
        "refusing", "[admin]\naddress = \"127.0.0.1:" + std::to_string(refusing_admin) + "\"\n\n" +
                        env->listener("edge", refusing_port, "", "", "", dead_backend)));
    EXPECT_FALSE(run_client(refusing_port, good()).exchanged);
    const auto metrics = http_request(refusing_admin, "GET", "/metrics").body;
    EXPECT_GE(
        metric_value(metrics, "portcullis_upstream_connect_failures_total{listener=\"edge\"}"), 1);
    EXPECT_EQ(metric_value(metrics,
                           "portcullis_backend_connections{listener=\"edge\",backend=\"127.0.0.1:" +
                               std::to_string(dead_backend) + "\"}"),
              0)
        << metrics;
}

// A backend whose accept queue is full: the kernel drops the daemon's SYNs,
// so its connect stays pending. The idle timeout still ends the client's
// connection, long before the connect timeout.
TEST_F(Upstream, IdleTimeoutAppliesWhileTheBackendConnectHangs) {
    const int backend_port = free_port();
    base::UniqueFd stuck(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(stuck);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(backend_port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(stuck.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    ASSERT_EQ(::listen(stuck.get(), 0), 0);
    std::vector<base::UniqueFd> fillers;  // never accepted: they fill the queue
    for (int i = 0; i < 4; ++i) {
        fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        ::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));

    const int port = free_port();
    const std::string config = env->listener("edge", port, "", "idle_timeout_ms = 500\n",
                                             "connect_timeout_ms = 10000\n", backend_port);
    Daemon daemon(env->write_config("stuck", config));
    auto session = open_tls_session(port, good());
    ASSERT_TRUE(session.ok);
    const timeval wait{8, 0};
    ::setsockopt(session.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    const auto start = std::chrono::steady_clock::now();
    char buffer[64];
    while (SSL_read(session.ssl.get(), buffer, sizeof buffer) > 0) {
    }
    ERR_clear_error();
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
    EXPECT_GE(waited, 300);
    EXPECT_LT(waited, 3000) << "idle_timeout_ms = 500 must end the connection while the "
                               "connect (timeout 10 s) still hangs\n"
                            << daemon.log();
}

TEST_F(Upstream, HalfCloseIsPassedThroughAndTheEchoStillArrives) {
    const int port = free_port();
    Daemon daemon(env->write_config("halfclose", env->listener("edge", port)));
    auto o = good();
    o.send = std::string(100000, 'x');
    o.half_close = true;
    const auto r = run_client(port, o);
    EXPECT_EQ(r.received.size(), o.send.size()) << r.error << "\n" << daemon.log();
    EXPECT_TRUE(r.exchanged);
    EXPECT_TRUE(r.eof_after_data) << "the backend's EOF must reach the client as close_notify";
}

TEST_F(Upstream, SlowBackendDoesNotGrowMemory) {
    const int port = free_port();
    Backend slow(env->dir, {"--mode", "echo", "--proxy-protocol", "--read-delay-ms", "100"});
    const std::string config = env->listener("edge", port, "", "", "", slow.port());
    Daemon daemon(env->write_config("slow", config));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1u);
    const long rss_before = vm_rss_kib(workers[0]);

    auto options = good();
    auto session = open_tls_session(port, options);
    ASSERT_TRUE(session.ok);
    SSL* ssl = session.ssl.get();
    const int fd = session.fd.get();
    // Write until the path is full: a write that blocks for 1 s means
    // backpressure reached us. The slow backend reads ~10 KiB/s.
    timeval timeout{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    const std::string chunk(64 * 1024, 'p');
    std::size_t written = 0;
    const std::size_t limit = 64u * 1024 * 1024;
    while (written < limit) {
        std::size_t n = 0;
        if (SSL_write_ex(ssl, chunk.data(), chunk.size(), &n) != 1) break;
        written += n;
    }
    const long rss_after = vm_rss_kib(workers[0]);
    EXPECT_LT(written, 16u * 1024 * 1024) << "the client was never pushed back";
    EXPECT_LT(rss_after - rss_before, 16 * 1024)
        << "worker RSS grew from " << rss_before << " KiB to " << rss_after << " KiB";
    RecordProperty("bytes_accepted_before_backpressure", static_cast<int>(written));
    RecordProperty("worker_rss_growth_kib", static_cast<int>(rss_after - rss_before));
}

// The smallest buffer budget (1 MiB, 60 blocks) against 16 clients pushing
// 4 MiB each through an echo backend that stops reading for a while (SIGSTOP):
// once the kernel's socket buffers are full the worker's queues would want
// ~6 blocks per connection, so reads pause on the budget (counted), the
// blocks in use never pass it, and when the backend reads again every byte
// comes back in order.
TEST_F(Upstream, ASpentBufferBudgetPausesReadsAndEveryByteStillArrives) {
    const int port = free_port();
    const int admin = free_port();
    Backend echo(env->dir, {"--mode", "echo", "--proxy-protocol"});
    const std::string config =
        "[workers]\nbuffer_budget_bytes = 1048576\n\n[admin]\naddress = "
        "\"127.0.0.1:" +
        std::to_string(admin) + "\"\n\n" + env->listener("edge", port, "", "", "", echo.port());
    Daemon daemon(env->write_config("budget", config));
    const auto metric = [&](const std::string& name) {
        return metric_value(http_request(admin, "GET", "/metrics").body, name + "{worker=\"0\"}");
    };

    constexpr int clients = 16;
    constexpr std::size_t size = 4 * 1024 * 1024;
    struct Client {
        TlsSession session;
        std::string sent, received;
        std::size_t written = 0;
    };
    std::vector<Client> all(clients);
    for (int c = 0; c < clients; ++c) {
        auto& client = all[static_cast<std::size_t>(c)];
        client.session = open_tls_session(port, good());
        ASSERT_TRUE(client.session.ok) << "client " << c;
        ::fcntl(client.session.fd.get(), F_SETFL, O_NONBLOCK);
        SSL_set_mode(client.session.ssl.get(),
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        client.sent.resize(size);
        for (std::size_t i = 0; i < size; ++i)
            client.sent[i] = static_cast<char>((i * 31 + static_cast<std::size_t>(c) * 7) % 251);
    }
    // Every client writes and reads what it can; true once all is echoed.
    // `progress` says whether any byte moved.
    const auto step = [&](bool& progress) {
        bool done = true;
        std::vector<pollfd> fds;
        for (auto& client : all) {
            SSL* ssl = client.session.ssl.get();
            while (client.written < size) {
                const int n = SSL_write(
                    ssl, client.sent.data() + client.written,
                    static_cast<int>(std::min<std::size_t>(16384, size - client.written)));
                if (n <= 0) break;
                client.written += static_cast<std::size_t>(n);
                progress = true;
            }
            char buffer[16384];
            for (int n; (n = SSL_read(ssl, buffer, sizeof buffer)) > 0;) {
                client.received.append(buffer, static_cast<std::size_t>(n));
                progress = true;
            }
            ERR_clear_error();
            if (client.received.size() < size) done = false;
            fds.push_back({client.session.fd.get(),
                           static_cast<short>(POLLIN | (client.written < size ? POLLOUT : 0)), 0});
        }
        if (!done) ::poll(fds.data(), fds.size(), 20);
        return done;
    };

    ASSERT_EQ(::kill(echo.pid(), SIGSTOP), 0);
    // Until nothing has moved for a second: every path is full.
    for (auto quiet_since = std::chrono::steady_clock::now();
         std::chrono::steady_clock::now() - quiet_since < std::chrono::seconds(1);) {
        bool progress = false;
        step(progress);
        if (progress) quiet_since = std::chrono::steady_clock::now();
    }
    const double budget = metric("portcullis_buffer_budget_bytes");
    EXPECT_EQ(budget, 60.0 * 17 * 1024) << "1 MiB in whole 17 KiB blocks";
    const double in_use = metric("portcullis_buffer_bytes_in_use");
    EXPECT_GT(in_use, budget / 2) << "the worker's queues did not fill";
    EXPECT_LE(in_use, budget);
    EXPECT_GT(metric("portcullis_buffer_denials_total"), 0)
        << "the budget never limited anything: the test proves nothing";
    std::size_t written = 0;
    for (const auto& client : all) written += client.written;

    ASSERT_EQ(::kill(echo.pid(), SIGCONT), 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool done = false;
    while (!done && std::chrono::steady_clock::now() < deadline) {
        bool progress = false;
        done = step(progress);
    }
    for (int c = 0; c < clients; ++c) {
        const auto& client = all[static_cast<std::size_t>(c)];
        EXPECT_EQ(client.received.size(), size) << "client " << c;
        EXPECT_TRUE(client.received == client.sent.substr(0, client.received.size()))
            << "client " << c << ": bytes lost or reordered";
    }
    const double high_water = metric("portcullis_buffer_bytes_high_water");
    EXPECT_LE(high_water, budget) << "buffer memory grew past its budget";
    all.clear();
    bool drained = false;
    for (int i = 0; i < 40 && !drained; ++i) {
        drained = metric("portcullis_buffer_bytes_in_use") == 0;
        if (!drained) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(drained) << "blocks still in use after every connection closed";
    RecordProperty("buffer_high_water_bytes", static_cast<int>(high_water));
    RecordProperty("bytes_written_while_the_backend_was_stopped", static_cast<int>(written));
}

TEST_F(Upstream, SigtermDrainsEstablishedConnectionsAndRefusesNewOnes) {
    const int port = free_port();
    Backend slow(env->dir, {"--mode", "echo", "--proxy-protocol", "--read-delay-ms", "100"});
    const std::string config = "[workers]\ndrain_timeout_ms = 5000\n\n" +
                               env->listener("edge", port, "", "", "", slow.port());
    Daemon daemon(env->write_config("drain", config));
    // 8 KiB through a backend that reads 1 KiB per 100 ms: about a second.
    auto options = good();
    options.send = std::string(8 * 1024, 'd');
    options.half_close = true;
    ClientResult in_flight;
    std::thread transfer([&] { in_flight = run_client(port, options); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(daemon.process().pid(), SIGTERM);
    EXPECT_TRUE(daemon.wait_for_log("draining")) << daemon.log();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto refused = run_client(port, good());
    EXPECT_FALSE(refused.handshake_ok) << "a draining daemon must not accept";
    EXPECT_NE(refused.error.find("connect"), std::string::npos) << refused.error;
    transfer.join();
    EXPECT_TRUE(in_flight.exchanged) << in_flight.error << "\n" << daemon.log();
    EXPECT_EQ(in_flight.received.size(), options.send.size());
    EXPECT_EQ(daemon.process().wait_exit(std::chrono::seconds(10)), 0) << daemon.log();
}

TEST_F(Upstream, AccessLogHasOneLinePerConnection) {
    const int port = free_port();
    Daemon daemon(env->write_config(
        "access", "[log]\naccess_log = \"audit.log\"\n\n" + env->listener("edge", port)));
    const auto served = run_client(port, good());
    ASSERT_TRUE(served.exchanged) << served.error;
    ClientOptions anonymous;
    anonymous.trusted_server_ca = env->root.cert();
    const auto refused = run_client(port, anonymous);
    ASSERT_FALSE(refused.exchanged);

    const auto line_for = [&](int client_port) {
        const std::string needle = "client=127.0.0.1:" + std::to_string(client_port) + " ";
        for (int i = 0; i < 100; ++i) {
            const auto text = read_file(env->dir / "audit.log");
            if (const auto at = text.find(needle); at != std::string::npos) {
                const auto start =
                    text.rfind('\n', at) == std::string::npos ? 0 : text.rfind('\n', at) + 1;
                return text.substr(start, text.find('\n', at) - start);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return std::string("<no line for port ") + std::to_string(client_port) + ">\n" +
               read_file(env->dir / "audit.log");
    };
    const auto ok = line_for(served.local_port);
    EXPECT_NE(ok.find("listener=edge"), std::string::npos) << ok;
    EXPECT_NE(ok.find("result=complete reason=none"), std::string::npos) << ok;
    EXPECT_NE(ok.find("version=" + served.version + " cipher=" + served.cipher), std::string::npos)
        << ok;
    EXPECT_NE(ok.find("subject=\"CN=upstream-client,O=Portcullis Test,C=GB\""), std::string::npos)
        << ok;
    EXPECT_NE(ok.find("backend=127.0.0.1:" + std::to_string(env->backend->port())),
              std::string::npos)
        << ok;
    EXPECT_NE(ok.find("bytes_in=5 bytes_out=5"), std::string::npos) << ok;
    EXPECT_EQ(ok.find("sha256=-"), std::string::npos) << ok;
    const auto no = line_for(refused.local_port);
    EXPECT_NE(no.find("result=handshake_failed reason=no_certificate"), std::string::npos) << no;
    EXPECT_NE(no.find("backend=-"), std::string::npos) << no;
}

}  // namespace
}  // namespace portcullis::testing
