#include "crypto/tls_connection.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "crypto/client_verifier.hpp"
#include "crypto/ocsp_client.hpp"
#include "crypto/pending_key_operation.hpp"
#include "crypto/server_tls_context.hpp"

namespace portcullis::crypto {

namespace {

int queue_write(BIO* bio, const char* data, std::size_t length, std::size_t* written) {
    BIO_clear_retry_flags(bio);
    auto* queues = static_cast<CiphertextQueues*>(BIO_get_data(bio));
    *written = queues->outbound.append({reinterpret_cast<const std::uint8_t*>(data), length});
    if (*written == 0 && length > 0) {
        BIO_set_retry_write(bio);
        return 0;
    }
    return 1;
}

int queue_read(BIO* bio, char* data, std::size_t length, std::size_t* read) {
    BIO_clear_retry_flags(bio);
    auto* queues = static_cast<CiphertextQueues*>(BIO_get_data(bio));
    *read = 0;
    if (!queues->staged.empty()) {
        const std::size_t n = std::min(length, queues->staged.size() - queues->staged_read);
        std::memcpy(data, queues->staged.data() + queues->staged_read, n);
        queues->staged_read += n;
        if (queues->staged_read == queues->staged.size()) {
            std::vector<std::uint8_t>().swap(queues->staged);
            queues->staged_read = 0;
        }
        *read = n;
        data += n;
        length -= n;
    }
    *read += queues->inbound.take({reinterpret_cast<std::uint8_t*>(data), length});
    if (*read == 0 && length > 0) {
        BIO_set_retry_read(bio);
        return 0;
    }
    return 1;
}

long queue_ctrl(BIO* bio, int command, long, void*) {
    auto* queues = static_cast<CiphertextQueues*>(BIO_get_data(bio));
    switch (command) {
        case BIO_CTRL_PENDING:
            return static_cast<long>(queues->staged.size() - queues->staged_read +
                                     queues->inbound.size());
        case BIO_CTRL_WPENDING:
            return static_cast<long>(queues->outbound.size());
        case BIO_CTRL_FLUSH:
        case BIO_CTRL_DUP:
            return 1;
        default:
            return 0;
    }
}

int queue_create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}

// The queues belong to the TlsConnection, which outlives its SSL.
int queue_destroy(BIO* bio) {
    BIO_set_data(bio, nullptr);
    return 1;
}

void free_method(BIO_METHOD* method) {
    BIO_meth_free(method);
}
using UniqueBioMethod = std::unique_ptr<BIO_METHOD, OpenSslDeleter<free_method>>;

// Built once per process: the method table is read-only after this.
const BIO_METHOD* queue_method() {
    static const UniqueBioMethod method = [] {
        UniqueBioMethod m(
            BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "portcullis byte queues"));
        if (!m || BIO_meth_set_write_ex(m.get(), queue_write) != 1 ||
            BIO_meth_set_read_ex(m.get(), queue_read) != 1 ||
            BIO_meth_set_ctrl(m.get(), queue_ctrl) != 1 ||
            BIO_meth_set_create(m.get(), queue_create) != 1 ||
            BIO_meth_set_destroy(m.get(), queue_destroy) != 1) {
            throw std::runtime_error("BIO_meth_new: " + drain_openssl_errors());
        }
        return m;
    }();
    return method.get();
}

}  // namespace

TlsConnection::TlsConnection(const ServerTlsContext& context, base::BufferPool& pool,
                             std::size_t buffer_bytes)
    : queues_{base::ByteQueue(pool, base::BufferPool::Use::ingress, buffer_bytes),
              base::ByteQueue(pool, base::BufferPool::Use::transform, buffer_bytes),
              {},
              0},
      context_(&context) {
    verify_state_.policy = &context.policy();
    verify_state_.failure = &failure_;
    verify_state_.leaf = &peer_.certificate;
    verify_state_.events = context.options().events;
    verify_state_.ocsp = context.options().ocsp;
    verify_state_.completions = context.options().completions;
}

void TlsConnection::start() {
    UniqueSsl ssl(context_->new_session());
    UniqueBio bio(BIO_new(queue_method()));
    if (!bio) throw std::runtime_error("BIO_new: " + drain_openssl_errors());
    BIO_set_data(bio.get(), &queues_);
    BIO* shared = bio.release();
    SSL_set_bio(ssl.get(), shared, shared);  // the SSL owns the BIO
    SSL_set_accept_state(ssl.get());
    attach_verify_state(ssl.get(), &verify_state_);
    ssl_ = std::move(ssl);
}

