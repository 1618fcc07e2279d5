// Limits and bad input against the real daemon: slow and garbage clients
// cost a log line and a bounded slot, never the service.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "dataplane/socket_address.hpp"
#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using Clock = std::chrono::steady_clock;

base::UniqueFd tcp_connect(int port) {
    const auto address = dataplane::SocketAddress::parse("127.0.0.1:" + std::to_string(port));
    base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
    timeval timeout{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::connect(fd.get(), address->sa(), address->length) != 0) return {};
    return fd;
}

int local_port_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return dataplane::SocketAddress::from(reinterpret_cast<sockaddr*>(&ss), len).port();
}

// Milliseconds until the server closes `fd` (reads until EOF or error).
long ms_until_closed(int fd) {
    const auto start = Clock::now();
    char buffer[4096];
    while (::recv(fd, buffer, sizeof buffer, 0) > 0) {
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

class Limits : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        client = std::make_unique<IssuedCert>(env->client("limits-client"));
        port = free_port();
        const auto config =
            "[workers]\nmax_connections = 4\n\n[dataplane.keepalive]\nidle_s = 42\n"
            "interval_s = 7\nprobes = 3\n\n" +
            env->listener("edge", port, "", "handshake_timeout_ms = 300\nidle_timeout_ms = 500\n");
        daemon = std::make_unique<Daemon>(env->write_config("limits", config));
    }
    static void TearDownTestSuite() {
        daemon.reset();
        client.reset();
        env.reset();
    }
    static ClientOptions good() { return env->options_for(*client); }
    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<IssuedCert> client;
    static inline std::unique_ptr<Daemon> daemon;
    static inline int port;
};

TEST_F(Limits, SilentClientIsDroppedAfterHandshakeTimeout) {
    auto fd = tcp_connect(port);
    ASSERT_TRUE(fd);
    const int local = local_port_of(fd.get());
    const long waited = ms_until_closed(fd.get());
    EXPECT_GE(waited, 250);
    EXPECT_LT(waited, 3000);
    EXPECT_TRUE(daemon->wait_for_log(rejection_marker(local, "timeout"))) << daemon->log();
}

TEST_F(Limits, HalfAClientHelloIsDroppedAfterHandshakeTimeout) {
    auto fd = tcp_connect(port);
    ASSERT_TRUE(fd);
    const unsigned char partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01,
                                     0x00, 0x01, 0xfc, 0x03, 0x03};
    ASSERT_EQ(::send(fd.get(), partial, sizeof partial, 0), static_cast<ssize_t>(sizeof partial));
    const int local = local_port_of(fd.get());
    const long waited = ms_until_closed(fd.get());
    EXPECT_LT(waited, 3000);
    EXPECT_TRUE(daemon->wait_for_log(rejection_marker(local, "timeout"))) << daemon->log();
}

TEST_F(Limits, GarbageClientHelloCostsOneLogLine) {
    auto fd = tcp_connect(port);
    ASSERT_TRUE(fd);
    const std::string garbage = "GET / HTTP/1.1\r\nHost: edge\r\n\r\n";
    ::send(fd.get(), garbage.data(), garbage.size(), 0);
    const int local = local_port_of(fd.get());
    EXPECT_LT(ms_until_closed(fd.get()), 1000) << "garbage must be refused at once";
    EXPECT_TRUE(daemon->wait_for_log(rejection_marker(local, "protocol"))) << daemon->log();
    EXPECT_TRUE(run_client(port, good()).exchanged) << "the daemon must keep serving";
}

TEST_F(Limits, PortScanIsClosedQuietly) {
    {
        auto fd = tcp_connect(port);
    }  // connect and close at once
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(daemon->wait_for_log("connection closed before handshake")) << daemon->log();
    EXPECT_TRUE(run_client(port, good()).exchanged);
}

