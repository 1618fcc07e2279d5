// Server keys in a real SoftHSM2 token made by the test, through the real
// daemon: ECDSA and RSA over TLS 1.2 and 1.3, start-up errors, and the test
// PKCS#11 module (SoftHSM behind added latency, injected errors and vanishing
// tokens) for asynchronous signing, failures, failover and recovery.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "tests/integration/environment.hpp"
#include "tests/integration/softhsm.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* pin = SoftHsm::pin;

bool run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

double scrape(int admin, const std::string& sample) {
    for (int attempt = 0; attempt < 200; ++attempt) {
        const auto response = http_request(admin, "GET", "/metrics");
        if (response.status == 200) return metric_value(response.body, sample);
        std::this_thread::sleep_for(25ms);
    }
    return std::nan("");
}

ClientOptions with_sigalgs(ClientOptions options, int version, const char* sigalgs) {
    options.min_version = options.max_version = version;
    options.sigalgs = sigalgs;
    return options;
}

TEST(HsmKeys, EcdsaAndRsaKeysSignOverTls12AndTls13WithTwoWorkers) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("hsm-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("hsm", hsm.config(port, "", admin)), 2);
    struct Case {
        int version;
        const char* sigalgs;
        int key_type;
    };
    for (const auto& c : {Case{TLS1_3_VERSION, "ECDSA+SHA256", EVP_PKEY_EC},
                          Case{TLS1_3_VERSION, "RSA-PSS+SHA256", EVP_PKEY_RSA},
                          Case{TLS1_2_VERSION, "ECDSA+SHA256", EVP_PKEY_EC},
                          Case{TLS1_2_VERSION, "RSA+SHA256", EVP_PKEY_RSA},
                          Case{TLS1_2_VERSION, "RSA-PSS+SHA256", EVP_PKEY_RSA}}) {
        for (int i = 0; i < 3; ++i) {  // both workers get some
            const auto r =
                run_client(port, with_sigalgs(env.options_for(client), c.version, c.sigalgs));
            EXPECT_TRUE(r.exchanged) << c.sigalgs << " " << r.error;
            EXPECT_EQ(r.server_key_type, c.key_type) << c.sigalgs;
        }
    }
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics,
                           "portcullis_hsm_signatures_total{key=\"pkcs11:token=edge;"
                           "object=server-ec;type=private\",result=\"ok\"}"),
              6)
        << metrics;
    EXPECT_EQ(metric_value(metrics,
                           "portcullis_hsm_signatures_total{key=\"pkcs11:token=edge;"
                           "object=server-rsa;type=private\",result=\"ok\"}"),
              9);
    EXPECT_EQ(daemon.log().find(pin), std::string::npos) << "the PIN appeared in the log";
}

TEST(HsmKeys, EveryKeySizeSigns) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("size-client");
    struct Size {
        const char* label;
        KeyKind kind;
        int version;
        const char* sigalgs;
    };
    int id = 0x10;
    for (const auto& size : {Size{"p384", KeyKind::ec_p384, TLS1_3_VERSION, "ECDSA+SHA384"},
                             Size{"rsa3072", KeyKind::rsa3072, TLS1_3_VERSION, "RSA-PSS+SHA256"},
                             Size{"rsa4096", KeyKind::rsa4096, TLS1_2_VERSION, "RSA+SHA256"}}) {
        CertOptions server;
        server.common_name = "localhost";
        server.dns_names = {"localhost"};
        server.client_auth = false;
        server.server_auth = true;
        server.key = size.kind;
        const auto cert = env.root.issue(server);
        write_file(env.dir / (std::string(size.label) + ".pem"), cert.cert_pem());
        write_file(env.dir / (std::string(size.label) + ".p8"), cert.key_pem());
        char id_hex[8];
        std::snprintf(id_hex, sizeof id_hex, "%02x", id++);
        ASSERT_TRUE(
            run("softhsm2-util --import " + (env.dir / (std::string(size.label) + ".p8")).string() +
                " --token edge --label " + size.label + " --id " + id_hex + " --pin " + pin));
        const int port = free_port();
        // The new key takes the place of the deployment's key of the same type.
        const std::string slot = size.kind == KeyKind::ec_p384 ? "server-ec" : "server-rsa";
        std::string config = hsm.config(port);
        config = replace_all(config, "chain = \"" + slot + ".pem\"",
                             "chain = \"" + std::string(size.label) + ".pem\"");
        config =
            replace_all(config, "object=" + slot + ";", "object=" + std::string(size.label) + ";");
        Daemon daemon(env.write_config(size.label, config), 1);
        const auto r =
            run_client(port, with_sigalgs(env.options_for(client), size.version, size.sigalgs));
        EXPECT_TRUE(r.exchanged) << size.label << ": " << r.error;
        EXPECT_EQ(r.server_key_type, size.kind == KeyKind::ec_p384 ? EVP_PKEY_EC : EVP_PKEY_RSA);
    }
}

