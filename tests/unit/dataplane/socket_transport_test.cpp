// The kernel transport with real sockets on the loopback: the options an
// accepted socket carries although only the listener was given them (read
// back with getsockopt, as a user would check with `ss -o`), the backend
// socket's options, the address a client reached, how a connect in progress
// ends, and which reads go to the kernel after a short one.
#include "dataplane/kernel/socket_transport.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "crypto/key_source.hpp"
#include "dataplane/connection.hpp"
#include "dataplane/kernel/socket_stream.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::dataplane::kernel {
namespace {

namespace fs = std::filesystem;
using Status = ByteStream::Status;

// Keeps every accepted stream (refusing it, so the transport leaves it to
// the test: not registered, read only when the test says).
struct RecordingHost final : TransportHost {
    Connection* accept(ListenerRuntime&, std::unique_ptr<ByteStream> client,
                       const SocketAddress&) override {
        accepted.push_back(std::move(client));
        return nullptr;
    }
    void activity(Connection&) override { ++activities; }
    base::BufferPool& buffers() override { return pool; }

    base::BufferPool pool;
    std::vector<std::unique_ptr<ByteStream>> accepted;
    int activities = 0;
};

int free_port() {
    base::UniqueFd probe(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    EXPECT_EQ(::bind(probe.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    EXPECT_EQ(::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&sin), &len), 0);
    return ntohs(sin.sin_port);
}

SocketAddress loopback(int port) {
    return *SocketAddress::parse("127.0.0.1:" + std::to_string(port));
}

base::UniqueFd connect_to(int port) {
    base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto address = loopback(port);
    EXPECT_EQ(::connect(fd.get(), address.sa(), address.length), 0) << std::strerror(errno);
    return fd;
}

int option(int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    EXPECT_EQ(::getsockopt(fd, level, name, &value, &len), 0) << std::strerror(errno);
    return value;
}

// Until the kernel holds unread bytes (or the FIN) for `fd`.
void wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1) << "nothing arrived";
}

void send_all(int fd, const std::string& bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
}

std::string as_text(std::span<const std::uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

class SocketTransportTest : public ::testing::Test {
  protected:
    void SetUp() override {
        listener.settings.name = "unit";
        listener.settings.address = loopback(port);
    }

    // A transport listening on `address`, with `keepalive`.
    void listen(const SocketAddress& address, const KeepaliveSettings& keepalive) {
        listener.settings.address = address;
        transport = std::make_unique<SocketTransport>(reactor, host, keepalive);
        transport->listen(listener);
    }

    // The server side of a fresh connection from `client`.
    SocketStream& accept_from(base::UniqueFd& client) {
        client = connect_to(port);
        for (int turn = 0; turn < 50 && host.accepted.empty(); ++turn) reactor.turn(100);
        EXPECT_EQ(host.accepted.size(), 1u) << "the listener accepted nothing";
        return dynamic_cast<SocketStream&>(*host.accepted.back());
    }

    Reactor::Clock::time_point now{};
    base::Counter busy;
    Reactor reactor{now, busy};
    RecordingHost host;
    int port = free_port();
    ListenerRuntime listener;
    std::unique_ptr<SocketTransport> transport;
};

TEST_F(SocketTransportTest, AcceptedSocketsCarryTheListenersNodelayAndKeepalive) {
    listen(loopback(port), KeepaliveSettings{42, 7, 3});
    base::UniqueFd client;
    const int fd = accept_from(client).fd();
    EXPECT_NE(option(fd, IPPROTO_TCP, TCP_NODELAY), 0) << "TCP_NODELAY not inherited";
    EXPECT_NE(option(fd, SOL_SOCKET, SO_KEEPALIVE), 0) << "SO_KEEPALIVE not inherited";
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPIDLE), 42);
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPINTVL), 7);
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
}

