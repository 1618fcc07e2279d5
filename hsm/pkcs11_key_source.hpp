// Server keys that live in a PKCS#11 token. load() returns an EVP_PKEY that
// holds only the public half; its RSA/EC method sends every private-key
// operation to the SigningService. Given a KeyCompletionSink, inside an
// OpenSSL async job (SSL_MODE_ASYNC) the key hands the SignOperation to the
// sink's paused() (crypto/pending_key_operation.hpp) and the job pauses until
// the signature is back, so the worker keeps serving other
// connections; the finished operation goes to the sink. Without a sink, or
// outside a job (tools, --check-config), the call blocks. A failed signature
// says why on the OpenSSL error queue (crypto::raise_key_failure).
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
    // `completions` (may be null) must outlive the keys this source loads.
    explicit Pkcs11KeySource(std::shared_ptr<SigningService> service,
                             crypto::KeyCompletionSink* completions = nullptr);
    ~Pkcs11KeySource() override;
    crypto::UniqueEvpPkey load(const std::string& reference) override;
    bool asynchronous(const std::string& reference) const override {
        return completions_ != nullptr && reference.starts_with("pkcs11:");
    }
    SigningService* service() const { return service_.get(); }

  private:
    std::shared_ptr<SigningService> service_;
    crypto::KeyCompletionSink* completions_;
    crypto::PemFileKeySource files_;
    std::vector<std::unique_ptr<KeyBinding>> bindings_;
};

bool is_pkcs11_reference(const std::string& reference);

}  // namespace portcullis::hsm
