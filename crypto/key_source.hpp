// Where a server private key comes from. The TLS core asks a KeySource for a
// key by reference and never cares whether it is a PEM file or a token object:
// hsm/Pkcs11KeySource is the PKCS#11 source behind this same interface.
#pragma once

#include <stdexcept>
#include <string>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {

struct KeyLoadError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class KeySource {
  public:
    virtual ~KeySource() = default;
    // Throws KeyLoadError naming the reference (never a PIN or key material).
    virtual UniqueEvpPkey load(const std::string& reference) = 0;
    // Whether signing with this key can pause the handshake (SSL_MODE_ASYNC):
    // then handshake() returns key_operation_pending until the key answers,
    // and the operation reaches the transport through the KeyCompletionSink
    // the source was given (pending_key_operation.hpp).
    virtual bool asynchronous(const std::string&) const { return false; }
};

// Unencrypted PEM private keys from files.
class PemFileKeySource final : public KeySource {
  public:
    UniqueEvpPkey load(const std::string& reference) override;
};

}  // namespace portcullis::crypto
