#include "crypto/ocsp_response.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "crypto/asn1_time.hpp"

namespace portcullis::crypto {
namespace {

void free_certificate_stack(STACK_OF(X509) * stack) {
    sk_X509_free(stack);
}
using UniqueCertStack = std::unique_ptr<STACK_OF(X509), OpenSslDeleter<free_certificate_stack>>;

OcspAnswer refused(std::string why) {
    ERR_clear_error();
    OcspAnswer answer;
    answer.problem = std::move(why);
    return answer;
}

}  // namespace

const char* to_string(OcspCertStatus status) {
    switch (status) {
        case OcspCertStatus::good:
            return "good";
        case OcspCertStatus::revoked:
            return "revoked";
        case OcspCertStatus::unknown:
            break;
    }
    return "unknown";
}

std::vector<unsigned char> ocsp_request(X509* leaf, X509* issuer, bool with_nonce) {
    UniqueOcspRequest request(OCSP_REQUEST_new());
    OCSP_CERTID* id = OCSP_cert_to_id(nullptr, leaf, issuer);
    if (!request || id == nullptr || OCSP_request_add0_id(request.get(), id) == nullptr) {
        OCSP_CERTID_free(id);
        ERR_clear_error();
        return {};
    }
    if (with_nonce && OCSP_request_add1_nonce(request.get(), nullptr, -1) != 1) {
        ERR_clear_error();
        return {};
    }
    unsigned char* der = nullptr;
    const int length = i2d_OCSP_REQUEST(request.get(), &der);
    std::vector<unsigned char> bytes;
    if (length > 0) bytes.assign(der, der + length);
    OPENSSL_free(der);
    return bytes;
}

OcspAnswer check_ocsp_response(std::span<const unsigned char> der, X509* leaf, X509* issuer,
                               std::int64_t now, std::span<const unsigned char> request) {
    const unsigned char* cursor = der.data();
    UniqueOcspResponse response(d2i_OCSP_RESPONSE(nullptr, &cursor, static_cast<long>(der.size())));
    if (!response) return refused("not a DER OCSP response");
    if (const int status = OCSP_response_status(response.get());
        status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        return refused(std::string("responder answered ") + OCSP_response_status_str(status));
    }
    UniqueOcspBasic basic(OCSP_response_get1_basic(response.get()));
    if (!basic) return refused("no basic OCSP response");

    // The issuer is the one trust anchor: a signer must be it or chain to it
    // directly, and OpenSSL's issuer checks then demand the OCSPSigning EKU.
    UniqueX509Store store(X509_STORE_new());
    UniqueCertStack untrusted(sk_X509_new_null());
    if (!store || !untrusted || X509_STORE_add_cert(store.get(), issuer) != 1 ||
        sk_X509_push(untrusted.get(), issuer) <= 0) {
        return refused("out of memory");
    }
    X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
    if (OCSP_basic_verify(basic.get(), untrusted.get(), store.get(), 0) != 1)
        return refused("not signed by the issuer or a responder it delegated to");

    if (!request.empty()) {
        const unsigned char* in = request.data();
        UniqueOcspRequest sent(d2i_OCSP_REQUEST(nullptr, &in, static_cast<long>(request.size())));
        if (!sent) return refused("the request it answers is not DER");
        // 1: both carry the same nonce; 2 and 3: the request had none. 0 and
        // -1: the request's nonce is missing from the response or differs.
        if (OCSP_check_nonce(sent.get(), basic.get()) <= 0)
            return refused("the response does not echo the request's nonce");
    }

    UniqueOcspCertId id(OCSP_cert_to_id(nullptr, leaf, issuer));
    int status = 0, reason = 0;
    ASN1_GENERALIZEDTIME *revoked_at = nullptr, *this_update = nullptr, *next_update = nullptr;
    if (!id || OCSP_resp_find_status(basic.get(), id.get(), &status, &reason, &revoked_at,
                                     &this_update, &next_update) != 1) {
        return refused("no answer about this certificate");
    }
    OcspAnswer answer;
    answer.status = status == V_OCSP_CERTSTATUS_GOOD      ? OcspCertStatus::good
                    : status == V_OCSP_CERTSTATUS_REVOKED ? OcspCertStatus::revoked
                                                          : OcspCertStatus::unknown;
    const auto produced = unix_seconds(this_update);
    const auto expires = unix_seconds(next_update);
    if (!produced) return refused("no readable thisUpdate");
    if (!expires) return refused("no nextUpdate (its freshness could never be judged)");
    if (*produced > now + ocsp_clock_skew_s) return refused("thisUpdate is in the future");
    if (*expires <= now) return refused("nextUpdate has passed");
    answer.this_update = *produced;
    answer.next_update = *expires;
    ERR_clear_error();
    return answer;
}

std::string ocsp_responder_of(X509* leaf) {
    STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(leaf);
    std::string url;
    if (urls != nullptr && sk_OPENSSL_STRING_num(urls) > 0) url = sk_OPENSSL_STRING_value(urls, 0);
    X509_email_free(urls);
    return url;
}

std::string ocsp_response_path(const std::string& dir, X509* leaf) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (X509_digest(leaf, EVP_sha256(), digest, &length) != 1) {
        ERR_clear_error();
        return {};
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string name = "ocsp-";
    for (unsigned int i = 0; i < length; ++i) {
        name += hex[digest[i] >> 4];
        name += hex[digest[i] & 0xf];
    }
    return (std::filesystem::path(dir) / (name + ".der")).string();
}

std::vector<unsigned char> read_ocsp_response(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return {};
    return std::vector<unsigned char>((std::istreambuf_iterator<char>(file)),
                                      std::istreambuf_iterator<char>());
}

}  // namespace portcullis::crypto
