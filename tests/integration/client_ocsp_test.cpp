// OCSP for client certificates (listener.tls.ocsp) against a real
// `openssl ocsp -index` responder named by each partner's Authority
// Information Access: good, revoked and unknown answers; a responder that is
// down under "hard" and "soft"; a forged answer; nonces; and returning
// partners answered from the worker's memory or the shared cache with no
// request to the responder.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "tests/integration/environment.hpp"
#include "tests/integration/ocsp_responders.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

class ClientOcsp : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have("openssl")) GTEST_SKIP() << "SKIPPED: the openssl command line tool is missing";
    }

    IssuedCert partner(const std::string& cn) const {
        CertOptions options;
        options.ocsp_url = "http://127.0.0.1:" + std::to_string(ocsp_port) + "/";
        return env.client(cn, options);
    }

    std::filesystem::path config(const std::string& tls_extra, const std::string& name = "ocsp") {
        return env.write_config(
            name,
            "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = 1000\n\n" +
                env.listener("edge", port, tls_extra));
    }

    std::unique_ptr<ChildProcess> responder(const std::string& index) {
        return start_openssl_responder(env.dir, env.client_ca, index, ocsp_port);
    }

    // Requests the `openssl ocsp` responder logged it received.
    static int requests(const ChildProcess& responder) {
        const auto log = responder.log();
        int n = 0;
        for (auto at = log.find("received request"); at != std::string::npos;
             at = log.find("received request", at + 1))
            ++n;
        return n;
    }

    double checks(const std::string& source, const std::string& status) {
        for (int attempt = 0; attempt < 200; ++attempt) {
            const auto response = http_request(admin, "GET", "/metrics");
            if (response.status == 200) {
                return metric_value(
                    response.body,
                    "portcullis_ocsp_client_checks_total{listener=\"edge\",source=\"" + source +
                        "\",status=\"" + status + "\"}");
            }
            std::this_thread::sleep_for(25ms);
        }
        return -1;
    }

    double metric(const std::string& sample) {
        const auto response = http_request(admin, "GET", "/metrics");
        return response.status == 200 ? metric_value(response.body, sample) : -1;
    }

    TestDeployment env;
    const int port = free_port();
    const int admin = free_port();
    const int ocsp_port = free_port();
    const IssuedCert good = partner("good");
    const IssuedCert revoked = partner("revoked");
    const IssuedCert unlisted = partner("unlisted");
    const std::string index =
        index_entry(good.cert.get(), false) + index_entry(revoked.cert.get(), true);
};

TEST_F(ClientOcsp, GoodRevokedAndUnknownAnswersDecideAndReturningPartnersAreAnsweredFromMemory) {
    const auto ocsp = responder(index);
    Daemon daemon(config("ocsp = \"leaf\"\n"));
    const auto first = run_client(port, env.options_for(good));
    ASSERT_TRUE(first.exchanged) << first.error << " alert=" << first.alert << "\n" << daemon.log();
    EXPECT_EQ(requests(*ocsp), 1);
    for (int i = 0; i < 20; ++i) {
        const auto again = run_client(port, env.options_for(good));
        EXPECT_TRUE(again.exchanged) << again.error;
    }
    EXPECT_EQ(requests(*ocsp), 1) << "a returning partner went back to the responder";
    EXPECT_EQ(checks("responder", "good"), 1);
    EXPECT_EQ(checks("memory", "good"), 20);

    const auto refused = run_client(port, env.options_for(revoked));
    EXPECT_FALSE(refused.exchanged);
    EXPECT_EQ(refused.alert, "certificate revoked") << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log(rejection_marker(refused.local_port, "revoked")))
        << daemon.log();
    EXPECT_EQ(checks("responder", "revoked"), 1);
    // Known revoked: refused from memory, with no new request.
    EXPECT_FALSE(run_client(port, env.options_for(revoked)).exchanged);
    EXPECT_EQ(checks("memory", "revoked"), 1);

    const auto unknown = run_client(port, env.options_for(unlisted));
    EXPECT_FALSE(unknown.exchanged);
    EXPECT_TRUE(daemon.wait_for_log(rejection_marker(unknown.local_port, "ocsp_unavailable")))
        << daemon.log();
    EXPECT_EQ(checks("responder", "unknown"), 1);
    std::cout << "responder requests for 24 handshakes of 3 partners: " << requests(*ocsp) << "\n";
}

