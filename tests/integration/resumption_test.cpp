// Session resumption against the real daemon: ticket-key rotation, a key file
// shared by two daemons, the TLS 1.2 session-ID cache shared by workers, and
// the re-checks that stop a session from outliving its client's certificate.
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <thread>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

constexpr int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};

std::string admin_block(int port) {
    return "[admin]\naddress = \"127.0.0.1:" + std::to_string(port) + "\"\n\n";
}

std::string version_name(int version) {
    return version == TLS1_3_VERSION ? "1.3" : "1.2";
}

// The admin process may still be starting when the daemon reports ready.
double scrape(int admin_port, const std::string& sample) {
    for (int attempt = 0; attempt < 200; ++attempt) {
        const auto response = http_request(admin_port, "GET", "/metrics");
        if (response.status == 200) return metric_value(response.body, sample);
        std::this_thread::sleep_for(25ms);
    }
    return std::nan("");
}

// Waits until the supervisor has rotated the ticket key `count` more times,
// then past the workers' next tick (100 ms) so every worker uses the new key.
bool wait_for_rotations(int admin_port, double count) {
    const double start = scrape(admin_port, "portcullis_ticket_key_rotations_total");
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (scrape(admin_port, "portcullis_ticket_key_rotations_total") >= start + count) {
            std::this_thread::sleep_for(400ms);
            return true;
        }
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

struct Session {
    UniqueSession session;
    bool ok = false;
};

Session first_session(int port, ClientOptions options) {
    auto r = run_client(port, options);
    EXPECT_TRUE(r.exchanged) << r.error;
    EXPECT_FALSE(r.resumed);
    const bool ok = r.exchanged && r.session != nullptr;
    return {std::move(r.session), ok};
}

// `count` connections, each resuming the newest session the one before it
// left (a TLS 1.3 client uses each ticket once); returns how many resumed.
int resume_in_turn(int port, ClientOptions options, Session& previous, int count) {
    int resumed = 0;
    for (int i = 0; i < count; ++i) {
        options.resume_from = previous.session.get();
        auto next = run_client(port, options);
        EXPECT_TRUE(next.exchanged) << next.error;
        if (!next.exchanged) break;
        resumed += next.resumed ? 1 : 0;
        if (next.session) previous.session = std::move(next.session);
    }
    return resumed;
}

TEST(TicketRotation, PreviousKeyStillResumesTwoPeriodsOldDoesNot) {
    TestDeployment env;
    const auto client = env.client("rotating-client");
    const int port = free_port();
    const int admin = free_port();
    // Long enough that a resumption attempt fits well inside one period.
    Daemon daemon(env.write_config("rotation", admin_block(admin) +
                                                   "[resumption]\nticket_rotation_s = 3\n\n" +
                                                   env.listener("edge", port)),
                  2);
    for (const int version : versions) {
        SCOPED_TRACE("TLS " + version_name(version));
        auto options = env.options_for(client);
        options.min_version = options.max_version = version;
        ASSERT_TRUE(wait_for_rotations(admin, 1));  // start right after a rotation
        auto first = first_session(port, options);
        ASSERT_TRUE(first.ok);

        options.resume_from = first.session.get();
        const auto same_period = run_client(port, options);
        EXPECT_TRUE(same_period.exchanged) << same_period.error;
        EXPECT_TRUE(same_period.resumed) << "current key";

        ASSERT_TRUE(wait_for_rotations(admin, 1));
        const double previous_before =
            scrape(admin, "portcullis_ticket_decryptions_total{key_age=\"previous\"}");
        const auto one_period = run_client(port, options);
        EXPECT_TRUE(one_period.exchanged) << one_period.error;
        EXPECT_TRUE(one_period.resumed) << "the previous key must still decrypt";
        EXPECT_EQ(scrape(admin, "portcullis_ticket_decryptions_total{key_age=\"previous\"}"),
                  previous_before + 1);

        ASSERT_TRUE(wait_for_rotations(admin, 1));
        const double unknown_before =
            scrape(admin, "portcullis_ticket_decryptions_total{key_age=\"unknown\"}");
        const auto two_periods = run_client(port, options);
        EXPECT_TRUE(two_periods.exchanged) << two_periods.error;  // full handshake instead
        EXPECT_FALSE(two_periods.resumed) << "a key two periods old must be retired";
        EXPECT_EQ(scrape(admin, "portcullis_ticket_decryptions_total{key_age=\"unknown\"}"),
                  unknown_before + 1);
    }
}

TEST(TicketKeyFile, TwoDaemonsSharingTheFileResumeEachOthersSessions) {
    TestDeployment env;
    const auto client = env.client("roaming-client");
    // Two keys, newest first, the way an operator stages a rotation.
    write_file(env.dir / "tickets.keys", "# portcullis ticket keys, newest first\n" +
                                             std::string(160, 'a') + "\n" + std::string(160, 'b') +
                                             "\n");
    const int port_a = free_port();
    const int port_b = free_port();
    const std::string resumption = "[resumption]\nticket_key_file = \"tickets.keys\"\n\n";
    Daemon a(env.write_config("a", resumption + env.listener("edge", port_a)));
    Daemon b(env.write_config("b", resumption + env.listener("edge", port_b)));
    for (const int version : versions) {
        SCOPED_TRACE("TLS " + version_name(version));
        auto options = env.options_for(client);
        options.min_version = options.max_version = version;
        auto from_a = first_session(port_a, options);
        ASSERT_TRUE(from_a.ok);
        options.resume_from = from_a.session.get();
        const auto on_b = run_client(port_b, options);
        EXPECT_TRUE(on_b.exchanged) << on_b.error;
        EXPECT_TRUE(on_b.resumed) << "appliance B must decrypt appliance A's ticket";
    }
}

// A stateful appliance beside a stateless one, sharing the key file: B
// resumes A's TLS 1.3 ticket, then hands the client a session ID, which the
// next connection resumes from B's cache with nothing decrypted.
TEST(TicketKeyFile, StatefulApplianceResumesAStatelessPeersTicket) {
    TestDeployment env;
    const auto client = env.client("migrating-client");
    write_file(env.dir / "tickets.keys", std::string(160, 'c') + "\n");
    const int port_a = free_port();
    const int port_b = free_port();
    const int admin_b = free_port();
    const std::string keys = "[resumption]\nticket_key_file = \"tickets.keys\"\n";
    Daemon a(env.write_config("a", keys + "\n" + env.listener("edge", port_a)));
    Daemon b(env.write_config("b", admin_block(admin_b) + keys + "ticket_mode = \"stateful\"\n\n" +
                                       env.listener("edge", port_b)));
    auto options = env.options_for(client);
    options.min_version = options.max_version = TLS1_3_VERSION;
    auto from_a = first_session(port_a, options);
    ASSERT_TRUE(from_a.ok);
    options.resume_from = from_a.session.get();
    auto on_b = run_client(port_b, options);
    EXPECT_TRUE(on_b.exchanged) << on_b.error;
    EXPECT_TRUE(on_b.resumed) << "B must decrypt A's stateless ticket";
    ASSERT_TRUE(on_b.session);
    const unsigned char* ticket = nullptr;
    std::size_t length = 0;
    SSL_SESSION_get0_ticket(on_b.session.get(), &ticket, &length);
    EXPECT_EQ(length, 32u) << "B's ticket is a session ID";
    options.resume_from = on_b.session.get();
    const auto again = run_client(port_b, options);
    EXPECT_TRUE(again.resumed) << again.error;
    const auto metrics = http_request(admin_b, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_ticket_decryptions_total{key_age=\"current\"}"), 1)
        << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_stores_total"), 2) << metrics;
}

TEST(TicketKeyFile, BrokenKeyFileStopsStartWithItsName) {
    TestDeployment env;
    write_file(env.dir / "tickets.keys", "not-hex\n");
    ChildProcess check({binary_from_env("PORTCULLIS_BIN"), "--config",
                        env.write_config("badkeys",
                                         "[resumption]\nticket_key_file = "
                                         "\"tickets.keys\"\n\n" +
                                             env.listener("edge", free_port()))
                            .string()},
                       env.dir / "badkeys.log");
    const auto status = check.wait_exit(10s);
    ASSERT_TRUE(status.has_value());
    EXPECT_NE(*status, 0);
    EXPECT_NE(check.log().find("tickets.keys line 1"), std::string::npos) << check.log();
}

// Lookups of one result summed over the daemon's workers.
double worker_lookups(const std::string& metrics, int workers, const std::string& result) {
    double sum = 0;
    for (int w = 0; w < workers; ++w) {
        sum += metric_value(metrics, "portcullis_worker_session_cache_lookups_total{worker=\"" +
                                         std::to_string(w) + "\",result=\"" + result + "\"}");
    }
    return sum;
}

TEST(SessionIdCache, Tls12ClientsWithoutTicketsResumeOnAnyWorker) {
    TestDeployment env;
    const auto client = env.client("session-id-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("cache", admin_block(admin) + env.listener("edge", port)), 2);
    auto options = env.options_for(client);
    options.min_version = options.max_version = TLS1_2_VERSION;
    options.no_ticket = true;
    auto first = first_session(port, options);
    ASSERT_TRUE(first.ok);
    int resumed = 0;
    for (int i = 0; i < 12; ++i) {
        options.resume_from = first.session.get();
        const auto next = run_client(port, options);
        ASSERT_TRUE(next.exchanged) << next.error;
        resumed += next.resumed ? 1 : 0;
    }
    EXPECT_EQ(resumed, 12) << "the session-ID cache must be shared by both workers";
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    // The worker that made the session kept it decoded; the other decodes it
    // from the shared cache once, at its first lookup, and keeps it too.
    const double local_misses = worker_lookups(metrics, 2, "miss");
    EXPECT_EQ(worker_lookups(metrics, 2, "hit") + local_misses, 12) << metrics;
    EXPECT_LE(local_misses, 1) << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_hits_total"), local_misses)
        << metrics;
    EXPECT_GE(metric_value(metrics, "portcullis_session_cache_entries"), 1);
}

// TLS 1.3 tickets carry their session: they resume on any worker through the
// shared ticket key, and the session-ID cache is given no copy of them.
TEST(SessionIdCache, Tls13TicketsResumeOnAnyWorkerWithoutCacheEntries) {
    TestDeployment env;
    const auto client = env.client("ticket-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("tickets", admin_block(admin) + env.listener("edge", port)), 2);
    auto options = env.options_for(client);
    options.min_version = options.max_version = TLS1_3_VERSION;
    auto previous = first_session(port, options);
    ASSERT_TRUE(previous.ok);
    const int resumed = resume_in_turn(port, options, previous, 12);
    EXPECT_EQ(resumed, 12) << "tickets must resume on both workers";
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_ticket_decryptions_total{key_age=\"current\"}"), 12)
        << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_stores_total"), 0) << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_entries"), 0) << metrics;
}