// The kernel's view of the accepted socket, from /proc/net/tcp: its timer
// kind ("tr": 2 = keepalive) and seconds until it fires, or nullopt.
struct SocketTimer {
    int kind = 0;
    double seconds = 0;
};
std::optional<SocketTimer> server_socket_timer(int server_port, int client_port) {
    std::ifstream table("/proc/net/tcp");
    std::string line;
    std::getline(table, line);  // header
    while (std::getline(table, line)) {
        std::istringstream row(line);
        std::string slot, local, remote, state, queues, timer;
        row >> slot >> local >> remote >> state >> queues >> timer;
        const auto port_of = [](const std::string& address) {
            return std::stoi(address.substr(address.find(':') + 1), nullptr, 16);
        };
        if (state != "01" || port_of(local) != server_port || port_of(remote) != client_port)
            continue;
        const auto colon = timer.find(':');
        return SocketTimer{std::stoi(timer.substr(0, colon), nullptr, 16),
                           static_cast<double>(std::stol(timer.substr(colon + 1), nullptr, 16)) /
                               static_cast<double>(::sysconf(_SC_CLK_TCK))};
    }
    return std::nullopt;
}

TEST_F(Limits, AcceptedSocketsCarryTheConfiguredKeepalive) {
    auto fd = tcp_connect(port);
    ASSERT_TRUE(fd);
    std::optional<SocketTimer> timer;
    // Before handshake_timeout_ms (300) closes it; the worker accepts asynchronously.
    for (int i = 0; i < 20 && (!timer || timer->kind != 2); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        timer = server_socket_timer(port, local_port_of(fd.get()));
    }
    ASSERT_TRUE(timer) << "the accepted socket is not in /proc/net/tcp";
    EXPECT_EQ(timer->kind, 2) << "no keepalive timer on the accepted socket";
    EXPECT_GT(timer->seconds, 35.0) << "idle_s = 42 not applied";
    EXPECT_LE(timer->seconds, 42.5);
}

TEST_F(Limits, IdleConnectionIsClosed) {
    auto options = good();
    auto session = open_tls_session(port, options);
    ASSERT_TRUE(session.ok);
    SSL* ssl = session.ssl.get();
    const auto start = Clock::now();
    char buffer[64];
    while (SSL_read(ssl, buffer, sizeof buffer) > 0) {
    }
    const auto idle =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    EXPECT_GE(idle, 400);
    EXPECT_LT(idle, 3000) << "idle_timeout_ms = 500 was not enforced";
}

// The worker passes an idle connection by until its idle deadline and then
// looks again: traffic in between moves the deadline, and the connection
// lives on; silence after it still ends the connection on time.
TEST_F(Limits, TrafficKeepsAConnectionPastItsIdleTimeout) {
    auto session = open_tls_session(port, good());
    ASSERT_TRUE(session.ok);
    const auto start = Clock::now();
    for (int i = 0; i < 8; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
        ASSERT_EQ(echo_on(session, "ping\n"), "ping\n")
            << "round " << i << " after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
            << " ms";
    }
    EXPECT_GT(Clock::now() - start, std::chrono::milliseconds(1000))
        << "the rounds must outlast idle_timeout_ms = 500 twice";
    const auto silent = Clock::now();
    char buffer[64];
    while (SSL_read(session.ssl.get(), buffer, sizeof buffer) > 0) {
    }
    const auto closed =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - silent).count();
    EXPECT_GE(closed, 400) << "closed before the idle timeout";
    EXPECT_LT(closed, 3000) << "idle_timeout_ms = 500 was not enforced after the traffic";
}

TEST_F(Limits, ConnectionsOverTheLimitAreRefused) {
    std::vector<base::UniqueFd> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(tcp_connect(port));
        ASSERT_TRUE(held.back());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // all four accepted
    auto extra = tcp_connect(port);
    ASSERT_TRUE(extra);
    EXPECT_LT(ms_until_closed(extra.get()), 1000) << "the fifth connection must be closed at once";
    EXPECT_TRUE(daemon->wait_for_log("reason=max_connections limit=4")) << daemon->log();
    held.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_TRUE(run_client(port, good()).exchanged) << "slots are free again";
}

