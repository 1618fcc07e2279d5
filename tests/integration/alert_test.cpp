// Fatal errors after the handshake, against the real daemon: for each bad
// record a client can send, the exact alert it gets back before the FIN
// (RFC 8446 §6.2, RFC 5246 §7.2.2), one access-log line, and a daemon that
// keeps serving.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <string>
#include <thread>
#include <vector>

#include "dataplane/socket_address.hpp"
#include "tests/integration/environment.hpp"
#include "tests/support/raw_tls_client.hpp"

namespace portcullis::testing {
namespace {

constexpr std::uint8_t change_cipher_spec = 20;
constexpr std::uint8_t alert = 21;
constexpr std::uint8_t handshake = 22;
constexpr std::uint8_t application_data = 23;

int local_port_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return dataplane::SocketAddress::from(reinterpret_cast<sockaddr*>(&ss), len).port();
}

std::string describe(const std::vector<Alert>& alerts) {
    std::string out = "alerts received:";
    for (const auto& [level, description] : alerts) {
        out += std::string(" ") + (level == SSL3_AL_FATAL ? "fatal " : "warning ") +
               SSL_alert_desc_string_long(level << 8 | description);
    }
    return alerts.empty() ? out + " none" : out;
}

Bytes handshake_message(std::uint8_t type, const Bytes& body) {
    Bytes message = {type, 0, static_cast<std::uint8_t>(body.size() >> 8),
                     static_cast<std::uint8_t>(body.size())};
    message.insert(message.end(), body.begin(), body.end());
    return message;
}

// A well-formed ClientHello: the refusal must come from when it arrives, not
// from what it contains.
Bytes client_hello() {
    Bytes body = {0x03, 0x03};
    body.insert(body.end(), 32, 0x42);                  // random
    body.insert(body.end(), {0x00});                    // no session id
    body.insert(body.end(), {0x00, 0x02, 0x13, 0x01});  // TLS_AES_128_GCM_SHA256
    body.insert(body.end(), {0x01, 0x00});              // null compression
    body.insert(body.end(), {0x00, 0x00});              // no extensions
    return handshake_message(1, body);
}

// A record header announcing `length` bytes, sent without them: the server
// must refuse on the header alone.
Bytes oversized_header(std::uint8_t type, std::size_t length) {
    return {type, 0x03, 0x03, static_cast<std::uint8_t>(length >> 8),
            static_cast<std::uint8_t>(length)};
}

struct AlertCase {
    const char* name;
    int version;
    bool (*send)(RawRecordClient&);
    int expected;  // SSL_AD_*
};

const AlertCase cases[] = {
    // RFC 8446 §4.6.3: request_update other than 0 or 1 is illegal_parameter.
    {"KeyUpdateWithBadRequest", TLS1_3_VERSION,
     [](RawRecordClient& c) { return c.send_protected(handshake, handshake_message(24, {5})); },
     SSL_AD_ILLEGAL_PARAMETER},
    // After Finished, the only handshake message a TLS 1.3 server takes from
    // a client is KeyUpdate (no post-handshake auth was asked for).
    {"FinishedAfterFinished", TLS1_3_VERSION,
     [](RawRecordClient& c) {
         return c.send_protected(handshake, handshake_message(20, Bytes(32, 0)));
     },
     SSL_AD_UNEXPECTED_MESSAGE},
    {"ClientHelloAfterFinished", TLS1_3_VERSION,
     [](RawRecordClient& c) { return c.send_protected(handshake, client_hello()); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // TLS 1.2 has no KeyUpdate; a ClientHello would be a renegotiation (its own test).
    {"FinishedAfterFinished", TLS1_2_VERSION,
     [](RawRecordClient& c) {
         return c.send_protected(handshake, handshake_message(20, Bytes(12, 0)));
     },
     SSL_AD_UNEXPECTED_MESSAGE},
    {"HelloRequestFromClient", TLS1_2_VERSION,
     [](RawRecordClient& c) { return c.send_protected(handshake, handshake_message(0, {})); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // RFC 8446 §5.2: ciphertext is at most 2^14 + 256 bytes.
    {"RecordOverflow", TLS1_3_VERSION,
     [](RawRecordClient& c) {
         return c.send_plain(oversized_header(application_data, (1 << 14) + 256 + 1));
     },
     SSL_AD_RECORD_OVERFLOW},
    // RFC 5246 §6.2.3: ciphertext is at most 2^14 + 2048 bytes (OpenSSL's own
    // limit, 2^14 + 320, is stricter; this is over both).
    {"RecordOverflow", TLS1_2_VERSION,
     [](RawRecordClient& c) {
         return c.send_plain(oversized_header(application_data, (1 << 14) + 2048 + 1));
     },
     SSL_AD_RECORD_OVERFLOW},
    {"TamperedTag", TLS1_3_VERSION,
     [](RawRecordClient& c) {
         auto record = c.write_through_ssl("ping\n");
         if (record.empty()) return false;
         record.back() ^= 0x01;  // the tag is the record's last 16 bytes
         return c.send_plain(record);
     },
     SSL_AD_BAD_RECORD_MAC},
    {"TamperedTag", TLS1_2_VERSION,
     [](RawRecordClient& c) {
         auto record = c.write_through_ssl("ping\n");
         if (record.empty()) return false;
         record.back() ^= 0x01;
         return c.send_plain(record);
     },
     SSL_AD_BAD_RECORD_MAC},
    // RFC 8446 §5: a TLS 1.3 record's outer type is checked before decryption.
    {"ContentTypeZero", TLS1_3_VERSION,
     [](RawRecordClient& c) { return c.send_plain(Bytes{0x00, 0x03, 0x03, 0x00, 0x01, 0x00}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // TLS 1.2 authenticates the type with the record, so a protected type 0
    // reaches the type check (RFC 5246 §6: unknown type → unexpected_message).
    {"ContentTypeZero", TLS1_2_VERSION,
     [](RawRecordClient& c) { return c.send_protected(0, Bytes{0x00}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // An unprotected TLS 1.2 record after Finished is read as ciphertext that
    // fails to authenticate (RFC 5246 §6.2.3.3), whatever its type.
    {"PlaintextContentTypeZero", TLS1_2_VERSION,
     [](RawRecordClient& c) { return c.send_plain(Bytes{0x00, 0x03, 0x03, 0x00, 0x01, 0x00}); },
     SSL_AD_BAD_RECORD_MAC},
    // unexpected_message, not decode_error: OpenSSL's record layer refuses an
    // empty TLS 1.3 alert (RFC 8446 §5.1) in tls13_common_post_process_record.
    {"EmptyAlert", TLS1_3_VERSION, [](RawRecordClient& c) { return c.send_protected(alert, {}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // unexpected_message, not decode_error: OpenSSL's ssl3_read_bytes answers
    // any alert record that is not exactly two bytes so (SSL_R_INVALID_ALERT).
    {"EmptyAlert", TLS1_2_VERSION, [](RawRecordClient& c) { return c.send_protected(alert, {}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    // RFC 8446 §5: a ChangeCipherSpec is only tolerated during the handshake.
    {"ChangeCipherSpecAfterFinished", TLS1_3_VERSION,
     [](RawRecordClient& c) { return c.send_plain(Bytes{0x14, 0x03, 0x03, 0x00, 0x01, 0x01}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    {"ChangeCipherSpecAfterFinished", TLS1_2_VERSION,
     [](RawRecordClient& c) { return c.send_protected(change_cipher_spec, Bytes{0x01}); },
     SSL_AD_UNEXPECTED_MESSAGE},
    {"PlaintextChangeCipherSpecAfterFinished", TLS1_2_VERSION,
     [](RawRecordClient& c) { return c.send_plain(Bytes{0x14, 0x03, 0x03, 0x00, 0x01, 0x01}); },
     SSL_AD_BAD_RECORD_MAC},
};

std::string version_name(int version) {
    return version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
}

class Alerts : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        env = std::make_unique<TestDeployment>();
        client = std::make_unique<IssuedCert>(env->client("alerts-client"));
        port = free_port();
        daemon = std::make_unique<Daemon>(env->write_config(
            "alerts", "[log]\naccess_log = \"access.log\"\n\n" + env->listener("edge", port)));
    }
    static void TearDownTestSuite() {
        daemon.reset();
        client.reset();
        env.reset();
    }

    // A client at `version` with a suite RawRecordClient can protect records for.
    static ClientOptions options(int version, KeyLog& keylog) {
        auto o = env->options_for(*client);
        o.min_version = o.max_version = version;
        o.ciphersuites = "TLS_AES_128_GCM_SHA256";
        o.cipher_list = "ECDHE-ECDSA-AES128-GCM-SHA256";
        o.customize_context = [&keylog](SSL_CTX* ctx) { keylog.attach(ctx); };
        return o;
    }

    // The access-log line of the connection from `client_port`.
    static std::string access_line(int client_port) {
        const std::string needle = "client=127.0.0.1:" + std::to_string(client_port) + " ";
        for (int i = 0; i < 100; ++i) {
            const auto text = read_file(env->dir / "access.log");
            if (const auto at = text.find(needle); at != std::string::npos) {
                const auto start = text.rfind('\n', at);
                const auto from = start == std::string::npos ? 0 : start + 1;
                return text.substr(from, text.find('\n', at) - from);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return "<no access-log line for port " + std::to_string(client_port) + ">";
    }

    static inline std::unique_ptr<TestDeployment> env;
    static inline std::unique_ptr<IssuedCert> client;
    static inline std::unique_ptr<Daemon> daemon;
    static inline int port;
};

class FatalAlert : public Alerts, public ::testing::WithParamInterface<AlertCase> {};

TEST_P(FatalAlert, IsSentBeforeTheClose) {
    const auto& c = GetParam();
    KeyLog keylog;
    auto session = open_tls_session(port, options(c.version, keylog));
    ASSERT_TRUE(session.ok) << crypto::drain_openssl_errors();
    ASSERT_EQ(SSL_version(session.ssl.get()), c.version);
    RawRecordClient raw(session.ssl.get(), keylog);
    ASSERT_TRUE(raw.ok()) << raw.error();
    const int local = local_port_of(session.fd.get());

    ASSERT_TRUE(c.send(raw));
    const auto reply = raw.read_reply();
    EXPECT_EQ(reply.alerts, (std::vector<Alert>{{SSL3_AL_FATAL, c.expected}}))
        << describe(reply.alerts) << "; expected "
        << SSL_alert_desc_string_long(SSL3_AL_FATAL << 8 | c.expected);
    EXPECT_TRUE(reply.fin) << "no FIN after the alert: " << reply.error;
    EXPECT_EQ(reply.data, "");

    const auto line = access_line(local);
    EXPECT_NE(line.find("result=tls_read_error reason=protocol version=" + version_name(c.version)),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("bytes_in=0 bytes_out=0"), std::string::npos) << line;
    EXPECT_TRUE(daemon->process().running());
    EXPECT_TRUE(run_client(port, env->options_for(*client)).exchanged)
        << "the daemon must keep serving";
}

INSTANTIATE_TEST_SUITE_P(AfterHandshake, FatalAlert, ::testing::ValuesIn(cases),
                         [](const ::testing::TestParamInfo<AlertCase>& info) {
                             return std::string(info.param.version == TLS1_3_VERSION ? "Tls13_"
                                                                                     : "Tls12_") +
                                    info.param.name;
                         });

// The control for every case above: records protected the same way, with
// valid content, are accepted, so the alerts come from the content alone.
class CraftedRecords : public Alerts, public ::testing::WithParamInterface<int> {};

TEST_P(CraftedRecords, WithValidContentAreServed) {
    KeyLog keylog;
    auto session = open_tls_session(port, options(GetParam(), keylog));
    ASSERT_TRUE(session.ok) << crypto::drain_openssl_errors();
    RawRecordClient raw(session.ssl.get(), keylog);
    ASSERT_TRUE(raw.ok()) << raw.error();

    const std::string first = "ping\n", second = "pong\n";
    ASSERT_TRUE(raw.send_protected(application_data, Bytes(first.begin(), first.end())));
    EXPECT_EQ(raw.read_reply(first.size()).data, first);
    ASSERT_TRUE(raw.send_protected(application_data, Bytes(second.begin(), second.end())));
    EXPECT_EQ(raw.read_reply(second.size()).data, second);
    // A protected close_notify ends the connection the orderly way.
    ASSERT_TRUE(raw.send_protected(alert, Bytes{SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY}));
    const auto reply = raw.read_reply();
    EXPECT_EQ(reply.alerts, (std::vector<Alert>{{SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY}}))
        << describe(reply.alerts);
    EXPECT_TRUE(reply.fin) << reply.error;
}

INSTANTIATE_TEST_SUITE_P(BothVersions, CraftedRecords,
                         ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION),
                         [](const ::testing::TestParamInfo<int>& info) {
                             return info.param == TLS1_3_VERSION ? "Tls13" : "Tls12";
                         });

}  // namespace
}  // namespace portcullis::testing