TEST(HsmKeys, StartupErrorsNameTheTokenOrKeyAndNeverThePin) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    struct Case {
        std::string name, config, expected;
    };
    const int port = free_port();
    std::vector<Case> cases = {
        {"wrong_pin", replace_all(hsm.config(port), "pin_file = \"pin\"", "pin_file = \"wrong\""),
         "CKR_PIN_INCORRECT"},
        {"no_token", replace_all(hsm.config(port), "token = \"edge\"", "token = \"vault-9\""),
         "no token labelled \"vault-9\""},
        {"no_key", replace_all(hsm.config(port), "object=server-ec;", "object=missing-key;"),
         "pkcs11:token=edge;object=missing-key;type=private"},
        {"pin_in_uri",
         replace_all(hsm.config(port), "object=server-ec;type=private",
                     "object=server-ec;type=private?pin-value=1234"),
         "must not carry the PIN"},
    };
    write_file(env.dir / "wrong", "0000-not-it\n");
    for (const auto& c : cases) {
        ChildProcess daemon({binary_from_env("PORTCULLIS_BIN"), "--config",
                             env.write_config(c.name, c.config).string(), "--workers", "1"},
                            env.dir / (c.name + ".log"));
        const auto status = daemon.wait_exit(20s);
        ASSERT_TRUE(status.has_value()) << c.name << " did not stop";
        EXPECT_NE(*status, 0) << c.name;
        EXPECT_NE(daemon.log().find(c.expected), std::string::npos) << c.name << ":\n"
                                                                    << daemon.log();
        EXPECT_EQ(daemon.log().find(pin), std::string::npos) << c.name << ": PIN in the log";
        EXPECT_EQ(daemon.log().find("0000-not-it"), std::string::npos) << c.name;
    }
}

TEST(HsmAsync, WorkerKeepsServingWhileASignatureTakesLong) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("patient-client");
    const int port = free_port();
    Daemon daemon(env.write_config("async", hsm.config(port)), 1);
    auto options = env.options_for(client);
    options.min_version = options.max_version = TLS1_3_VERSION;
    auto first = run_client(port, options);
    ASSERT_TRUE(first.exchanged) << first.error;
    ASSERT_TRUE(first.session);

    hsm.control("latency_ms = 1500\n");
    std::atomic<bool> slow_done{false};
    std::thread slow([&] {
        const auto r = run_client(port, options);  // full handshake: waits for the HSM
        EXPECT_TRUE(r.exchanged) << r.error;
        slow_done = true;
    });
    std::this_thread::sleep_for(200ms);  // the slow handshake is now inside C_Sign
    auto resume = options;
    resume.resume_from = first.session.get();
    const auto quick = run_client(port, resume);  // no signature needed
    EXPECT_TRUE(quick.resumed) << quick.error;
    EXPECT_FALSE(slow_done.load()) << "the single worker blocked on the HSM";
    slow.join();
    EXPECT_TRUE(slow_done.load());
}