// resumption.ticket_mode = "stateful": a TLS 1.3 ticket is a session ID into
// the shared cache, so it resumes on either worker with no ticket decrypted;
// a worker holding the session decoded answers without the shared cache.
TEST(SessionIdCache, StatefulTls13TicketsResumeOnAnyWorker) {
    TestDeployment env;
    const auto client = env.client("stateful-client");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("stateful", admin_block(admin) +
                                                   "[resumption]\nticket_mode = \"stateful\"\n\n" +
                                                   env.listener("edge", port)),
                  2);
    auto options = env.options_for(client);
    options.min_version = options.max_version = TLS1_3_VERSION;
    auto previous = first_session(port, options);
    ASSERT_TRUE(previous.ok);
    const int resumed = resume_in_turn(port, options, previous, 12);
    EXPECT_EQ(resumed, 12) << "stateful tickets must resume on both workers";
    const auto metrics = http_request(admin, "GET", "/metrics").body;
    EXPECT_EQ(metric_value(metrics, "portcullis_ticket_decryptions_total{key_age=\"current\"}"), 0)
        << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_stores_total"), 13) << metrics;
    const double hits = worker_lookups(metrics, 2, "hit");
    const double misses = worker_lookups(metrics, 2, "miss");
    EXPECT_EQ(hits + misses, 12) << metrics;
    EXPECT_EQ(metric_value(metrics, "portcullis_session_cache_hits_total"), misses) << metrics;
}

