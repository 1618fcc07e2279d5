// Connection driven in one thread with no daemon and no socket: the client
// and backend streams are fakes the test fills and drains, the TLS core is
// the real one, and the client is a real OpenSSL client over memory BIOs.
// Each case says what the worker would do (pump on activity, on_tick every
// tick, hand back finished key operations) and checks what reached each side.
// The asynchronous key cases sign with an in-memory key whose signature is
// made when the test says so, on another thread as an HSM session's would be
// (tests/support/paused_key_source.hpp); run under ASan and TSan too.
#include "dataplane/connection.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>

#include "crypto/key_completion_queue.hpp"
#include "crypto/key_source.hpp"
#include "tests/support/paused_key_source.hpp"
#include "tests/support/proxy_v2_parser.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::dataplane {
namespace {

namespace fs = std::filesystem;
using Status = ByteStream::Status;

// One side of a TCP connection as the Connection sees it: `inbound` is what
// the peer sent and the Connection has not read, `outbound` what the
// Connection wrote. `write_room` bytes may be written before would_block.
class FakeStream final : public ByteStream {
  public:
    explicit FakeStream(int connect_result = 0) : connect_result_(connect_result) {}

    Io read(std::span<std::uint8_t> into) override {
        if (!inbound.empty()) {
            const auto n = std::min(into.size(), inbound.size());
            std::memcpy(into.data(), inbound.data(), n);
            inbound.erase(0, n);
            return {Status::ok, n, 0};
        }
        if (peer_reset) return {Status::error, 0, ECONNRESET};
        return {peer_fin ? Status::eof : Status::would_block, 0, 0};
    }
    Io write(std::span<const std::uint8_t> bytes) override {
        if (write_shut) return {Status::error, 0, EPIPE};
        const auto n = std::min(bytes.size(), write_room);
        if (n == 0) return {Status::would_block, 0, 0};
        if (write_room != unlimited) write_room -= n;
        outbound.append(reinterpret_cast<const char*>(bytes.data()), n);
        return {Status::ok, n, 0};
    }
    void shutdown_write() override { write_shut = true; }
    int connect_result() override { return connect_result_; }
    SocketAddress local_address() override {
        ++local_address_asked;
        return local;
    }

    static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();
    std::string inbound;
    bool peer_fin = false;    // once `inbound` is read: end of stream
    bool peer_reset = false;  // once `inbound` is read: ECONNRESET
    std::string outbound;
    std::size_t write_room = unlimited;
    bool write_shut = false;
    int connect_result_ = 0;
    SocketAddress local = *SocketAddress::parse("192.0.2.2:443");
    int local_address_asked = 0;
};

// Hands out fake backend streams, already connected.
class FakeTransport final : public Transport {
  public:
    void listen(ListenerRuntime&) override {}
    void stop_listening() override {}
    std::unique_ptr<ByteStream> connect(const SocketAddress&, Connection&, int&) override {
        auto stream = std::make_unique<FakeStream>();
        upstream = stream.get();
        ++connects;
        return stream;
    }
    std::string describe() const override { return "fake"; }

    FakeStream* upstream = nullptr;
    int connects = 0;
};

struct TempDir {
    fs::path dir;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "portcullis-unit.XXXXXX").string();
        dir = ::mkdtemp(pattern.data());
    }
    ~TempDir() { fs::remove_all(dir); }
    std::string put(const std::string& name, const std::string& text) {
        testing::write_file(dir / name, text);
        return (dir / name).string();
    }
};

