// portcullis-bench against the real daemon, read back from the daemon's
// access log: --identities presents a different client certificate per
// connection and, with --mode resume, each identity resumes its own session;
// --warmup leaves its attempts out of the counts; a request the server closes
// without an answer is a failure, not a handshake. --hold keeps its
// connections established for the hold (the daemon's own gauge and access log
// agree), binds them to the --source-addresses in turn, counts a connection
// the server closes while held as a hold failure, keeps to --open-rate, and
// refuses a count its descriptors cannot hold. The open loop (--rate,
// --sweep) accounts for every arrival, mixes full and resumed handshakes and
// TLS versions as asked (the daemon's access log agrees), reports one step
// per swept rate with the knee its own pass flags give, puts the knee of a
// server whose HSM bounds its handshake rate below the sweep's top, measures
// a stalled server's wait from the intended start, and counts arrivals beyond
// --max-in-flight as overload.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/integration/environment.hpp"
#include "tests/integration/softhsm.hpp"

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
        std::map<std::string, int> versions;          // "TLSv1.3" -> lines
        int resumed = 0;
        int lines = 0;
    };
    static Seen parse_access_log(const std::string& text) {
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
            if (line.find("resumed=true") != std::string::npos) {
                ++seen.resumed_subjects[subject];
                ++seen.resumed;
            }
            const auto version = line.find(" version=");
            if (version != std::string::npos)
                ++seen.versions[line.substr(version + 9,
                                            line.find(' ', version + 9) - version - 9)];
        }
        return seen;
    }
    // Workers write their line after the client has gone, and lines of other
    // results (a connection abandoned at a step's end) may come first: wait
    // for the complete ones.
    static Seen read_access_log(const std::filesystem::path& path, std::size_t expected_lines) {
        Seen seen;
        for (int i = 0; i < 250; ++i) {
            seen = parse_access_log(read_file(path));
            if (static_cast<std::size_t>(seen.lines) >= expected_lines) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return seen;
    }

    // An open-loop run (--rate or --sweep) as one client certificate, or as
    // the `args`' --identities: exit status, JSON summary, stdout+stderr. With
    // `during`, that runs once the first step has started, the bench running.
    struct OpenRun {
        int status = -1;
        nlohmann::json summary = nlohmann::json::object();
        std::string log;
    };
    OpenRun run_open(int port, std::vector<std::string> args,
                     const std::function<void()>& during = {}) {
        const auto json_path = env->dir / "open.json";
        std::filesystem::remove(json_path);
        auto argv = bench_argv(port, json_path);
        if (std::find(args.begin(), args.end(), "--identities") == args.end()) {
            const auto cert = env->client("bench-open");
            write_file(env->dir / "open.chain.pem", cert.cert_pem() + env->client_ca.cert_pem());
            write_file(env->dir / "open.key.pem", cert.key_pem());
            argv.insert(argv.end(), {"--cert", (env->dir / "open.chain.pem").string(), "--key",
                                     (env->dir / "open.key.pem").string()});
        }
        argv.insert(argv.end(), {"--request", "ping\\n", "--response-bytes", "5"});
        argv.insert(argv.end(), args.begin(), args.end());
        ChildProcess bench(argv, env->dir / "open.log");
        if (during) {
            EXPECT_TRUE(bench.wait_for_log("step 1/")) << bench.log();
            during();
        }
        OpenRun run;
        run.status = bench.wait_exit(std::chrono::seconds(60)).value_or(-1);
        run.log = bench.log();
        if (std::filesystem::exists(json_path))
            run.summary = nlohmann::json::parse(read_file(json_path));
        return run;
    }

    // Every step accounts for each arrival, and says passed exactly when its
    // numbers are within the run's bounds.
    static void expect_consistent_steps(const nlohmann::json& s) {
        for (const auto& step : s["steps"]) {
            for (const char* field : {"offered_rate", "achieved_rate", "connections", "completed",
                                      "errors", "error_ratio", "errors_by_reason", "full",
                                      "resumed", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
                                      "full_p99_ms", "resumed_p99_ms", "client_cpu_s", "passed"})
                EXPECT_TRUE(step.contains(field)) << field << " " << step.dump();
            // A step that made connections cost the generator some CPU, and no
            // more than all of the run's.
            if (step["connections"].get<std::uint64_t>() > 0) {
                EXPECT_GT(step["client_cpu_s"].get<double>(), 0) << step.dump();
            }
            EXPECT_LE(step["client_cpu_s"].get<double>(), s["client_cpu_s"].get<double>());
            const std::uint64_t connections = step["connections"];
            const std::uint64_t completed = step["completed"];
            const std::uint64_t errors = step["errors"];
            EXPECT_EQ(completed + errors, connections) << step.dump();
            EXPECT_EQ(step["full"].get<std::uint64_t>() + step["resumed"].get<std::uint64_t>(),
                      completed)
                << step.dump();
            std::uint64_t by_reason = 0;
            for (const char* reason : {"connect", "handshake", "timeout", "overload"})
                EXPECT_TRUE(step["errors_by_reason"].contains(reason)) << step.dump();
            for (const auto& [reason, count] : step["errors_by_reason"].items())
                by_reason += count.get<std::uint64_t>();
            EXPECT_EQ(by_reason, errors) << step.dump();
            const bool within =
                completed > 0 && step["p99_ms"].get<double>() <= s["p99_max_ms"].get<double>() &&
                step["error_ratio"].get<double>() <= s["max_error_ratio"].get<double>();
            EXPECT_EQ(step["passed"].get<bool>(), within) << step.dump();
        }
    }

    static TestDeployment* env;
};

