// CRLs the daemon fetches over HTTP (listener.tls.crl_urls), from a real HTTP
// server the test controls: a CRL updated on the server is picked up with no
// reload and cuts the partner it revokes; a forged CRL and an older one are
// refused and the last good CRL stays; a restart with the server gone
// starts from the CRL kept on disk.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

class CrlServer {
  public:
    CrlServer() {
        server_.Get("/client-ca.crl", [this](const httplib::Request&, httplib::Response& out) {
            const std::lock_guard lock(mutex_);
            ++requests_;
            out.set_content(body_, "application/pkix-crl");
        });
        port_ = server_.bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_.listen_after_bind(); });
        server_.wait_until_ready();
    }
    ~CrlServer() { stop(); }
    void stop() {
        server_.stop();
        if (thread_.joinable()) thread_.join();
    }
    void serve(std::string crl) {
        const std::lock_guard lock(mutex_);
        body_ = std::move(crl);
    }
    int requests() {
        const std::lock_guard lock(mutex_);
        return requests_;
    }
    std::string url() const {
        return "http://127.0.0.1:" + std::to_string(port_) + "/client-ca.crl";
    }

  private:
    httplib::Server server_;
    std::thread thread_;
    std::mutex mutex_;
    std::string body_;
    int requests_ = 0;
    int port_ = 0;
};

class FetchedCrl : public ::testing::Test {
  protected:
    void SetUp() override {
        // The CA that signs a fetched CRL must be in the trust bundle.
        write_file(env.dir / "trust.pem", env.root.cert_pem() + env.client_ca.cert_pem());
        crls.serve(env.client_ca.crl_pem());
    }

    std::filesystem::path config(const std::string& name = "fetched") {
        auto listener =
            env.listener("edge", port, "crl_urls = [\"" + crls.url() + "\"]\ncrl_refresh_s = 1\n");
        listener =
            replace_all(listener, "trust_bundle = \"root.pem\"", "trust_bundle = \"trust.pem\"");
        listener = replace_all(listener, "crl_files = [\"root.crl\", \"client-ca.crl\"]",
                               "crl_files = [\"root.crl\"]");
        return env.write_config(
            name, "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                      "\"\n\n[revocation]\ncache_dir = \"crl-cache\"\nfetch_timeout_ms = 500\n\n" +
                      listener);
    }

    double metric(const std::string& sample) {
        for (int attempt = 0; attempt < 200; ++attempt) {
            const auto response = http_request(admin, "GET", "/metrics");
            if (response.status == 200) return metric_value(response.body, sample);
            std::this_thread::sleep_for(25ms);
        }
        return -1;
    }

    TestDeployment env;
    CrlServer crls;
    const int port = free_port();
    const int admin = free_port();
    const IssuedCert doomed = env.client("doomed");
    const IssuedCert kept = env.client("kept");
};

TEST_F(FetchedCrl, AnUpdatedCrlIsPickedUpWithoutAReloadAndCutsTheRevokedPartnerLive) {
    Daemon daemon(config(), 2);
    ASSERT_GE(crls.requests(), 1) << "no fetch before the workers started";
    // The client CA's only CRL is the fetched one: without it every client
    // of that CA would be refused (crl_unavailable).
    ASSERT_TRUE(run_client(port, env.options_for(kept)).exchanged) << daemon.log();
    auto live = open_tls_session(port, env.options_for(doomed));
    ASSERT_TRUE(live.ok);

    env.client_ca.revoke(doomed.cert.get());
    crls.serve(env.client_ca.crl_pem());
    const auto served_at = std::chrono::steady_clock::now();
    const long cut_after = ms_until_close_notify(live, served_at);
    EXPECT_GE(cut_after, 0) << "no close_notify within 5 s\n" << daemon.log();
    EXPECT_LT(cut_after, 5000);
    std::cout << "revoked partner cut " << cut_after
              << " ms after the CRL server had the new CRL\n";

    const auto again = first_refusal(port, env.options_for(doomed));
    EXPECT_FALSE(again.exchanged) << "the revoked partner still got in 5 s later";
    EXPECT_EQ(again.alert, "certificate revoked");
    EXPECT_FALSE(run_client(port, env.options_for(doomed)).exchanged);
    EXPECT_TRUE(run_client(port, env.options_for(kept)).exchanged);
    EXPECT_TRUE(daemon.wait_for_log("crl updated listener=edge")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("reason=revoked_live")) << daemon.log();
    EXPECT_GE(metric("portcullis_connections_revoked_total{listener=\"edge\"}"), 1);
    EXPECT_EQ(metric("portcullis_reloads_total{result=\"success\"}"), 0)
        << "the CRL came in through an operator reload";
    const std::string source = "{listener=\"edge\",url=\"" + crls.url() + "\"}";
    EXPECT_EQ(metric("portcullis_crl_fetch_updates_total" + source), 2)
        << "the CRL at start and the one that revoked the partner";
    EXPECT_GT(metric("portcullis_crl_fetched_next_update_timestamp_seconds" + source),
              static_cast<double>(std::time(nullptr)));

    // /status names the source and how its fetches went.
    const auto status = http_request(admin, "GET", "/status");
    ASSERT_EQ(status.status, 200);
    const auto fetched = nlohmann::json::parse(status.body)["listeners"][0]["fetched_crls"];
    ASSERT_EQ(fetched.size(), 1u) << status.body;
    EXPECT_EQ(fetched[0]["url"], crls.url());
    EXPECT_TRUE(fetched[0]["last_fetch_ok"].get<bool>()) << status.body;
    EXPECT_GE(fetched[0]["fetches_ok"].get<int>(), 2) << status.body;
    EXPECT_FALSE(fetched[0]["overdue"].get<bool>());
    EXPECT_GT(fetched[0]["next_update_unix"].get<std::int64_t>(), std::time(nullptr));
    EXPECT_GE(fetched[0]["age_s"].get<std::int64_t>(), 0);
}