std::string pattern_bytes(std::size_t size, char seed) {
    std::string bytes(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
        bytes[i] = static_cast<char>((static_cast<std::size_t>(seed) + i * 7) % 251);
    return bytes;
}

class ConnectionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        testing::CertOptions server;
        server.common_name = "localhost";
        server.dns_names = {"localhost"};
        server.client_auth = false;
        server.server_auth = true;
        const auto server_cert = root.issue(server);
        auto& settings = listener.settings;
        settings.name = "unit";
        settings.handshake_timeout_ms = 1000;
        settings.buffer_bytes = 16 * 1024;
        settings.tls.certificates = {{files.put("server.pem", server_cert.cert_pem()),
                                      files.put("server.key", server_cert.key_pem()),
                                      {}}};
        settings.tls.trust_file = files.put("root.pem", root.cert_pem());
        settings.upstream.backends = {*SocketAddress::parse("127.0.0.1:9")};
        listener.tls = std::make_shared<const crypto::ServerTlsContext>(settings.tls, keys);
        listener.backends = std::make_shared<BackendPool>(settings.upstream);
        listener.stats = &listener_stats;

        worker.transport = &transport;
        worker.now = Clock::now();
        worker.stats = &worker_stats;
        worker.buffers = &buffers;

        client_ctx.reset(SSL_CTX_new(TLS_client_method()));
        SSL_CTX_use_certificate(client_ctx.get(), client_cert.cert.get());
        SSL_CTX_use_PrivateKey(client_ctx.get(), client_cert.key.get());
        client.reset(SSL_new(client_ctx.get()));
        SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(client.get());
        SSL_set_tlsext_host_name(client.get(), "localhost");

        connect_client();
    }

    void connect_client() {
        auto stream = std::make_unique<FakeStream>();
        client_stream = stream.get();
        connection = std::make_unique<Connection>(worker, listener, std::move(stream), peer);
    }

    // Before any handshake: SetUp's connection, in front of backends that
    // take a PROXY v2 header.
    void restart_with_proxy_protocol() {
        connection.reset();
        auto upstream = listener.settings.upstream;
        upstream.proxy_protocol = true;
        listener.backends = std::make_shared<BackendPool>(upstream);
        connect_client();
    }

    // The listener's key signs asynchronously (as a token key does) and the
    // worker has a completion queue; the client connects afresh.
    void use_paused_key() {
        connection.reset();
        listener.tls =
            std::make_shared<const crypto::ServerTlsContext>(listener.settings.tls, paused_keys);
        worker.key_completions = &completions;
        connect_client();
    }

    // Settles until the handshake waits for its signature; the operation.
    std::shared_ptr<testing::PausedKeyOperation> pause_on_signature() {
        settle();
        const auto operations = paused_keys.operations();
        EXPECT_EQ(operations.size(), 1u) << "the handshake did not ask for one signature";
        if (operations.size() != 1) return nullptr;
        EXPECT_FALSE(operations.front()->finished());
        EXPECT_EQ(worker.awaiting_key.size(), 1u) << "the connection does not wait for it";
        EXPECT_FALSE(SSL_is_init_finished(client.get()));
        EXPECT_FALSE(connection->finished());
        return operations.front();
    }

    // What the worker does when the queue's eventfd fires: each finished
    // operation resumes the connection waiting for it, if one still does.
    int deliver_completions() {
        int delivered = 0;
        for (const auto& op : completions.drain()) {
            const auto waiting = worker.awaiting_key.find(op.get());
            if (waiting == worker.awaiting_key.end()) continue;
            waiting->second->on_key_operation_done();
            ++delivered;
        }
        return delivered;
    }

    // An HSM session thread finishing the signature; whether it completed.
    static bool complete_on_another_thread(testing::PausedKeyOperation& op) {
        bool completed = false;
        std::thread([&] { completed = op.complete(); }).join();
        return completed;
    }

    std::uint64_t handshakes_rejected() const {
        std::uint64_t n = 0;
        for (const auto& counter : listener_stats.handshakes_rejected) n += counter.get();
        return n;
    }

    // The client left while the signature was pending: the connection ended
    // at once, let the operation go and counted an abandoned handshake; the
    // late completion finds nothing, the freed connection is never touched.
    void expect_left_mid_signature(testing::PausedKeyOperation& op) {
        EXPECT_TRUE(connection->finished());
        EXPECT_EQ(op.abandoned(), crypto::KeyAbandonReason::cancelled);
        EXPECT_TRUE(worker.awaiting_key.empty());
        EXPECT_EQ(listener_stats.handshakes_abandoned.get(), 1u);
        EXPECT_EQ(handshakes_rejected(), 0u) << "the client leaving counted as a failure";
        EXPECT_EQ(listener_stats.handshakes_full.get(), 0u);
        EXPECT_EQ(transport.connects, 0);

        connection.reset();  // what the worker does after the event batch
        client_stream = nullptr;
        EXPECT_EQ(listener_stats.connections_active.get(), 0u);
        EXPECT_FALSE(complete_on_another_thread(op)) << "an abandoned signature completed";
        EXPECT_EQ(deliver_completions(), 0);
        EXPECT_TRUE(completions.drain().empty()) << "the dropped completion reached the sink";
    }

    // The wire between the OpenSSL client and the client stream, both ways.
    bool shuttle() {
        bool moved = false;
        char buffer[16384];
        int n;
        while ((n = BIO_read(SSL_get_wbio(client.get()), buffer, sizeof buffer)) > 0) {
            client_stream->inbound.append(buffer, static_cast<std::size_t>(n));
            moved = true;
        }
        if (!client_stream->outbound.empty()) {
            BIO_write(SSL_get_rbio(client.get()), client_stream->outbound.data(),
                      static_cast<int>(client_stream->outbound.size()));
            client_stream->outbound.clear();
            moved = true;
        }
        return moved;
    }

    // What the worker does on activity, until neither side moves.
    void settle() {
        for (int round = 0; round < 200; ++round) {
            if (!SSL_is_init_finished(client.get())) SSL_do_handshake(client.get());
            const bool to_wire = shuttle();
            const auto before =
                std::make_pair(client_stream->inbound.size(),
                               transport.upstream ? transport.upstream->outbound.size() : 0);
            connection->pump();
            const bool from_wire = shuttle();
            const auto after =
                std::make_pair(client_stream->inbound.size(),
                               transport.upstream ? transport.upstream->outbound.size() : 0);
            if (!to_wire && !from_wire && before == after) return;
        }
        ADD_FAILURE() << "the connection never settled";
    }

    void handshake() {
        settle();
        ASSERT_TRUE(SSL_is_init_finished(client.get())) << "client handshake incomplete";
        ASSERT_NE(transport.upstream, nullptr) << "no backend connection after the handshake";
        ASSERT_EQ(listener_stats.handshakes_full.get(), 1u);
    }

    void client_sends(const std::string& bytes) {
        ASSERT_EQ(SSL_write(client.get(), bytes.data(), static_cast<int>(bytes.size())),
                  static_cast<int>(bytes.size()));
    }

    // Plaintext the client has received; `closed` set on close_notify.
    std::string client_reads(bool* closed = nullptr) {
        std::string got;
        char buffer[16384];
        while (true) {
            const int n = SSL_read(client.get(), buffer, sizeof buffer);
            if (n > 0) {
                got.append(buffer, static_cast<std::size_t>(n));
                continue;
            }
            if (closed != nullptr)
                *closed = SSL_get_error(client.get(), n) == SSL_ERROR_ZERO_RETURN;
            ERR_clear_error();
            return got;
        }
    }

    testing::CertificateAuthority root = testing::CertificateAuthority::root("Unit Root");
    testing::IssuedCert client_cert = root.issue(testing::CertOptions{});
    TempDir files;
    crypto::PemFileKeySource keys;
    crypto::KeyCompletionQueue completions;
    testing::PausedKeySource paused_keys{completions};
    WorkerStats worker_stats;
    ListenerStats listener_stats;
    FakeTransport transport;
    base::BufferPool buffers;
    // Eight blocks: ingress stops at seven (the pool keeps an eighth in reserve).
    base::BufferPool tight_buffers{base::BufferPoolLimits{.budget_bytes = 8 * 17 * 1024}};
    WorkerRuntime worker;
    ListenerRuntime listener;
    crypto::UniqueSslCtx client_ctx;
    crypto::UniqueSsl client;
    FakeStream* client_stream = nullptr;
    const SocketAddress peer = *SocketAddress::parse("192.0.2.1:40000");
    std::unique_ptr<Connection> connection;
};

