#include "tests/support/raw_tls_client.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "crypto/openssl_handles.hpp"

namespace portcullis::testing {
namespace {

using crypto::OpenSslDeleter;
using UniqueKdf = std::unique_ptr<EVP_KDF, OpenSslDeleter<EVP_KDF_free>>;
using UniqueKdfCtx = std::unique_ptr<EVP_KDF_CTX, OpenSslDeleter<EVP_KDF_CTX_free>>;
using UniqueCipherCtx = std::unique_ptr<EVP_CIPHER_CTX, OpenSslDeleter<EVP_CIPHER_CTX_free>>;

constexpr std::size_t tag_length = 16;
constexpr std::size_t header_length = 5;
constexpr std::uint8_t application_data = 23;
// RFC 5246 §6.2.3.3: the AES-GCM nonce is a 4-byte implicit salt from the
// key block and 8 explicit bytes sent in the record (RFC 5288 §3).
constexpr std::size_t tls12_salt_length = 4;
constexpr std::size_t tls12_explicit_length = 8;

int keylog_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

int alert_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

void put16(Bytes& out, std::size_t value) {
    out.push_back(static_cast<std::uint8_t>(value >> 8));
    out.push_back(static_cast<std::uint8_t>(value));
}

void put64(Bytes& out, std::uint64_t value) {
    for (int shift = 56; shift >= 0; shift -= 8)
        out.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::string hex(std::span<const std::uint8_t> bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (const auto b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 0xf];
    }
    return out;
}

Bytes unhex(std::string_view text) {
    Bytes out;
    const auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
    for (std::size_t i = 0; i + 1 < text.size(); i += 2)
        out.push_back(static_cast<std::uint8_t>(nibble(text[i]) << 4 | nibble(text[i + 1])));
    return out;
}

// RFC 8446 §7.1 HKDF-Expand-Label with an empty context.
Bytes expand_label(const EVP_MD* md, std::span<const std::uint8_t> secret, std::string_view label,
                   std::size_t length) {
    Bytes info;
    put16(info, length);
    const std::string full = "tls13 " + std::string(label);
    info.push_back(static_cast<std::uint8_t>(full.size()));
    info.insert(info.end(), full.begin(), full.end());
    info.push_back(0);
    UniqueKdf kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
    if (!kdf) return {};
    UniqueKdfCtx ctx(EVP_KDF_CTX_new(kdf.get()));
    if (!ctx) return {};
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                         const_cast<char*>(EVP_MD_get0_name(md)), 0),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                          const_cast<std::uint8_t*>(secret.data()), secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
        OSSL_PARAM_construct_end()};
    Bytes out(length);
    if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) return {};
    return out;
}

// RFC 5246 §6.3: key_block = PRF(master_secret, "key expansion",
// server_random + client_random).
Bytes tls12_key_block(const EVP_MD* md, std::span<const std::uint8_t> master, const Bytes& seed,
                      std::size_t length) {
    UniqueKdf kdf(EVP_KDF_fetch(nullptr, "TLS1-PRF", nullptr));
    if (!kdf) return {};
    UniqueKdfCtx ctx(EVP_KDF_CTX_new(kdf.get()));
    if (!ctx) return {};
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                         const_cast<char*>(EVP_MD_get0_name(md)), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET,
                                          const_cast<std::uint8_t*>(master.data()), master.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED,
                                          const_cast<std::uint8_t*>(seed.data()), seed.size()),
        OSSL_PARAM_construct_end()};
    Bytes out(length);
    if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) return {};
    return out;
}

// AEAD seal; the tag follows the ciphertext. Empty on failure (never a
// valid result: the tag alone is 16 bytes).
Bytes seal(const EVP_CIPHER* cipher, const Bytes& key, const Bytes& nonce,
           std::span<const std::uint8_t> aad, std::span<const std::uint8_t> plaintext) {
    UniqueCipherCtx ctx(EVP_CIPHER_CTX_new());
    int length = 0;
    Bytes out(plaintext.size() + tag_length);
    if (!ctx || EVP_EncryptInit_ex(ctx.get(), cipher, nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_IVLEN, static_cast<int>(nonce.size()),
                            nullptr) != 1 ||
        EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce.data()) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &length, aad.data(), static_cast<int>(aad.size())) !=
            1) {
        return {};
    }
    int written = 0;
    if (!plaintext.empty()) {
        if (EVP_EncryptUpdate(ctx.get(), out.data(), &length, plaintext.data(),
                              static_cast<int>(plaintext.size())) != 1)
            return {};
        written = length;
    }
    if (EVP_EncryptFinal_ex(ctx.get(), out.data() + written, &length) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, tag_length,
                            out.data() + plaintext.size()) != 1) {
        return {};
    }
    return out;
}

std::size_t count_records(std::span<const std::uint8_t> bytes) {
    std::size_t records = 0;
    for (std::size_t at = 0; at + header_length <= bytes.size(); ++records)
        at += header_length + (std::size_t{bytes[at + 3]} << 8 | bytes[at + 4]);
    return records;
}

}  // namespace