TEST_F(ClientOcsp, WorkersShareTheAnswersTheyFetched) {
    const auto ocsp = responder(index);
    Daemon daemon(config("ocsp = \"leaf\"\n"), 4);
    int accepted = 0;
    for (int i = 0; i < 40; ++i) accepted += run_client(port, env.options_for(good)).exchanged;
    EXPECT_EQ(accepted, 40) << daemon.log();
    const double responder_answers = checks("responder", "good");
    const double shared = checks("shared_cache", "good");
    const double memory = checks("memory", "good");
    EXPECT_EQ(responder_answers + shared + memory, 40);
    // Sequential handshakes: the first worker asks and keeps the answer, the
    // others find it on disk.
    EXPECT_EQ(requests(*ocsp), 1) << daemon.log();
    EXPECT_EQ(responder_answers, 1);
    std::cout << "40 handshakes on 4 workers: responder " << responder_answers << ", shared cache "
              << shared << ", memory " << memory << " (hit rate " << (shared + memory) / 40.0 * 100
              << "%)\n";
}

TEST_F(ClientOcsp, AResponderThatIsDownRefusesUnderHardAndServesUnderSoft) {
    {
        Daemon daemon(config("ocsp = \"leaf\"\n"));
        const auto start = std::chrono::steady_clock::now();
        const auto result = run_client(port, env.options_for(good));
        EXPECT_FALSE(result.exchanged);
        EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
        EXPECT_TRUE(daemon.wait_for_log(rejection_marker(result.local_port, "ocsp_unavailable")))
            << daemon.log();
        EXPECT_EQ(checks("responder", "unavailable"), 1);
    }
    Daemon daemon(config("ocsp = \"leaf\"\nocsp_failure = \"soft\"\n", "soft"));
    const auto result = run_client(port, env.options_for(good));
    EXPECT_TRUE(result.exchanged) << result.error << "\n" << daemon.log();
    EXPECT_EQ(metric("portcullis_ocsp_client_soft_accepted_total{listener=\"edge\"}"), 1);
}

TEST_F(ClientOcsp, AHandshakeWaitingForTheResponderHoldsUpNoOtherConnection) {
    CraftedResponder crafted;
    crafted.serve(env.client_ca.ocsp_response_der(good.cert.get()));
    const auto slow = partner("slow");
    std::string tls = "ocsp = \"leaf\"\nocsp_responder = \"" + crafted.url() + "\"\n";
    const auto body = env.listener("edge", port, tls);
    Daemon daemon(env.write_config(
        "slow", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                    "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = 5000\n\n" +
                    body));
    ASSERT_TRUE(run_client(port, env.options_for(good)).exchanged) << daemon.log();

    crafted.delay(1500ms);
    crafted.serve(env.client_ca.ocsp_response_der(slow.cert.get()));
    std::atomic<bool> slow_done{false};
    ClientResult slow_result;
    std::thread waiting([&] {
        slow_result = run_client(port, env.options_for(slow));
        slow_done = true;
    });
    std::this_thread::sleep_for(300ms);  // the slow lookup is in flight on the one worker
    const auto other = run_client(port, env.options_for(good));
    const bool overtaken = !slow_done;
    waiting.join();
    EXPECT_TRUE(other.exchanged) << other.error << "\n" << daemon.log();
    EXPECT_TRUE(overtaken) << "the returning partner waited for the other's OCSP lookup";
    EXPECT_TRUE(slow_result.exchanged) << slow_result.error << "\n" << daemon.log();
}

