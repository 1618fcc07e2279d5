// The shared TLS 1.2 session cache: its bookkeeping (hits, expiry, bounds),
// that it really is shared across fork(), that a worker dying with a shard
// lock held does not wedge the others, and that OpenSSL resumes a session
// stored through one SSL_CTX on another (two workers, one cache).
#include "crypto/session_cache.hpp"

#include <gtest/gtest.h>
#include <openssl/x509_vfy.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/openssl_handles.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::crypto {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes id_of(std::uint32_t n, std::size_t length = 16) {
    Bytes id(length, 0xa5);
    std::memcpy(id.data(), &n, sizeof n);
    return id;
}

Bytes der_of(std::size_t length, std::uint8_t fill) {
    return Bytes(length, fill);
}

TEST(SessionCache, StoreLookupReplaceRemove) {
    SharedSessionCache cache({.max_entries = 64, .max_entry_bytes = 256, .shards = 4});
    const Bytes id = id_of(1);
    const Bytes first = der_of(100, 0x11);
    const Bytes second = der_of(40, 0x22);
    Bytes out;

    EXPECT_FALSE(cache.lookup(id, 1000, out));
    EXPECT_EQ(cache.counters().misses, 1u);

    ASSERT_TRUE(cache.store(id, first, 2000, 1000));
    ASSERT_TRUE(cache.lookup(id, 1000, out));
    EXPECT_EQ(out, first);
    EXPECT_EQ(cache.counters().hits, 1u);

    ASSERT_TRUE(cache.store(id, second, 2000, 1000));  // same id: replaced, not added
    ASSERT_TRUE(cache.lookup(id, 1000, out));
    EXPECT_EQ(out, second);  // `out` shrinks to the new length
    auto c = cache.counters();
    EXPECT_EQ(c.stores, 2u);
    EXPECT_EQ(c.entries, 1u);
    EXPECT_EQ(c.bytes, second.size());
    EXPECT_EQ(c.hits, 2u);

    EXPECT_FALSE(cache.lookup(id_of(2), 1000, out));  // another id misses
    cache.remove(id);
    EXPECT_FALSE(cache.lookup(id, 1000, out));
    c = cache.counters();
    EXPECT_EQ(c.entries, 0u);
    EXPECT_EQ(c.bytes, 0u);
    EXPECT_EQ(c.misses, 3u);
    EXPECT_EQ(c.hits, 2u);
    EXPECT_EQ(c.evictions, 0u);
}

TEST(SessionCache, RejectsBadLimitsAndIds) {
    EXPECT_THROW(SharedSessionCache({.max_entries = 64, .max_entry_bytes = 256, .shards = 3}),
                 std::invalid_argument);
    EXPECT_THROW(SharedSessionCache({.max_entries = 64, .max_entry_bytes = 256, .shards = 0}),
                 std::invalid_argument);
    EXPECT_THROW(SharedSessionCache({.max_entries = 2, .max_entry_bytes = 256, .shards = 4}),
                 std::invalid_argument);
    EXPECT_THROW(SharedSessionCache({.max_entries = 64, .max_entry_bytes = 0, .shards = 4}),
                 std::invalid_argument);

    SharedSessionCache cache({.max_entries = 8, .max_entry_bytes = 64, .shards = 2});
    const Bytes der = der_of(10, 1);
    EXPECT_FALSE(cache.store(Bytes{}, der, 2000, 1000));
    EXPECT_FALSE(cache.store(Bytes(33, 1), der, 2000, 1000));
    EXPECT_FALSE(cache.store(id_of(1), Bytes{}, 2000, 1000));
    EXPECT_FALSE(cache.store(id_of(1), der, 1000, 1000));  // already expired
    EXPECT_TRUE(cache.store(Bytes(32, 1), der, 2000, 1000));
    EXPECT_TRUE(cache.store(Bytes(1, 1), der, 2000, 1000));
    EXPECT_EQ(cache.counters().entries, 2u);
}