void KeyLog::attach(SSL_CTX* ctx) {
    SSL_CTX_set_ex_data(ctx, keylog_index(), this);
    SSL_CTX_set_keylog_callback(ctx, &KeyLog::on_line);
}

void KeyLog::on_line(const SSL* ssl, const char* line) {
    if (auto* log = static_cast<KeyLog*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keylog_index())))
        log->lines_.emplace_back(line);
}

Bytes KeyLog::secret(const SSL* ssl, std::string_view label) const {
    std::array<std::uint8_t, SSL3_RANDOM_SIZE> random{};
    SSL_get_client_random(ssl, random.data(), random.size());
    // Lines are "LABEL <client random> <secret>", all hex after the label.
    const std::string prefix = std::string(label) + " " + hex(random) + " ";
    for (const auto& line : lines_) {
        if (line.starts_with(prefix)) return unhex(std::string_view(line).substr(prefix.size()));
    }
    return {};
}

struct RawRecordClient::AlertLog {
    std::vector<Alert> seen;
    static void on_info(const SSL* ssl, int where, int value) {
        // SSL_CB_READ_ALERT is two bits; SSL_CB_WRITE_ALERT shares one of them.
        if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT) return;
        if (auto* log = static_cast<AlertLog*>(SSL_get_ex_data(ssl, alert_index())))
            log->seen.emplace_back(value >> 8, value & 0xff);
    }
};

RawRecordClient::RawRecordClient(SSL* ssl, const KeyLog& keylog)
    : ssl_(ssl), fd_(SSL_get_fd(ssl)), alerts_(std::make_unique<AlertLog>()) {
    SSL_set_ex_data(ssl_, alert_index(), alerts_.get());
    SSL_set_info_callback(ssl_, &AlertLog::on_info);
    version_ = SSL_version(ssl_);
    suite_ = SSL_get_current_cipher(ssl_);
    if (!SSL_is_init_finished(ssl_) || suite_ == nullptr) {
        error_ = "the handshake is not complete";
    } else if (version_ == TLS1_3_VERSION) {
        derive_tls13(keylog);
    } else if (version_ == TLS1_2_VERSION) {
        derive_tls12();
    } else {
        error_ = std::string("unsupported version ") + SSL_get_version(ssl_);
    }
}

RawRecordClient::~RawRecordClient() {
    SSL_set_info_callback(ssl_, nullptr);
    SSL_set_ex_data(ssl_, alert_index(), nullptr);
}

void RawRecordClient::derive_tls13(const KeyLog& keylog) {
    const EVP_CIPHER* cipher = EVP_get_cipherbynid(SSL_CIPHER_get_cipher_nid(suite_));
    const EVP_MD* md = SSL_CIPHER_get_handshake_digest(suite_);
    if (cipher == nullptr || md == nullptr ||
        !(EVP_CIPHER_get_flags(cipher) & EVP_CIPH_FLAG_AEAD_CIPHER) ||
        EVP_CIPHER_get_mode(cipher) == EVP_CIPH_CCM_MODE) {
        error_ = std::string("unsupported suite ") + SSL_CIPHER_get_name(suite_);
        return;
    }
    const auto secret = keylog.secret(ssl_, "CLIENT_TRAFFIC_SECRET_0");
    if (secret.empty()) {
        error_ = "no CLIENT_TRAFFIC_SECRET_0 in the key log";
        return;
    }
    // RFC 8446 §7.3: the traffic keys come from the traffic secret.
    key_ = expand_label(md, secret, "key", EVP_CIPHER_get_key_length(cipher));
    iv_ = expand_label(md, secret, "iv", 12);
    if (key_.empty() || iv_.empty()) error_ = "HKDF-Expand-Label failed";
}

void RawRecordClient::derive_tls12() {
    const EVP_CIPHER* cipher = EVP_get_cipherbynid(SSL_CIPHER_get_cipher_nid(suite_));
    const EVP_MD* md = SSL_CIPHER_get_handshake_digest(suite_);  // the PRF hash in TLS 1.2
    if (cipher == nullptr || md == nullptr || EVP_CIPHER_get_mode(cipher) != EVP_CIPH_GCM_MODE) {
        error_ = std::string("unsupported suite ") + SSL_CIPHER_get_name(suite_);
        return;
    }
    std::array<std::uint8_t, SSL_MAX_MASTER_KEY_LENGTH> master{};
    const std::size_t master_length =
        SSL_SESSION_get_master_key(SSL_get_session(ssl_), master.data(), master.size());
    const std::string label = "key expansion";
    Bytes seed(label.begin(), label.end());
    std::array<std::uint8_t, SSL3_RANDOM_SIZE> random{};
    SSL_get_server_random(ssl_, random.data(), random.size());
    seed.insert(seed.end(), random.begin(), random.end());
    SSL_get_client_random(ssl_, random.data(), random.size());
    seed.insert(seed.end(), random.begin(), random.end());
    const auto key_length = static_cast<std::size_t>(EVP_CIPHER_get_key_length(cipher));
    // RFC 5246 §6.3: client key, server key, client IV, server IV (AEAD
    // suites have no MAC keys).
    const auto block = tls12_key_block(md, std::span(master).first(master_length), seed,
                                       2 * key_length + 2 * tls12_salt_length);
    if (block.empty()) {
        error_ = "TLS 1.2 PRF failed";
        return;
    }
    key_.assign(block.begin(), block.begin() + key_length);
    iv_.assign(block.begin() + 2 * key_length, block.begin() + 2 * key_length + tls12_salt_length);
    // The client's Finished used sequence number 0 under these keys.
    sequence_ = 1;
}