// Resumption skips certificate verification, so what changed since the full
// handshake has to be checked again, for tickets and for cached session IDs.
enum class Mechanism { tls13_ticket, tls12_ticket, tls12_session_id };

class ResumptionRecheck : public ::testing::TestWithParam<Mechanism> {
  protected:
    static void apply(ClientOptions& options) {
        options.min_version = options.max_version =
            GetParam() == Mechanism::tls13_ticket ? TLS1_3_VERSION : TLS1_2_VERSION;
        options.no_ticket = GetParam() == Mechanism::tls12_session_id;
    }
};

TEST_P(ResumptionRecheck, CertificateRevokedByCrlReloadIsNotResumed) {
    TestDeployment env;
    const auto client = env.client("soon-revoked");
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("revoke", admin_block(admin) + env.listener("edge", port)), 2);
    auto options = env.options_for(client);
    apply(options);
    auto first = first_session(port, options);
    ASSERT_TRUE(first.ok);
    options.resume_from = first.session.get();
    ASSERT_TRUE(run_client(port, options).resumed) << "resumes before the revocation";

    env.client_ca.revoke(client.cert.get());
    env.write_crls();
    ASSERT_EQ(scrape(admin, "portcullis_workers"), 2);  // the admin listener is up
    const auto reload = http_request(admin, "POST", "/reload");
    ASSERT_EQ(reload.status, 200) << reload.body;

    const auto after = run_client(port, options);
    EXPECT_FALSE(after.resumed);
    EXPECT_FALSE(after.exchanged) << "a revoked client must not get through";
    EXPECT_EQ(scrape(admin,
                     "portcullis_resumptions_refused_total{listener=\"edge\",reason="
                     "\"revoked\"}"),
              1);
    EXPECT_EQ(scrape(admin,
                     "portcullis_client_certificate_rejections_total{listener=\"edge\","
                     "reason=\"revoked\"}"),
              1);
}

