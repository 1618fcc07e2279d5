// The admin listener and live reload against the real daemon: metric values
// after a known sequence of handshakes, health and status endpoints, reloads
// under load with no failed connection, and a broken reload that changes nothing.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

std::string admin_block(int port) {
    return "[admin]\naddress = \"127.0.0.1:" + std::to_string(port) + "\"\n\n";
}

bool wait_for_admin(int port) {
    for (int i = 0; i < 200; ++i) {
        if (http_request(port, "GET", "/healthz").status == 200) return true;
        std::this_thread::sleep_for(25ms);
    }
    return false;
}

std::string sample(const std::string& name, const std::string& labels) {
    return name + "{" + labels + "}";
}

TEST(Metrics, CountsMatchAKnownSequenceOfHandshakes) {
    TestDeployment env;
    const auto good = env.client("metrics-good");
    const auto revoked = env.client("metrics-revoked");
    env.client_ca.revoke(revoked.cert.get());
    env.write_crls();
    const auto stranger_ca = CertificateAuthority::root("Stranger CA");
    const auto stranger = stranger_ca.issue(CertOptions{});
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("metrics", admin_block(admin) + env.listener("edge", port)), 2);
    ASSERT_TRUE(wait_for_admin(admin));

    // 3 full, 2 resumed, 1 revoked, 1 unknown CA, 1 without certificate.
    auto options = env.options_for(good);
    UniqueSession session;
    for (int i = 0; i < 3; ++i) {
        auto r = run_client(port, options);
        ASSERT_TRUE(r.exchanged) << r.error;
        session = std::move(r.session);
    }
    for (int i = 0; i < 2; ++i) {
        auto resume = options;
        resume.resume_from = session.get();
        auto r = run_client(port, resume);
        ASSERT_TRUE(r.resumed) << r.error;
        if (r.session) session = std::move(r.session);
    }
    EXPECT_FALSE(run_client(port, env.options_for(revoked)).exchanged);
    auto unknown = env.options_for(good);
    unknown.cert = stranger.cert.get();
    unknown.key = stranger.key.get();
    unknown.chain.clear();
    EXPECT_FALSE(run_client(port, unknown).exchanged);
    auto anonymous = env.options_for(good);
    anonymous.cert = nullptr;
    anonymous.key = nullptr;
    anonymous.chain.clear();
    EXPECT_FALSE(run_client(port, anonymous).exchanged);

    const auto response = http_request(admin, "GET", "/metrics");
    ASSERT_EQ(response.status, 200);
    const auto& m = response.body;
    const std::string edge = "listener=\"edge\"";
    EXPECT_EQ(metric_value(
                  m, sample("portcullis_handshakes_total", edge + ",kind=\"full\",result=\"ok\"")),
              3)
        << m;
    EXPECT_EQ(metric_value(m, sample("portcullis_handshakes_total",
                                     edge + ",kind=\"resumed\",result=\"ok\"")),
              2);
    EXPECT_EQ(metric_value(m, sample("portcullis_handshakes_total",
                                     edge + ",kind=\"full\",result=\"rejected\"")),
              3);
    for (const char* reason : {"revoked", "unknown_ca", "no_certificate"}) {
        EXPECT_EQ(metric_value(m, sample("portcullis_client_certificate_rejections_total",
                                         edge + ",reason=\"" + reason + "\"")),
                  1)
            << reason;
    }
    EXPECT_EQ(metric_value(m, sample("portcullis_connections_accepted_total", edge)), 8);
    EXPECT_EQ(metric_value(m, sample("portcullis_connections_active", edge)), 0);
    EXPECT_EQ(metric_value(m, sample("portcullis_handshake_duration_seconds_count",
                                     edge + ",kind=\"full\"")),
              3);
    EXPECT_EQ(metric_value(m, sample("portcullis_handshake_duration_seconds_bucket",
                                     edge + ",kind=\"resumed\",le=\"+Inf\"")),
              2);
    // Every successful connection echoed "ping\n" (5 bytes) each way.
    EXPECT_EQ(metric_value(m, sample("portcullis_client_bytes_received_total", edge)), 25);
    EXPECT_EQ(metric_value(m, sample("portcullis_client_bytes_sent_total", edge)), 25);
    EXPECT_EQ(
        metric_value(
            m, sample("portcullis_backend_up",
                      edge + ",backend=\"127.0.0.1:" + std::to_string(env.backend->port()) + "\"")),
        1);
    EXPECT_EQ(metric_value(m, "portcullis_workers"), 2);
    EXPECT_GT(metric_value(m, sample("portcullis_worker_busy_seconds_total", "worker=\"0\"")) +
                  metric_value(m, sample("portcullis_worker_busy_seconds_total", "worker=\"1\"")),
              0);
    EXPECT_GT(metric_value(m, sample("portcullis_certificate_expiry_timestamp_seconds",
                                     edge + ",file=\"" + (env.dir / "server-ec.pem").string() +
                                         "\",subject=\"CN=localhost,O=Portcullis Test,C=GB\"")),
              static_cast<double>(::time(nullptr)))
        << m;
    EXPECT_EQ(metric_value(m, sample("portcullis_reloads_total", "result=\"success\"")), 0);
    EXPECT_NE(m.find("# TYPE portcullis_handshake_duration_seconds histogram"), std::string::npos);
}