bool RawRecordClient::send_plain(std::span<const std::uint8_t> bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        const auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    return !bytes.empty();
}

Bytes RawRecordClient::protect(std::uint8_t type, std::span<const std::uint8_t> content) {
    if (!ok()) return {};
    const EVP_CIPHER* cipher = EVP_get_cipherbynid(SSL_CIPHER_get_cipher_nid(suite_));
    Bytes record;
    if (version_ == TLS1_3_VERSION) {
        // RFC 8446 §5.2: the real type goes inside; the outer one is always
        // application_data. §5.3: nonce = iv XOR the padded sequence number.
        Bytes inner(content.begin(), content.end());
        inner.push_back(type);
        Bytes nonce = iv_;
        for (int i = 0; i < 8; ++i)
            nonce[nonce.size() - 1 - i] ^= static_cast<std::uint8_t>(sequence_ >> (8 * i));
        record = {application_data, 0x03, 0x03};
        put16(record, inner.size() + tag_length);
        const auto sealed = seal(cipher, key_, nonce, record, inner);
        if (sealed.empty()) return {};
        record.insert(record.end(), sealed.begin(), sealed.end());
    } else {
        // RFC 5246 §6.2.3.3: AAD = seq_num + type + version + length of the plaintext.
        Bytes aad;
        put64(aad, sequence_);
        aad.push_back(type);
        put16(aad, TLS1_2_VERSION);
        put16(aad, content.size());
        Bytes explicit_nonce;
        put64(explicit_nonce, sequence_);
        Bytes nonce = iv_;
        nonce.insert(nonce.end(), explicit_nonce.begin(), explicit_nonce.end());
        const auto sealed = seal(cipher, key_, nonce, aad, content);
        if (sealed.empty()) return {};
        record = {type, 0x03, 0x03};
        put16(record, tls12_explicit_length + sealed.size());
        record.insert(record.end(), explicit_nonce.begin(), explicit_nonce.end());
        record.insert(record.end(), sealed.begin(), sealed.end());
    }
    ++sequence_;
    return record;
}

Bytes RawRecordClient::write_through_ssl(std::string_view plaintext) {
    crypto::UniqueBio capture(BIO_new(BIO_s_mem()));
    if (!capture || BIO_up_ref(capture.get()) != 1) return {};
    SSL_set0_wbio(ssl_, capture.get());  // the SSL owns the extra reference
    std::size_t written = 0;
    const bool wrote = SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &written) == 1;
    Bytes records(static_cast<std::size_t>(BIO_ctrl_pending(capture.get())));
    if (!records.empty()) BIO_read(capture.get(), records.data(), static_cast<int>(records.size()));
    SSL_set0_wbio(ssl_, BIO_new_socket(fd_, BIO_NOCLOSE));
    if (!wrote) return {};
    sequence_ += count_records(records);
    return records;
}

ServerReply RawRecordClient::read_reply(std::size_t expected_bytes) {
    ServerReply reply;
    std::array<char, 4096> buffer{};
    bool ended = false;
    while (expected_bytes == 0 || reply.data.size() < expected_bytes) {
        ERR_clear_error();
        std::size_t n = 0;
        if (SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n) == 1) {
            reply.data.append(buffer.data(), n);
            continue;
        }
        ended = true;
        const int error = SSL_get_error(ssl_, 0);
        if (error == SSL_ERROR_SYSCALL && errno == EAGAIN)
            reply.error = "timed out";
        else if (error != SSL_ERROR_ZERO_RETURN)
            reply.error = ERR_reason_error_string(ERR_peek_last_error()) != nullptr
                              ? ERR_reason_error_string(ERR_peek_last_error())
                              : "SSL_read error " + std::to_string(error);
        break;
    }
    reply.alerts = alerts_->seen;
    if (ended) {
        // The record layer reads no further than the record it needs, so
        // what follows the alert on the socket is the server's FIN.
        char byte = 0;
        const auto n = ::recv(fd_, &byte, 1, 0);
        reply.fin = n == 0;
        if (n < 0)
            reply.error +=
                std::string(reply.error.empty() ? "" : "; ") + "after it: " + std::strerror(errno);
        if (n > 0) reply.error += "; bytes after the last record";
    }
    return reply;
}

}  // namespace portcullis::testing