// Our address can cost a system call per connection (getsockname behind a
// wildcard listener): nothing but the PROXY header may ask for it.
TEST_F(ConnectionTest, WithoutAPROXYHeaderNothingAsksForTheAddressTheClientReached) {
    handshake();
    client_sends("GET / HTTP/1.0\r\n\r\n");
    settle();
    EXPECT_EQ(transport.upstream->outbound, "GET / HTTP/1.0\r\n\r\n");
    EXPECT_EQ(client_stream->local_address_asked, 0);
}

TEST_F(ConnectionTest, ThePROXYHeaderCarriesTheAddressTheClientReached) {
    restart_with_proxy_protocol();
    client_stream->local = *SocketAddress::parse("198.51.100.7:8443");
    handshake();
    EXPECT_EQ(client_stream->local_address_asked, 1);
    const auto& sent = transport.upstream->outbound;
    const auto parsed =
        testing::parse_proxy_v2({reinterpret_cast<const std::uint8_t*>(sent.data()), sent.size()});
    ASSERT_TRUE(parsed.header) << parsed.error;
    EXPECT_EQ(parsed.header->destination_address, "198.51.100.7");
    EXPECT_EQ(parsed.header->destination_port, 8443);
    EXPECT_EQ(parsed.header->source_address, "192.0.2.1");
    EXPECT_EQ(parsed.header->source_port, 40000);
}