TEST(HsmFailures, InjectedErrorsFailOnlyTheAffectedHandshakes) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("unlucky-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("errors", hsm.config(port, "retry_interval_ms = 100\n", admin)),
                  1);
    const auto options = with_sigalgs(env.options_for(client), TLS1_3_VERSION, "ECDSA+SHA256");
    ASSERT_TRUE(run_client(port, options).exchanged);

    // Errors that end only the operation or its session: exactly the
    // handshakes whose signature failed are lost.
    for (const char* error :
         {"CKR_FUNCTION_FAILED", "CKR_SESSION_HANDLE_INVALID", "CKR_USER_NOT_LOGGED_IN"}) {
        hsm.control(std::string("fail_next = 3\nerror = ") + error + "\n");
        int failed = 0;
        for (int i = 0; i < 10; ++i) failed += run_client(port, options).exchanged ? 0 : 1;
        EXPECT_EQ(failed, 3) << error;
    }
    // A token-level error makes the token unhealthy: handshakes fail until the
    // next probe (retry_interval_ms) finds it answering again.
    hsm.control("fail_next = 1\nerror = CKR_DEVICE_REMOVED\n");
    EXPECT_FALSE(run_client(port, options).exchanged);
    std::this_thread::sleep_for(300ms);
    for (int i = 0; i < 5; ++i) {
        const auto r = run_client(port, options);
        EXPECT_TRUE(r.exchanged) << "did not recover: " << r.error;
    }
    EXPECT_TRUE(daemon.wait_for_log("reason=key_unavailable")) << daemon.log();
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_hsm_errors_total{code=\"CKR_DEVICE_REMOVED\"}"), 1);
    EXPECT_EQ(
        metric_value(metrics, "portcullis_hsm_errors_total{code=\"CKR_SESSION_HANDLE_INVALID\"}"),
        3);
    EXPECT_EQ(metric_value(metrics, "portcullis_hsm_errors_total{code=\"CKR_USER_NOT_LOGGED_IN\"}"),
              3);
    EXPECT_GE(metric_value(metrics, "portcullis_hsm_session_reopens_total"), 7);
    EXPECT_EQ(metric_value(metrics,
                           "portcullis_handshakes_total{listener=\"edge\",kind=\"full\","
                           "result=\"failed\"}"),
              metric_value(metrics,
                           "portcullis_hsm_signatures_total{key=\"pkcs11:token=edge;"
                           "object=server-ec;type=private\",result=\"error\"}"));
}

TEST(HsmFailures, ErrorsInjectedUnderConcurrentLoadCostExactlyTheirHandshakes) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("busy-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("load", hsm.config(port, "", admin)), 2);
    const auto options = with_sigalgs(env.options_for(client), TLS1_3_VERSION, "ECDSA+SHA256");
    const auto injected = [&] {
        return metric_value(http_request(admin, "GET", "/metrics").body,
                            "portcullis_hsm_errors_total{code=\"CKR_SESSION_HANDLE_INVALID\"}");
    };
    std::atomic<int> ok{0}, failed{0};
    std::atomic<bool> consumed{false};
    std::vector<std::thread> load;
    // The load outlasts the injected errors however fast the machine is: a
    // failure left for the check after the load would be blamed on it.
    for (int t = 0; t < 4; ++t) {
        load.emplace_back([&] {
            for (int i = 0; i < 15 || !consumed; ++i)
                (run_client(port, options).exchanged ? ok : failed)++;
        });
    }
    std::this_thread::sleep_for(100ms);
    // Each worker's module instance fails its next 2 signatures.
    hsm.control("fail_next = 2\nerror = CKR_SESSION_HANDLE_INVALID\n");
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (injected() < 4 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    consumed = true;
    for (auto& t : load) t.join();
    ASSERT_EQ(injected(), 4) << "both workers' modules must have failed two signatures each";
    EXPECT_GE(ok.load(), 56);
    EXPECT_EQ(failed.load(), 4) << "only the failed signatures may cost handshakes";
    EXPECT_TRUE(run_client(port, options).exchanged);
}

TEST(HsmFailures, FullQueueRefusesHandshakesAtOnceWithAClearReason) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("crowd-client");
    const int port = free_port();
    Daemon daemon(env.write_config("queue", hsm.config(port, "max_in_flight = 1\n")), 1);
    const auto options = with_sigalgs(env.options_for(client), TLS1_3_VERSION, "ECDSA+SHA256");
    hsm.control("latency_ms = 800\n");
    std::atomic<int> ok{0}, refused{0};
    std::vector<std::thread> crowd;
    for (int i = 0; i < 4; ++i)
        crowd.emplace_back([&] { (run_client(port, options).exchanged ? ok : refused)++; });
    for (auto& t : crowd) t.join();
    EXPECT_GE(ok.load(), 1);
    EXPECT_GE(refused.load(), 1) << "one signature in flight per key: the rest must be refused";
    EXPECT_TRUE(daemon.wait_for_log("HSM queue full")) << daemon.log();
}