TEST(SessionCache, ExpiredEntryMissesAndIsRemoved) {
    SharedSessionCache cache({.max_entries = 16, .max_entry_bytes = 64, .shards = 2});
    const Bytes id = id_of(7);
    ASSERT_TRUE(cache.store(id, der_of(20, 3), 200, 100));
    Bytes out;
    EXPECT_TRUE(cache.lookup(id, 199, out));
    EXPECT_FALSE(cache.lookup(id, 200, out));  // now == expires_at: dead
    auto c = cache.counters();
    EXPECT_EQ(c.expired, 1u);
    EXPECT_EQ(c.misses, 1u);
    EXPECT_EQ(c.hits, 1u);
    EXPECT_EQ(c.entries, 0u);
    EXPECT_EQ(c.bytes, 0u);
    EXPECT_FALSE(cache.lookup(id, 150, out));  // removed, not merely hidden
    c = cache.counters();
    EXPECT_EQ(c.expired, 1u);
    EXPECT_EQ(c.misses, 2u);
}

TEST(SessionCache, PurgeFreesOnlyDeadEntries) {
    SharedSessionCache cache({.max_entries = 64, .max_entry_bytes = 64, .shards = 4});
    for (std::uint32_t n = 0; n < 40; ++n)
        ASSERT_TRUE(cache.store(id_of(n), der_of(10 + n % 7, 1), n % 2 ? 300 : 200, 100));
    EXPECT_EQ(cache.purge_expired(199), 0u);
    EXPECT_EQ(cache.purge_expired(200), 20u);  // the even ids, spread over every shard
    auto c = cache.counters();
    EXPECT_EQ(c.entries, 20u);
    EXPECT_EQ(c.expired, 20u);
    std::uint64_t bytes = 0;
    for (std::uint32_t n = 1; n < 40; n += 2) bytes += 10 + n % 7;
    EXPECT_EQ(c.bytes, bytes);
    Bytes out;
    for (std::uint32_t n = 0; n < 40; ++n)
        EXPECT_EQ(cache.lookup(id_of(n), 250, out), n % 2 == 1) << n;
    EXPECT_EQ(cache.purge_expired(300), 20u);
    c = cache.counters();
    EXPECT_EQ(c.entries, 0u);
    EXPECT_EQ(c.bytes, 0u);
    // The freed slots are reusable up to the full capacity.
    for (std::uint32_t n = 100; n < 164; ++n)
        ASSERT_TRUE(cache.store(id_of(n), der_of(8, 2), 500, 400));
    EXPECT_EQ(cache.counters().entries, 64u);
    EXPECT_EQ(cache.counters().evictions, 0u);
}

