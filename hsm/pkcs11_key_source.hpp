// Server keys that live in a PKCS#11 token. load() returns an EVP_PKEY that
// holds only the public half; its RSA/EC method sends every private-key
// operation to the SigningService. Inside an OpenSSL async job (SSL_MODE_ASYNC)
// the job pauses until the signature is back, so the worker keeps serving
// other connections; outside one (tools, --check-config) the call blocks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "crypto/key_source.hpp"
#include "hsm/signing_service.hpp"

namespace portcullis::hsm {

struct KeyBinding;

class Pkcs11KeySource final : public crypto::KeySource {
  public:
    // PEM paths are delegated to `files`; "pkcs11:" URIs go to `service`.
    explicit Pkcs11KeySource(std::shared_ptr<SigningService> service);
    ~Pkcs11KeySource() override;
    crypto::UniqueEvpPkey load(const std::string& reference) override;
    bool asynchronous(const std::string& reference) const override {
        return reference.starts_with("pkcs11:");
    }
    SigningService* service() const { return service_.get(); }

  private:
    std::shared_ptr<SigningService> service_;
    crypto::PemFileKeySource files_;
    std::vector<std::unique_ptr<KeyBinding>> bindings_;
};

// The worker's side of asynchronous signing, per thread.
class AsyncSigningScope {
  public:
    // Signatures requested on this thread inside an async job complete through `queue`.
    explicit AsyncSigningScope(CompletionQueue& queue);
    ~AsyncSigningScope();
};

// The operation the last paused handshake on this thread is waiting for
// (null if it paused for another reason). Clears it.
std::shared_ptr<SignOperation> take_submitted_operation();

// Why the last private-key operation on this thread failed ("" if it did not).
const std::string& last_key_failure();
void clear_last_key_failure();

bool is_pkcs11_reference(const std::string& reference);

}  // namespace portcullis::hsm
