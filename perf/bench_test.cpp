// portcullis-bench against the real daemon, read back from the daemon's
// access log: --identities presents a different client certificate per
// connection and, with --mode resume, each identity resumes its own session;
// --warmup leaves its attempts out of the counts; a request the server closes
// without an answer is a failure, not a handshake. --hold keeps its
// connections established for the hold (the daemon's own gauge and access log
// agree), binds them to the --source-addresses in turn, counts a connection
// the server closes while held as a hold failure, keeps to --open-rate, and
// refuses a count its descriptors cannot hold.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

class Bench : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { env = new TestDeployment(); }
    static void TearDownTestSuite() {
        delete env;
        env = nullptr;
    }

    // Client identities issued by the deployment's client CA, in an --identities file.
    std::filesystem::path write_identities(int count) {
        std::string list;
        for (int i = 0; i < count; ++i) {
            const auto name = "bench-partner-" + std::to_string(i);
            const auto cert = env->client(name);
            write_file(env->dir / (name + ".chain.pem"),
                       cert.cert_pem() + env->client_ca.cert_pem());
            write_file(env->dir / (name + ".key.pem"), cert.key_pem());
            list += (env->dir / (name + ".chain.pem")).string() + " " +
                    (env->dir / (name + ".key.pem")).string() + "\n";
        }
        const auto path = env->dir / ("identities-" + std::to_string(count) + ".list");
        write_file(path, "# CHAIN KEY\n" + list);
        return path;
    }

    // The bench against the daemon on `port`, its JSON summary to `json`.
    std::vector<std::string> bench_argv(int port, const std::filesystem::path& json) const {
        return {binary_from_env("PORTCULLIS_BENCH_BIN"),
                "--target",
                "127.0.0.1:" + std::to_string(port),
                "--sni",
                "localhost",
                "--ca",
                (env->dir / "root.pem").string(),
                "--json",
                json.string()};
    }

    // Runs the bench to completion; its JSON summary.
    nlohmann::json run_bench(int port, std::vector<std::string> args) {
        const auto json_path = env->dir / "bench.json";
        std::filesystem::remove(json_path);
        auto argv = bench_argv(port, json_path);
        argv.push_back("--quiet");
        argv.insert(argv.end(), args.begin(), args.end());
        ChildProcess bench(argv, env->dir / "bench.log");
        const auto status = bench.wait_exit(std::chrono::seconds(60));
        EXPECT_EQ(status, 0) << bench.log();
        if (!std::filesystem::exists(json_path)) return nlohmann::json::object();
        return nlohmann::json::parse(read_file(json_path));
    }

    // A --hold run to its end: exit status, JSON summary, stdout+stderr.
    struct HoldRun {
        int status = -1;
        nlohmann::json summary = nlohmann::json::object();
        std::string log;
    };
    HoldRun run_hold(int port, std::vector<std::string> args) {
        const auto json_path = env->dir / "hold.json";
        std::filesystem::remove(json_path);
        const auto cert = env->client("bench-holder");
        write_file(env->dir / "holder.chain.pem", cert.cert_pem() + env->client_ca.cert_pem());
        write_file(env->dir / "holder.key.pem", cert.key_pem());
        auto argv = bench_argv(port, json_path);
        argv.insert(argv.end(), {"--cert", (env->dir / "holder.chain.pem").string(), "--key",
                                 (env->dir / "holder.key.pem").string()});
        argv.insert(argv.end(), args.begin(), args.end());
        ChildProcess bench(argv, env->dir / "hold.log");
        HoldRun run;
        run.status = bench.wait_exit(std::chrono::seconds(120)).value_or(-1);
        run.log = bench.log();
        if (std::filesystem::exists(json_path))
            run.summary = nlohmann::json::parse(read_file(json_path));
        return run;
    }

    // Access log lines (complete connections only) counted by subject and by resumed=.
    struct Seen {
        std::map<std::string, int> subjects;
        std::map<std::string, int> resumed_subjects;
        std::map<std::string, int> client_addresses;  // without the port
        int lines = 0;
    };
    static Seen read_access_log(const std::filesystem::path& path, std::size_t expected_lines) {
        std::string text;
        for (int i = 0; i < 200; ++i) {  // workers write their line after the client has gone
            text = read_file(path);
            if (static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) >=
                expected_lines)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        Seen seen;
        std::size_t start = 0;
        while (start < text.size()) {
            const auto end = text.find('\n', start);
            const auto line = text.substr(start, end - start);
            start = end == std::string::npos ? text.size() : end + 1;
            if (line.find("result=complete") == std::string::npos) continue;
            const auto at = line.find("subject=\"");
            if (at == std::string::npos) continue;
            const auto subject = line.substr(at + 9, line.find('"', at + 9) - at - 9);
            ++seen.lines;
            ++seen.subjects[subject];
            const auto client = line.find(" client=");
            if (client != std::string::npos) {
                const auto address =
                    line.substr(client + 8, line.find(' ', client + 8) - client - 8);
                ++seen.client_addresses[address.substr(0, address.rfind(':'))];
            }
            if (line.find("resumed=true") != std::string::npos) ++seen.resumed_subjects[subject];
        }
        return seen;
    }

    static TestDeployment* env;
};