// ocsp = "chain": each intermediate is asked about too, of its own issuer's
// responder. Two partner CAs under one root, one revoked by the root.
TEST_F(ClientOcsp, WithChainTheIntermediateIsAskedAboutTooAndARevokedOneRefusesItsPartners) {
    const int root_port = free_port();
    const int kept_ca_port = free_port();
    const int dropped_ca_port = free_port();
    const auto url = [](int p) { return "http://127.0.0.1:" + std::to_string(p) + "/"; };
    const auto root = CertificateAuthority::root("Partner Root");
    const auto kept_ca = root.intermediate("Kept Partner CA", KeyKind::ec_p256, url(root_port));
    const auto dropped_ca =
        root.intermediate("Dropped Partner CA", KeyKind::ec_p256, url(root_port));
    CertOptions options;
    options.ocsp_url = url(kept_ca_port);
    const auto kept = kept_ca.issue(options);
    options.ocsp_url = url(dropped_ca_port);
    const auto dropped = dropped_ca.issue(options);
    const auto root_responder = start_openssl_responder(
        env.dir, root, index_entry(kept_ca.cert(), false) + index_entry(dropped_ca.cert(), true),
        root_port);
    const auto kept_responder = start_openssl_responder(
        env.dir, kept_ca, index_entry(kept.cert.get(), false), kept_ca_port);
    const auto dropped_responder = start_openssl_responder(
        env.dir, dropped_ca, index_entry(dropped.cert.get(), false), dropped_ca_port);
    write_file(env.dir / "partner-root.pem", root.cert_pem());
    const auto client = [&](const IssuedCert& leaf, const CertificateAuthority& ca) {
        ClientOptions o;
        o.cert = leaf.cert.get();
        o.key = leaf.key.get();
        o.chain.push_back(ca.cert());
        o.trusted_server_ca = env.root.cert();
        return run_client(port, o);
    };
    const auto listener_with = [&](const std::string& mode) {
        auto listener = env.listener("edge", port, "ocsp = \"" + mode + "\"\n");
        listener = replace_all(listener, "trust_bundle = \"root.pem\"",
                               "trust_bundle = \"partner-root.pem\"");
        return replace_all(listener, "crl_files = [\"root.crl\", \"client-ca.crl\"]\n", "");
    };
    {
        // The leaf alone: the revoked CA goes unnoticed.
        Daemon daemon(env.write_config("leaf", listener_with("leaf")));
        EXPECT_TRUE(client(dropped, dropped_ca).exchanged) << daemon.log();
    }
    Daemon daemon(env.write_config(
        "chain", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                     "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = "
                     "1000\n\n" +
                     listener_with("chain")));
    const auto accepted = client(kept, kept_ca);
    EXPECT_TRUE(accepted.exchanged) << accepted.error << "\n" << daemon.log();
    const auto refused = client(dropped, dropped_ca);
    EXPECT_FALSE(refused.exchanged);
    EXPECT_EQ(refused.alert, "certificate revoked");
    EXPECT_TRUE(daemon.wait_for_log("OCSP: certificate revoked (depth 1)")) << daemon.log();
    EXPECT_EQ(requests(*root_responder), 2) << "one question about each intermediate";
    EXPECT_EQ(checks("responder", "revoked"), 1);
    EXPECT_EQ(checks("responder", "good"), 3);  // kept, kept_ca, dropped (its leaf first)
}

TEST_F(ClientOcsp, AForgedAnswerIsRefused) {
    CraftedResponder crafted;
    const auto forger = env.root.intermediate("Test Client CA");
    OcspResponseOptions forged;
    forged.signer = forger.cert();
    forged.signer_key = forger.key();
    crafted.serve(env.client_ca.ocsp_response_der(good.cert.get(), forged));
    Daemon daemon(config("ocsp = \"leaf\"\nocsp_responder = \"" + crafted.url() + "\"\n"));
    const auto result = run_client(port, env.options_for(good));
    EXPECT_FALSE(result.exchanged);
    EXPECT_TRUE(daemon.wait_for_log("response refused: not signed by the issuer")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log(rejection_marker(result.local_port, "ocsp_unavailable")))
        << daemon.log();
    EXPECT_GE(crafted.requests(), 1);
}

TEST_F(ClientOcsp, WithNoncesTheResponseMustEchoTheRequestsNonce) {
    {
        const auto ocsp = responder(index);  // openssl ocsp echoes the nonce
        Daemon daemon(config("ocsp = \"leaf\"\nocsp_nonce = true\n"));
        const auto result = run_client(port, env.options_for(good));
        EXPECT_TRUE(result.exchanged) << result.error << "\n" << daemon.log();
    }
    // A pre-signed answer, valid in every other way, carries no nonce.
    CraftedResponder crafted;
    crafted.serve(env.client_ca.ocsp_response_der(good.cert.get()));
    Daemon daemon(
        config("ocsp = \"leaf\"\nocsp_nonce = true\nocsp_responder = \"" + crafted.url() + "\"\n",
               "nonce"));
    EXPECT_FALSE(run_client(port, env.options_for(good)).exchanged);
    EXPECT_TRUE(daemon.wait_for_log("does not echo the request's nonce")) << daemon.log();
}

TEST_F(ClientOcsp, AConfigurationWithOcspAndNoClientCertificatesIsRefused) {
    const auto listener =
        replace_all(env.listener("edge", port, "ocsp = \"leaf\"\nclient_auth = \"none\"\n"),
                    "crl_files = [\"root.crl\", \"client-ca.crl\"]\n", "");
    const auto path = env.write_config("bad", listener);
    const auto result = run(binary_from_env("PORTCULLIS_BIN") + " --check-config " + path.string());
    EXPECT_NE(result.status, 0) << result.output;
    EXPECT_NE(result.output.find("ocsp"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace portcullis::testing
