// Test PKI built with the OpenSSL API in memory: CAs, intermediates, leaves
// with any validity/EKU/SAN/OCSP responder, CRLs, OCSP responses, and
// deliberately broken material. Used by
// unit and integration tests so every test makes its own certificates.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/openssl_handles.hpp"

namespace portcullis::testing {

enum class KeyKind { ec_p256, ec_p384, rsa2048, rsa3072, rsa4096 };

struct CertOptions {
    std::string common_name = "client";
    std::string organization = "Portcullis Test";
    std::vector<std::string> organizational_units;  // OU entries after O, in order
    KeyKind key = KeyKind::ec_p256;
    std::vector<std::string> dns_names;
    std::vector<std::string> uris;
    bool include_eku = true;                // false: no extendedKeyUsage extension at all
    bool client_auth = true;                // EKU clientAuth (when include_eku)
    bool server_auth = false;               // EKU serverAuth (when include_eku)
    bool ocsp_signing = false;              // EKU OCSPSigning: a delegated OCSP responder
    std::string ocsp_url;                   // Authority Information Access OCSP URI, if any
    std::string crl_url;                    // CRL distribution point URI, if any
    long not_before_offset_s = -3600;       // relative to now
    long not_after_offset_s = 30L * 86400;  // relative to now
};

// One OCSP answer about one certificate. Times are relative to now.
struct OcspResponseOptions {
    enum class Status { good, revoked, unknown };
    Status status = Status::good;
    long this_update_offset_s = -60;
    std::optional<long> next_update_offset_s = 3600;  // nullopt: no nextUpdate
    // Who signs: null = the CA itself; otherwise a delegated responder.
    X509* signer = nullptr;
    EVP_PKEY* signer_key = nullptr;
    // Not OCSP_RESPONSE_STATUS_SUCCESSFUL (0): an error response with no body.
    int response_status = 0;
};

struct IssuedCert {
    crypto::UniqueX509 cert;
    crypto::UniqueEvpPkey key;
    std::string cert_pem() const;
    std::string key_pem() const;  // unencrypted PKCS#8
};

class CertificateAuthority {
  public:
    static CertificateAuthority root(const std::string& common_name,
                                     KeyKind key = KeyKind::ec_p256);
    // `ocsp_url`: the responder its Authority Information Access names, if
    // any; `crl_url`: its CRL distribution point (where this CA's issuer
    // publishes the CRL that covers it), if any.
    CertificateAuthority intermediate(const std::string& common_name,
                                      KeyKind key = KeyKind::ec_p256,
                                      const std::string& ocsp_url = "",
                                      const std::string& crl_url = "") const;

    IssuedCert issue(const CertOptions& options) const;

    // Adds to this CA's revocation list; crl_pem() signs the current list
    // (thisUpdate and nextUpdate relative to now: by default 1 h ago, in 1 day).
    void revoke(const X509* cert);
    std::string crl_pem(long this_update_offset_s = -3600, long next_update_offset_s = 86400) const;

    // A DER OCSPResponse about `cert` (which this CA issued), signed with SHA-256.
    std::string ocsp_response_der(const X509* cert, const OcspResponseOptions& options = {}) const;

    std::string cert_pem() const;
    std::string key_pem() const;  // unencrypted PKCS#8, for tools such as `openssl ocsp`
    X509* cert() const { return cert_.get(); }
    EVP_PKEY* key() const { return key_.get(); }

  private:
    crypto::UniqueX509 cert_;
    crypto::UniqueEvpPkey key_;
    std::vector<std::string> revoked_serials_hex_;
    long next_serial_ = 2;
};

IssuedCert self_signed(const CertOptions& options);

// A server certificate for "localhost" (CN and DNS SAN), EKU serverAuth only.
CertOptions localhost_server();

// An RSA private key whose public half equals `rsa_cert`'s but whose private
// exponent is wrong: OpenSSL accepts it as the certificate's key, and every
// signature it makes fails to verify ("key not matching cert" as a peer sees it).
crypto::UniqueEvpPkey mismatched_rsa_key(const X509* rsa_cert);

// Creates or replaces `path` with mode 0600.
void write_file(const std::filesystem::path& path, std::string_view contents);

// A fresh temporary directory for a test's PEM files, removed with everything
// in it when the object goes.
struct TempFiles {
    std::filesystem::path dir;
    TempFiles();
    ~TempFiles();
    TempFiles(const TempFiles&) = delete;
    TempFiles& operator=(const TempFiles&) = delete;
    // Writes `text` to dir/name and returns the path.
    std::string put(const std::string& name, std::string_view text) const;
};

}  // namespace portcullis::testing