TEST(HsmFailures, TimeoutFailsTheHandshakeAndServiceContinues) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("timeout-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(
        env.write_config("timeout", hsm.config(port, "operation_timeout_ms = 300\n", admin)), 1);
    const auto options = with_sigalgs(env.options_for(client), TLS1_3_VERSION, "ECDSA+SHA256");
    hsm.control("latency_ms = 1200\n");
    const auto slow = run_client(port, options);
    EXPECT_FALSE(slow.exchanged);
    hsm.control("");
    std::this_thread::sleep_for(1200ms);  // the late signature drains
    const auto after = run_client(port, options);
    EXPECT_TRUE(after.exchanged) << after.error;
    EXPECT_EQ(scrape(admin,
                     "portcullis_hsm_signatures_total{key=\"pkcs11:token=edge;object=server-"
                     "ec;type=private\",result=\"timeout\"}"),
              1);
}

TEST(HsmFailover, StandbyTokenTakesOverAndPrimaryTakesBack) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    hsm.token("edge-standby");
    const auto client = env.client("failover-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(
        env.write_config(
            "failover",
            hsm.config(port, "failover_token = \"edge-standby\"\nretry_interval_ms = 200\n",
                       admin)),
        1);
    const auto options = with_sigalgs(env.options_for(client), TLS1_3_VERSION, "ECDSA+SHA256");
    ASSERT_TRUE(run_client(port, options).exchanged);

    hsm.control("down_tokens = edge\n");
    int failed = 0;
    for (int i = 0; i < 10; ++i) failed += run_client(port, options).exchanged ? 0 : 1;
    EXPECT_LE(failed, 1) << "only the handshake that met the failure may fail";
    EXPECT_EQ(scrape(admin, "portcullis_hsm_failovers_total"), 1);
    EXPECT_EQ(scrape(admin, "portcullis_hsm_primary_token_healthy"), 0);
    EXPECT_TRUE(daemon.wait_for_log("fails over to \"edge-standby\"")) << daemon.log();
    const auto status = http_request(admin, "GET", "/status").body;
    EXPECT_NE(status.find("\"primary_token_healthy\": false"), std::string::npos) << status;
    EXPECT_NE(status.find("\"failover_token\": \"edge-standby\""), std::string::npos) << status;

    hsm.control("");
    std::this_thread::sleep_for(400ms);
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(run_client(port, options).exchanged);
    EXPECT_EQ(scrape(admin, "portcullis_hsm_failbacks_total"), 1);
    EXPECT_EQ(scrape(admin, "portcullis_hsm_primary_token_healthy"), 1);
}

TEST(HsmFailover, ResumedHandshakesNeedNoHsm) {
    SKIP_WITHOUT_SOFTHSM();
    TestDeployment env;
    SoftHsm hsm(env);
    hsm.token("edge");
    const auto client = env.client("returning-client");
    const int port = free_port();
    Daemon daemon(env.write_config("down", hsm.config(port, "retry_interval_ms = 100\n")), 2);
    for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        auto options = env.options_for(client);
        options.min_version = options.max_version = version;
        hsm.control("");
        std::this_thread::sleep_for(300ms);  // a token marked down is probed again
        auto first = run_client(port, options);
        ASSERT_TRUE(first.exchanged) << first.error;
        hsm.control("down_tokens = edge\n");
        options.resume_from = first.session.get();
        const auto resumed = run_client(port, options);
        EXPECT_TRUE(resumed.exchanged) << resumed.error;
        EXPECT_TRUE(resumed.resumed);
        options.resume_from = nullptr;
        const auto full = run_client(port, options);
        EXPECT_FALSE(full.exchanged) << "a full handshake cannot sign with the HSM down";
    }
    EXPECT_TRUE(daemon.wait_for_log("reason=key_unavailable")) << daemon.log();
}

}  // namespace
}  // namespace portcullis::testing