TestDeployment* Bench::env = nullptr;

TEST_F(Bench, IdentitiesGiveEveryConnectionTheNextCertificate) {
    const int port = free_port();
    Daemon daemon(env->write_config(
        "identities", "[log]\naccess_log = \"identities.log\"\n\n" + env->listener("edge", port)));
    const auto summary = run_bench(
        port, {"--identities", write_identities(4).string(), "--mode", "full", "--conns", "1",
               "--handshakes", "12", "--request", "ping\\n", "--response-bytes", "5"});
    ASSERT_TRUE(summary.contains("handshakes")) << summary.dump();
    EXPECT_EQ(summary["identities"], 4);
    EXPECT_EQ(summary["errors_total"], 0) << summary.dump();
    const std::uint64_t handshakes = summary["handshakes"];
    EXPECT_GE(handshakes, 12U);

    const auto seen = read_access_log(env->dir / "identities.log", handshakes);
    ASSERT_EQ(seen.subjects.size(), 4U) << read_file(env->dir / "identities.log");
    for (const auto& [subject, count] : seen.subjects) {
        EXPECT_NE(subject.find("CN=bench-partner-"), std::string::npos) << subject;
        // One connection slot hands the identities out in turn.
        EXPECT_GE(count, static_cast<int>(handshakes / 4)) << subject;
        EXPECT_LE(count, static_cast<int>(handshakes / 4) + 1) << subject;
    }
}

TEST_F(Bench, EachIdentityResumesItsOwnSessionAfterTheWarmup) {
    const int port = free_port();
    Daemon daemon(env->write_config(
        "resume", "[log]\naccess_log = \"resume.log\"\n\n" + env->listener("edge", port)));
    // The warm-up gives each of the 3 identities a session; every counted
    // connection after it resumes.
    const auto summary =
        run_bench(port, {"--identities", write_identities(3).string(), "--mode", "resume", "--tls",
                         "1.3", "--conns", "1", "--warmup", "3", "--handshakes", "9", "--request",
                         "ping\\n", "--response-bytes", "5"});
    ASSERT_TRUE(summary.contains("handshakes")) << summary.dump();
    EXPECT_EQ(summary["warmup"], 3);
    EXPECT_EQ(summary["errors_total"], 0) << summary.dump();
    const std::uint64_t handshakes = summary["handshakes"];
    EXPECT_GE(handshakes, 9U);
    EXPECT_EQ(summary["resumed"], handshakes) << summary.dump();
    EXPECT_EQ(summary["full"], 0) << "the warm-up's full handshakes are not counted";

    const auto seen = read_access_log(env->dir / "resume.log", handshakes + 3);
    EXPECT_GE(seen.lines, static_cast<int>(handshakes + 3)) << "warm-up connections happened too";
    ASSERT_EQ(seen.resumed_subjects.size(), 3U) << read_file(env->dir / "resume.log");
    for (const auto& [subject, count] : seen.resumed_subjects)
        EXPECT_GE(count, static_cast<int>(handshakes / 3)) << subject;
}

TEST_F(Bench, ARequestClosedWithoutAnswerIsAFailure) {
    // No backend listens, so the daemon completes the handshake and closes
    // the client's side without a byte: a refusal, not an answered request.
    const int port = free_port();
    Daemon daemon(env->write_config("down", env->listener("edge", port, "", "", "", free_port())));
    const auto cert = env->client("bench-unanswered");
    write_file(env->dir / "unanswered.chain.pem", cert.cert_pem() + env->client_ca.cert_pem());
    write_file(env->dir / "unanswered.key.pem", cert.key_pem());
    for (const char* tls : {"1.3", "1.2"}) {
        const auto summary =
            run_bench(port, {"--cert", (env->dir / "unanswered.chain.pem").string(), "--key",
                             (env->dir / "unanswered.key.pem").string(), "--tls", tls, "--conns",
                             "1", "--handshakes", "3", "--request", "ping\\n"});
        ASSERT_TRUE(summary.contains("handshakes")) << summary.dump();
        EXPECT_EQ(summary["handshakes"], 0) << tls << " " << summary.dump();
        EXPECT_GE(summary["errors_total"], 3) << tls << " " << summary.dump();
    }
}

