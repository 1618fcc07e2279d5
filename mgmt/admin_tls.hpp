// Mutual TLS for the admin listener: the server context (its own certificate,
// its own client trust and CRLs, clientAuth EKU required, a refused handshake
// logged with its cause) and the role a verified client holds, which decides
// the routes it may use. Roles are checked per request, not in the handshake,
// so a client with the wrong role gets a 403 it can read and a log line.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <string_view>

#include "mgmt/config.hpp"

namespace portcullis::mgmt {

enum class AdminRole { none, scrape, operator_ };

std::string_view role_name(AdminRole role);

// Sets up `ctx` (created by the HTTP server) for `settings`; the settings
// must outlive it. Throws crypto::TlsConfigError naming the file on a problem.
void configure_admin_tls(SSL_CTX& ctx, const AdminTlsSettings& settings);

// The role of the client certificate `ssl` verified: operator when it
// matches the operator list, else scrape when it matches that one.
AdminRole admin_role(const AdminRoles& roles, const SSL* ssl);

// GET /metrics, /healthz and /readyz are a scrape; everything else needs an operator.
AdminRole required_role(std::string_view method, std::string_view path);

bool role_permits(AdminRole held, AdminRole required);

// "CN=...,O=..." of the client certificate, or "" without one.
std::string client_subject(const SSL* ssl);

}  // namespace portcullis::mgmt