TEST_F(ConnectionTest, ClientFinAfterItsRequestIsPassedOnAndTheAnswerStillArrives) {
    handshake();
    auto& backend = *transport.upstream;
    client_sends("GET / HTTP/1.0\r\n\r\n");
    shuttle();
    client_stream->peer_fin = true;  // TCP FIN, no close_notify
    settle();
    EXPECT_EQ(backend.outbound, "GET / HTTP/1.0\r\n\r\n");
    EXPECT_TRUE(backend.write_shut) << "the client's FIN did not reach the backend";
    EXPECT_FALSE(connection->finished()) << "the answer has not been sent yet";

    backend.inbound = "HTTP/1.0 200 OK\r\n\r\nbody";
    backend.peer_fin = true;
    settle();
    bool closed = false;
    EXPECT_EQ(client_reads(&closed), "HTTP/1.0 200 OK\r\n\r\nbody");
    EXPECT_TRUE(closed) << "no close_notify after the backend's FIN";
    EXPECT_TRUE(connection->finished());
}

TEST_F(ConnectionTest, BackendFinFirstSendsCloseNotifyAndEndsOnceTheClientIsDone) {
    handshake();
    auto& backend = *transport.upstream;
    backend.inbound = "banner";
    backend.peer_fin = true;
    settle();
    bool closed = false;
    EXPECT_EQ(client_reads(&closed), "banner");
    EXPECT_TRUE(closed) << "no close_notify after the backend's FIN";
    EXPECT_FALSE(connection->finished()) << "the client's direction is still open";
    EXPECT_FALSE(backend.write_shut);

    client_sends("last words");
    ASSERT_EQ(SSL_shutdown(client.get()), 1);  // close_notify both ways now
    settle();
    EXPECT_EQ(backend.outbound, "last words");
    EXPECT_TRUE(backend.write_shut);
    EXPECT_TRUE(connection->finished());
}

