// Real third-party clients, unchanged, against the real daemon with an HTTP
// backend: curl, openssl s_client, Python ssl, Node https, axios. Each skips
// loudly when its tool is not installed.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

class RealClients : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        http = std::make_unique<Backend>(
            env->dir, std::vector<std::string>{"--mode", "http", "--proxy-protocol"});
        const auto client = env->client("real-client");
        write_file(env->dir / "client.pem", client.cert_pem() + env->client_ca.cert_pem());
        write_file(env->dir / "client.key", client.key_pem());
        write_file(env->dir / "client-ca.pem", env->client_ca.cert_pem());
        port = free_port();
        const std::string config =
            env->listener("edge", port, "alpn = [\"http/1.1\"]\n", "", "", http->port());
        daemon = std::make_unique<Daemon>(env->write_config("real", config), 2);
    }
    static void TearDownTestSuite() {
        daemon.reset();
        http.reset();
        env.reset();
    }
    static std::string file(const char* name) { return (env->dir / name).string(); }
    static std::string url() { return "https://localhost:" + std::to_string(port) + "/"; }
    static std::string clients_dir() { return binary_from_env("CLIENTS_DIR"); }

    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<Backend> http;
    static inline std::unique_ptr<Daemon> daemon;
    static inline int port;
};

TEST_F(RealClients, Curl) {
    if (!have("curl")) GTEST_SKIP() << "SKIPPED LOUDLY: curl is not installed";
    const auto r = run("curl -sS --max-time 10 --cacert " + file("root.pem") + " --cert " +
                       file("client.pem") + " --key " + file("client.key") + " " + url());
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("subject=CN=real-client,O=Portcullis Test,C=GB"), std::string::npos)
        << r.output;
}

TEST_F(RealClients, CurlWithoutCertificateIsRefused) {
    if (!have("curl")) GTEST_SKIP() << "SKIPPED LOUDLY: curl is not installed";
    const auto r = run("curl -sS --max-time 10 --cacert " + file("root.pem") + " " + url());
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("alert"), std::string::npos) << r.output;
}

TEST_F(RealClients, OpensslSClient) {
    if (!have("openssl")) GTEST_SKIP() << "SKIPPED LOUDLY: openssl is not installed";
    const auto r =
        run("printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' | "
            "timeout 10 openssl s_client -connect 127.0.0.1:" +
            std::to_string(port) + " -servername localhost -CAfile " + file("root.pem") +
            " -cert " + file("client.pem") + " -key " + file("client.key") + " -cert_chain " +
            file("client-ca.pem") + " -verify_return_error -ign_eof");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("Verify return code: 0 (ok)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("HTTP/1.1 200 OK"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
}

// OpenSSL 3.5's s_client offers the hybrid post-quantum group first and
// Portcullis's default prefers it; a client that lacks it falls back to
// X25519 without failing. Both sides of the handshake are real OpenSSL 3.5.
TEST_F(RealClients, OpensslSClientNegotiatesHybridPostQuantumGroup) {
    if (!have("openssl")) GTEST_SKIP() << "SKIPPED LOUDLY: openssl is not installed";
    for (const auto& [groups, expected] : std::vector<std::pair<std::string, std::string>>{
             {"", "X25519MLKEM768"}, {"X25519:P-256", "X25519"}}) {
        const auto r =
            run("printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: "
                "close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect 127.0.0.1:" +
                std::to_string(port) + " -servername localhost -tls1_3 -CAfile " +
                file("root.pem") + " -cert " + file("client.pem") + " -key " + file("client.key") +
                " -cert_chain " + file("client-ca.pem") +
                (groups.empty() ? "" : " -groups " + groups) + " -verify_return_error -ign_eof");
        EXPECT_EQ(r.status, 0) << r.output;
        EXPECT_NE(r.output.find(expected), std::string::npos)
            << "offered " << (groups.empty() ? "the default groups" : groups) << ":\n"
            << r.output;
        EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
    }
}

// A TLS 1.2 client keeps its ticket until the server renews it: s_client,
// pinned to TLS 1.2, resumes the same session on each visit, whichever of
// the two workers it lands on (one that decrypted the ticket before resumes
// from its decoded copy, by the session ID s_client sends beside it).
TEST_F(RealClients, OpensslSClientResumesATls12TicketOnEveryVisit) {
    if (!have("openssl")) GTEST_SKIP() << "SKIPPED LOUDLY: openssl is not installed";
    const std::string session = file("tls12.session");
    for (int visit = 0; visit < 5; ++visit) {
        SCOPED_TRACE(visit);
        const auto r =
            run("printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: "
                "close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect 127.0.0.1:" +
                std::to_string(port) + " -servername localhost -tls1_2 -CAfile " +
                file("root.pem") + " -cert " + file("client.pem") + " -key " + file("client.key") +
                " -cert_chain " + file("client-ca.pem") + " -sess_out " + session +
                (visit > 0 ? " -sess_in " + session : "") + " -verify_return_error -ign_eof");
        EXPECT_EQ(r.status, 0) << r.output;
        EXPECT_NE(r.output.find(visit == 0 ? "New, TLSv1.2" : "Reused, TLSv1.2"), std::string::npos)
            << r.output;
        EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
    }
}

TEST_F(RealClients, PythonSsl) {
    if (!have("python3")) GTEST_SKIP() << "SKIPPED LOUDLY: python3 is not installed";
    const auto r = run("timeout 20 python3 " + clients_dir() + "/python_ssl.py localhost " +
                       std::to_string(port) + " " + file("client.pem") + " " + file("client.key") +
                       " " + file("root.pem"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("status=200"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
}

TEST_F(RealClients, NodeHttpsModule) {
    if (!have("node")) GTEST_SKIP() << "SKIPPED LOUDLY: node is not installed";
    const auto r = run("timeout 20 node " + clients_dir() + "/node_https.js " + url() + " " +
                       file("client.pem") + " " + file("client.key") + " " + file("root.pem"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("status=200"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
}

TEST_F(RealClients, AxiosWithHttpsAgent) {
    if (!have("node")) GTEST_SKIP() << "SKIPPED LOUDLY: node is not installed";
    if (!std::filesystem::exists(clients_dir() + "/node_modules/axios")) {
        GTEST_SKIP() << "SKIPPED LOUDLY: axios is not installed (run npm ci in tests/clients)";
    }
    const auto r = run("timeout 20 node " + clients_dir() + "/node_axios.js " + url() + " " +
                       file("client.pem") + " " + file("client.key") + " " + file("root.pem"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("status=200"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("verified=yes"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace portcullis::testing
