// Owning handles for OpenSSL objects: every OpenSSL allocation lives in one.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

namespace portcullis::crypto {

template <auto Free>
struct OpenSslDeleter {
    template <typename T>
    void operator()(T* p) const noexcept {
        Free(p);
    }
};

using UniqueSsl = std::unique_ptr<SSL, OpenSslDeleter<SSL_free>>;
using UniqueSslCtx = std::unique_ptr<SSL_CTX, OpenSslDeleter<SSL_CTX_free>>;
using UniqueBio = std::unique_ptr<BIO, OpenSslDeleter<BIO_free_all>>;
using UniqueEvpPkey = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY_free>>;
using UniqueX509 = std::unique_ptr<X509, OpenSslDeleter<X509_free>>;
using UniqueX509Crl = std::unique_ptr<X509_CRL, OpenSslDeleter<X509_CRL_free>>;
using UniqueX509Store = std::unique_ptr<X509_STORE, OpenSslDeleter<X509_STORE_free>>;
using UniqueX509StoreCtx = std::unique_ptr<X509_STORE_CTX, OpenSslDeleter<X509_STORE_CTX_free>>;
using UniqueX509Name = std::unique_ptr<X509_NAME, OpenSslDeleter<X509_NAME_free>>;
using UniqueOcspResponse = std::unique_ptr<OCSP_RESPONSE, OpenSslDeleter<OCSP_RESPONSE_free>>;
using UniqueOcspBasic = std::unique_ptr<OCSP_BASICRESP, OpenSslDeleter<OCSP_BASICRESP_free>>;
using UniqueOcspRequest = std::unique_ptr<OCSP_REQUEST, OpenSslDeleter<OCSP_REQUEST_free>>;
using UniqueOcspCertId = std::unique_ptr<OCSP_CERTID, OpenSslDeleter<OCSP_CERTID_free>>;

// Text of the OpenSSL error queue (and clears it), for error messages.
std::string drain_openssl_errors();

// Every PEM certificate of the file at `path`, in file order; empty when it
// cannot be read or holds none.
std::vector<UniqueX509> read_pem_certificates(const std::string& path);

}  // namespace portcullis::crypto
