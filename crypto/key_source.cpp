#include "crypto/key_source.hpp"

#include <openssl/pem.h>

namespace portcullis::crypto {

UniqueEvpPkey PemFileKeySource::load(const std::string& reference) {
    if (reference.starts_with("pkcs11:")) {
        throw KeyLoadError("key " + reference + ": a pkcs11: key needs an [hsm] section");
    }
    const UniqueBio file(BIO_new_file(reference.c_str(), "rb"));
    if (!file) throw KeyLoadError("key " + reference + ": cannot open file");
    // A null passphrase callback with no user data makes encrypted keys fail
    // instead of prompting on a terminal the daemon does not have.
    UniqueEvpPkey key(PEM_read_bio_PrivateKey(
        file.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
    if (!key)
        throw KeyLoadError("key " + reference + ": not an unencrypted PEM private key (" +
                           drain_openssl_errors() + ")");
    return key;
}

}  // namespace portcullis::crypto