TEST_F(Limits, KilledWorkerIsRestartedAndServiceContinues) {
    const auto before = daemon->worker_pids();
    ASSERT_EQ(before.size(), 1u);
    ::kill(before[0], SIGKILL);
    EXPECT_TRUE(daemon->wait_for_log("worker 0 died")) << daemon->log();
    EXPECT_TRUE(daemon->wait_for_log("worker 0 ready again")) << daemon->log();
    const auto after = daemon->worker_pids();
    ASSERT_EQ(after.size(), 1u);
    EXPECT_NE(after[0], before[0]);
    EXPECT_TRUE(run_client(port, good()).exchanged);
}

// A ClientHello as OpenSSL's client writes it (a few hundred bytes), for
// clients that send it a byte at a time.
std::string client_hello() {
    crypto::UniqueSslCtx ctx(SSL_CTX_new(TLS_client_method()));
    crypto::UniqueSsl ssl(SSL_new(ctx.get()));
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl.get(), BIO_new(BIO_s_mem()), out);
    SSL_set_connect_state(ssl.get());
    SSL_set_tlsext_host_name(ssl.get(), "localhost");
    SSL_do_handshake(ssl.get());
    char* data = nullptr;
    const long n = BIO_get_mem_data(out, &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::uint64_t resident_kib(pid_t pid) {
    const auto status = proc_status(pid);
    const auto rss = status.find("VmRSS");
    return rss == status.end() ? 0 : std::stoull(rss->second);
}

// A flood of refused clients costs the configured burst of lines; every
// client dropped is counted in the next line written (suppressed_before=N).
TEST(LogBucket, RejectionsPastTheBurstAreDroppedAndCountedInTheNextLine) {
    TestDeployment env;
    const int port = free_port();
    const auto listener = env.listener("edge", port);
    const auto config = env.write_config(
        "bucket",
        "[log]\nconnection_lines_per_second = 1\nconnection_lines_burst = 2\n\n" + listener);
    Daemon daemon(config);
    const auto flood_start = Clock::now();
    for (int i = 0; i < 10; ++i)
        EXPECT_FALSE(run_client(port, ClientOptions{}).exchanged)
            << "a client without a certificate was served";
    // A token comes back each second the flood lasts (sanitizer builds are slow).
    const auto refills =
        1 + std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - flood_start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    const auto later = run_client(port, ClientOptions{});
    EXPECT_FALSE(later.exchanged);
    ASSERT_TRUE(daemon.wait_for_log(rejection_marker(later.local_port, "no_certificate")))
        << daemon.log();

    // Lines come in order: with the last client's written, all are. Each of
    // the 11 clients is a line or is counted in the next line.
    const std::string log = daemon.log();
    int lines = 0;
    long counted = 0;
    for (auto at = log.find("client rejected"); at != std::string::npos;
         at = log.find("client rejected", at + 1)) {
        ++lines;
        const auto line = log.substr(at, log.find('\n', at) - at);
        if (const auto n = line.find(" suppressed_before="); n != std::string::npos)
            counted += std::stol(line.substr(n + std::string(" suppressed_before=").size()));
    }
    EXPECT_LE(lines, 2 + refills) << log;
    EXPECT_GE(counted, 1) << "no line was dropped:\n" << log;
    EXPECT_EQ(lines + counted, 11) << log;

    // A reload resizes the bucket: the next flood is logged in full.
    env.write_config(
        "bucket",
        "[log]\nconnection_lines_per_second = 1\nconnection_lines_burst = 20\n\n" + listener);
    ::kill(daemon.process().pid(), SIGHUP);
    ASSERT_TRUE(daemon.wait_for_log("serving configuration generation 2")) << daemon.log();
    std::vector<int> after_reload;
    for (int i = 0; i < 10; ++i)
        after_reload.push_back(run_client(port, ClientOptions{}).local_port);
    for (const int local : after_reload)
        EXPECT_TRUE(daemon.wait_for_log(rejection_marker(local, "no_certificate"))) << daemon.log();
}

// Slowloris: thousands of clients each sending its ClientHello at one byte a
// second. Each is cut at the handshake timeout, what they pin stays small
// (crypto/tls_connection.hpp: no SSL until the first record is whole, no
// pool block for a partial one), and real clients are served all along.

TEST(Slowloris, OneByteASecondClientsAreCutAtTheHandshakeTimeoutAndOthersAreServed) {
    constexpr int slow = 2000;
    constexpr int timeout_ms = 3000;
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    if (files.rlim_max < slow + 512) {
        GTEST_SKIP() << "SKIPPED: needs " << slow + 512 << " open files, hard limit is "
                     << files.rlim_max;
    }
    files.rlim_cur = files.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &files), 0);

    TestDeployment env;
    const auto client = env.client("legitimate");
    const int port = free_port();
    Daemon daemon(env.write_config(
        "slowloris",
        "[workers]\nmax_connections = 4000\n\n" +
            env.listener("edge", port, "",
                         "handshake_timeout_ms = " + std::to_string(timeout_ms) + "\n")));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1u);
    ASSERT_TRUE(run_client(port, env.options_for(client)).exchanged);
    const auto before_kib = resident_kib(workers[0]);

    std::vector<base::UniqueFd> clients;
    std::vector<Clock::time_point> connected_at;
    for (int i = 0; i < slow; ++i) {
        clients.push_back(tcp_connect(port));
        connected_at.push_back(Clock::now());
        ASSERT_TRUE(clients.back()) << "connect " << i;
    }
    const auto opened = Clock::now();
    const auto hello = client_hello();
    ASSERT_GT(hello.size(), 100u);

    std::vector<long> closed_after_ms(slow, -1);
    int open = slow, served = 0, refused = 0;
    std::uint64_t peak_kib = 0;
    for (std::size_t round = 0;
         open > 0 && Clock::now() - opened < std::chrono::milliseconds(timeout_ms + 5000);
         ++round) {
        for (int i = 0; i < slow; ++i) {
            if (closed_after_ms[i] >= 0 || round >= hello.size()) continue;
            ::send(clients[i].get(), hello.data() + round, 1, MSG_NOSIGNAL);
        }
        // A partner with a real client, between the slow bytes.
        (run_client(port, env.options_for(client)).exchanged ? served : refused)++;
        peak_kib = std::max(peak_kib, resident_kib(workers[0]));
        const auto round_end = Clock::now() + std::chrono::seconds(1);
        while (open > 0 && Clock::now() < round_end) {
            std::vector<pollfd> waiting;
            std::vector<int> index;
            for (int i = 0; i < slow; ++i) {
                if (closed_after_ms[i] >= 0) continue;
                waiting.push_back({clients[i].get(), POLLIN | POLLRDHUP, 0});
                index.push_back(i);
            }
            if (::poll(waiting.data(), waiting.size(), 50) <= 0) continue;
            for (std::size_t w = 0; w < waiting.size(); ++w) {
                if (waiting[w].revents == 0) continue;
                char byte;
                if (::recv(waiting[w].fd, &byte, 1, MSG_DONTWAIT) > 0) continue;  // not expected
                closed_after_ms[index[w]] = std::chrono::duration_cast<std::chrono::milliseconds>(
                                                Clock::now() - connected_at[index[w]])
                                                .count();
                --open;
            }
        }
    }
    EXPECT_EQ(open, 0) << "slow clients still open " << timeout_ms + 5000 << " ms after connecting";
    const auto [earliest, latest] =
        std::minmax_element(closed_after_ms.begin(), closed_after_ms.end());
    EXPECT_GE(*earliest, timeout_ms - 500) << "a slow client was cut before its handshake timeout";
    EXPECT_LE(*latest, timeout_ms + 2500) << "a slow client outlived its handshake timeout";
    EXPECT_EQ(refused, 0) << served << " real clients served, " << refused << " not";
    EXPECT_GE(served, 3);
    // The bytes each sent, in a buffer the size of its ClientHello record,
    // and the connection: no SSL (~15 KiB) and none of OpenSSL's handshake
    // buffers (~33 KiB) before the record is whole.
    const auto grown = peak_kib > before_kib ? peak_kib - before_kib : 0;
    EXPECT_LT(grown, static_cast<std::uint64_t>(slow) * 8)
        << "worker RSS " << before_kib << " -> " << peak_kib << " KiB with " << slow
        << " slow clients";
    std::cout << "slowloris: " << slow << " clients, cut after " << *earliest << ".." << *latest
              << " ms, worker RSS " << before_kib << " -> " << peak_kib << " KiB (" << grown / slow
              << " KiB each), " << served << " real clients served\n";
    EXPECT_TRUE(daemon.wait_for_log("reason=timeout")) << daemon.log();
}