TEST(SessionCache, BoundedAndEvictsOldest) {
    SharedSessionCache cache({.max_entries = 32, .max_entry_bytes = 64, .shards = 2});
    const Bytes der = der_of(48, 9);
    constexpr std::uint32_t total = 1000;
    for (std::uint32_t n = 0; n < total; ++n) {
        ASSERT_TRUE(cache.store(id_of(n), der, 10'000, 100));
        ASSERT_LE(cache.counters().entries, 32u) << "after " << n;
    }
    const auto c = cache.counters();
    EXPECT_EQ(c.entries, 32u);
    EXPECT_EQ(c.bytes, 32u * der.size());
    EXPECT_EQ(c.stores, total);
    EXPECT_EQ(c.evictions, total - 32);
    // Each shard holds its 16 most recent ids, so the last 16 overall are all there.
    Bytes out;
    for (std::uint32_t n = total - 16; n < total; ++n)
        EXPECT_TRUE(cache.lookup(id_of(n), 100, out)) << n;
    EXPECT_FALSE(cache.lookup(id_of(0), 100, out));
}

TEST(SessionCache, EvictsWhatExpiresFirst) {
    SharedSessionCache cache({.max_entries = 2, .max_entry_bytes = 64, .shards = 1});
    const Bytes der = der_of(8, 1);
    Bytes out;
    ASSERT_TRUE(cache.store(id_of(1), der, 200, 100));
    ASSERT_TRUE(cache.store(id_of(2), der, 150, 100));  // younger, but expires first
    ASSERT_TRUE(cache.store(id_of(3), der, 300, 100));
    EXPECT_TRUE(cache.lookup(id_of(1), 100, out));
    EXPECT_FALSE(cache.lookup(id_of(2), 100, out));
    EXPECT_TRUE(cache.lookup(id_of(3), 100, out));
    EXPECT_EQ(cache.counters().evictions, 1u);

    // Displacing an entry that is already dead is expiry, not eviction.
    ASSERT_TRUE(cache.store(id_of(4), der, 400, 250));
    EXPECT_FALSE(cache.lookup(id_of(1), 250, out));
    EXPECT_TRUE(cache.lookup(id_of(4), 250, out));
    const auto c = cache.counters();
    EXPECT_EQ(c.evictions, 1u);
    EXPECT_EQ(c.expired, 1u);
    EXPECT_EQ(c.entries, 2u);
}

TEST(SessionCache, TooLargeEntryIsRejected) {
    SharedSessionCache cache({.max_entries = 8, .max_entry_bytes = 64, .shards = 2});
    Bytes out;
    EXPECT_FALSE(cache.store(id_of(1), der_of(65, 1), 2000, 1000));
    EXPECT_FALSE(cache.lookup(id_of(1), 1000, out));
    EXPECT_TRUE(cache.store(id_of(2), der_of(64, 2), 2000, 1000));  // exactly the limit fits
    const auto c = cache.counters();
    EXPECT_EQ(c.too_large, 1u);
    EXPECT_EQ(c.stores, 1u);
    EXPECT_EQ(c.entries, 1u);
    EXPECT_EQ(c.bytes, 64u);
}

TEST(SessionCache, SharedAcrossFork) {
    SharedSessionCache cache({.max_entries = 64, .max_entry_bytes = 128, .shards = 4});
    const Bytes der = der_of(100, 0x5c);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // No gtest in the child: the exit status is the verdict.
        const bool ok = cache.store(id_of(42), der, 2000, 1000);
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    Bytes out;
    ASSERT_TRUE(cache.lookup(id_of(42), 1000, out));
    EXPECT_EQ(out, der);
    const auto c = cache.counters();
    EXPECT_EQ(c.stores, 1u);  // the child's counter, seen by the parent
    EXPECT_EQ(c.hits, 1u);
}

// A child stores 1 MiB entries in a loop (nearly all its time under the shard
// lock) and is SIGKILLed. When it died holding the lock, the next locker takes
// the lock over (EOWNERDEAD) and drops the shard's possibly torn index, so the
// parent's sentinel entry disappears; without a robust mutex the parent would
// block forever instead.
TEST(SessionCache, WorkerKilledHoldingALockDoesNotWedgeOthers) {
    constexpr std::size_t big = 1 << 20;
    SharedSessionCache cache({.max_entries = 2, .max_entry_bytes = big, .shards = 1});
    const Bytes sentinel = id_of(1);
    const Bytes small = der_of(16, 1);
    const Bytes large = der_of(big, 2);
    Bytes out;
    bool recovered = false;
    for (int attempt = 0; attempt < 50 && !recovered; ++attempt) {
        ASSERT_TRUE(cache.store(sentinel, small, 2000, 1000));
        const auto before = cache.counters().stores;
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            for (;;) cache.store(id_of(2), large, 2000, 1000);
        }
        while (cache.counters().stores < before + 2) ::usleep(100);
        ::usleep(static_cast<useconds_t>(200 + 97 * attempt % 1000));
        ASSERT_EQ(::kill(child, SIGKILL), 0);
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        recovered = !cache.lookup(sentinel, 1000, out);
    }
    ASSERT_TRUE(recovered) << "the child was never killed inside the lock";
    // The shard works normally after the takeover.
    EXPECT_EQ(cache.counters().entries, 0u);
    ASSERT_TRUE(cache.store(sentinel, small, 2000, 1000));
    ASSERT_TRUE(cache.lookup(sentinel, 1000, out));
    EXPECT_EQ(out, small);
    EXPECT_EQ(cache.counters().entries, 1u);
}

// Two server SSL_CTX play two workers sharing one cache: a TLS 1.2 session
// made by a full handshake on A resumes on B.
class SessionCacheTls : public ::testing::Test {
  protected:
    using UniqueSession = std::unique_ptr<SSL_SESSION, OpenSslDeleter<SSL_SESSION_free>>;

    UniqueSslCtx server_ctx(bool attached) {
        UniqueSslCtx ctx(SSL_CTX_new(TLS_server_method()));
        EXPECT_TRUE(ctx);
        EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), server_cert.cert.get()), 1);
        EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), server_cert.key.get()), 1);
        static const unsigned char sid_ctx[] = "portcullis-test";
        SSL_CTX_set_session_id_context(ctx.get(), sid_ctx, sizeof sid_ctx - 1);
        // mTLS, so the resumed session must carry the client's certificate.
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), root.cert());
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        if (attached) attach_session_cache(ctx.get(), cache);
        return ctx;
    }

    UniqueSslCtx client_ctx(int version = TLS1_2_VERSION) {
        UniqueSslCtx ctx(SSL_CTX_new(TLS_client_method()));
        EXPECT_TRUE(ctx);
        SSL_CTX_set_min_proto_version(ctx.get(), version);
        SSL_CTX_set_max_proto_version(ctx.get(), version);
        // TLS 1.2: session IDs, not tickets. TLS 1.3 resumes only by ticket.
        if (version == TLS1_2_VERSION) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
        EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), client_cert.cert.get()), 1);
        EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), client_cert.key.get()), 1);
        return ctx;
    }

    static UniqueSsl endpoint(SSL_CTX* ctx, bool server) {
        UniqueSsl ssl(SSL_new(ctx));
        SSL_set_bio(ssl.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        if (server)
            SSL_set_accept_state(ssl.get());
        else
            SSL_set_connect_state(ssl.get());
        return ssl;
    }

    static void pump(SSL* from, SSL* to) {
        char buffer[16384];
        int n;
        while ((n = BIO_read(SSL_get_wbio(from), buffer, sizeof buffer)) > 0)
            BIO_write(SSL_get_rbio(to), buffer, n);
    }

    static bool handshake(SSL* client, SSL* server) {
        for (int round = 0; round < 20; ++round) {
            const int c = SSL_do_handshake(client);
            pump(client, server);
            const int s = SSL_do_handshake(server);
            pump(server, client);
            if (c == 1 && s == 1) return true;
        }
        return false;
    }

    // A TLS 1.3 client's session once the server's ticket reached it (the
    // server writes it after the handshake, on its next read).
    static UniqueSession ticket_session(SSL* client, SSL* server) {
        char byte;
        EXPECT_LE(SSL_read(server, &byte, 1), 0);
        pump(server, client);
        EXPECT_LE(SSL_read(client, &byte, 1), 0);
        UniqueSession session(SSL_get1_session(client));
        EXPECT_TRUE(session && SSL_SESSION_is_resumable(session.get()));
        return session;
    }

    // A connection freed without sending close_notify counts as failed: OpenSSL
    // then removes its session from the cache (and marks it not resumable).
    static void close(SSL* client, SSL* server) {
        SSL_shutdown(client);
        pump(client, server);
        SSL_shutdown(server);
        pump(server, client);
    }

    testing::CertificateAuthority root = testing::CertificateAuthority::root("Cache Root");
    testing::IssuedCert server_cert = root.issue(testing::localhost_server());
    testing::IssuedCert client_cert = root.issue(testing::CertOptions{});  // CN=client, clientAuth
    SharedSessionCache cache{SessionCacheLimits{}};
};

