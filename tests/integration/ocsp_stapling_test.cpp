// OCSP stapling (listener.tls.ocsp_stapling) end to end: a real `openssl ocsp`
// responder named by the leaf's Authority Information Access answers the
// daemon's requests, and `openssl s_client -status` sees the staple over TLS
// 1.3 and 1.2. Crafted responses from an HTTP server the test controls show
// what must never be stapled: a forged signature, a rollback to an older
// response, a response past its nextUpdate. A responder that is down costs the
// staple, never the handshake.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "tests/integration/environment.hpp"
#include "tests/integration/ocsp_responders.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

class OcspStapling : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have("openssl")) GTEST_SKIP() << "SKIPPED: the openssl command line tool is missing";
        write_file(env.dir / "stapled.pem", leaf.cert_pem() + server_ca.cert_pem());
        write_file(env.dir / "stapled.key", leaf.key_pem());
        write_file(env.dir / "c.pem", partner.cert_pem());
        write_file(env.dir / "c.key", partner.key_pem());
        write_file(env.dir / "client-ca.pem", env.client_ca.cert_pem());
    }

    // `responder` empty: the one the leaf names (the `openssl ocsp` port).
    std::filesystem::path config(const std::string& responder = "",
                                 const std::string& name = "stapling") {
        std::string tls = "ocsp_stapling = true\nocsp_stapling_refresh_s = 1\n";
        if (!responder.empty()) tls += "ocsp_stapling_responder = \"" + responder + "\"\n";
        auto listener = env.listener("edge", port, tls);
        listener = replace_all(listener,
                               "[[listener.tls.certificate]]\nchain = \"server-ec.pem\"\nkey = "
                               "\"server-ec.key\"\n[[listener.tls.certificate]]\nchain = "
                               "\"server-rsa.pem\"\nkey = \"server-rsa.key\"\n",
                               "[[listener.tls.certificate]]\nchain = \"stapled.pem\"\nkey = "
                               "\"stapled.key\"\n");
        return env.write_config(
            name, "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                      "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = 500\n\n" +
                      listener);
    }

    // A real `openssl ocsp` responder on ocsp_port answering for server_ca:
    // `revoked` decides the leaf's entry.
    std::unique_ptr<ChildProcess> start_responder(bool revoked) {
        return start_openssl_responder(env.dir, server_ca, index_entry(leaf.cert.get(), revoked),
                                       ocsp_port);
    }

    // `openssl s_client -status` with the partner's certificate: what it
    // printed, after a handshake that must succeed.
    std::string s_client(const char* version) {
        const auto d = env.dir.string();
        const auto result =
            run("timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                " -servername localhost -status " + version + " -cert " + d + "/c.pem -key " + d +
                "/c.key -cert_chain " + d + "/client-ca.pem -CAfile " + d +
                "/root.pem -verify_return_error </dev/null");
        EXPECT_EQ(result.status, 0) << result.output;
        EXPECT_NE(result.output.find("Verify return code: 0 (ok)"), std::string::npos)
            << result.output;
        return result.output;
    }

    // Polls s_client until its output has `text` (the workers load a new
    // staple when the fetcher signals them, not at once).
    bool staple_shows(const std::string& text, const char* version = "-tls1_3",
                      std::chrono::milliseconds within = 8s) {
        const auto until = std::chrono::steady_clock::now() + within;
        do {
            if (s_client(version).find(text) != std::string::npos) return true;
            std::this_thread::sleep_for(100ms);
        } while (std::chrono::steady_clock::now() < until);
        return false;
    }

    std::string metrics() {
        for (int attempt = 0; attempt < 200; ++attempt) {
            const auto response = http_request(admin, "GET", "/metrics");
            if (response.status == 200) return response.body;
            std::this_thread::sleep_for(25ms);
        }
        return "";
    }

    // Sum of the samples of `family` whose labels contain `labels_part`.
    double sum_of(const std::string& family, const std::string& labels_part) {
        std::istringstream lines(metrics());
        double sum = 0;
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind(family + "{", 0) != 0) continue;
            const auto close = line.find('}');
            if (close == std::string::npos) continue;
            if (line.substr(0, close).find(labels_part) == std::string::npos) continue;
            sum += std::stod(line.substr(close + 1));
        }
        return sum;
    }

    TestDeployment env;
    const int port = free_port();
    const int admin = free_port();
    const int ocsp_port = free_port();
    const CertificateAuthority server_ca = env.root.intermediate("Test Server CA");
    const IssuedCert leaf = [this] {
        auto options = localhost_server();
        options.ocsp_url = "http://127.0.0.1:" + std::to_string(ocsp_port) + "/";
        return server_ca.issue(options);
    }();
    const IssuedCert partner = env.client("partner");
};

constexpr const char* no_staple = "OCSP response: no response sent";
constexpr const char* good_staple = "Cert Status: good";

