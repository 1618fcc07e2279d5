#include "tests/support/test_pki.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ocsp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <fstream>
#include <stdexcept>

namespace portcullis::testing {
namespace {

using crypto::UniqueBio;
using crypto::UniqueEvpPkey;
using crypto::UniqueX509;

void check(bool ok, const char* what) {
    if (!ok)
        throw std::runtime_error(std::string("test PKI: ") + what + ": " +
                                 crypto::drain_openssl_errors());
}

UniqueEvpPkey make_key(KeyKind kind) {
    EVP_PKEY* key = nullptr;
    switch (kind) {
        case KeyKind::ec_p256:
            key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
            break;
        case KeyKind::ec_p384:
            key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
            break;
        case KeyKind::rsa2048:
            key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
            break;
        case KeyKind::rsa3072:
            key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(3072));
            break;
        case KeyKind::rsa4096:
            key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(4096));
            break;
    }
    check(key != nullptr, "key generation");
    return UniqueEvpPkey(key);
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    check(ext != nullptr, "extension");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

void set_name(X509_NAME* name, const std::string& cn, const std::string& org,
              const std::vector<std::string>& units) {
    X509_NAME_add_entry_by_txt(name, "C", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("GB"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1, 0);
    for (const auto& unit : units) {
        check(X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_ASC,
                                         reinterpret_cast<const unsigned char*>(unit.c_str()), -1,
                                         -1, 0) == 1,
              "subject OU");
    }
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
}

// Builds and signs a certificate. `issuer`/`issuer_key` null = self-signed.
UniqueX509 build(const CertOptions& o, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key,
                 long serial, bool is_ca) {
    UniqueX509 cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), o.not_before_offset_s);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), o.not_after_offset_s);
    X509_set_pubkey(cert.get(), subject_key);
    set_name(X509_get_subject_name(cert.get()), o.common_name, o.organization,
             o.organizational_units);
    X509* signer = issuer ? issuer : cert.get();
    X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
    add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
    if (issuer) add_extension(cert.get(), signer, NID_authority_key_identifier, "keyid");
    if (is_ca) {
        add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
        add_extension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
        const bool rsa = EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA;
        add_extension(
            cert.get(), signer, NID_key_usage,
            rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature");
        if (o.include_eku && (o.client_auth || o.server_auth || o.ocsp_signing)) {
            std::string eku;
            if (o.client_auth) eku = "clientAuth";
            if (o.server_auth) eku += eku.empty() ? "serverAuth" : ",serverAuth";
            if (o.ocsp_signing) eku += eku.empty() ? "OCSPSigning" : ",OCSPSigning";
            add_extension(cert.get(), signer, NID_ext_key_usage, eku);
        } else if (o.include_eku) {
            add_extension(cert.get(), signer, NID_ext_key_usage, "emailProtection");
        }
        std::string san;
        for (const auto& d : o.dns_names) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
        for (const auto& u : o.uris) san += (san.empty() ? "" : ",") + std::string("URI:") + u;
        if (!san.empty()) add_extension(cert.get(), signer, NID_subject_alt_name, san);
    }
    if (!o.ocsp_url.empty())
        add_extension(cert.get(), signer, NID_info_access, "OCSP;URI:" + o.ocsp_url);
    if (!o.crl_url.empty())
        add_extension(cert.get(), signer, NID_crl_distribution_points, "URI:" + o.crl_url);
    check(X509_sign(cert.get(), issuer_key ? issuer_key : subject_key, EVP_sha256()) > 0,
          "sign certificate");
    // OpenSSL decodes a certificate's extensions into a cache on first use,
    // under the certificate's lock, and later threads find the cache through
    // a lock-free flag in libcrypto, which ThreadSanitizer does not see (the
    // library is not instrumented): tests whose client threads share a
    // certificate showed that as a race. Filled here, before anything shares
    // the certificate, the cache is never written concurrently.
    X509_check_purpose(cert.get(), -1, 0);
    return cert;
}

long random_serial() {
    unsigned char bytes[6];
    RAND_bytes(bytes, sizeof bytes);
    long serial = 0;
    for (const auto b : bytes) serial = serial << 8 | b;
    return serial | 1;
}

std::string pem_of(auto write, auto* object) {
    UniqueBio bio(BIO_new(BIO_s_mem()));
    write(bio.get(), object);
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

}  // namespace