TEST_P(ResumptionRecheck, ExpiredCertificateIsNotResumed) {
    TestDeployment env;
    CertOptions short_lived;
    short_lived.not_after_offset_s = 3;
    const auto client = env.client("short-lived", short_lived);
    const int port = free_port();
    const int admin = free_port();
    Daemon daemon(env.write_config("expire", admin_block(admin) + env.listener("edge", port)));
    auto options = env.options_for(client);
    apply(options);
    auto first = first_session(port, options);
    ASSERT_TRUE(first.ok);
    options.resume_from = first.session.get();
    // Resumed once before it expires, so a worker holds a TLS 1.2 ticket's
    // session decoded (ticket_sessions) and the refusal comes from that copy.
    ASSERT_TRUE(run_client(port, options).resumed);
    std::this_thread::sleep_for(4500ms);
    const auto after = run_client(port, options);
    EXPECT_FALSE(after.resumed);
    EXPECT_FALSE(after.exchanged);
    EXPECT_EQ(scrape(admin,
                     "portcullis_resumptions_refused_total{listener=\"edge\",reason="
                     "\"expired\"}"),
              1);
}

TEST_P(ResumptionRecheck, SessionFromAnotherListenerIsNotResumed) {
    TestDeployment env;
    const auto client = env.client("two-doors");
    const int port_a = free_port();
    const int port_b = free_port();
    // Same CA files, different policy: B only admits an allow-listed subject.
    Daemon daemon(env.write_config(
        "two", env.listener("a", port_a) +
                   env.listener("b", port_b, "[listener.tls.allow]\nsubjects = [\"CN=two-*\"]\n")));
    auto options = env.options_for(client);
    apply(options);
    auto from_a = first_session(port_a, options);
    ASSERT_TRUE(from_a.ok);
    options.resume_from = from_a.session.get();
    EXPECT_TRUE(run_client(port_a, options).resumed) << "control: resumes where it was made";
    const auto on_b = run_client(port_b, options);
    EXPECT_TRUE(on_b.exchanged) << on_b.error;
    EXPECT_FALSE(on_b.resumed) << "listener b must run its own verification";
}

INSTANTIATE_TEST_SUITE_P(Mechanisms, ResumptionRecheck,
                         ::testing::Values(Mechanism::tls13_ticket, Mechanism::tls12_ticket,
                                           Mechanism::tls12_session_id),
                         [](const auto& info) {
                             switch (info.param) {
                                 case Mechanism::tls13_ticket:
                                     return "Tls13Ticket";
                                 case Mechanism::tls12_ticket:
                                     return "Tls12Ticket";
                                 default:
                                     return "Tls12SessionId";
                             }
                         });

}  // namespace
}  // namespace portcullis::testing