TEST_F(Bench, HoldKeepsEveryConnectionEstablishedUntilTheHoldEnds) {
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env->write_config(
        "hold", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                    "\"\n\n[log]\naccess_log = \"hold.log\"\n\n" + env->listener("edge", port)));
    // The daemon's own count of open connections, read through --metrics-url
    // at the end of the hold, stands in for the memory metric.
    const auto run =
        run_hold(port, {"--hold", "200", "--hold-seconds", "2", "--conns", "16", "--progress",
                        "--source-addresses", "127.0.0.2-127.0.0.5", "--metrics-url",
                        "http://127.0.0.1:" + std::to_string(admin) + "/metrics", "--memory-metric",
                        "portcullis_connections_active"});
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("held")) << run.log;
    EXPECT_EQ(s["hold"], 200);
    EXPECT_EQ(s["held"], 200) << s.dump();
    EXPECT_EQ(s["opened"], 200) << s.dump();
    EXPECT_EQ(s["hold_failures"], 0) << s.dump();
    EXPECT_EQ(s["errors_total"], 0) << s.dump();
    EXPECT_EQ(s["source_addresses"], 4);
    EXPECT_GE(s["hold_seconds"].get<double>(), 2.0);
    EXPECT_GT(s["open_rate_achieved"].get<double>(), 0.0);
    EXPECT_EQ(s["server_memory_bytes"], 200) << "portcullis_connections_active while held";
    EXPECT_NE(run.log.find("holding 200\n"), std::string::npos) << run.log;
    EXPECT_NE(run.log.find("held 200  failed 0  hold_failures 0"), std::string::npos) << run.log;

    // Closed by the client at the end, each from one of the four addresses in turn.
    const auto seen = read_access_log(env->dir / "hold.log", 200);
    EXPECT_EQ(seen.lines, 200) << read_file(env->dir / "hold.log");
    ASSERT_EQ(seen.client_addresses.size(), 4U) << read_file(env->dir / "hold.log");
    for (const auto& [address, count] : seen.client_addresses) {
        EXPECT_EQ(address.rfind("127.0.0.", 0), 0U) << address;
        EXPECT_NE(address, "127.0.0.1");
        EXPECT_EQ(count, 50) << address;
    }
}

TEST_F(Bench, AConnectionTheServerClosesWhileHeldIsAHoldFailure) {
    // The daemon closes connections idle for 300 ms; the hold lasts longer.
    const int port = free_port();
    Daemon daemon(
        env->write_config("idle", env->listener("edge", port, "", "idle_timeout_ms = 300\n")));
    const auto run = run_hold(port, {"--hold", "20", "--hold-seconds", "2", "--quiet"});
    EXPECT_EQ(run.status, 1) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("held")) << run.log;
    EXPECT_EQ(s["opened"], 20) << s.dump();
    EXPECT_EQ(s["held"], 0) << s.dump();
    EXPECT_EQ(s["hold_failures"], 20) << s.dump();
    int by_reason = 0;
    for (const auto& [how, count] : s["hold_failure_reasons"].items())
        by_reason += count.get<int>();
    EXPECT_EQ(by_reason, 20) << s.dump();
}

TEST_F(Bench, HoldOpensNoFasterThanTheOpenRate) {
    const int port = free_port();
    Daemon daemon(env->write_config("rate", env->listener("edge", port)));
    // 30 connections at 20/s: the last starts 1.45 s after the first.
    const auto started = std::chrono::steady_clock::now();
    const auto run = run_hold(port, {"--hold", "30", "--open-rate", "20", "--hold-seconds", "0.2",
                                     "--conns", "8", "--quiet"});
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    EXPECT_EQ(run.status, 0) << run.log;
    ASSERT_TRUE(run.summary.contains("open_rate_achieved")) << run.log;
    EXPECT_EQ(run.summary["held"], 30) << run.summary.dump();
    EXPECT_LE(run.summary["open_rate_achieved"].get<double>(), 22.0) << run.summary.dump();
    EXPECT_GE(elapsed, 1.45);
}

TEST_F(Bench, HoldRefusesMoreConnectionsThanItsDescriptorsAllow) {
    // Above any kernel's fs.nr_open: no privilege could raise RLIMIT_NOFILE that far.
    const auto run = run_hold(free_port(), {"--hold", "2000000000", "--quiet"});
    EXPECT_EQ(run.status, 2) << run.log;
    EXPECT_NE(run.log.find("RLIMIT_NOFILE"), std::string::npos) << run.log;
    EXPECT_TRUE(run.summary.empty());
}

}  // namespace
}  // namespace portcullis::testing