// SIGSTOP for the length of the block, SIGCONT after it whatever happens.
class Stopped {
  public:
    explicit Stopped(pid_t pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
    ~Stopped() { ::kill(pid_, SIGCONT); }
    Stopped(const Stopped&) = delete;
    Stopped& operator=(const Stopped&) = delete;

  private:
    pid_t pid_;
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

TEST_F(Bench, OpenLoopRateAccountsForEveryArrival) {
    const int port = free_port();
    Daemon daemon(env->write_config(
        "open-rate", "[log]\naccess_log = \"open-rate.log\"\n\n" + env->listener("edge", port)));
    const auto csv = env->dir / "open-rate.csv";
    const auto run =
        run_open(port, {"--rate", "40", "--step-duration", "2", "--quiet", "--csv", csv.string()});
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    EXPECT_EQ(s["tool"], "portcullis-bench");
    EXPECT_EQ(s["mode"], "open-loop");
    EXPECT_EQ(s["arrivals"], "poisson");
    EXPECT_EQ(s["resume_fraction"], 0.0);
    EXPECT_EQ(s["tls_mix"], nlohmann::json::parse(R"({"1.3":1.0})"));
    EXPECT_EQ(s["identities"], 1);
    EXPECT_EQ(s["p99_max_ms"], 100.0);
    EXPECT_EQ(s["max_error_ratio"], 0.01);
    EXPECT_EQ(s["step_duration_s"], 2.0);
    ASSERT_EQ(s["steps"].size(), 1U) << s.dump();
    expect_consistent_steps(s);
    const auto& step = s["steps"][0];
    EXPECT_EQ(step["offered_rate"], 40.0);
    EXPECT_GT(step["connections"].get<int>(), 0) << step.dump();
    EXPECT_GT(step["completed"].get<int>(), 0) << step.dump();
    EXPECT_EQ(step["resumed"], 0) << step.dump();
    EXPECT_TRUE(step["resumed_p99_ms"].is_null()) << step.dump();
    EXPECT_GE(step["max_ms"].get<double>(), step["p99_ms"].get<double>());
    EXPECT_GE(step["p99_ms"].get<double>(), step["p50_ms"].get<double>());
    ASSERT_TRUE(s.contains("knee"));
    if (step["passed"].get<bool>())
        EXPECT_EQ(s["knee"]["rate"], 40.0) << s.dump();
    else
        EXPECT_TRUE(s["knee"].is_null()) << s.dump();

    // The daemon served each completed connection.
    const int completed = step["completed"];
    EXPECT_EQ(read_access_log(env->dir / "open-rate.log", completed).lines, completed);
    const auto table = read_file(csv);
    EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2) << table;
    EXPECT_EQ(table.rfind("offered_rate,achieved_rate,connections,completed,errors,", 0), 0U)
        << table;
}

TEST_F(Bench, OpenLoopResumesTheAskedFractionOverTheTlsMix) {
    const int port = free_port();
    Daemon daemon(env->write_config("open-resume", "[log]\naccess_log = \"open-resume.log\"\n\n" +
                                                       env->listener("edge", port)));
    const auto run = run_open(
        port, {"--identities", write_identities(3).string(), "--resume-fraction", "0.8",
               "--tls-mix", "1.3=0.7,1.2=0.3", "--rate", "50", "--step-duration", "2", "--quiet"});
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    EXPECT_EQ(s["identities"], 3);
    EXPECT_EQ(s["resume_fraction"], 0.8);
    EXPECT_EQ(s["tls_mix"], nlohmann::json::parse(R"({"1.3":0.7,"1.2":0.3})"));
    // One full handshake per identity and version before the step.
    EXPECT_EQ(s["primed_sessions"], 6) << s.dump();
    expect_consistent_steps(s);
    const auto& step = s["steps"][0];
    EXPECT_EQ(step["errors"], 0) << step.dump();
    const int full = step["full"];
    const int resumed = step["resumed"];
    const int connections = step["connections"];
    ASSERT_GT(connections, 40) << step.dump();
    // Every connection that offered a session had it accepted, and about
    // 0.8 of them offered one (a binomial draw: ~0.06 is one standard
    // deviation at 50 connections, so 0.2 is more than three).
    EXPECT_EQ(step["resume_offered"], resumed) << step.dump();
    EXPECT_NEAR(static_cast<double>(resumed) / connections, 0.8, 0.2) << step.dump();
    EXPECT_GT(full, 0) << step.dump();
    EXPECT_FALSE(step["full_p99_ms"].is_null());
    EXPECT_FALSE(step["resumed_p99_ms"].is_null());

    // The daemon saw the same resumptions, the priming's full handshakes
    // besides (three identities, each version), over both versions in
    // about the asked shares.
    auto seen = read_access_log(env->dir / "open-resume.log", full + resumed + 6);
    EXPECT_EQ(seen.lines, full + resumed + 6) << read_file(env->dir / "open-resume.log");
    EXPECT_EQ(seen.resumed, resumed);
    const int tls12 = seen.versions["TLSv1.2"] - 3;
    const int tls13 = seen.versions["TLSv1.3"] - 3;
    EXPECT_EQ(tls12 + tls13, connections);
    EXPECT_NEAR(static_cast<double>(tls12) / connections, 0.3, 0.2) << tls12 << "/" << connections;
    EXPECT_EQ(seen.subjects.size(), 3U);
}

TEST_F(Bench, OpenLoopOverlappingConnectionsOfOneIdentityAllResume) {
    // The worker stops for half a second: some fifty connections of the one
    // identity wait at once, each offering the newest TLS 1.3 session, and
    // every one of them must resume when it goes on (OpenSSL's client makes
    // a session unresumable once it resumed a connection).
    const int port = free_port();
    Daemon daemon(env->write_config("overlap", env->listener("edge", port)));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1U);
    const auto run = run_open(
        port,
        {"--resume-fraction", "1", "--rate", "100", "--step-duration", "2", "--tls-mix", "1.3"},
        [&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            Stopped stopped(workers[0]);
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
        });
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    expect_consistent_steps(s);
    const auto& step = s["steps"][0];
    EXPECT_EQ(step["errors"], 0) << step.dump();
    EXPECT_EQ(step["resume_offered"], step["connections"]) << step.dump();
    EXPECT_EQ(step["resumed"], step["connections"]) << step.dump();
    EXPECT_EQ(step["full"], 0) << step.dump();
}

