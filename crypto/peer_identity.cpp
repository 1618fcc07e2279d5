#include "crypto/peer_identity.hpp"

#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <memory>

#include "crypto/client_verifier.hpp"

namespace portcullis::crypto {
namespace {

const std::string empty_text;
const std::vector<std::string> no_names;
const std::array<std::uint8_t, 32> no_digest{};

// Fetched once per process, as the ticket cipher is (server_tls_context.cpp):
// EVP_sha256() is a legacy handle, and X509_digest looks up its ENGINE and
// fetches its implementation again on every call.
const EVP_MD* fetched_sha256() {
    static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> digest(
        EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
    return digest.get();
}

}  // namespace

PeerCertificate::PeerCertificate(X509* leaf) {
    if (leaf != nullptr && X509_up_ref(leaf) == 1) leaf_.reset(leaf);
}

const std::string& PeerCertificate::subject_dn() const {
    if (!leaf_) return empty_text;
    if (!subject_dn_) subject_dn_ = subject_rfc2253(X509_get_subject_name(leaf_.get()));
    return *subject_dn_;
}

const std::string& PeerCertificate::issuer_dn() const {
    if (!leaf_) return empty_text;
    if (!issuer_dn_) issuer_dn_ = subject_rfc2253(X509_get_issuer_name(leaf_.get()));
    return *issuer_dn_;
}

const std::string& PeerCertificate::common_name() const {
    if (!leaf_) return empty_text;
    if (!common_name_) {
        // The first CN whole, or none: a backend authorises on it, and a CN cut
        // at a NUL byte ("admin\0.other") or at a buffer's end would name
        // another client. The subject DN shows such a CN escaped.
        common_name_.emplace();
        const X509_NAME* name = X509_get_subject_name(leaf_.get());
        const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
        if (index >= 0) {
            const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
            std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                             static_cast<std::size_t>(ASN1_STRING_length(value)));
            if (text.find('\0') == std::string::npos) common_name_ = std::move(text);
        }
    }
    return *common_name_;
}

void PeerCertificate::read_subject_alt_names() const {
    san_dns_.emplace();
    san_uris_.emplace();
    using Names =
        std::unique_ptr<GENERAL_NAMES, decltype([](GENERAL_NAMES* n) { GENERAL_NAMES_free(n); })>;
    const Names names(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(leaf_.get(), NID_subject_alt_name, nullptr, nullptr)));
    if (!names) return;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
        const ASN1_IA5STRING* text = nullptr;
        std::vector<std::string>* list = nullptr;
        if (name->type == GEN_DNS) {
            text = name->d.dNSName;
            list = &*san_dns_;
        } else if (name->type == GEN_URI) {
            text = name->d.uniformResourceIdentifier;
            list = &*san_uris_;
        } else {
            continue;
        }
        list->emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                           static_cast<std::size_t>(ASN1_STRING_length(text)));
    }
}

const std::vector<std::string>& PeerCertificate::san_dns() const {
    if (!leaf_) return no_names;
    if (!san_dns_) read_subject_alt_names();
    return *san_dns_;
}

const std::vector<std::string>& PeerCertificate::san_uris() const {
    if (!leaf_) return no_names;
    if (!san_uris_) read_subject_alt_names();
    return *san_uris_;
}

const std::array<std::uint8_t, 32>& PeerCertificate::sha256() const {
    if (!leaf_) return no_digest;
    if (!sha256_) {
        std::array<std::uint8_t, 32> digest{};
        unsigned int length = 0;
        const EVP_MD* md = fetched_sha256();
        X509_digest(leaf_.get(), md != nullptr ? md : EVP_sha256(), digest.data(), &length);
        sha256_ = digest;
    }
    return *sha256_;
}

std::string PeerCertificate::sha256_hex() const {
    if (!leaf_) return {};
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(64);
    for (const auto byte : sha256()) {
        hex.push_back(digits[byte >> 4]);
        hex.push_back(digits[byte & 0x0f]);
    }
    return hex;
}

}  // namespace portcullis::crypto