// RFC 8446 §5.1: a record is a 5-byte header (type, legacy version, length)
// and at most 2^14 + 256 bytes after it. Anything else is OpenSSL's to refuse.
bool TlsConnection::first_record_complete() {
    constexpr std::size_t header = 5;
    constexpr std::uint8_t handshake_type = 22;
    constexpr std::size_t max_length = (1u << 14) + 256;
    auto& staged = queues_.staged;
    auto& inbound = queues_.inbound;
    auto judge = [&](std::span<const std::uint8_t> bytes) -> std::optional<std::size_t> {
        if (bytes.size() < header) return std::nullopt;
        const std::size_t length = std::size_t{bytes[3]} << 8 | bytes[4];
        if (bytes[0] != handshake_type || length > max_length) return 0;  // start now
        return header + length;
    };
    if (staged.empty()) {
        // Mostly the whole ClientHello came in one read: nothing is copied.
        const auto first = inbound.readable();
        const auto whole = judge(first);
        if (whole && (*whole == 0 || first.size() >= *whole || inbound.size() >= *whole))
            return true;
        staged.reserve(whole ? *whole : header);
    }
    // A piece of it: off the pool (whose blocks are for bytes in flight),
    // into a buffer of the record's size.
    while (!inbound.empty()) {
        const auto piece = inbound.readable();
        staged.insert(staged.end(), piece.begin(), piece.end());
        inbound.consume(piece.size());
    }
    const auto whole = judge(staged);
    if (whole && staged.capacity() < *whole) staged.reserve(*whole);
    return whole && (*whole == 0 || staged.size() >= *whole);
}

TlsConnection::~TlsConnection() = default;

std::span<std::uint8_t> TlsConnection::inbound_space() {
    return queues_.inbound.writable();
}

void TlsConnection::commit_inbound(std::size_t n) {
    queues_.inbound.commit(n);
}

std::span<const std::uint8_t> TlsConnection::outbound() {
    return queues_.outbound.readable();
}

void TlsConnection::consume_outbound(std::size_t n) {
    queues_.outbound.consume(n);
}

void TlsConnection::release_unused_buffers() {
    queues_.inbound.release_unused();
    queues_.outbound.release_unused();
}

TlsConnection::Step TlsConnection::handshake() {
    if (established_) return Step::done;
    if (failure_.reason != RejectReason::none && failed_) return Step::failed;
    if (!ssl_) {
        if (!first_record_complete()) return Step::need_input;
        start();
    }
    ERR_clear_error();  // one connection's errors must never leak into another's
    const int ret = SSL_do_handshake(ssl_.get());
    if (ret == 1) {
        established_ = true;
        capture_identity();
        return Step::done;
    }
    switch (SSL_get_error(ssl_.get(), ret)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:  // outbound full: the transport flushes, then calls again
            return Step::need_input;
        case SSL_ERROR_WANT_ASYNC:
        case SSL_ERROR_WANT_ASYNC_JOB:
            return Step::key_operation_pending;
        default:
            return fail_from_ssl_error();
    }
}

TlsConnection::Step TlsConnection::fail_from_ssl_error() {
    failed_ = true;
    const unsigned long error = ERR_peek_last_error();
    std::string errors;
    const auto key_failure = error != 0 ? drain_key_failure(errors) : std::nullopt;
    if (failure_.reason == RejectReason::none) {
        failure_.reason = error != 0 ? reason_for_ssl_error(error) : RejectReason::protocol;
        if (failure_.reason == RejectReason::other &&
            SSL_get_verify_result(ssl_.get()) != X509_V_OK) {
            failure_.reason =
                reason_for_verify_error(static_cast<int>(SSL_get_verify_result(ssl_.get())));
        }
        if (X509* cert = SSL_get0_peer_certificate(ssl_.get())) {
            failure_.peer_subject = subject_rfc2253(X509_get_subject_name(cert));
        }
    }
    if (key_failure) {
        // The server's own key failed (HSM error, timeout, full queue): the
        // OpenSSL errors that followed say nothing more.
        failure_.reason = RejectReason::key_unavailable;
        failure_.detail = *key_failure;
    }
    if (failure_.detail.empty()) {
        failure_.detail = error != 0 ? errors : "connection ended during handshake";
    }
    ERR_clear_error();
    return Step::failed;
}

