// Client-certificate checks beyond OpenSSL's chain verification, and the
// bookkeeping that turns any refusal into a RejectReason. OpenSSL calls
// verify_client_certificate for each certificate of the chain; at depth 0,
// once the chain is good, it applies the EKU requirement and the allow-list.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

#include "crypto/tls_connection.hpp"
#include "crypto/tls_policy.hpp"

namespace portcullis::crypto {

// Attaches `state` to `ssl`; it must outlive the handshake.
void attach_verify_state(SSL* ssl, VerifyState* state);

// The SSL_CTX verify callback.
int verify_client_certificate(int preverified, X509_STORE_CTX* store);

// Reason for a chain-verification error code (X509_V_ERR_*).
RejectReason reason_for_verify_error(int error);

// Reason for a handshake that failed without the verify callback saying why.
RejectReason reason_for_ssl_error(unsigned long openssl_error);

bool has_client_auth_eku(X509* cert);
// Reads from the certificate only the fields the list's patterns use; the
// PeerCertificate form keeps them for the connection's other readers.
bool allow_list_permits(const AllowList& allow, const PeerCertificate& cert);
bool allow_list_permits(const AllowList& allow, X509* cert);

// "CN=a,O=b" (RFC 2253), the form allow-list subject patterns match.
std::string subject_rfc2253(const X509_NAME* name);
std::vector<std::string> subject_alt_dns(X509* cert);
std::vector<std::string> subject_alt_uris(X509* cert);

}  // namespace portcullis::crypto