TEST_F(SessionCacheTls, Tls12SessionResumesOnAnotherContext) {
    const auto worker_a = server_ctx(true);
    const auto worker_b = server_ctx(true);
    const auto client = client_ctx();

    UniqueSession session;
    {
        auto c = endpoint(client.get(), false);
        auto s = endpoint(worker_a.get(), true);
        ASSERT_TRUE(handshake(c.get(), s.get()));
        EXPECT_STREQ(SSL_get_version(c.get()), "TLSv1.2");
        EXPECT_FALSE(SSL_session_reused(c.get()));
        session.reset(SSL_get1_session(c.get()));
        ASSERT_TRUE(session);
        unsigned int id_length = 0;
        SSL_SESSION_get_id(session.get(), &id_length);
        EXPECT_GT(id_length, 0u);
        close(c.get(), s.get());
    }
    auto counters = cache.counters();
    EXPECT_EQ(counters.stores, 1u);
    EXPECT_EQ(counters.entries, 1u);
    EXPECT_GT(counters.bytes, 0u);

    auto c = endpoint(client.get(), false);
    ASSERT_EQ(SSL_set_session(c.get(), session.get()), 1);
    auto s = endpoint(worker_b.get(), true);
    ASSERT_TRUE(handshake(c.get(), s.get()));
    EXPECT_TRUE(SSL_session_reused(c.get()));
    EXPECT_TRUE(SSL_session_reused(s.get()));
    // The client identity came back from the cached DER.
    const X509* peer = SSL_get0_peer_certificate(s.get());
    ASSERT_NE(peer, nullptr);
    EXPECT_EQ(X509_cmp(peer, client_cert.cert.get()), 0);
    counters = cache.counters();
    EXPECT_EQ(counters.hits, 1u);
    EXPECT_EQ(counters.entries, 1u);
}