TEST_F(FetchedCrl, AForgedOrOlderCrlIsRefusedAndTheLastGoodOneStays) {
    const auto empty_and_old = env.client_ca.crl_pem(-7200);
    env.client_ca.revoke(doomed.cert.get());
    crls.serve(env.client_ca.crl_pem());
    Daemon daemon(config());
    ASSERT_FALSE(run_client(port, env.options_for(doomed)).exchanged);

    // Same issuer name, another key: it would clear the revocation.
    const auto impostor = CertificateAuthority::root("Test Client CA");
    crls.serve(impostor.crl_pem());
    EXPECT_TRUE(daemon.wait_for_log("CRL refused: signature does not verify")) << daemon.log();
    EXPECT_FALSE(run_client(port, env.options_for(doomed)).exchanged) << "a forged CRL was used";

    crls.serve(empty_and_old);
    EXPECT_TRUE(daemon.wait_for_log("CRL refused: older than the one kept")) << daemon.log();
    EXPECT_FALSE(run_client(port, env.options_for(doomed)).exchanged) << "a rollback was used";
    const auto status = http_request(admin, "GET", "/status");
    const auto fetched = nlohmann::json::parse(status.body)["listeners"][0]["fetched_crls"][0];
    EXPECT_FALSE(fetched["last_fetch_ok"].get<bool>()) << status.body;
    EXPECT_GE(fetched["fetches_failed"].get<int>(), 2) << status.body;
    EXPECT_GE(metric("portcullis_crl_fetches_total{listener=\"edge\",url=\"" + crls.url() +
                     "\",result=\"failed\"}"),
              2);
    EXPECT_TRUE(run_client(port, env.options_for(kept)).exchanged);
}

TEST_F(FetchedCrl, ARestartWithTheCrlServerGoneStartsFromTheCrlKeptOnDisk) {
    env.client_ca.revoke(doomed.cert.get());
    crls.serve(env.client_ca.crl_pem());
    {
        Daemon daemon(config());
        ASSERT_FALSE(run_client(port, env.options_for(doomed)).exchanged);
    }
    crls.stop();
    Daemon daemon(config("restarted"));
    EXPECT_TRUE(daemon.wait_for_log("crl fetch failed listener=edge")) << daemon.log();
    EXPECT_TRUE(daemon.wait_for_log("keeping the CRL already loaded")) << daemon.log();
    EXPECT_FALSE(run_client(port, env.options_for(doomed)).exchanged);
    const auto result = run_client(port, env.options_for(kept));
    EXPECT_TRUE(result.exchanged) << result.error << " alert=" << result.alert << "\n"
                                  << daemon.log();
}

// crl_distribution_points: the trust bundle's intermediate names where the
// root publishes the CRL that covers it; with crl_scope = "chain" that CRL is
// fetched with no crl_urls at all, and when the root revokes the
// intermediate, its partners are refused.
TEST(CrlDistributionPoints, TheTrustBundlesCasNameTheCrlsToFetch) {
    TestDeployment env;
    CrlServer crls;  // its one URL serves the root's CRL here
    const auto partner_ca = env.root.intermediate("Partner CA", KeyKind::ec_p256, "", crls.url());
    const auto partner = partner_ca.issue(CertOptions{});
    write_file(env.dir / "trust.pem", env.root.cert_pem() + partner_ca.cert_pem());
    write_file(env.dir / "partner-ca.crl", partner_ca.crl_pem());
    crls.serve(env.root.crl_pem());
    const int port = free_port();
    auto listener = env.listener("edge", port,
                                 "crl_scope = \"chain\"\ncrl_distribution_points = true\n"
                                 "crl_refresh_s = 1\n");
    listener = replace_all(listener, "trust_bundle = \"root.pem\"", "trust_bundle = \"trust.pem\"");
    listener = replace_all(listener, "crl_files = [\"root.crl\", \"client-ca.crl\"]",
                           "crl_files = [\"partner-ca.crl\"]");
    Daemon daemon(env.write_config(
        "cdp", "[revocation]\ncache_dir = \"crl-cache\"\nfetch_timeout_ms = 500\n\n" + listener));
    ClientOptions options;
    options.cert = partner.cert.get();
    options.key = partner.key.get();
    options.chain.push_back(partner_ca.cert());
    options.trusted_server_ca = env.root.cert();
    // Without the fetched root CRL the chain scope has no CRL for the
    // intermediate, and the partner would be refused (crl_unavailable).
    const auto accepted = run_client(port, options);
    EXPECT_TRUE(accepted.exchanged) << accepted.error << " alert=" << accepted.alert << "\n"
                                    << daemon.log();
    EXPECT_GE(crls.requests(), 1);

    env.root.revoke(partner_ca.cert());
    crls.serve(env.root.crl_pem());
    const auto refused = first_refusal(port, options);
    EXPECT_FALSE(refused.exchanged) << daemon.log();
    EXPECT_EQ(refused.alert, "certificate revoked");
    EXPECT_TRUE(daemon.wait_for_log("crl updated listener=edge")) << daemon.log();
}

}  // namespace
}  // namespace portcullis::testing
