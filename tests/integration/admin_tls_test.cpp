// The admin listener over mutual TLS, driven by curl as an operator or a
// Prometheus scraper would: each role reaches exactly its routes, a wrong
// role gets 403 and a log line, and a client without a certificate the admin
// trust accepts (none, another CA, revoked, no clientAuth) fails the
// handshake with a log line saying why. The management PKI is its own,
// apart from the partners'.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

class AdminTls : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        mgmt_root = std::make_unique<CertificateAuthority>(CertificateAuthority::root("Mgmt Root"));
        mgmt_ca = std::make_unique<CertificateAuthority>(mgmt_root->intermediate("Mgmt Clients"));
        CertOptions server;
        server.common_name = "localhost";
        server.dns_names = {"localhost"};
        server.client_auth = false;
        server.server_auth = true;
        const auto admin_cert = mgmt_root->issue(server);
        write_file(env->dir / "admin.pem", admin_cert.cert_pem());
        write_file(env->dir / "admin.key", admin_cert.key_pem());
        write_file(env->dir / "mgmt-root.pem", mgmt_root->cert_pem());

        issue("prometheus", *mgmt_ca, {});
        issue("ops-alice", *mgmt_ca, {});
        issue("intern", *mgmt_ca, {});
        CertOptions no_eku;
        no_eku.include_eku = false;
        issue("ops-noeku", *mgmt_ca, no_eku);
        const auto revoked = issue("ops-revoked", *mgmt_ca, {});
        mgmt_ca->revoke(revoked.cert.get());
        // A partner of the traffic listener: trusted there, not here.
        const auto partner = env->client("ops-partner");
        write_file(env->dir / "ops-partner.pem", partner.cert_pem() + env->client_ca.cert_pem());
        write_file(env->dir / "ops-partner.key", partner.key_pem());
        write_file(env->dir / "mgmt.crl.pem", mgmt_ca->crl_pem() + mgmt_root->crl_pem());

        admin_port = free_port();
        const std::string admin =
            "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin_port) +
            "\"\n  [admin.tls]\n  certificate = \"admin.pem\"\n  key = \"admin.key\"\n"
            "  trust_bundle = \"mgmt-root.pem\"\n  crl_files = [\"mgmt.crl.pem\"]\n"
            "    [admin.tls.scrape]\n    subjects = [\"CN=prometheus,O=Portcullis Test,C=GB\"]\n"
            "    [admin.tls.operator]\n    subjects = [\"CN=ops-*,O=Portcullis Test,C=GB\"]\n\n";
        daemon = std::make_unique<Daemon>(
            env->write_config("admin-tls", admin + env->listener("edge", free_port())));
    }
    static void TearDownTestSuite() {
        daemon.reset();
        mgmt_ca.reset();
        mgmt_root.reset();
        env.reset();
    }
    void SetUp() override {
        if (!have("curl")) GTEST_SKIP() << "SKIPPED LOUDLY: curl is not installed";
        ASSERT_TRUE(admin_ready()) << daemon->log();
    }

    static IssuedCert issue(const std::string& cn, const CertificateAuthority& ca,
                            CertOptions options) {
        options.common_name = cn;
        auto cert = ca.issue(options);
        write_file(env->dir / (cn + ".pem"), cert.cert_pem() + ca.cert_pem());
        write_file(env->dir / (cn + ".key"), cert.key_pem());
        return cert;
    }

    // curl as the client `who` ("" = no certificate): the HTTP status, or 0
    // when no response came (the handshake failed).
    static int status_of(const std::string& who, const std::string& method, const std::string& path,
                         std::string* body = nullptr) {
        std::string command = "curl -sS --max-time 10 -o " + (env->dir / "body").string() +
                              " -w '%{http_code}' -X " + method + " --cacert " +
                              (env->dir / "mgmt-root.pem").string();
        if (!who.empty()) {
            command += " --cert " + (env->dir / (who + ".pem")).string() + " --key " +
                       (env->dir / (who + ".key")).string();
        }
        command += " https://localhost:" + std::to_string(admin_port) + path;
        const auto result = run(command);
        if (body) *body = read_file(env->dir / "body");
        const auto code =
            result.output.substr(result.output.size() >= 3 ? result.output.size() - 3 : 0);
        return result.status == 0 ? std::stoi(code) : 0;
    }

    static bool admin_ready() {
        for (int i = 0; i < 200; ++i) {
            if (status_of("prometheus", "GET", "/healthz") == 200) return true;
            std::this_thread::sleep_for(25ms);
        }
        return false;
    }

    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<CertificateAuthority> mgmt_root, mgmt_ca;
    static inline std::unique_ptr<Daemon> daemon;
    static inline int admin_port = 0;
};

TEST_F(AdminTls, ScrapeRoleReadsMetricsAndHealthOnly) {
    std::string body;
    EXPECT_EQ(status_of("prometheus", "GET", "/metrics", &body), 200);
    EXPECT_NE(body.find("portcullis_workers "), std::string::npos) << body.substr(0, 300);
    EXPECT_EQ(status_of("prometheus", "GET", "/healthz"), 200);
    EXPECT_EQ(status_of("prometheus", "GET", "/readyz"), 200);

    EXPECT_EQ(status_of("prometheus", "GET", "/status", &body), 403);
    EXPECT_NE(body.find("needs the operator role"), std::string::npos) << body;
    EXPECT_EQ(status_of("prometheus", "POST", "/reload"), 403);
    EXPECT_TRUE(daemon->wait_for_log(
        "admin: 403 POST /reload from 127.0.0.1 for CN=prometheus,O=Portcullis Test,C=GB (role "
        "scrape, needs operator)"))
        << daemon->log();
}

