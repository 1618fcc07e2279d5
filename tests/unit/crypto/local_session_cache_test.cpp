// The worker's own decoded sessions: first the cache alone (bounds, expiry,
// references), then in the TLS core with real OpenSSL clients, where it sits
// in front of the shared session cache: stateful TLS 1.3 tickets and TLS 1.2
// session IDs resume from the worker's copy when the client comes back to
// it, and through the shared cache on any other worker.
#include "crypto/local_session_cache.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <ctime>
#include <memory>
#include <span>

#include "crypto/server_tls_context.hpp"
#include "crypto/session_cache.hpp"
#include "crypto/tls_connection.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/support/tls_wire.hpp"

namespace portcullis::crypto {
namespace {

using UniqueSession = std::unique_ptr<SSL_SESSION, OpenSslDeleter<SSL_SESSION_free>>;

UniqueSession session_with_id(std::uint8_t first_byte, std::size_t length = 32) {
    UniqueSession session(SSL_SESSION_new());
    std::array<unsigned char, 32> id{};
    id.fill(0x5a);
    id[0] = first_byte;
    EXPECT_EQ(SSL_SESSION_set1_id(session.get(), id.data(), static_cast<unsigned int>(length)), 1);
    return session;
}

std::span<const std::uint8_t> id_of(const SSL_SESSION* session) {
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &length);
    return {id, length};
}

constexpr std::int64_t now = 1'800'000'000;

TEST(LocalSessionCache, StoresFindsAndRemoves) {
    LocalSessionCache cache(4);
    const auto a = session_with_id(1), b = session_with_id(2, 16);
    EXPECT_FALSE(cache.store(a.get(), now + 60, now));
    EXPECT_FALSE(cache.store(b.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache.find(id_of(a.get()), now), a.get());
    EXPECT_EQ(cache.find(id_of(b.get()), now), b.get());
    const auto stranger = session_with_id(3);
    EXPECT_EQ(cache.find(id_of(stranger.get()), now), nullptr);
    cache.remove(id_of(a.get()));
    EXPECT_EQ(cache.find(id_of(a.get()), now), nullptr);
    EXPECT_EQ(cache.size(), 1u);
}

TEST(LocalSessionCache, KeepsItsOwnReference) {
    LocalSessionCache cache(2);
    auto a = session_with_id(7);
    const std::array<std::uint8_t, 32> id = [&] {
        std::array<std::uint8_t, 32> copy{};
        const auto span = id_of(a.get());
        std::copy(span.begin(), span.end(), copy.begin());
        return copy;
    }();
    ASSERT_FALSE(cache.store(a.get(), now + 60, now));
    a.reset();  // the caller's reference is gone; the cache's keeps the session alive
    SSL_SESSION* kept = cache.find(id, now);
    ASSERT_NE(kept, nullptr);
    EXPECT_EQ(id_of(kept).size(), 32u);
    EXPECT_EQ(id_of(kept)[0], 7);
}

TEST(LocalSessionCache, FullCacheEvictsTheOldestStored) {
    LocalSessionCache cache(2);
    const auto a = session_with_id(1), b = session_with_id(2), c = session_with_id(3);
    EXPECT_FALSE(cache.store(a.get(), now + 60, now));
    EXPECT_FALSE(cache.store(b.get(), now + 60, now));
    EXPECT_TRUE(cache.store(c.get(), now + 60, now)) << "a live entry made room";
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache.find(id_of(a.get()), now), nullptr);
    EXPECT_EQ(cache.find(id_of(b.get()), now), b.get());
    EXPECT_EQ(cache.find(id_of(c.get()), now), c.get());
}

TEST(LocalSessionCache, SameIdReplacesWithoutEvicting) {
    LocalSessionCache cache(2);
    const auto first = session_with_id(1), again = session_with_id(1), other = session_with_id(2);
    EXPECT_FALSE(cache.store(first.get(), now + 60, now));
    EXPECT_FALSE(cache.store(again.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache.find(id_of(first.get()), now), again.get());
    EXPECT_FALSE(cache.store(other.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 2u);
}

TEST(LocalSessionCache, ReplacingInAFullCacheEvictsNothing) {
    LocalSessionCache cache(2);
    const auto a = session_with_id(1), b = session_with_id(2), b_again = session_with_id(2);
    EXPECT_FALSE(cache.store(a.get(), now + 60, now));
    EXPECT_FALSE(cache.store(b.get(), now + 60, now));
    EXPECT_FALSE(cache.store(b_again.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache.find(id_of(a.get()), now), a.get());
    EXPECT_EQ(cache.find(id_of(b.get()), now), b_again.get());
}

TEST(LocalSessionCache, FreedSlotsAreTakenBeforeAnyEviction) {
    LocalSessionCache cache(2);
    const auto a = session_with_id(1), b = session_with_id(2), c = session_with_id(3),
               d = session_with_id(4);
    EXPECT_FALSE(cache.store(a.get(), now + 60, now));
    EXPECT_FALSE(cache.store(b.get(), now + 60, now));
    cache.remove(id_of(a.get()));
    EXPECT_FALSE(cache.store(c.get(), now + 60, now)) << "a's slot was free";
    EXPECT_EQ(cache.find(id_of(b.get()), now), b.get());
    EXPECT_EQ(cache.find(id_of(c.get()), now), c.get());
    EXPECT_TRUE(cache.store(d.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache.find(id_of(d.get()), now), d.get());
}

TEST(LocalSessionCache, ExpiredEntriesAreDroppedAndDeadOnesNotStored) {
    LocalSessionCache cache(2);
    const auto a = session_with_id(1), dead = session_with_id(2);
    EXPECT_FALSE(cache.store(a.get(), now + 60, now));
    EXPECT_FALSE(cache.store(dead.get(), now, now));
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache.find(id_of(a.get()), now + 59), a.get());
    EXPECT_EQ(cache.find(id_of(a.get()), now + 60), nullptr);
    EXPECT_EQ(cache.size(), 0u);
}

TEST(LocalSessionCache, ExpiredEntryMakingRoomIsNoEviction) {
    LocalSessionCache cache(1);
    const auto a = session_with_id(1), b = session_with_id(2);
    EXPECT_FALSE(cache.store(a.get(), now + 10, now));
    EXPECT_FALSE(cache.store(b.get(), now + 100, now + 20));
    EXPECT_EQ(cache.find(id_of(b.get()), now + 20), b.get());
}

TEST(LocalSessionCache, SessionWithoutIdIsIgnored) {
    LocalSessionCache cache(2);
    UniqueSession no_id(SSL_SESSION_new());
    EXPECT_FALSE(cache.store(no_id.get(), now + 60, now));
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_EQ(cache.find({}, now), nullptr);
    EXPECT_THROW(LocalSessionCache(0), std::invalid_argument);
}

// ---- in the TLS core, with real OpenSSL clients -----------------------------------------

struct Events final : TlsEventSink {
    void ticket_decrypted(TicketKeyring::Match) override { ++tickets_decrypted; }
    void resumption_refused(ResumptionRefusal) override {}
    void local_session_cache(LocalSessionEvent event) override {
        (event == LocalSessionEvent::hit    ? hits
         : event == LocalSessionEvent::miss ? misses
                                            : evictions) += 1;
    }
    int hits = 0, misses = 0, evictions = 0, tickets_decrypted = 0;
};

class LocalSessionsInTheTlsCore : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto cert = root.issue(testing::localhost_server());
        policy.certificates = {{files.put("server.pem", cert.cert_pem()),
                                files.put("server.key", cert.key_pem()),
                                {}}};
        policy.trust_file = files.put("root.pem", root.cert_pem());
        policy.crl_files = {files.put("root.crl", root.crl_pem())};
        tickets.replace({TicketKey::random()});
        options.tickets = &tickets;
        options.events = &events;
        options.session_cache = &shared;
        options.local_session_entries = 16;
    }

    // One connection from a client of `version` (TLS 1.2 offers no ticket, so
    // it resumes by session ID) with `session` to resume, or none. Returns the
    // session the client holds at the end (its new ticket, in TLS 1.3); the
    // connection closes cleanly, as the daemon closes it.
    UniqueSession connect(const ServerTlsContext& context, int version, SSL_SESSION* session,
                          bool* resumed, std::string* subject = nullptr, bool clean = true) {
        UniqueSslCtx client_ctx(SSL_CTX_new(TLS_client_method()));
        SSL_CTX_set_min_proto_version(client_ctx.get(), version);
        SSL_CTX_set_max_proto_version(client_ctx.get(), version);
        if (version == TLS1_2_VERSION && !tls12_tickets)
            SSL_CTX_set_options(client_ctx.get(), SSL_OP_NO_TICKET);
        SSL_CTX_use_certificate(client_ctx.get(), partner.cert.get());
        SSL_CTX_use_PrivateKey(client_ctx.get(), partner.key.get());
        UniqueSsl client(SSL_new(client_ctx.get()));
        SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(client.get());
        SSL_set_tlsext_host_name(client.get(), "localhost");
        if (session != nullptr) {
            EXPECT_EQ(SSL_set_session(client.get(), session), 1);
        }
        TlsConnection server(context);
        TlsConnection::Step step = TlsConnection::Step::need_input;
        for (int round = 0; round < 50; ++round) {
            const bool client_done = SSL_do_handshake(client.get()) == 1;
            bool moved = testing::client_to_server(client.get(), server);
            step = server.handshake();
            moved |= testing::server_to_client(server, client.get());
            if (!moved && (step != TlsConnection::Step::need_input || client_done)) break;
        }
        EXPECT_EQ(step, TlsConnection::Step::done) << server.failure().detail;
        *resumed = server.peer().resumed;
        if (subject) *subject = server.peer().certificate.subject_dn();
        // A TLS 1.3 server writes its ticket on its first read.
        std::uint8_t plain[16];
        EXPECT_EQ(server.read_plaintext(plain).status, TlsConnection::IoStatus::need_input);
        testing::server_to_client(server, client.get());
        char sink[16];
        EXPECT_LE(SSL_read(client.get(), sink, sizeof sink), 0);
        UniqueSession held(SSL_get1_session(client.get()));
        if (!clean) return held;  // the server's SSL is freed with no close_notify sent
        server.close();
        testing::server_to_client(server, client.get());
        SSL_shutdown(client.get());
        testing::client_to_server(client.get(), server);
        return held;
    }

    bool tls12_tickets = false;  // whether a TLS 1.2 client offers tickets, as OpenSSL's does
    testing::CertificateAuthority root = testing::CertificateAuthority::root("Local Root");
    testing::IssuedCert partner = [this] {
        testing::CertOptions o;
        o.common_name = "partner";
        return root.issue(o);
    }();
    testing::TempFiles files;
    TlsPolicy policy;
    PemFileKeySource keys;
    TicketKeyring tickets;
    SharedSessionCache shared{SessionCacheLimits{}};
    Events events;
    ServerTlsOptions options;
};

TEST_F(LocalSessionsInTheTlsCore, StatefulTls13TicketResumesFromTheWorkersOwnCopy) {
    options.stateful_tickets = true;
    ServerTlsContext worker(policy, keys, options);
    ASSERT_NE(worker.local_sessions(), nullptr);
    bool resumed = true;
    auto session = connect(worker, TLS1_3_VERSION, nullptr, &resumed);
    EXPECT_FALSE(resumed);
    ASSERT_TRUE(session && SSL_SESSION_is_resumable(session.get()));
    const unsigned char* ticket = nullptr;
    std::size_t length = 0;
    SSL_SESSION_get0_ticket(session.get(), &ticket, &length);
    EXPECT_EQ(length, 32u) << "a stateful ticket is a session ID";
    EXPECT_EQ(shared.counters().stores, 1u);
    EXPECT_EQ(worker.local_sessions()->size(), 1u);

    std::string subject;
    session = connect(worker, TLS1_3_VERSION, session.get(), &resumed, &subject);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(subject, "CN=partner,O=Portcullis Test,C=GB");
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(events.misses, 0);
    EXPECT_EQ(shared.counters().hits, 0u) << "the shared cache was not asked";
    EXPECT_EQ(events.tickets_decrypted, 0) << "no ticket was decrypted";
    // The resumption issued a new ticket, which resumes too.
    session = connect(worker, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.hits, 2);
}

TEST_F(LocalSessionsInTheTlsCore, StatefulTls13TicketResumesOnAnotherWorkerThroughTheSharedCache) {
    options.stateful_tickets = true;
    ServerTlsContext worker_a(policy, keys, options);
    ServerTlsContext worker_b(policy, keys, options);
    bool resumed = true;
    auto session = connect(worker_a, TLS1_3_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    std::string subject;
    session = connect(worker_b, TLS1_3_VERSION, session.get(), &resumed, &subject);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(subject, "CN=partner,O=Portcullis Test,C=GB");
    EXPECT_EQ(events.misses, 1);
    EXPECT_EQ(events.hits, 0);
    EXPECT_EQ(shared.counters().hits, 1u);
    // Worker B made the new ticket, so it holds that session itself.
    session = connect(worker_b, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(shared.counters().hits, 1u);
}

std::size_t ticket_length(const SSL_SESSION* session) {
    const unsigned char* ticket = nullptr;
    std::size_t length = 0;
    SSL_SESSION_get0_ticket(session, &ticket, &length);
    return length;
}

// An appliance in stateful mode beside one in stateless mode, sharing the
// ticket keys (ticket_key_file) and nothing else: the stateful one resumes
// the other's ticket and hands the client a stateful one of its own.
TEST_F(LocalSessionsInTheTlsCore, StatefulModeResumesAStatelessTicketAndIssuesAStatefulOne) {
    ServerTlsContext stateless(policy, keys, options);
    SharedSessionCache other_cache{SessionCacheLimits{}};
    ServerTlsOptions stateful_options = options;
    stateful_options.stateful_tickets = true;
    stateful_options.session_cache = &other_cache;
    ServerTlsContext stateful(policy, keys, stateful_options);

    bool resumed = true;
    auto session = connect(stateless, TLS1_3_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    EXPECT_GT(ticket_length(session.get()), 32u) << "a stateless ticket carries its session";

    std::string subject;
    session = connect(stateful, TLS1_3_VERSION, session.get(), &resumed, &subject);
    EXPECT_TRUE(resumed) << "the stateless ticket resumed on the stateful appliance";
    EXPECT_EQ(subject, "CN=partner,O=Portcullis Test,C=GB");
    EXPECT_EQ(events.tickets_decrypted, 1);
    ASSERT_TRUE(session);
    EXPECT_EQ(ticket_length(session.get()), 32u) << "the next ticket is a session ID";
    EXPECT_EQ(other_cache.counters().stores, 1u);

    session = connect(stateful, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.tickets_decrypted, 1) << "nothing decrypted the second time";
    EXPECT_EQ(events.hits, 1) << "the worker's own copy";
    ASSERT_TRUE(session);
    EXPECT_EQ(ticket_length(session.get()), 32u);
}

// A ticket under keys this appliance does not hold is a full handshake in
// stateful mode too, and the client gets a stateful ticket.
TEST_F(LocalSessionsInTheTlsCore, StatefulModeRefusesAStatelessTicketUnderUnknownKeys) {
    ServerTlsContext stateless(policy, keys, options);
    TicketKeyring other_keys;
    other_keys.replace({TicketKey::random()});
    SharedSessionCache other_cache{SessionCacheLimits{}};
    ServerTlsOptions stateful_options = options;
    stateful_options.stateful_tickets = true;
    stateful_options.tickets = &other_keys;
    stateful_options.session_cache = &other_cache;
    ServerTlsContext stateful(policy, keys, stateful_options);

    bool resumed = true;
    auto session = connect(stateless, TLS1_3_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    session = connect(stateful, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_FALSE(resumed);
    ASSERT_TRUE(session);
    EXPECT_EQ(ticket_length(session.get()), 32u);
    session = connect(stateful, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
}

// A TLS 1.2 ticket is used until renewed: the worker decrypts it once, and
// later visits resume the decoded session by the session ID the client sends
// beside the ticket, with the same re-checks.
TEST_F(LocalSessionsInTheTlsCore, Tls12TicketIsDecryptedOnceAndThenResumedByItsSessionId) {
    tls12_tickets = true;
    ServerTlsContext worker(policy, keys, options);
    ASSERT_NE(worker.ticket_sessions(), nullptr);
    bool resumed = true;
    auto session = connect(worker, TLS1_2_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    EXPECT_TRUE(SSL_SESSION_has_ticket(session.get()));
    for (int visit = 1; visit <= 3; ++visit) {
        SCOPED_TRACE(visit);
        std::string subject;
        auto next = connect(worker, TLS1_2_VERSION, session.get(), &resumed, &subject);
        EXPECT_TRUE(resumed);
        EXPECT_EQ(subject, "CN=partner,O=Portcullis Test,C=GB");
        ASSERT_TRUE(next);
        EXPECT_TRUE(SSL_SESSION_has_ticket(next.get())) << "the client keeps its ticket";
        session = std::move(next);
    }
    EXPECT_EQ(events.tickets_decrypted, 1) << "decrypted on the first visit only";
    EXPECT_EQ(events.hits, 2);
    EXPECT_EQ(worker.ticket_sessions()->size(), 1u);

    // Once the key is the previous one, the ticket is decrypted again and
    // renewed, never resumed from the kept copy.
    tickets.replace({TicketKey::random(), tickets.current()});
    auto renewed = connect(worker, TLS1_2_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.tickets_decrypted, 2);
    EXPECT_EQ(events.hits, 2);
}

TEST_F(LocalSessionsInTheTlsCore, Tls12SessionFetchedFromTheSharedCacheIsKeptByTheWorker) {
    ServerTlsContext worker_a(policy, keys, options);
    ServerTlsContext worker_b(policy, keys, options);
    bool resumed = true;
    auto session = connect(worker_a, TLS1_2_VERSION, nullptr, &resumed);
    EXPECT_FALSE(resumed);
    ASSERT_TRUE(session);
    EXPECT_EQ(worker_a.local_sessions()->size(), 1u);
    session = connect(worker_b, TLS1_2_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.misses, 1);
    EXPECT_EQ(shared.counters().hits, 1u);
    EXPECT_EQ(worker_b.local_sessions()->size(), 1u);
    std::string subject;
    session = connect(worker_b, TLS1_2_VERSION, session.get(), &resumed, &subject);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(subject, "CN=partner,O=Portcullis Test,C=GB");
    EXPECT_EQ(events.hits, 1);
    EXPECT_EQ(shared.counters().hits, 1u) << "the second visit to B needed no decode";
}

TEST_F(LocalSessionsInTheTlsCore, StatelessTicketsKeepNoTls13Session) {
    ServerTlsContext worker(policy, keys, options);
    bool resumed = true;
    auto session = connect(worker, TLS1_3_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    const unsigned char* ticket = nullptr;
    std::size_t length = 0;
    SSL_SESSION_get0_ticket(session.get(), &ticket, &length);
    EXPECT_GT(length, 32u) << "a stateless ticket carries the session";
    session = connect(worker, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(worker.local_sessions()->size(), 0u);
    EXPECT_EQ(events.hits + events.misses, 0);
    EXPECT_EQ(events.tickets_decrypted, 1);
}

TEST_F(LocalSessionsInTheTlsCore, FullLocalCacheEvictsAndFallsBackToTheSharedCache) {
    options.stateful_tickets = true;
    options.local_session_entries = 1;
    ServerTlsContext worker(policy, keys, options);
    bool resumed = true;
    auto first = connect(worker, TLS1_3_VERSION, nullptr, &resumed);
    auto second = connect(worker, TLS1_3_VERSION, nullptr, &resumed);  // evicts the first
    EXPECT_EQ(events.evictions, 1);
    connect(worker, TLS1_3_VERSION, first.get(), &resumed);
    EXPECT_TRUE(resumed);
    EXPECT_EQ(events.misses, 1);
    EXPECT_EQ(shared.counters().hits, 1u);
}

std::span<const std::uint8_t> ticket_of(const SSL_SESSION* session) {
    const unsigned char* ticket = nullptr;
    std::size_t length = 0;
    SSL_SESSION_get0_ticket(session, &ticket, &length);
    return {ticket, length};
}

// Another worker's removal (its remove callback reaches only the shared
// cache and its own copy) ends this worker's copy too.
TEST_F(LocalSessionsInTheTlsCore, SessionRemovedFromTheSharedCacheIsNotResumedFromALocalCopy) {
    options.stateful_tickets = true;
    ServerTlsContext worker(policy, keys, options);
    bool resumed = true;
    auto session = connect(worker, TLS1_3_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    ASSERT_EQ(ticket_of(session.get()).size(), 32u);
    ASSERT_NE(worker.local_sessions()->find(ticket_of(session.get()), std::time(nullptr)), nullptr);
    shared.remove(ticket_of(session.get()));
    connect(worker, TLS1_3_VERSION, session.get(), &resumed);
    EXPECT_FALSE(resumed);
    EXPECT_EQ(events.hits, 0);
    EXPECT_EQ(events.misses, 1);
}

// OpenSSL removes the session of a connection freed without close_notify:
// from the shared cache and from the worker's copy.
TEST_F(LocalSessionsInTheTlsCore, UncleanCloseRemovesTheSessionEverywhere) {
    ServerTlsContext worker(policy, keys, options);
    bool resumed = true;
    auto session = connect(worker, TLS1_2_VERSION, nullptr, &resumed, nullptr, false);
    ASSERT_TRUE(session);
    EXPECT_EQ(shared.counters().stores, 1u);
    EXPECT_EQ(shared.counters().entries, 0u);
    EXPECT_EQ(worker.local_sessions()->size(), 0u);
    connect(worker, TLS1_2_VERSION, session.get(), &resumed);
    EXPECT_FALSE(resumed);
}

// The shared cache serves every listener; a session made under another
// listener's policy is refused by OpenSSL and not kept by this worker.
TEST_F(LocalSessionsInTheTlsCore, AnotherListenersSessionIsNotKept) {
    ServerTlsContext listener_a(policy, keys, options);
    policy.allow.subject_patterns = {"CN=partner,O=Portcullis Test,C=GB"};  // another ID context
    ServerTlsContext listener_b(policy, keys, options);
    bool resumed = true;
    auto session = connect(listener_a, TLS1_2_VERSION, nullptr, &resumed);
    ASSERT_TRUE(session);
    connect(listener_b, TLS1_2_VERSION, session.get(), &resumed);
    EXPECT_FALSE(resumed);
    EXPECT_EQ(shared.counters().hits, 1u) << "the shared cache had it";
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session.get(), &length);
    EXPECT_EQ(listener_b.local_sessions()->find({id, length}, std::time(nullptr)), nullptr);
}

TEST_F(LocalSessionsInTheTlsCore, NoLocalCacheWithoutEntriesOrWithoutTheSharedCache) {
    options.local_session_entries = 0;
    EXPECT_EQ(ServerTlsContext(policy, keys, options).local_sessions(), nullptr);
    options.local_session_entries = 16;
    options.session_cache = nullptr;
    EXPECT_EQ(ServerTlsContext(policy, keys, options).local_sessions(), nullptr);
    options.stateful_tickets = true;
    EXPECT_THROW(ServerTlsContext(policy, keys, options), TlsConfigError);
}

}  // namespace
}  // namespace portcullis::crypto