TEST_F(ConnectionTest, BackendThatCannotTakeMorePausesTheClientAndLosesNothing) {
    handshake();
    auto& backend = *transport.upstream;
    backend.write_room = 0;
    const auto sent = pattern_bytes(256 * 1024, 'a');
    client_sends(sent);
    settle();
    EXPECT_TRUE(backend.outbound.empty());
    EXPECT_FALSE(client_stream->inbound.empty())
        << "the client was read although the backend takes nothing";
    const auto waiting = client_stream->inbound.size();

    backend.write_room = 20000;  // writable again, but only partly
    settle();
    EXPECT_EQ(backend.outbound.size(), 20000u);
    EXPECT_LT(client_stream->inbound.size(), waiting) << "reading from the client did not resume";

    backend.write_room = FakeStream::unlimited;
    settle();
    EXPECT_EQ(backend.outbound, sent);
    EXPECT_TRUE(client_stream->inbound.empty());
    EXPECT_FALSE(connection->finished());
}

TEST_F(ConnectionTest, ClientThatCannotTakeMorePausesTheBackendAndLosesNothing) {
    handshake();
    auto& backend = *transport.upstream;
    client_stream->write_room = 0;
    const auto answer = pattern_bytes(256 * 1024, 'z');
    backend.inbound = answer;
    settle();
    EXPECT_FALSE(backend.inbound.empty())
        << "the backend was read although the client takes nothing";
    const auto waiting = backend.inbound.size();

    std::string received;
    for (int round = 0; round < 1000 && received.size() < answer.size(); ++round) {
        client_stream->write_room = 4096;  // a slow client drains a little at a time
        settle();
        received += client_reads();
    }
    EXPECT_LT(backend.inbound.size(), waiting);
    EXPECT_EQ(received, answer);
    EXPECT_TRUE(backend.inbound.empty());
}

// Memory follows what a connection holds: once the request went up and the
// answer down, its four queues hold no block.
TEST_F(ConnectionTest, AProxiedConnectionWithNothingInFlightHoldsNoBufferBlocks) {
    handshake();
    EXPECT_EQ(buffers.bytes_in_use(), 0u) << "the handshake left blocks behind";
    client_sends(pattern_bytes(50000, 'r'));
    auto& backend = *transport.upstream;
    backend.inbound = pattern_bytes(70000, 'b');
    settle();
    EXPECT_EQ(backend.outbound, pattern_bytes(50000, 'r'));
    EXPECT_EQ(client_reads(), pattern_bytes(70000, 'b'));
    EXPECT_GT(buffers.high_water_bytes(), 0u);
    EXPECT_EQ(buffers.bytes_in_use(), 0u) << "drained queues kept their blocks";
    EXPECT_FALSE(connection->finished());
}

// The worker's budget spent by others: the connection stops reading the
// client (nothing grows), is listed as starved, and once blocks come back and
// the worker pumps it again every byte arrives.
TEST_F(ConnectionTest, ASpentBufferBudgetPausesTheClientAndLosesNothing) {
    connection.reset();
    worker.buffers = &tight_buffers;
    connect_client();
    handshake();
    ASSERT_EQ(tight_buffers.bytes_in_use(), 0u);
    auto hog = std::make_unique<base::ByteQueue>(tight_buffers, base::BufferPool::Use::ingress,
                                                 std::size_t{1} << 20);
    const auto filler = pattern_bytes(std::size_t{1} << 20, 'h');
    hog->append({reinterpret_cast<const std::uint8_t*>(filler.data()), filler.size()});
    ASSERT_EQ(hog->blocks(), 7u);

    const auto sent = pattern_bytes(100000, 's');
    client_sends(sent);
    settle();
    auto& backend = *transport.upstream;
    EXPECT_TRUE(backend.outbound.empty()) << "bytes read past a spent budget";
    EXPECT_FALSE(client_stream->inbound.empty());
    EXPECT_LE(tight_buffers.bytes_in_use(), tight_buffers.budget_bytes());
    EXPECT_TRUE(worker.starved.contains(*connection));
    ASSERT_EQ(worker.starved.size(), 1u);

    hog.reset();  // another connection drained
    // What the worker does once blocks came back: the oldest first.
    ASSERT_EQ(worker.starved.pop_front(), connection.get());
    connection->pump();
    settle();
    EXPECT_EQ(backend.outbound, sent);
    EXPECT_FALSE(worker.starved.contains(*connection));
    EXPECT_EQ(tight_buffers.bytes_in_use(), 0u);
}