TEST_F(Bench, OpenLoopSweepHasAStepPerRateAndTheKneeOfItsPassedSteps) {
    const int port = free_port();
    Daemon daemon(env->write_config("sweep", env->listener("edge", port)));
    for (const char* p99_max : {"100", "0.001"}) {
        const auto run = run_open(
            port, {"--sweep", "10:30:10", "--step-duration", "1", "--p99-max", p99_max, "--quiet"});
        EXPECT_EQ(run.status, 0) << run.log;
        const auto& s = run.summary;
        ASSERT_TRUE(s.contains("steps")) << run.log;
        ASSERT_EQ(s["steps"].size(), 3U) << s.dump();
        expect_consistent_steps(s);
        // The knee: the last step of the run of passed steps from the lowest rate.
        std::optional<double> knee;
        for (int i = 0; i < 3; ++i) {
            EXPECT_EQ(s["steps"][i]["offered_rate"], 10.0 * (i + 1));
            if (!s["steps"][i]["passed"].get<bool>()) break;
            knee = s["steps"][i]["offered_rate"].get<double>();
        }
        if (knee) {
            ASSERT_TRUE(s["knee"].is_object()) << s.dump();
            EXPECT_EQ(s["knee"]["rate"], *knee) << s.dump();
        } else {
            EXPECT_TRUE(s["knee"].is_null()) << s.dump();
        }
        if (std::string(p99_max) == "0.001") {
            EXPECT_TRUE(s["knee"].is_null()) << "no handshake takes under a microsecond";
        }
    }
}