TEST(Metrics, EveryFamilyIsDocumented) {
    TestDeployment env;
    const int admin = free_port();
    Daemon daemon(
        env.write_config("documented", admin_block(admin) + env.listener("edge", free_port())));
    ASSERT_TRUE(wait_for_admin(admin));
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    const auto doc = read_file(std::getenv("METRICS_DOC"));
    int families = 0;
    std::size_t at = 0;
    while ((at = metrics.find("# TYPE ", at)) != std::string::npos) {
        at += 7;
        const auto name = metrics.substr(at, metrics.find(' ', at) - at);
        ++families;
        EXPECT_NE(doc.find("`" + name + "`"), std::string::npos)
            << "docs/metrics.md does not document " << name;
    }
    EXPECT_GE(families, 30);
}

TEST(Admin, HealthReadinessAndStatus) {
    TestDeployment env;
    const int port = free_port();
    const int admin = free_port();
    const int dead_backend = free_port();
    Daemon daemon(env.write_config(
        "admin",
        admin_block(admin) + env.listener("edge", port) +
            env.listener("dead", free_port(), "", "", "fail_threshold = 1\n", dead_backend)));
    ASSERT_TRUE(wait_for_admin(admin));
    EXPECT_EQ(http_request(admin, "GET", "/healthz").body, "ok\n");
    auto ready = http_request(admin, "GET", "/readyz");
    EXPECT_EQ(ready.status, 200) << ready.body;

    // A listener whose only backend refuses becomes not ready once a client tried it.
    const auto client = env.client("readiness");
    auto options = env.options_for(client);
    const auto dead_port = [&] {
        const auto s = Json::parse(http_request(admin, "GET", "/status").body);
        for (const auto& l : s["listeners"])
            if (l["name"] == "dead") return std::stoi(l["address"].get<std::string>().substr(10));
        return 0;
    }();
    ASSERT_GT(dead_port, 0);
    EXPECT_FALSE(run_client(dead_port, options).exchanged);
    ready = http_request(admin, "GET", "/readyz");
    EXPECT_EQ(ready.status, 503);
    EXPECT_NE(ready.body.find("listener dead: no backend up"), std::string::npos) << ready.body;

    const auto status = Json::parse(http_request(admin, "GET", "/status").body);
    EXPECT_EQ(status["workers"].size(), 1u);
    EXPECT_TRUE(status["workers"][0]["ready"].get<bool>());
    const auto& edge = status["listeners"][0];
    EXPECT_EQ(edge["name"], "edge");
    EXPECT_EQ(edge["certificates"].size(), 2u);  // ECDSA and RSA
    EXPECT_GT(edge["certificates"][0]["seconds_left"].get<std::int64_t>(), 86400);
    EXPECT_EQ(edge["crls"].size(), 2u);
    EXPECT_FALSE(edge["crls"][0]["overdue"].get<bool>());
    EXPECT_EQ(status["ticket_keys"]["source"], "generated");
    EXPECT_EQ(status["ticket_keys"]["keys"], 1);
    EXPECT_EQ(status["reload"]["attempts"], 0);
    EXPECT_FALSE(status["listeners"][1]["backends"][0]["up"].get<bool>());
    EXPECT_EQ(http_request(admin, "GET", "/reload").status, 405);
}