TEST_F(ConnectionTest, UnfinishedHandshakeEndsAtTheTimeoutAndIsCounted) {
    SSL_do_handshake(client.get());
    shuttle();  // the ClientHello, then the client goes silent
    connection->pump();
    worker.now += std::chrono::milliseconds(listener.settings.handshake_timeout_ms - 1);
    connection->on_tick();
    EXPECT_FALSE(connection->finished()) << "ended before the timeout";

    worker.now += std::chrono::milliseconds(1);
    connection->on_tick();
    EXPECT_TRUE(connection->finished());
    const auto timeout = static_cast<std::size_t>(crypto::RejectReason::timeout);
    EXPECT_EQ(listener_stats.handshakes_rejected[timeout].get(), 1u);
    EXPECT_EQ(transport.connects, 0);
}

TEST_F(ConnectionTest, ClientFinWhileTheSignatureIsPendingEndsItAndTheLateCompletionIsDropped) {
    use_paused_key();
    const auto op = pause_on_signature();
    ASSERT_TRUE(op);
    client_stream->peer_fin = true;  // the client gives up: FIN, no close_notify
    connection->pump();              // the worker saw activity on the stream
    expect_left_mid_signature(*op);
}

TEST_F(ConnectionTest, ClientResetWhileTheSignatureIsPendingEndsItAndTheLateCompletionIsDropped) {
    use_paused_key();
    const auto op = pause_on_signature();
    ASSERT_TRUE(op);
    client_stream->peer_reset = true;
    connection->pump();
    expect_left_mid_signature(*op);
}

TEST_F(ConnectionTest, ConnectionDestroyedMidSignatureLeavesNothingForTheLateCompletion) {
    use_paused_key();
    const auto op = pause_on_signature();
    ASSERT_TRUE(op);
    connection.reset();  // the drain deadline passed: the worker destroys what is left
    client_stream = nullptr;
    EXPECT_EQ(op->abandoned(), crypto::KeyAbandonReason::cancelled);
    EXPECT_TRUE(worker.awaiting_key.empty());
    EXPECT_EQ(listener_stats.connections_active.get(), 0u);
    EXPECT_FALSE(complete_on_another_thread(*op));
    EXPECT_EQ(deliver_completions(), 0);
}

TEST_F(ConnectionTest, SignatureArrivingWhileTheClientWaitsFinishesTheHandshakeAndProxies) {
    use_paused_key();
    const auto op = pause_on_signature();
    ASSERT_TRUE(op);
    bool completed = false;
    std::thread session([&] { completed = op->complete(); });
    pollfd ready{completions.fd(), POLLIN, 0};  // the worker's epoll on the queue's eventfd
    EXPECT_EQ(::poll(&ready, 1, 5000), 1) << "no wake-up for the completion";
    session.join();
    ASSERT_TRUE(completed);
    ASSERT_EQ(deliver_completions(), 1);
    EXPECT_TRUE(worker.awaiting_key.empty());
    EXPECT_EQ(op->why_failed(), "");

    handshake();  // the client verified the signature in the server's CertificateVerify
    EXPECT_EQ(paused_keys.operations().size(), 1u);
    EXPECT_EQ(handshakes_rejected(), 0u);
    EXPECT_EQ(listener_stats.handshakes_abandoned.get(), 0u);
    auto& backend = *transport.upstream;
    client_sends("GET / HTTP/1.0\r\n\r\n");
    settle();
    EXPECT_EQ(backend.outbound, "GET / HTTP/1.0\r\n\r\n");
    backend.inbound = "HTTP/1.0 200 OK\r\n\r\nsigned late";
    backend.peer_fin = true;
    settle();
    bool closed = false;
    EXPECT_EQ(client_reads(&closed), "HTTP/1.0 200 OK\r\n\r\nsigned late");
    EXPECT_TRUE(closed);
}

}  // namespace
}  // namespace portcullis::dataplane
