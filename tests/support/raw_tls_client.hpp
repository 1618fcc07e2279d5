// Record-level control of a TLS client connection after its handshake, for
// tests of how a server answers records a correct client never sends.
//
// Contract:
//  - KeyLog collects the key-log lines (NSS format) of every handshake made
//    with a context it is attached to; it must outlive those handshakes.
//  - RawRecordClient takes an established, blocking client SSL: TLS 1.3 with
//    an AEAD suite whose tag is 16 bytes (the traffic secret comes from the
//    KeyLog), or TLS 1.2 with an AES-GCM suite (keys from the master secret).
//    It writes records under the client's own write keys, so the server
//    decrypts them, and reads what the server sends back through the SSL.
//  - It must be created before the SSL writes anything after the handshake.
//    Records it protects advance its own sequence number only: once one is
//    sent, the SSL's own writes are out of step and must not be used
//    (write_through_ssl is the exception: it counts what the SSL wrote).
//    Reading stays correct, because the server's keys are not involved.
//  - Nothing throws; a client that cannot protect records has ok() false and
//    says why in error().
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace portcullis::testing {

using Bytes = std::vector<std::uint8_t>;

class KeyLog {
  public:
    KeyLog() = default;
    KeyLog(const KeyLog&) = delete;
    KeyLog& operator=(const KeyLog&) = delete;

    void attach(SSL_CTX* ctx);
    // The secret logged under `label` (e.g. "CLIENT_TRAFFIC_SECRET_0") for
    // `ssl`'s connection; empty when there is none.
    Bytes secret(const SSL* ssl, std::string_view label) const;

  private:
    static void on_line(const SSL* ssl, const char* line);
    std::vector<std::string> lines_;
};

// (level, description) of one alert, e.g. {SSL3_AL_FATAL, SSL_AD_BAD_RECORD_MAC}.
using Alert = std::pair<int, int>;

// What the server sent after the crafted records, up to its close.
struct ServerReply {
    std::string data;           // application data
    std::vector<Alert> alerts;  // in the order they arrived
    bool fin = false;           // the socket reached EOF after the last record read
    std::string error;          // why reading stopped, when it was not a clean close
};

class RawRecordClient {
  public:
    RawRecordClient(SSL* ssl, const KeyLog& keylog);
    ~RawRecordClient();
    RawRecordClient(const RawRecordClient&) = delete;
    RawRecordClient& operator=(const RawRecordClient&) = delete;

    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }

    // Bytes on the socket as they are: no record protection.
    bool send_plain(std::span<const std::uint8_t> bytes);
    // One record of `type` carrying `content`, protected under the client's
    // current write key; advances the client's sequence number.
    Bytes protect(std::uint8_t type, std::span<const std::uint8_t> content);
    bool send_protected(std::uint8_t type, std::span<const std::uint8_t> content) {
        return send_plain(protect(type, content));
    }
    // The records SSL_write makes of `plaintext`, captured instead of sent.
    Bytes write_through_ssl(std::string_view plaintext);
    // Reads through the SSL until `expected_bytes` of data arrived (0: until
    // the connection ends), then, unless data was all it waited for, whether
    // the socket is at EOF.
    ServerReply read_reply(std::size_t expected_bytes = 0);

  private:
    struct AlertLog;
    void derive_tls13(const KeyLog& keylog);
    void derive_tls12();

    SSL* ssl_;
    int fd_;
    int version_ = 0;
    const SSL_CIPHER* suite_ = nullptr;
    Bytes key_, iv_;
    std::uint64_t sequence_ = 0;
    std::unique_ptr<AlertLog> alerts_;
    std::string error_;
};

}  // namespace portcullis::testing