TEST_F(OcspStapling, TheResponderNamedByTheLeafIsAskedAndItsAnswerStapledOverTls13And12) {
    const auto responder = start_responder(false);
    Daemon daemon(config(), 2);
    ASSERT_TRUE(staple_shows(good_staple)) << daemon.log() << responder->log();
    const auto tls13 = s_client("-tls1_3");
    EXPECT_NE(tls13.find("OCSP Response Status: successful"), std::string::npos) << tls13;
    EXPECT_NE(tls13.find("Responder Id: "), std::string::npos) << tls13;
    EXPECT_TRUE(staple_shows(good_staple, "-tls1_2")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("ocsp staple updated listener=edge")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("cert_status=good")) << daemon.log();
    EXPECT_GE(sum_of("portcullis_ocsp_staples_sent_total", "listener=\"edge\""), 3);
    EXPECT_GE(
        sum_of("portcullis_ocsp_staple_fetches_total",
               "responder=\"http://127.0.0.1:" + std::to_string(ocsp_port) + "/\",result=\"ok\""),
        1);
    EXPECT_GT(
        sum_of("portcullis_ocsp_staple_fetched_next_update_timestamp_seconds", "listener=\"edge\""),
        static_cast<double>(std::time(nullptr)));
    // A client that does not ask gets no staple and the same service.
    const auto plain = run_client(port, env.options_for(partner));
    EXPECT_TRUE(plain.exchanged) << plain.error << "\n" << daemon.log();
}

TEST_F(OcspStapling, ARevokedAnswerIsStapledAsItIsAndLoggedAsAnError) {
    auto responder = start_responder(false);
    Daemon daemon(config());
    ASSERT_TRUE(staple_shows(good_staple)) << daemon.log();
    responder.reset();
    responder = start_responder(true);
    EXPECT_TRUE(staple_shows("Cert Status: revoked")) << daemon.log() << responder->log();
    EXPECT_TRUE(daemon.wait_for_log("cert_status=revoked")) << daemon.log();
    EXPECT_NE(daemon.log().find(" error [revocation-fetcher] ocsp staple updated"),
              std::string::npos)
        << daemon.log();
}

TEST_F(OcspStapling, AResponderThatIsDownCostsTheStapleNeverTheHandshake) {
    Daemon daemon(config());
    EXPECT_TRUE(daemon.wait_for_log("ocsp staple fetch failed listener=edge")) << daemon.log();
    EXPECT_NE(s_client("-tls1_3").find(no_staple), std::string::npos) << daemon.log();
    EXPECT_NE(s_client("-tls1_2").find(no_staple), std::string::npos) << daemon.log();
    EXPECT_GE(sum_of("portcullis_ocsp_staple_fetches_total", "result=\"failed\""), 1);
    EXPECT_EQ(sum_of("portcullis_ocsp_staples_sent_total", "listener=\"edge\""), 0);
    // The responder comes up: the next round (at most refresh_s after a
    // failure, here 1 s) staples with no reload.
    const auto responder = start_responder(false);
    EXPECT_TRUE(staple_shows(good_staple, "-tls1_3", 10s)) << daemon.log();
}

TEST_F(OcspStapling, AForgedResponseIsRefusedAndNothingIsStapled) {
    CraftedResponder crafted;
    // The issuer's name with a key of its own.
    const auto forger = env.root.intermediate("Test Server CA");
    OcspResponseOptions forged;
    forged.signer = forger.cert();
    forged.signer_key = forger.key();
    crafted.serve(server_ca.ocsp_response_der(leaf.cert.get(), forged));
    Daemon daemon(config(crafted.url()));
    EXPECT_TRUE(daemon.wait_for_log("response refused: not signed by the issuer")) << daemon.log();
    EXPECT_NE(s_client("-tls1_3").find(no_staple), std::string::npos) << daemon.log();
    EXPECT_GE(crafted.requests(), 1);
    const auto result = run_client(port, env.options_for(partner));
    EXPECT_TRUE(result.exchanged) << result.error << "\n" << daemon.log();
}

TEST_F(OcspStapling, AnOlderResponseIsRefusedAndTheNewerOneStaysStapled) {
    CraftedResponder crafted;
    crafted.serve(server_ca.ocsp_response_der(leaf.cert.get()));
    Daemon daemon(config(crafted.url()));
    ASSERT_TRUE(staple_shows(good_staple)) << daemon.log();
    // An older "good" replayed, e.g. to hide a revocation that came after it.
    OcspResponseOptions older;
    older.this_update_offset_s = -1800;
    crafted.serve(server_ca.ocsp_response_der(leaf.cert.get(), older));
    EXPECT_TRUE(daemon.wait_for_log("response refused: older than the one kept")) << daemon.log();
    EXPECT_TRUE(staple_shows(good_staple)) << daemon.log();
}

TEST_F(OcspStapling, AResponsePastItsNextUpdateIsNeverStapled) {
    CraftedResponder crafted;
    OcspResponseOptions short_lived;
    short_lived.next_update_offset_s = 3;
    crafted.serve(server_ca.ocsp_response_der(leaf.cert.get(), short_lived));
    Daemon daemon(config(crafted.url()));
    ASSERT_TRUE(staple_shows(good_staple, "-tls1_3", 2s)) << daemon.log();
    crafted.serve("");  // the responder fails from now on: nothing fresher comes
    std::this_thread::sleep_for(4s);
    EXPECT_NE(s_client("-tls1_3").find(no_staple), std::string::npos) << daemon.log();
    EXPECT_NE(s_client("-tls1_2").find(no_staple), std::string::npos) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("ocsp staple fetch failed")) << daemon.log();
}

}  // namespace
}  // namespace portcullis::testing