void TlsConnection::capture_identity() {
    SSL* ssl = ssl_.get();
    peer_.tls_version = SSL_get_version(ssl);
    peer_.cipher = SSL_get_cipher_name(ssl);
    if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))
        peer_.server_name = sni;
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len > 0) peer_.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    peer_.resumed = SSL_session_reused(ssl) == 1;
    X509* cert = SSL_get0_peer_certificate(ssl);
    // The verify callback may have kept this leaf already (and what the
    // allow-list read from it); a resumed session brings its own.
    if (cert != peer_.certificate.get()) peer_.certificate = PeerCertificate(cert);
    peer_.verified = cert != nullptr && SSL_get_verify_result(ssl) == X509_V_OK;
}

TlsConnection::IoResult TlsConnection::read_plaintext(std::span<std::uint8_t> out) {
    ERR_clear_error();
    std::size_t n = 0;
    if (SSL_read_ex(ssl_.get(), out.data(), out.size(), &n) == 1) return {IoStatus::ok, n};
    switch (SSL_get_error(ssl_.get(), 0)) {
        case SSL_ERROR_WANT_READ:
            return {IoStatus::need_input, 0};
        case SSL_ERROR_WANT_WRITE:
            return {IoStatus::full, 0};
        case SSL_ERROR_ZERO_RETURN:
            return {IoStatus::closed, 0};
        default:
            failure_.reason = RejectReason::protocol;
            failure_.detail = drain_openssl_errors();
            return {IoStatus::failed, 0};
    }
}

TlsConnection::IoResult TlsConnection::write_plaintext(std::span<const std::uint8_t> in) {
    if (in.empty()) return {IoStatus::ok, 0};
    ERR_clear_error();
    std::size_t n = 0;
    if (SSL_write_ex(ssl_.get(), in.data(), in.size(), &n) == 1) return {IoStatus::ok, n};
    switch (SSL_get_error(ssl_.get(), 0)) {
        case SSL_ERROR_WANT_WRITE:
            return {IoStatus::full, 0};
        case SSL_ERROR_WANT_READ:
            return {IoStatus::need_input, 0};
        default:
            failure_.detail = drain_openssl_errors();
            return {IoStatus::failed, 0};
    }
}

bool TlsConnection::revoked_by(const ServerTlsContext& context) const {
    if (!established_ || peer_.certificate.get() == nullptr) return false;
    if (context.revokes(peer_.certificate.get())) return true;
    if (context.policy().crl_scope != CrlScope::chain && context.policy().ocsp != OcspCheck::chain)
        return false;
    // The chain OpenSSL verified, or (a resumed session, a chain from the
    // verified-chain cache) the certificates the client sent.
    STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl_.get());
    if (chain == nullptr) chain = SSL_get_peer_cert_chain(ssl_.get());
    for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
        X509* certificate = sk_X509_value(chain, i);
        if (X509_check_issued(certificate, certificate) == X509_V_OK)
            continue;  // a root is trusted or not, never revoked
        if (context.revokes(certificate)) return true;
    }
    return false;
}

void TlsConnection::refresh_ocsp(const ServerTlsContext& context, OcspClient& ocsp) const {
    const auto& policy = context.policy();
    if (!established_ || policy.ocsp == OcspCheck::off || peer_.certificate.get() == nullptr)
        return;
    std::vector<X509*> chain;
    if (STACK_OF(X509)* verified = SSL_get0_verified_chain(ssl_.get())) {
        for (int i = 0; i < sk_X509_num(verified); ++i) chain.push_back(sk_X509_value(verified, i));
    } else {
        // A server's peer chain leaves out the leaf.
        chain.push_back(peer_.certificate.get());
        STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl_.get());
        for (int i = 0; sent != nullptr && i < sk_X509_num(sent); ++i)
            chain.push_back(sk_X509_value(sent, i));
    }
    if (chain.size() < 2) return;  // no issuer to ask about it with
    const std::size_t in_scope = policy.ocsp == OcspCheck::chain
                                     ? chain.size() - 1
                                     : std::min<std::size_t>(1, chain.size() - 1);
    for (std::size_t i = 0; i < in_scope; ++i)
        ocsp.refresh(chain[i], chain[i + 1], policy.ocsp_responder, policy.ocsp_nonce);
}

void TlsConnection::close() {
    if (!ssl_) return;
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
}

}  // namespace portcullis::crypto
