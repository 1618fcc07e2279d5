#include "crypto/client_verifier.hpp"

#include <fnmatch.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <string>

#include "crypto/server_tls_context.hpp"

namespace portcullis::crypto {
namespace {

int verify_state_index() {
    // One process-wide ex_data slot, registered on first use.
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

bool glob_matches(const std::string& pattern, const std::string& value) {
    return ::fnmatch(pattern.c_str(), value.c_str(), 0) == 0;
}

bool any_glob_matches(const std::vector<std::string>& patterns,
                      const std::vector<std::string>& values) {
    for (const auto& p : patterns) {
        for (const auto& v : values) {
            if (glob_matches(p, v)) return true;
        }
    }
    return false;
}

// A pinned fingerprint as configured (any case, ':' separators allowed)
// against one in canonical form (lowercase hex, no separators).
bool same_fingerprint(const std::string& pinned, const std::string& canonical) {
    std::size_t at = 0;
    for (const char c : pinned) {
        if (c == ':') continue;
        if (at == canonical.size() || std::tolower(static_cast<unsigned char>(c)) != canonical[at])
            return false;
        ++at;
    }
    return at == canonical.size();
}

std::vector<std::string> san_entries(X509* cert, int type) {
    std::vector<std::string> out;
    using Names =
        std::unique_ptr<GENERAL_NAMES, decltype([](GENERAL_NAMES* n) { GENERAL_NAMES_free(n); })>;
    Names names(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
        if (name->type != type) continue;
        const ASN1_IA5STRING* text =
            type == GEN_DNS ? name->d.dNSName : name->d.uniformResourceIdentifier;
        out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                         static_cast<std::size_t>(ASN1_STRING_length(text)));
    }
    return out;
}

void record(TlsFailure& failure, RejectReason reason, std::string detail, X509* cert) {
    if (failure.reason != RejectReason::none) return;  // the first cause is the one that matters
    failure.reason = reason;
    failure.detail = std::move(detail);
    if (cert) failure.peer_subject = subject_rfc2253(X509_get_subject_name(cert));
}

}  // namespace

std::string subject_rfc2253(const X509_NAME* name) {
    UniqueBio bio(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

std::vector<std::string> subject_alt_dns(X509* cert) {
    return san_entries(cert, GEN_DNS);
}
std::vector<std::string> subject_alt_uris(X509* cert) {
    return san_entries(cert, GEN_URI);
}

void attach_verify_state(SSL* ssl, VerifyState* state) {
    SSL_set_ex_data(ssl, verify_state_index(), state);
}

bool has_client_auth_eku(X509* cert) {
    // OpenSSL's purpose check passes a leaf with no EKU extension at all; a
    // bank's policy of "clientAuth required" must not.
    return (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
           (X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0;
}

bool allow_list_permits(const AllowList& allow, X509* cert) {
    return allow.empty() || allow_list_permits(allow, PeerCertificate(cert));
}

bool allow_list_permits(const AllowList& allow, const PeerCertificate& cert) {
    if (allow.empty()) return true;
    if (!allow.subject_patterns.empty()) {
        const std::string& subject = cert.subject_dn();
        for (const auto& pattern : allow.subject_patterns) {
            if (glob_matches(pattern, subject)) return true;
        }
    }
    if (!allow.san_uris.empty() && any_glob_matches(allow.san_uris, cert.san_uris())) return true;
    if (!allow.san_dns.empty() && any_glob_matches(allow.san_dns, cert.san_dns())) return true;
    if (!allow.sha256_fingerprints.empty()) {
        const std::string fingerprint = cert.sha256_hex();
        for (const auto& pinned : allow.sha256_fingerprints) {
            if (same_fingerprint(pinned, fingerprint)) return true;
        }
    }
    return false;
}

RejectReason reason_for_verify_error(int error) {
    switch (error) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return RejectReason::expired;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return RejectReason::not_yet_valid;
        case X509_V_ERR_CERT_REVOKED:
            return RejectReason::revoked;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_CERT_CHAIN_TOO_LONG:
            return RejectReason::unknown_ca;
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
            return RejectReason::self_signed;
        case X509_V_ERR_UNABLE_TO_GET_CRL:
        case X509_V_ERR_CRL_NOT_YET_VALID:
        case X509_V_ERR_CRL_HAS_EXPIRED:
        case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
            return RejectReason::crl_unavailable;
        case X509_V_ERR_OCSP_CERT_UNKNOWN:
        case X509_V_ERR_OCSP_VERIFY_FAILED:
            return RejectReason::ocsp_unavailable;
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
            return RejectReason::bad_signature;
        case X509_V_ERR_INVALID_PURPOSE:
            return RejectReason::bad_eku;
        default:
            return RejectReason::other;
    }
}

RejectReason reason_for_ssl_error(unsigned long openssl_error) {
    if (ERR_GET_LIB(openssl_error) != ERR_LIB_SSL) return RejectReason::other;
    switch (ERR_GET_REASON(openssl_error)) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return RejectReason::no_certificate;
        case SSL_R_BAD_SIGNATURE:
            return RejectReason::bad_signature;

        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            return RejectReason::other;
        default:
            return RejectReason::protocol;
    }
}

namespace {

// With policy ocsp, once the chain verified: each certificate in scope (the
// leaf, or every one below the anchor) against its issuer in the verified
// chain. False with the failure recorded when the client is refused.
bool ocsp_permits(VerifyState& state, X509_STORE_CTX* store) {
    const TlsPolicy& policy = *state.policy;
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store);
    const int length = sk_X509_num(chain);
    const int checked = policy.ocsp == OcspCheck::chain ? length - 1 : std::min(1, length - 1);
    for (int depth = 0; depth < checked; ++depth) {
        X509* cert = sk_X509_value(chain, depth);
        X509* issuer = sk_X509_value(chain, depth + 1);
        const auto verdict = state.ocsp->check(cert, issuer, policy.ocsp_responder,
                                               policy.ocsp_nonce, state.completions);
        if (state.events != nullptr) state.events->ocsp_checked(verdict.source, verdict.kind);
        if (verdict.kind == OcspVerdict::Kind::good) continue;
        if (verdict.kind == OcspVerdict::Kind::revoked) {
            record(*state.failure, RejectReason::revoked,
                   "OCSP: certificate revoked (depth " + std::to_string(depth) + ")", cert);
            X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REVOKED);
            return false;
        }
        if (policy.ocsp_failure == OcspFailure::soft) {
            if (state.events != nullptr) state.events->ocsp_soft_accepted();
            continue;
        }
        const bool unknown = verdict.kind == OcspVerdict::Kind::unknown;
        record(*state.failure, RejectReason::ocsp_unavailable,
               unknown ? "OCSP: the responder does not know the certificate (depth " +
                             std::to_string(depth) + ")"
                       : "OCSP: " + verdict.detail,
               cert);
        X509_STORE_CTX_set_error(
            store, unknown ? X509_V_ERR_OCSP_CERT_UNKNOWN : X509_V_ERR_OCSP_VERIFY_FAILED);
        return false;
    }
    return true;
}

}  // namespace

int verify_client_certificate(int preverified, X509_STORE_CTX* store) {
    SSL* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* state = static_cast<VerifyState*>(SSL_get_ex_data(ssl, verify_state_index()));
    if (state == nullptr) return preverified;
    X509* leaf = X509_STORE_CTX_get0_cert(store);
    if (!preverified) {
        const int error = X509_STORE_CTX_get_error(store);
        // Soft: the stale CRL still revokes what it lists (OpenSSL goes on
        // to look the certificate up in it); only its age is forgiven.
        if (error == X509_V_ERR_CRL_HAS_EXPIRED && state->policy->crl_stale == CrlStale::soft) {
            if (state->events != nullptr) state->events->stale_crl_accepted();
            return 1;
        }
        record(*state->failure, reason_for_verify_error(error),
               X509_verify_cert_error_string(error), leaf);
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
    if (state->policy->require_client_auth_eku && !has_client_auth_eku(leaf)) {
        record(*state->failure, RejectReason::bad_eku,
               "certificate lacks extendedKeyUsage clientAuth", leaf);
        X509_STORE_CTX_set_error(store, X509_V_ERR_INVALID_PURPOSE);
        return 0;
    }
    // The identity keeps the leaf, so what the allow-list reads from it is
    // not read again for the access log or the PROXY v2 header.
    if (state->leaf != nullptr && state->leaf->get() != leaf) *state->leaf = PeerCertificate(leaf);
    const bool allowed = state->leaf != nullptr
                             ? allow_list_permits(state->policy->allow, *state->leaf)
                             : allow_list_permits(state->policy->allow, leaf);
    if (!allowed) {
        record(*state->failure, RejectReason::not_allowed,
               "client identity is not on the listener's allow-list", leaf);
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (state->ocsp != nullptr && state->policy->ocsp != OcspCheck::off &&
        !ocsp_permits(*state, store)) {
        return 0;
    }
    return 1;
}

}  // namespace portcullis::crypto