TEST(Reload, UnderLoadNoConnectionFailsAndNewCertificateIsServed) {
    TestDeployment env;
    const auto client = env.client("steady-client");
    const int port = free_port();
    const int admin = free_port();
    const auto config = env.write_config("load", admin_block(admin) + env.listener("edge", port));
    Daemon daemon(config, 2);
    ASSERT_TRUE(wait_for_admin(admin));

    std::atomic<bool> stop{false};
    std::atomic<int> ok{0}, failed{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 3; ++t) {
        clients.emplace_back([&] {
            auto options = env.options_for(client);
            options.trusted_server_ca = nullptr;  // the server certificate changes under us
            while (!stop) {
                const auto r = run_client(port, options);
                (r.exchanged ? ok : failed)++;
            }
        });
    }
    std::string last_cn;
    for (int round = 0; round < 4; ++round) {
        std::this_thread::sleep_for(300ms);
        // A new server certificate under the same file names, as a renewal does.
        CertOptions renewed;
        renewed.common_name = "localhost-" + std::to_string(round);
        renewed.dns_names = {"localhost"};
        renewed.client_auth = false;
        renewed.server_auth = true;
        const auto cert = env.root.issue(renewed);
        write_file(env.dir / "server-ec.pem.new", cert.cert_pem());
        write_file(env.dir / "server-ec.key.new", cert.key_pem());
        std::filesystem::rename(env.dir / "server-ec.key.new", env.dir / "server-ec.key");
        std::filesystem::rename(env.dir / "server-ec.pem.new", env.dir / "server-ec.pem");
        const auto response =
            round % 2 == 0 ? http_request(admin, "POST", "/reload") : HttpResponse{};
        if (round % 2 == 1) {
            ::kill(daemon.process().pid(), SIGHUP);
            ASSERT_TRUE(
                daemon.wait_for_log("configuration generation " + std::to_string(round + 2)))
                << daemon.log();
            std::this_thread::sleep_for(300ms);  // the workers switch within milliseconds
        } else {
            ASSERT_EQ(response.status, 200) << response.body;
        }
        last_cn = renewed.common_name;
        auto check = env.options_for(client);
        check.max_version = TLS1_3_VERSION;
        check.sigalgs = "ECDSA+SHA256";
        const auto r = run_client(port, check);
        EXPECT_EQ(r.server_leaf_cn, last_cn) << "round " << round;
    }
    std::this_thread::sleep_for(300ms);
    stop = true;
    for (auto& t : clients) t.join();
    EXPECT_GT(ok.load(), 20);
    EXPECT_EQ(failed.load(), 0) << "connections failed during reloads";
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_reloads_total{result=\"success\"}"), 4);
    EXPECT_EQ(metric_value(metrics, "portcullis_config_last_reload_successful"), 1);
}

TEST(Reload, BrokenConfigurationIsRejectedWholeAndServiceIsUnchanged) {
    TestDeployment env;
    const auto client = env.client("unchanged-client");
    const int port = free_port();
    const int admin = free_port();
    const auto body = admin_block(admin) + env.listener("edge", port);
    const auto config = env.write_config("broken", body);
    Daemon daemon(config);
    ASSERT_TRUE(wait_for_admin(admin));

    // 1: a certificate file that is not a certificate (and a good CRL change
    // in the same reload, which must not be applied either).
    write_file(env.dir / "garbage.pem", "not a certificate\n");
    write_file(config, replace_all(body, "chain = \"server-ec.pem\"", "chain = \"garbage.pem\""));
    auto response = http_request(admin, "POST", "/reload");
    EXPECT_EQ(response.status, 422);
    EXPECT_NE(response.body.find("garbage.pem"), std::string::npos) << response.body;
    EXPECT_TRUE(daemon.wait_for_log("reload rejected")) << daemon.log();

    // 2: a TOML error names file, line and key.
    write_file(config, body + "\n[workers]\ncount = \"many\"\n");
    response = http_request(admin, "POST", "/reload");
    EXPECT_EQ(response.status, 422);
    EXPECT_NE(response.body.find("broken.toml:"), std::string::npos) << response.body;
    EXPECT_NE(response.body.find("workers.count"), std::string::npos) << response.body;

    // 3: a change that needs a restart is refused, not half-applied.
    write_file(config, replace_all(body, "127.0.0.1:" + std::to_string(port),
                                   "127.0.0.1:" + std::to_string(free_port())));
    response = http_request(admin, "POST", "/reload");
    EXPECT_EQ(response.status, 422);
    EXPECT_NE(response.body.find("needs a restart"), std::string::npos) << response.body;

    const auto r = run_client(port, env.options_for(client));
    EXPECT_TRUE(r.exchanged) << r.error;
    EXPECT_EQ(r.server_leaf_cn, "localhost");
    const auto status = Json::parse(http_request(admin, "GET", "/status").body);
    EXPECT_FALSE(status["reload"]["last_ok"].get<bool>());
    EXPECT_EQ(status["reload"]["failures"], 3);
    EXPECT_EQ(status["config"]["generation"], 1);
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_reloads_total{result=\"failure\"}"), 3);
    EXPECT_EQ(metric_value(metrics, "portcullis_config_last_reload_successful"), 0);
    EXPECT_EQ(daemon.log().find("worker 0 serving configuration generation"), std::string::npos);
}

}  // namespace
}  // namespace portcullis::testing