std::string IssuedCert::cert_pem() const {
    return pem_of([](BIO* b, X509* x) { PEM_write_bio_X509(b, x); }, cert.get());
}

std::string IssuedCert::key_pem() const {
    return pem_of(
        [](BIO* b, EVP_PKEY* k) {
            PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
        },
        key.get());
}

CertificateAuthority CertificateAuthority::root(const std::string& common_name, KeyKind key) {
    CertificateAuthority ca;
    ca.key_ = make_key(key);
    CertOptions o;
    o.common_name = common_name;
    o.not_after_offset_s = 10L * 365 * 86400;
    ca.cert_ = build(o, ca.key_.get(), nullptr, nullptr, random_serial(), true);
    return ca;
}

CertificateAuthority CertificateAuthority::intermediate(const std::string& common_name, KeyKind key,
                                                        const std::string& ocsp_url,
                                                        const std::string& crl_url) const {
    CertificateAuthority ca;
    ca.key_ = make_key(key);
    CertOptions o;
    o.common_name = common_name;
    o.ocsp_url = ocsp_url;
    o.crl_url = crl_url;
    o.not_after_offset_s = 5L * 365 * 86400;
    ca.cert_ = build(o, ca.key_.get(), cert_.get(), key_.get(), random_serial(), true);
    return ca;
}

IssuedCert CertificateAuthority::issue(const CertOptions& options) const {
    IssuedCert issued;
    issued.key = make_key(options.key);
    issued.cert = build(options, issued.key.get(), cert_.get(), key_.get(), random_serial(), false);
    return issued;
}

void CertificateAuthority::revoke(const X509* cert) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
    char* hex = BN_bn2hex(bn);
    revoked_serials_hex_.emplace_back(hex);
    OPENSSL_free(hex);
    BN_free(bn);
}

std::string CertificateAuthority::crl_pem(long this_update_offset_s,
                                          long next_update_offset_s) const {
    std::unique_ptr<X509_CRL, crypto::OpenSslDeleter<X509_CRL_free>> crl(X509_CRL_new());
    X509_CRL_set_version(crl.get(), 1);
    X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(cert_.get()));
    std::unique_ptr<ASN1_TIME, crypto::OpenSslDeleter<ASN1_TIME_free>> this_update(
        X509_gmtime_adj(nullptr, this_update_offset_s));
    std::unique_ptr<ASN1_TIME, crypto::OpenSslDeleter<ASN1_TIME_free>> next_update(
        X509_gmtime_adj(nullptr, next_update_offset_s));
    X509_CRL_set1_lastUpdate(crl.get(), this_update.get());
    X509_CRL_set1_nextUpdate(crl.get(), next_update.get());
    for (const auto& hex : revoked_serials_hex_) {
        X509_REVOKED* revoked = X509_REVOKED_new();
        BIGNUM* bn = nullptr;
        BN_hex2bn(&bn, hex.c_str());
        ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
        X509_REVOKED_set_serialNumber(revoked, serial);
        X509_REVOKED_set_revocationDate(revoked, this_update.get());
        X509_CRL_add0_revoked(crl.get(), revoked);
        ASN1_INTEGER_free(serial);
        BN_free(bn);
    }
    X509_CRL_sort(crl.get());
    check(X509_CRL_sign(crl.get(), key_.get(), EVP_sha256()) > 0, "sign CRL");
    return pem_of([](BIO* b, X509_CRL* c) { PEM_write_bio_X509_CRL(b, c); }, crl.get());
}