TEST_F(AdminTls, OperatorRoleReachesEveryRoute) {
    std::string body;
    EXPECT_EQ(status_of("ops-alice", "GET", "/metrics"), 200);
    EXPECT_EQ(status_of("ops-alice", "GET", "/status", &body), 200);
    EXPECT_NE(body.find("\"supervisor_pid\""), std::string::npos) << body.substr(0, 300);
    EXPECT_EQ(status_of("ops-alice", "POST", "/reload", &body), 200);
    EXPECT_NE(body.find("\"result\":\"success\""), std::string::npos) << body;
    EXPECT_EQ(status_of("ops-alice", "GET", "/reload"), 405);
}

TEST_F(AdminTls, VerifiedClientWithoutARoleGetsForbidden) {
    EXPECT_EQ(status_of("intern", "GET", "/metrics"), 403);
    EXPECT_EQ(status_of("intern", "GET", "/healthz"), 403);
    EXPECT_TRUE(
        daemon->wait_for_log("for CN=intern,O=Portcullis Test,C=GB (role none, needs scrape)"))
        << daemon->log();
}

TEST_F(AdminTls, ClientsTheAdminTrustRefusesFailTheHandshakeWithALogLine) {
    EXPECT_EQ(status_of("", "GET", "/healthz"), 0);
    EXPECT_TRUE(daemon->wait_for_log("failed, sent alert: certificate required")) << daemon->log();

    EXPECT_EQ(status_of("ops-partner", "GET", "/healthz"), 0);
    EXPECT_TRUE(daemon->wait_for_log("unable to get local issuer certificate")) << daemon->log();

    EXPECT_EQ(status_of("ops-revoked", "GET", "/healthz"), 0);
    EXPECT_TRUE(daemon->wait_for_log("CN=ops-revoked,O=Portcullis Test,C=GB from 127.0.0.1:"))
        << daemon->log();
    EXPECT_TRUE(daemon->wait_for_log("certificate revoked")) << daemon->log();

    EXPECT_EQ(status_of("ops-noeku", "GET", "/healthz"), 0);
    EXPECT_TRUE(daemon->wait_for_log("CN=ops-noeku,O=Portcullis Test,C=GB from 127.0.0.1:"))
        << daemon->log();
    EXPECT_TRUE(daemon->wait_for_log("no extendedKeyUsage clientAuth")) << daemon->log();

    // Plain HTTP to the TLS port gets no answer.
    EXPECT_EQ(http_request(admin_port, "GET", "/healthz").status, 0);
}

// Debian's Prometheus, configured as a bank would: scheme https, tls_config
// with the scraper's client certificate. The scrape role's job is up and its
// samples are stored; a job presenting a certificate without a role is down
// with the 403 in its last error.
TEST_F(AdminTls, PrometheusScrapesWithItsClientCertificate) {
    if (!have("prometheus")) GTEST_SKIP() << "SKIPPED LOUDLY: prometheus is not installed";
    const auto dir = env->dir;
    const auto job = [&](const std::string& name, const std::string& who) {
        return "  - job_name: " + name + "\n    scheme: https\n    tls_config:\n" +
               "      ca_file: " + (dir / "mgmt-root.pem").string() + "\n" +
               "      cert_file: " + (dir / (who + ".pem")).string() + "\n" +
               "      key_file: " + (dir / (who + ".key")).string() + "\n" +
               "      server_name: localhost\n" +
               "    static_configs:\n      - targets: ['127.0.0.1:" + std::to_string(admin_port) +
               "']\n";
    };
    write_file(dir / "prometheus.yml",
               "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
               "scrape_configs:\n" +
                   job("portcullis", "prometheus") + job("intruder", "intern"));
    const int web = free_port();
    auto binary = run("command -v prometheus").output;
    binary.erase(binary.find_last_not_of("\n") + 1);
    ChildProcess prometheus({binary, "--config.file=" + (dir / "prometheus.yml").string(),
                             "--storage.tsdb.path=" + (dir / "tsdb").string(),
                             "--web.listen-address=127.0.0.1:" + std::to_string(web)},
                            dir / "prometheus.log");
    std::string portcullis_health, intruder_health, intruder_error;
    for (int i = 0; i < 300 && (portcullis_health != "up" || intruder_health != "down"); ++i) {
        std::this_thread::sleep_for(100ms);
        const auto targets = http_request(web, "GET", "/api/v1/targets");
        if (targets.status != 200) continue;
        const auto parsed = nlohmann::json::parse(targets.body, nullptr, false);
        if (parsed.is_discarded()) continue;
        for (const auto& target : parsed["data"]["activeTargets"]) {
            const auto name = target["labels"]["job"].get<std::string>();
            if (name == "portcullis") portcullis_health = target["health"].get<std::string>();
            if (name == "intruder") {
                intruder_health = target["health"].get<std::string>();
                intruder_error = target["lastError"].get<std::string>();
            }
        }
    }
    EXPECT_EQ(portcullis_health, "up") << prometheus.log();
    EXPECT_EQ(intruder_health, "down");
    EXPECT_NE(intruder_error.find("403"), std::string::npos) << intruder_error;

    const auto query = http_request(
        web, "GET", "/api/v1/query?query=portcullis_workers%7Bjob%3D%22portcullis%22%7D");
    EXPECT_NE(query.body.find("\"value\":["), std::string::npos) << query.body;
    EXPECT_NE(query.body.find(",\"1\"]"), std::string::npos) << query.body;  // one worker
}

}  // namespace
}  // namespace portcullis::testing
