// The CRL distribution points a certificate names (RFC 5280 4.2.1.13), as
// the places to fetch the CRL that covers it: a CA certificate's points name
// its issuer's CRL.
#pragma once

#include <openssl/x509.h>

#include <string>
#include <vector>

namespace portcullis::crypto {

// The http:// URIs of `cert`'s distribution points (full names only), in
// order, without repeats. Other schemes (ldap:) are left out: the fetcher
// speaks HTTP.
std::vector<std::string> http_crl_distribution_points(X509* cert);

}  // namespace portcullis::crypto