std::string CertificateAuthority::ocsp_response_der(const X509* cert,
                                                    const OcspResponseOptions& options) const {
    using UniqueBasic =
        std::unique_ptr<OCSP_BASICRESP, crypto::OpenSslDeleter<OCSP_BASICRESP_free>>;
    using UniqueResponse =
        std::unique_ptr<OCSP_RESPONSE, crypto::OpenSslDeleter<OCSP_RESPONSE_free>>;
    using UniqueTime = std::unique_ptr<ASN1_TIME, crypto::OpenSslDeleter<ASN1_TIME_free>>;
    UniqueResponse response;
    if (options.response_status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        response.reset(OCSP_response_create(options.response_status, nullptr));
    } else {
        UniqueBasic basic(OCSP_BASICRESP_new());
        crypto::UniqueOcspCertId id(OCSP_cert_to_id(nullptr, cert, cert_.get()));
        UniqueTime this_update(X509_gmtime_adj(nullptr, options.this_update_offset_s));
        UniqueTime next_update(options.next_update_offset_s
                                   ? X509_gmtime_adj(nullptr, *options.next_update_offset_s)
                                   : nullptr);
        UniqueTime revoked_at(X509_gmtime_adj(nullptr, -7200));
        using Status = OcspResponseOptions::Status;
        const int status = options.status == Status::good      ? V_OCSP_CERTSTATUS_GOOD
                           : options.status == Status::revoked ? V_OCSP_CERTSTATUS_REVOKED
                                                               : V_OCSP_CERTSTATUS_UNKNOWN;
        check(basic && id &&
                  OCSP_basic_add1_status(
                      basic.get(), id.get(), status, OCSP_REVOKED_STATUS_KEYCOMPROMISE,
                      status == V_OCSP_CERTSTATUS_REVOKED ? revoked_at.get() : nullptr,
                      this_update.get(), next_update.get()) != nullptr,
              "OCSP single response");
        X509* signer = options.signer ? options.signer : cert_.get();
        EVP_PKEY* signer_key = options.signer ? options.signer_key : key_.get();
        check(OCSP_basic_sign(basic.get(), signer, signer_key, EVP_sha256(), nullptr, 0) == 1,
              "sign OCSP response");
        response.reset(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
    }
    check(response != nullptr, "OCSP response");
    unsigned char* der = nullptr;
    const int length = i2d_OCSP_RESPONSE(response.get(), &der);
    check(length > 0, "encode OCSP response");
    std::string bytes(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    return bytes;
}

std::string CertificateAuthority::cert_pem() const {
    return pem_of([](BIO* b, X509* x) { PEM_write_bio_X509(b, x); }, cert_.get());
}

std::string CertificateAuthority::key_pem() const {
    return pem_of(
        [](BIO* b, EVP_PKEY* k) {
            PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
        },
        key_.get());
}

IssuedCert self_signed(const CertOptions& options) {
    IssuedCert issued;
    issued.key = make_key(options.key);
    issued.cert = build(options, issued.key.get(), nullptr, nullptr, random_serial(), false);
    return issued;
}

UniqueEvpPkey mismatched_rsa_key(const X509* rsa_cert) {
    EVP_PKEY* public_key = X509_get0_pubkey(rsa_cert);
    BIGNUM* n = nullptr;
    BIGNUM* e = nullptr;
    check(EVP_PKEY_get_bn_param(public_key, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
              EVP_PKEY_get_bn_param(public_key, OSSL_PKEY_PARAM_RSA_E, &e) == 1,
          "read RSA public key");
    // A random odd d below n: same public half, signatures that never verify.
    BIGNUM* d = BN_new();
    BN_rand_range(d, n);
    BN_set_bit(d, 0);
    OSSL_PARAM_BLD* builder = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_N, n);
    OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_E, e);
    OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_D, d);
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(builder);
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    EVP_PKEY* key = nullptr;
    const bool ok = EVP_PKEY_fromdata_init(ctx) == 1 &&
                    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(builder);
    BN_free(n);
    BN_free(e);
    BN_clear_free(d);
    check(ok, "build mismatched RSA key");
    return UniqueEvpPkey(key);
}

void write_file(const std::filesystem::path& path, std::string_view contents) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    if (!out) throw std::runtime_error("cannot write " + path.string());
    out.close();
    // Owner only, as a key or PIN file must be (the daemon refuses one that
    // other users can open); a test that needs more says so itself.
    std::filesystem::permissions(
        path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

CertOptions localhost_server() {
    CertOptions o;
    o.common_name = "localhost";
    o.dns_names = {"localhost"};
    o.client_auth = false;
    o.server_auth = true;
    return o;
}

TempFiles::TempFiles() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "portcullis-unit.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
        throw std::runtime_error("cannot make a directory like " + pattern);
    dir = pattern;
}

TempFiles::~TempFiles() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
}

std::string TempFiles::put(const std::string& name, std::string_view text) const {
    write_file(dir / name, text);
    return (dir / name).string();
}

}  // namespace portcullis::testing
