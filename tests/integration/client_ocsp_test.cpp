// OCSP for client certificates (listener.tls.ocsp) against a real
// `openssl ocsp -index` responder named by each partner's Authority
// Information Access: good, revoked and unknown answers; a responder that is
// down under "hard" and "soft"; a forged answer; nonces; and returning
// partners answered from the worker's memory or the shared cache with no
// request to the responder.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

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

    // A partner whose AIA names `ocsp_url`, by default the openssl responder's.
    IssuedCert partner(const std::string& cn, const std::string& ocsp_url = "") const {
        CertOptions options;
        options.common_name = cn;
        options.ocsp_url =
            ocsp_url.empty() ? "http://127.0.0.1:" + std::to_string(ocsp_port) + "/" : ocsp_url;
        return env.client(cn, options);
    }

    std::filesystem::path config(const std::string& tls_extra, const std::string& name = "ocsp",
                                 const std::string& revocation_extra = "") {
        return env.write_config(
            name, "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                      "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = 1000\n" +
                      revocation_extra + "\n" + env.listener("edge", port, tls_extra));
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

    // The admin process of a daemon just started may not answer yet: asked
    // until it does.
    double metric(const std::string& sample) {
        for (int attempt = 0; attempt < 200; ++attempt) {
            const auto response = http_request(admin, "GET", "/metrics");
            if (response.status == 200) return metric_value(response.body, sample);
            std::this_thread::sleep_for(25ms);
        }
        return -1;
    }

    double checks(const std::string& source, const std::string& status) {
        return metric("portcullis_ocsp_client_checks_total{listener=\"edge\",source=\"" + source +
                      "\",status=\"" + status + "\"}");
    }

    // Has `crafted` answer good about `cert` for `seconds`; returns when that
    // answer's nextUpdate passes on the steady clock. The response carries
    // whole seconds of wall time, from a clock read a moment later, so the
    // real nextUpdate is this or up to a second after it, never before.
    std::chrono::steady_clock::time_point serve_short_lived(CraftedResponder& crafted,
                                                            const IssuedCert& cert, long seconds) {
        const auto wall_now = std::chrono::system_clock::now();
        const auto steady_now = std::chrono::steady_clock::now();
        const auto next_update =
            std::chrono::system_clock::from_time_t(std::time(nullptr) + seconds);
        OcspResponseOptions short_lived;
        short_lived.next_update_offset_s = seconds;
        crafted.serve(env.client_ca.ocsp_response_der(cert.cert.get(), short_lived));
        return steady_now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                next_update - wall_now);
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

// Revocation reaches live state by OCSP too: once one worker's lookup finds
// the partner revoked, every worker ends that partner's established
// connections and its sessions stop resuming, while another partner's
// connection stays up. The good answer lives 4 s, so the next handshake
// after it asks the responder again.
TEST_F(ClientOcsp, ARevokedAnswerEndsThePartnersLiveConnectionsOnEveryWorker) {
    CraftedResponder crafted;
    const auto doomed = partner("doomed", crafted.url());
    const auto ocsp = responder(index);  // the kept partner's
    // No background refresh: the handshake below is what learns it.
    Daemon daemon(config("ocsp = \"leaf\"\n", "ocsp", "ocsp_live_check_s = 3600\n"), 2);
    const auto good_until = serve_short_lived(crafted, doomed, 4);

    auto kept = open_tls_session(port, env.options_for(good));
    ASSERT_TRUE(kept.ok) << daemon.log();
    // Spread over both workers by the kernel's SO_REUSEPORT hash.
    std::vector<TlsSession> live;
    for (int i = 0; i < 12; ++i) {
        live.push_back(open_tls_session(port, env.options_for(doomed)));
        ASSERT_TRUE(live.back().ok) << daemon.log();
    }
    auto resumable = run_client(port, env.options_for(doomed));
    ASSERT_TRUE(resumable.exchanged && resumable.session) << resumable.error;

    OcspResponseOptions revoked_now;
    revoked_now.status = OcspResponseOptions::Status::revoked;
    crafted.serve(env.client_ca.ocsp_response_der(doomed.cert.get(), revoked_now));
    std::this_thread::sleep_until(good_until + 1500ms);
    // From the start of the handshake that learns it (an upper bound).
    const auto learned_at = std::chrono::steady_clock::now();
    const auto refused = run_client(port, env.options_for(doomed));
    EXPECT_FALSE(refused.exchanged);
    EXPECT_EQ(refused.alert, "certificate revoked") << daemon.log();

    long slowest = 0;
    for (auto& session : live) {
        const long cut_after = ms_until_close_notify(session, learned_at);
        EXPECT_GE(cut_after, 0) << "a live connection outlived the revocation\n" << daemon.log();
        EXPECT_LT(cut_after, 5000);
        slowest = std::max(slowest, cut_after);
    }
    std::cout << "12 live connections of the revoked partner on 2 workers all cut within "
              << slowest << " ms of the refused handshake\n";
    EXPECT_TRUE(echo_on(kept, "still here\n") == "still here\n")
        << "another partner's connection was cut\n"
        << daemon.log();

    // Both workers cut connections, each from what it knew.
    const auto log = daemon.log();
    for (const std::string worker : {"[worker-0]", "[worker-1]"}) {
        bool cut = false;
        for (auto at = log.find(worker); at != std::string::npos && !cut;
             at = log.find(worker, at + 1)) {
            const auto line = log.substr(at, log.find('\n', at) - at);
            cut = line.find("reason=revoked_live") != std::string::npos &&
                  line.find("CN=doomed") != std::string::npos;
        }
        EXPECT_TRUE(cut) << worker << " ended none of the partner's connections\n" << log;
    }
    EXPECT_EQ(metric("portcullis_connections_revoked_total{listener=\"edge\"}"), 12);

    auto again = env.options_for(doomed);
    again.resume_from = resumable.session.get();
    for (int i = 0; i < 4; ++i) {
        const auto resumed = run_client(port, again);
        EXPECT_FALSE(resumed.exchanged) << "the revoked partner's session resumed";
        EXPECT_FALSE(resumed.resumed);
    }
    EXPECT_GE(metric("portcullis_resumptions_refused_total{listener=\"edge\",reason=\"revoked\"}"),
              1);
}

// A partner that never reconnects: its established connection's answer
// passes its nextUpdate, the worker asks again in the background
// (revocation.ocsp_live_check_s = 1), and a revoked answer ends it. A
// responder that is down meanwhile leaves the other partner's connection up.
TEST_F(ClientOcsp, ALiveConnectionIsAskedAboutAgainOnceItsAnswerExpires) {
    CraftedResponder crafted;
    const auto quiet = partner("quiet", crafted.url());
    auto ocsp = responder(index);  // the kept partner's
    const auto path = env.write_config(
        "live-check", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) +
                          "\"\n\n[revocation]\ncache_dir = \"ocsp-cache\"\nfetch_timeout_ms = "
                          "1000\nocsp_live_check_s = 1\n\n" +
                          env.listener("edge", port, "ocsp = \"leaf\"\n"));
    Daemon daemon(path);
    const auto good_until = serve_short_lived(crafted, quiet, 2);
    auto live = open_tls_session(port, env.options_for(quiet));
    ASSERT_TRUE(live.ok) << daemon.log();
    // Once its responder listens, the kept partner is answered and remembered.
    bool answered = false;
    for (int i = 0; i < 40 && !answered; ++i) {
        answered = run_client(port, env.options_for(good)).exchanged;
        if (!answered) std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(answered) << daemon.log();
    auto kept = open_tls_session(port, env.options_for(good));
    ASSERT_TRUE(kept.ok) << daemon.log();
    ocsp.reset();  // the kept partner's responder goes down; its answer lives 10 min

    OcspResponseOptions revoked_now;
    revoked_now.status = OcspResponseOptions::Status::revoked;
    crafted.serve(env.client_ca.ocsp_response_der(quiet.cert.get(), revoked_now));
    const long cut_after = ms_until_close_notify(live, good_until);
    EXPECT_GE(cut_after, 0) << "the connection outlived its revoked answer\n" << daemon.log();
    EXPECT_LT(cut_after, 5000);
    std::cout << "a live connection cut " << cut_after
              << " ms after its good answer's nextUpdate, with no new handshake\n";
    EXPECT_GE(crafted.requests(), 2);
    EXPECT_TRUE(echo_on(kept, "still here\n") == "still here\n") << daemon.log();
    EXPECT_EQ(metric("portcullis_connections_revoked_total{listener=\"edge\"}"), 1);
}

// Through a shared ticket key file another appliance decrypts the sessions
// this one issued; under the hard policy it resumes one only on an OCSP
// answer of its own, so a partner revoked since is asked about and refused.
TEST_F(ClientOcsp, AnotherApplianceResumesASessionOnlyOnACurrentAnswerOfItsOwn) {
    CraftedResponder crafted;
    const auto roaming = partner("roaming", crafted.url());
    crafted.serve(env.client_ca.ocsp_response_der(roaming.cert.get()));
    const auto ocsp = responder(index);
    write_file(env.dir / "tickets.keys", std::string(160, 'a') + "\n");
    const int port_b = free_port();
    const std::string shared_tickets = "[resumption]\nticket_key_file = \"tickets.keys\"\n\n";
    Daemon a(env.write_config("appliance-a", shared_tickets +
                                                 "[revocation]\ncache_dir = \"ocsp-cache-a\"\n\n" +
                                                 env.listener("edge", port, "ocsp = \"leaf\"\n")));
    Daemon b(env.write_config(
        "appliance-b", "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) + "\"\n\n" +
                           shared_tickets + "[revocation]\ncache_dir = \"ocsp-cache-b\"\n\n" +
                           env.listener("edge", port_b, "ocsp = \"leaf\"\n")));

    // A good partner: its first visit to B is a full handshake, then B resumes it.
    const auto on_a = run_client(port, env.options_for(good));
    ASSERT_TRUE(on_a.exchanged && on_a.session) << on_a.error << "\n" << a.log();
    auto options = env.options_for(good);
    options.resume_from = on_a.session.get();
    const auto first_on_b = run_client(port_b, options);
    EXPECT_TRUE(first_on_b.exchanged) << first_on_b.error << "\n" << b.log();
    EXPECT_FALSE(first_on_b.resumed) << "B resumed with no OCSP answer of its own";
    options.resume_from = on_a.session.get();
    const auto second_on_b = run_client(port_b, options);
    EXPECT_TRUE(second_on_b.exchanged);
    EXPECT_TRUE(second_on_b.resumed) << "B's own answer should let the session resume";

    // A partner revoked after A's handshake.
    const auto roaming_on_a = run_client(port, env.options_for(roaming));
    ASSERT_TRUE(roaming_on_a.exchanged && roaming_on_a.session) << roaming_on_a.error;
    OcspResponseOptions revoked_now;
    revoked_now.status = OcspResponseOptions::Status::revoked;
    crafted.serve(env.client_ca.ocsp_response_der(roaming.cert.get(), revoked_now));
    auto roaming_again = env.options_for(roaming);
    roaming_again.resume_from = roaming_on_a.session.get();
    const auto roaming_on_b = run_client(port_b, roaming_again);
    EXPECT_FALSE(roaming_on_b.exchanged) << "B let a revoked partner resume";
    EXPECT_FALSE(roaming_on_b.resumed);
    EXPECT_EQ(roaming_on_b.alert, "certificate revoked") << b.log();
    EXPECT_EQ(
        metric("portcullis_resumptions_refused_total{listener=\"edge\",reason=\"ocsp_unchecked\"}"),
        2);
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