TEST_F(SocketTransportTest, WithoutKeepaliveAcceptedSocketsHaveNone) {
    listen(loopback(port), KeepaliveSettings{0, 10, 6});
    base::UniqueFd client;
    const int fd = accept_from(client).fd();
    EXPECT_EQ(option(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    EXPECT_NE(option(fd, IPPROTO_TCP, TCP_NODELAY), 0);
}

TEST_F(SocketTransportTest, TheAddressAClientReachedIsKnownOnBothKindsOfListener) {
    listen(loopback(port), {});
    base::UniqueFd first;
    EXPECT_EQ(accept_from(first).local_address().to_string(), loopback(port).to_string());

    // A wildcard listener learns it from the kernel.
    transport.reset();
    host.accepted.clear();
    port = free_port();
    listen(*SocketAddress::parse("*:" + std::to_string(port)), {});
    base::UniqueFd second;
    EXPECT_EQ(accept_from(second).local_address().to_string(), loopback(port).to_string());
}

// After a read shorter than the space offered the socket is known drained:
// the next read answers would_block without a recv, and the next segment's
// edge makes it readable again. A FIN already reported is read at once.
TEST_F(SocketTransportTest, AShortReadEndsReadingUntilTheNextEdgeUnlessTheEndIsKnown) {
    listen(loopback(port), {});
    base::UniqueFd client;
    auto& stream = accept_from(client);
    reactor.add(stream.fd(), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, stream);
    reactor.turn(0);  // the registration's own report: writable

    std::uint8_t buffer[8];
    send_all(client.get(), "0123456789");  // longer than the buffer: no short read
    wait_readable(stream.fd());
    reactor.turn(0);  // its edge, so that the next one can only come from the next segment
    auto r = stream.read(buffer);
    ASSERT_EQ(r.status, Status::ok);
    EXPECT_EQ(as_text({buffer, r.bytes}), "01234567");
    r = stream.read(buffer);
    ASSERT_EQ(r.status, Status::ok) << "a full read must not end reading";
    EXPECT_EQ(as_text({buffer, r.bytes}), "89");

    send_all(client.get(), "abc");
    wait_readable(stream.fd());
    EXPECT_EQ(stream.read(buffer).status, Status::would_block)
        << "after a short read the stream waits for the next edge";
    EXPECT_EQ(reactor.turn(1000).dispatched, 1) << "the segment raised no edge";
    r = stream.read(buffer);
    ASSERT_EQ(r.status, Status::ok);
    EXPECT_EQ(as_text({buffer, r.bytes}), "abc");

    send_all(client.get(), "xyz");
    ::shutdown(client.get(), SHUT_WR);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // data and FIN in one report
    EXPECT_EQ(reactor.turn(1000).dispatched, 1);
    r = stream.read(buffer);
    ASSERT_EQ(r.status, Status::ok);
    EXPECT_EQ(as_text({buffer, r.bytes}), "xyz");
    EXPECT_EQ(stream.read(buffer).status, Status::eof)
        << "the FIN was reported: the short read must not hide it";
}

// A Connection for the backend side to belong to (its TLS context is real;
// nothing in these tests drives it).
class BackendSocketTest : public SocketTransportTest {
  protected:
    void SetUp() override {
        SocketTransportTest::SetUp();
        testing::CertOptions server;
        server.common_name = "localhost";
        server.client_auth = false;
        server.server_auth = true;
        const auto cert = root.issue(server);
        testing::write_file(dir / "server.pem", cert.cert_pem());
        testing::write_file(dir / "server.key", cert.key_pem());
        testing::write_file(dir / "root.pem", root.cert_pem());
        auto& settings = listener.settings;
        settings.tls.certificates = {
            {(dir / "server.pem").string(), (dir / "server.key").string(), {}}};
        settings.tls.trust_file = (dir / "root.pem").string();
        settings.upstream.backends = {loopback(port)};
        listener.tls = std::make_shared<const crypto::ServerTlsContext>(settings.tls, keys);
        listener.backends = std::make_shared<BackendPool>(settings.upstream);
        listener.stats = &listener_stats;
        worker.stats = &worker_stats;
        worker.buffers = &buffers;
        transport = std::make_unique<SocketTransport>(reactor, host, KeepaliveSettings{42, 7, 3});
        worker.transport = transport.get();
        owner = std::make_unique<Connection>(worker, listener, std::make_unique<FakeClient>(),
                                             loopback(1));
    }
    void TearDown() override { fs::remove_all(dir); }

    struct FakeClient final : ByteStream {
        Io read(std::span<std::uint8_t>) override { return {}; }
        Io write(std::span<const std::uint8_t>) override { return {}; }
        void shutdown_write() override {}
        int connect_result() override { return 0; }
        SocketAddress local_address() override { return {}; }
    };

    // Reactor turns until the connect in progress is decided.
    int connect_outcome(ByteStream& stream) {
        for (int turn = 0; turn < 50 && stream.connect_result() == EINPROGRESS; ++turn)
            reactor.turn(100);
        return stream.connect_result();
    }

    fs::path dir = [] {
        std::string pattern = (fs::temp_directory_path() / "portcullis-unit.XXXXXX").string();
        return fs::path(::mkdtemp(pattern.data()));
    }();
    testing::CertificateAuthority root = testing::CertificateAuthority::root("Unit Root");
    crypto::PemFileKeySource keys;
    WorkerStats worker_stats;
    ListenerStats listener_stats;
    base::BufferPool buffers;
    WorkerRuntime worker;
    std::unique_ptr<Connection> owner;
};

TEST_F(BackendSocketTest, BackendSocketsCarryNodelayAndKeepaliveAndConnect) {
    base::UniqueFd backend(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto address = loopback(port);
    ASSERT_EQ(::bind(backend.get(), address.sa(), address.length), 0);
    ASSERT_EQ(::listen(backend.get(), 8), 0);
    int error = 0;
    auto stream = transport->connect(address, *owner, error);
    ASSERT_NE(stream, nullptr) << std::strerror(error);
    const int fd = dynamic_cast<SocketStream&>(*stream).fd();
    EXPECT_NE(option(fd, IPPROTO_TCP, TCP_NODELAY), 0);
    EXPECT_NE(option(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPIDLE), 42);
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPINTVL), 7);
    EXPECT_EQ(option(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
    EXPECT_EQ(connect_outcome(*stream), 0);
    EXPECT_GE(host.activities, 1) << "the owner did not hear of the connect";
}

TEST_F(BackendSocketTest, AConnectRefusedIsReportedWithItsReason) {
    int error = 0;
    auto stream = transport->connect(loopback(port), *owner, error);  // nobody listens
    if (stream == nullptr) {
        // The kernel may refuse a loopback connect before connect() returns.
        EXPECT_EQ(error, ECONNREFUSED) << std::strerror(error);
        return;
    }
    EXPECT_EQ(connect_outcome(*stream), ECONNREFUSED);
}

}  // namespace
}  // namespace portcullis::dataplane::kernel