// --check-config with the real binary: exit codes and messages.
class CheckConfig : public ::testing::Test {
  protected:
    static std::pair<int, std::string> check(const std::filesystem::path& config) {
        ChildProcess process({binary_from_env("PORTCULLIS_BIN"), "--check-config", config.string()},
                             config.string() + ".out");
        const auto status = process.wait_exit(std::chrono::seconds(20));
        return {status.value_or(-1), read_file(config.string() + ".out")};
    }
    TestDeployment env;
};

TEST_F(CheckConfig, GoodConfigPasses) {
    const auto [status, output] = check(env.write_config("good", env.listener("edge", 8443)));
    EXPECT_EQ(status, 0) << output;
    EXPECT_NE(output.find("configuration OK"), std::string::npos) << output;
}

TEST_F(CheckConfig, BrokenConfigsNameFileLineAndKey) {
    struct Case {
        std::string name;
        std::string toml;
        std::string expected;  // ":LINE:COL: KEY: " fragment
    };
    const std::string good = env.listener("edge", 8443);
    const std::vector<Case> cases = {
        {"unknown_top", "colour = 1\n" + good, ":1:1: colour: unknown key"},
        {"typo", replace_all(good, "trust_bundle", "trust_bundel"),
         "listener[0].tls.trust_bundel: unknown key"},
        {"bad_enum",
         replace_all(good, "[listener.tls]\n", "[listener.tls]\nclient_auth = \"maybe\"\n"),
         "listener[0].tls.client_auth: expected one of"},
        {"bad_address", replace_all(good, "127.0.0.1:8443", "localhost:8443"),
         ":3:11: listener[0].address:"},
        {"bad_port", replace_all(good, "127.0.0.1:8443", "127.0.0.1:70000"),
         "listener[0].address:"},
        {"missing_chain", replace_all(good, "server-ec.pem", "nope.pem"),
         "listener[0].tls.certificate[0].chain:"},
        {"wrong_type", replace_all(good, "proxy_protocol = true", "proxy_protocol = \"yes\""),
         "listener[0].upstream.proxy_protocol:"},
        {"syntax", good + "\n[[listener\n", ":"},
        {"no_listener", "[workers]\ncount = 1\n", "listener"},
    };
    for (const auto& c : cases) {
        const auto path = env.write_config("broken-" + c.name, c.toml);
        const auto [status, output] = check(path);
        EXPECT_EQ(status, 1) << c.name << ": " << output;
        EXPECT_NE(output.find(path.string() + ":"), std::string::npos)
            << c.name << " must name the file: " << output;
        EXPECT_NE(output.find(c.expected), std::string::npos)
            << c.name << ": expected '" << c.expected << "' in: " << output;
    }
}

TEST_F(CheckConfig, KeyNotMatchingCertificateIsCaughtBeforeStart) {
    std::string config = replace_all(env.listener("edge", 8443), "server-ec.key", "server-rsa.key");
    const auto [status, output] = check(env.write_config("mismatch", config));
    EXPECT_EQ(status, 1) << output;
    EXPECT_NE(output.find("listener[0] (edge).tls"), std::string::npos) << output;
    EXPECT_NE(output.find("does not match"), std::string::npos) << output;
}

}  // namespace
}  // namespace portcullis::testing
