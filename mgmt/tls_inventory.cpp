#include "mgmt/tls_inventory.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>
#include <memory>

#include "crypto/asn1_time.hpp"
#include "crypto/client_verifier.hpp"
#include "crypto/openssl_handles.hpp"

namespace portcullis::mgmt {
namespace {

std::int64_t unix_time_of(const ASN1_TIME* time) {
    return crypto::unix_seconds(time).value_or(0);
}

}  // namespace

std::vector<ListenerInventory> read_tls_inventory(const Config& config) {
    std::vector<ListenerInventory> inventory;
    for (const auto& listener : config.listeners) {
        ListenerInventory entry;
        entry.name = listener.name;
        for (const auto& spec : listener.tls.certificates) {
            const crypto::UniqueBio file(BIO_new_file(spec.chain_file.c_str(), "rb"));
            crypto::UniqueX509 leaf(file ? PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr)
                                         : nullptr);
            if (!leaf) {
                entry.problems.push_back("certificate " + spec.chain_file + ": cannot read");
                continue;
            }
            entry.certificates.push_back(
                {spec.chain_file, crypto::subject_rfc2253(X509_get_subject_name(leaf.get())),
                 unix_time_of(X509_get0_notAfter(leaf.get()))});
        }
        for (const auto& path : listener.tls.crl_files) {
            const crypto::UniqueBio file(BIO_new_file(path.c_str(), "rb"));
            if (!file) {
                entry.problems.push_back("CRL " + path + ": cannot read");
                continue;
            }
            while (X509_CRL* raw = PEM_read_bio_X509_CRL(file.get(), nullptr, nullptr, nullptr)) {
                crypto::UniqueX509Crl crl(raw);
                entry.crls.push_back({path, crypto::subject_rfc2253(X509_CRL_get_issuer(raw)),
                                      unix_time_of(X509_CRL_get0_lastUpdate(raw)),
                                      unix_time_of(X509_CRL_get0_nextUpdate(raw))});
            }
        }
        ERR_clear_error();
        inventory.push_back(std::move(entry));
    }
    return inventory;
}

}  // namespace portcullis::mgmt