TEST_F(SessionCacheTls, ContextWithoutTheCacheDoesNotResume) {
    const auto worker_a = server_ctx(true);
    const auto unattached = server_ctx(false);  // same certificate and session id context
    const auto client = client_ctx();

    UniqueSession session;
    {
        auto c = endpoint(client.get(), false);
        auto s = endpoint(worker_a.get(), true);
        ASSERT_TRUE(handshake(c.get(), s.get()));
        session.reset(SSL_get1_session(c.get()));
        ASSERT_TRUE(session);
        close(c.get(), s.get());
    }
    ASSERT_EQ(cache.counters().entries, 1u);  // resumable, had the server held the cache
    auto c = endpoint(client.get(), false);
    ASSERT_EQ(SSL_set_session(c.get(), session.get()), 1);
    auto s = endpoint(unattached.get(), true);
    ASSERT_TRUE(handshake(c.get(), s.get()));
    EXPECT_FALSE(SSL_session_reused(c.get()));
    EXPECT_EQ(cache.counters().hits, 0u);
}

// A stateless TLS 1.3 ticket carries its session: nothing asks the cache for
// it, so the cache is not given a copy, on a full handshake or a resumed one.
TEST_F(SessionCacheTls, Tls13StatelessTicketsAreNotStored) {
    const auto worker = server_ctx(true);
    const auto client = client_ctx(TLS1_3_VERSION);
    UniqueSession session;
    {
        auto c = endpoint(client.get(), false);
        auto s = endpoint(worker.get(), true);
        ASSERT_TRUE(handshake(c.get(), s.get()));
        EXPECT_STREQ(SSL_get_version(s.get()), "TLSv1.3");
        session = ticket_session(c.get(), s.get());
        close(c.get(), s.get());
    }
    ASSERT_TRUE(session);
    auto c = endpoint(client.get(), false);
    ASSERT_EQ(SSL_set_session(c.get(), session.get()), 1);
    auto s = endpoint(worker.get(), true);
    ASSERT_TRUE(handshake(c.get(), s.get()));
    EXPECT_TRUE(SSL_session_reused(s.get()));
    ticket_session(c.get(), s.get());  // the renewed ticket
    const auto counters = cache.counters();
    EXPECT_EQ(counters.stores, 0u);
    EXPECT_EQ(counters.entries, 0u);
    EXPECT_EQ(counters.bytes, 0u);
    EXPECT_EQ(counters.hits + counters.misses, 0u);
}

// A stateful TLS 1.3 ticket (SSL_OP_NO_TICKET) is the ID of a cached
// session, so that session is stored and resumes on another worker.
TEST_F(SessionCacheTls, Tls13StatefulTicketResumesOnAnotherContext) {
    const auto worker_a = server_ctx(true);
    const auto worker_b = server_ctx(true);
    for (SSL_CTX* worker : {worker_a.get(), worker_b.get()}) {
        SSL_CTX_set_options(worker, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(worker, 1);  // as ServerTlsContext does
    }
    const auto client = client_ctx(TLS1_3_VERSION);
    UniqueSession session;
    {
        auto c = endpoint(client.get(), false);
        auto s = endpoint(worker_a.get(), true);
        ASSERT_TRUE(handshake(c.get(), s.get()));
        session = ticket_session(c.get(), s.get());
        close(c.get(), s.get());
    }
    ASSERT_TRUE(session);
    EXPECT_EQ(cache.counters().stores, 1u);
    auto c = endpoint(client.get(), false);
    ASSERT_EQ(SSL_set_session(c.get(), session.get()), 1);
    auto s = endpoint(worker_b.get(), true);
    ASSERT_TRUE(handshake(c.get(), s.get()));
    EXPECT_TRUE(SSL_session_reused(s.get()));
    EXPECT_EQ(cache.counters().hits, 1u);
}

// OpenSSL treats a connection freed without close_notify as failed and
// removes its session: the remove callback must reach the shared cache.
TEST_F(SessionCacheTls, UncleanCloseRemovesTheSession) {
    const auto worker_a = server_ctx(true);
    const auto client = client_ctx();
    {
        auto c = endpoint(client.get(), false);
        auto s = endpoint(worker_a.get(), true);
        ASSERT_TRUE(handshake(c.get(), s.get()));
        ASSERT_EQ(cache.counters().entries, 1u);
    }
    const auto counters = cache.counters();
    EXPECT_EQ(counters.stores, 1u);
    EXPECT_EQ(counters.entries, 0u);
    EXPECT_EQ(counters.bytes, 0u);
}

}  // namespace
}  // namespace portcullis::crypto