TEST_F(Bench, OpenLoopSweepFindsTheKneeOfAServerWithACapacity) {
    // Every full handshake waits for an HSM signature of 40 ms, and one
    // worker with one PKCS#11 session signs one at a time: the server
    // completes at most 25 handshakes a second. 5/s stays far below that;
    // 35/s and 65/s arrive faster than it signs, so the wait from the
    // intended start grows through the whole step.
    SKIP_WITHOUT_SOFTHSM();
    SoftHsm hsm(*env);
    hsm.token("edge");
    hsm.control("latency_ms = 40\n");
    const int port = free_port();
    Daemon daemon(env->write_config("capacity", hsm.config(port, "", 0, 1)));
    const auto run = run_open(port, {"--sweep", "5:65:30", "--step-duration", "2", "--p99-max",
                                     "300", "--csv", (env->dir / "capacity.csv").string()});
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    ASSERT_EQ(s["steps"].size(), 3U) << s.dump();
    expect_consistent_steps(s);
    const auto& steps = s["steps"];
    EXPECT_TRUE(steps[0]["passed"].get<bool>()) << steps[0].dump();
    EXPECT_FALSE(steps[2]["passed"].get<bool>()) << steps[2].dump();
    EXPECT_GT(steps[2]["p99_ms"].get<double>(), steps[0]["p99_ms"].get<double>()) << s.dump();
    ASSERT_TRUE(s["knee"].is_object()) << s.dump();
    EXPECT_LT(s["knee"]["rate"].get<double>(), 65.0) << s.dump();
    EXPECT_EQ(s["knee"]["p99_ms"], steps[0]["p99_ms"]) << s.dump();

    // A progress line per step on stderr, and a CSV row per step whose
    // columns are the header's.
    for (const char* line :
         {"step 1/3  offered 5.0/s", "step 2/3  offered 35.0/s", "step 3/3  offered 65.0/s"})
        EXPECT_NE(run.log.find(line), std::string::npos) << line << "\n" << run.log;
    std::istringstream table(read_file(env->dir / "capacity.csv"));
    std::string header, row;
    ASSERT_TRUE(std::getline(table, header));
    const auto columns = std::count(header.begin(), header.end(), ',');
    int rows = 0;
    while (std::getline(table, row)) {
        EXPECT_EQ(std::count(row.begin(), row.end(), ','), columns) << row;
        EXPECT_EQ(row.rfind(std::to_string(5 + 30 * rows) + ".000,", 0), 0U) << row;
        ++rows;
    }
    EXPECT_EQ(rows, 3);
}

TEST_F(Bench, OpenLoopLatencyIncludesAServerStall) {
    // The worker stops for a second while arrivals go on: a connection that
    // arrived just after it stopped waits the whole stall, and the arrivals
    // of the stall's first few tens of ms are more than 1% of the run.
    const int port = free_port();
    Daemon daemon(env->write_config("stall", env->listener("edge", port)));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1U);
    double stall_ms = 0;
    const auto run = run_open(port, {"--rate", "100", "--step-duration", "3"}, [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        const auto stopped_at = std::chrono::steady_clock::now();
        {
            Stopped stopped(workers[0]);
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
        stall_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - stopped_at)
                .count();
    });
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    expect_consistent_steps(s);
    const auto& step = s["steps"][0];
    EXPECT_EQ(step["errors"], 0) << step.dump();
    EXPECT_GE(step["max_ms"].get<double>(), 0.9 * stall_ms) << step.dump();
    EXPECT_GE(step["p99_ms"].get<double>(), 0.8 * stall_ms) << step.dump();
    EXPECT_NE(run.log.find("step 1/1  offered 100.0/s"), std::string::npos) << run.log;
}

TEST_F(Bench, OpenLoopArrivalsBeyondMaxInFlightAreOverload) {
    // With the worker stopped no connection ends before its timeout, after
    // the step's last arrival: the first two hold the two slots, every
    // other arrival finds them busy.
    const int port = free_port();
    Daemon daemon(env->write_config("overload", env->listener("edge", port)));
    const auto workers = daemon.worker_pids();
    ASSERT_EQ(workers.size(), 1U);
    Stopped stopped(workers[0]);
    const auto run =
        run_open(port, {"--rate", "50", "--arrivals", "uniform", "--step-duration", "1",
                        "--max-in-flight", "2", "--timeout-ms", "1500", "--quiet"});
    EXPECT_EQ(run.status, 0) << run.log;
    const auto& s = run.summary;
    ASSERT_TRUE(s.contains("steps")) << run.log;
    EXPECT_EQ(s["arrivals"], "uniform");
    expect_consistent_steps(s);
    const auto& step = s["steps"][0];
    EXPECT_EQ(step["connections"], 50) << step.dump();
    EXPECT_EQ(step["completed"], 0) << step.dump();
    EXPECT_EQ(step["errors_by_reason"]["overload"], 48) << step.dump();
    EXPECT_EQ(step["errors_by_reason"]["timeout"], 2) << step.dump();
    EXPECT_FALSE(step["passed"].get<bool>());
    EXPECT_TRUE(s["knee"].is_null());
}

}  // namespace
}  // namespace portcullis::testing
