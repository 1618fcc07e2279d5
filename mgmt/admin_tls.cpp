#include "mgmt/admin_tls.hpp"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <vector>

#include "crypto/client_verifier.hpp"
#include "crypto/server_tls_context.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::mgmt {
namespace {

std::string peer_of(const SSL* ssl) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    const int fd = SSL_get_fd(ssl);
    if (fd < 0 || ::getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0)
        return "?";
    return dataplane::SocketAddress::from(reinterpret_cast<const sockaddr*>(&storage), length)
        .to_string();
}

// The chain as OpenSSL verified it, then clientAuth at the leaf: a refused
// certificate is logged here, where its subject and the reason are known.
int verify_admin_client(int preverified, X509_STORE_CTX* store) {
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    const auto subject = [cert] {
        return cert ? crypto::subject_rfc2253(X509_get_subject_name(cert)) : std::string("?");
    };
    if (!preverified) {
        spdlog::warn("admin: refused client certificate {} from {}: {}", subject(), peer_of(ssl),
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(store) == 0 && !crypto::has_client_auth_eku(cert)) {
        spdlog::warn("admin: refused client certificate {} from {}: no extendedKeyUsage clientAuth",
                     subject(), peer_of(ssl));
        X509_STORE_CTX_set_error(store, X509_V_ERR_INVALID_PURPOSE);
        return 0;
    }
    return 1;
}

// Handshakes that end without a certificate to verify (none sent, a
// protocol error) are logged by the alert the server sends.
void log_fatal_alert(const SSL* ssl, int where, int value) {
    if ((where & SSL_CB_WRITE_ALERT) != SSL_CB_WRITE_ALERT) return;
    if (std::string_view(SSL_alert_type_string(value)) != "F") return;
    // OpenSSL names no alert newer than TLS 1.2; certificate_required (RFC
    // 8446) is the one a client without a certificate gets.
    const int description = value & 0xff;
    spdlog::warn("admin: TLS handshake with {} failed, sent alert: {}", peer_of(ssl),
                 description == 116 ? "certificate required" : SSL_alert_desc_string_long(value));
}

}  // namespace

std::string_view role_name(AdminRole role) {
    switch (role) {
        case AdminRole::scrape:
            return "scrape";
        case AdminRole::operator_:
            return "operator";
        case AdminRole::none:
            break;
    }
    return "none";
}

void configure_admin_tls(SSL_CTX& ctx, const AdminTlsSettings& settings) {
    const auto fail = [](const std::string& what) {
        const unsigned long error = ERR_get_error();
        char reason[256] = {};
        if (error != 0) ERR_error_string_n(error, reason, sizeof reason);
        ERR_clear_error();
        throw crypto::TlsConfigError(what + (error != 0 ? std::string(": ") + reason : ""));
    };
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(&ctx, settings.chain_file.c_str()) != 1)
        fail("admin certificate " + settings.chain_file);
    if (SSL_CTX_use_PrivateKey_file(&ctx, settings.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        fail("admin key " + settings.key_file);
    if (SSL_CTX_check_private_key(&ctx) != 1)
        fail("admin key " + settings.key_file + " does not match " + settings.chain_file);
    crypto::TlsPolicy trust;
    trust.trust_file = settings.trust_file;
    trust.crl_files = settings.crl_files;
    trust.crl_scope = settings.crl_scope;
    std::vector<crypto::UniqueX509Crl> crls;
    auto store = crypto::build_trust_store(trust, crls);
    SSL_CTX_set_cert_store(&ctx, store.release());  // the context owns it from here
    // The CA names a client picks its certificate by (curl, browsers).
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(settings.trust_file.c_str()))
        SSL_CTX_set_client_CA_list(&ctx, names);
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       verify_admin_client);
    SSL_CTX_set_verify_depth(&ctx, settings.verify_depth);
    SSL_CTX_set_info_callback(&ctx, log_fatal_alert);
    // Every scrape is a full handshake: nothing to resume across a restart
    // of the admin process, and no session state kept per client.
    SSL_CTX_set_session_cache_mode(&ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(&ctx, SSL_OP_NO_TICKET);
}

AdminRole admin_role(const AdminRoles& roles, const SSL* ssl) {
    X509* leaf = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
    if (leaf == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return AdminRole::none;
    const crypto::PeerCertificate cert(leaf);
    if (!roles.operator_.empty() && crypto::allow_list_permits(roles.operator_, cert))
        return AdminRole::operator_;
    if (!roles.scrape.empty() && crypto::allow_list_permits(roles.scrape, cert))
        return AdminRole::scrape;
    return AdminRole::none;
}

AdminRole required_role(std::string_view method, std::string_view path) {
    const bool read = method == "GET" || method == "HEAD";
    if (read && (path == "/metrics" || path == "/healthz" || path == "/readyz"))
        return AdminRole::scrape;
    return AdminRole::operator_;
}

bool role_permits(AdminRole held, AdminRole required) {
    if (held == AdminRole::operator_) return true;
    return held == AdminRole::scrape && required == AdminRole::scrape;
}

std::string client_subject(const SSL* ssl) {
    X509* leaf = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
    return leaf ? crypto::subject_rfc2253(X509_get_subject_name(leaf)) : std::string();
}

}  // namespace portcullis::mgmt