namespace portcullis::testing {
namespace {

// Alive and not a zombie (orphans are reaped by whatever init the machine has).
bool running(pid_t pid) {
    std::error_code error;
    const auto stat = std::filesystem::path("/proc") / std::to_string(pid) / "stat";
    if (!std::filesystem::exists(stat, error)) return false;
    const auto text = read_file(stat);
    const auto close = text.rfind(')');
    return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

TEST(Lifecycle, VersionNamesTheLibrariesLoadedAtRunTime) {
    TestDeployment env;
    ChildProcess version({binary_from_env("PORTCULLIS_BIN"), "--version"}, env.dir / "version.log");
    ASSERT_EQ(version.wait_exit(std::chrono::seconds(10)), 0) << version.log();
    const std::string text = version.log();
    EXPECT_EQ(text.rfind("portcullis ", 0), 0u) << text;
    // The platform is OpenSSL 3.5 LTS; the runtime library is what counts.
    EXPECT_NE(text.find("\nOpenSSL 3.5."), std::string::npos) << text;
    if (!binary_from_env("PORTCULLIS_DPDK_PROBE").empty())
        EXPECT_NE(text.find("\nDPDK 24.11"), std::string::npos) << text;
    else
        EXPECT_NE(text.find("\nDPDK: not in this build"), std::string::npos) << text;
}

std::string environment_of(pid_t pid) {
    std::string text = read_file("/proc/" + std::to_string(pid) + "/environ");
    std::replace(text.begin(), text.end(), '\0', '\n');
    return "\n" + text;
}

// The supervisor re-executes itself once with the workers' glibc tunables
// (base/heap_tunables.hpp); the workers it forks have them too.
TEST(Lifecycle, SupervisorAndWorkersRunWithTheWorkerHeapCache) {
    const char* outer = std::getenv("GLIBC_TUNABLES");
    if (outer != nullptr)
        GTEST_SKIP() << "SKIPPED: the test runs with GLIBC_TUNABLES=" << outer << " already set";
    TestDeployment env;
    Daemon daemon(env.write_config("heap", env.listener("edge", free_port())));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1u);
    for (const pid_t pid : {daemon.process().pid(), workers[0]}) {
        EXPECT_NE(environment_of(pid).find("\nGLIBC_TUNABLES=glibc.malloc.tcache_count=256\n"),
                  std::string::npos)
            << "pid " << pid << ":" << environment_of(pid);
        // ps, pgrep and journald know the processes by this name.
        EXPECT_EQ(read_file("/proc/" + std::to_string(pid) + "/comm"), "portcullis\n");
    }
}

TEST(Lifecycle, AnOperatorsOwnHeapCacheCountIsKept) {
    const char* outer = std::getenv("GLIBC_TUNABLES");
    if (outer != nullptr)
        GTEST_SKIP() << "SKIPPED: the test runs with GLIBC_TUNABLES=" << outer << " already set";
    TestDeployment env;
    // Only this daemon's environment: unset again however the start ends.
    struct Unset {
        ~Unset() { ::unsetenv("GLIBC_TUNABLES"); }
    } unset;
    ::setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7", 1);
    Daemon daemon(env.write_config("heap-own", env.listener("edge", free_port())));
    ::unsetenv("GLIBC_TUNABLES");
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1u);
    const auto text = environment_of(workers[0]);
    EXPECT_NE(text.find("\nGLIBC_TUNABLES=glibc.malloc.tcache_count=7\n"), std::string::npos)
        << text;
    EXPECT_EQ(text.find("tcache_count=256"), std::string::npos) << text;
}

TEST(Lifecycle, WorkersAndAdminExitWhenTheSupervisorIsKilled) {
    TestDeployment env;
    const int admin = free_port();
    Daemon daemon(
        env.write_config("orphans", admin_block(admin) + env.listener("edge", free_port())), 2);
    ASSERT_TRUE(wait_for_admin(admin));
    const auto children = daemon.worker_pids();
    ASSERT_GE(children.size(), 2u);
    ::kill(daemon.process().pid(), SIGKILL);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::size_t alive = children.size();
    while (alive > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
        alive = 0;
        for (const pid_t pid : children) alive += running(pid) ? 1 : 0;
    }
    EXPECT_EQ(alive, 0u) << "children outlived a SIGKILLed supervisor";
    EXPECT_NE(http_request(admin, "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace portcullis::testing
