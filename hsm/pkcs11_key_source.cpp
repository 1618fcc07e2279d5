// OpenSSL's RSA_METHOD / EC_KEY_METHOD are deprecated in 3.0 but remain the
// way to give a "foreign" key to libssl without a provider; this folder alone
// builds with the deprecation allowed (see meson.build).
#include "hsm/pkcs11_key_source.hpp"

#include <openssl/async.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstring>

#include "crypto/pending_key_operation.hpp"

namespace portcullis::hsm {

struct KeyBinding {
    SigningService* service = nullptr;
    KeyEntry* key = nullptr;
    crypto::KeyCompletionSink* completions = nullptr;
};

namespace {

int rsa_index() {
    static const int index = RSA_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

int ec_index() {
    static const int index = EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// Runs one signature: queued to the session threads; inside an async job the
// job pauses until the worker resumes it with the result (or gives up).
bool sign(const KeyBinding& binding, Mechanism mechanism, const unsigned char* input,
          std::size_t length, std::vector<std::uint8_t>& signature) {
    auto op = std::make_shared<SignOperation>();
    op->key = binding.key;
    op->mechanism = mechanism;
    op->input.assign(input, input + length);
    const bool in_job = ASYNC_get_current_job() != nullptr && binding.completions != nullptr;
    op->sink = in_job ? binding.completions : nullptr;
    if (!binding.service->submit(op)) {
        crypto::raise_key_failure("HSM queue full for " + binding.service->name(*binding.key) +
                                  " (" + std::to_string(binding.service->settings().max_in_flight) +
                                  " in flight)");
        return false;
    }
    if (in_job) {
        binding.completions->paused(op);
        while (!op->finished()) {
            if (ASYNC_pause_job() == 0) break;
        }
        // Nobody will resume this job for the operation: stop waiting for it.
        op->abandon(crypto::KeyAbandonReason::cancelled);
    } else {
        while (op->state.load(std::memory_order_acquire) == SignOperation::pending)
            op->state.wait(SignOperation::pending, std::memory_order_acquire);
    }
    binding.service->account(*op);  // counts only a completed operation
    if (const auto why = op->why_failed(); !why.empty()) {
        crypto::raise_key_failure(why);
        return false;
    }
    signature = std::move(op->output);
    return true;
}

int rsa_private_encrypt(int length, const unsigned char* from, unsigned char* to, RSA* rsa,
                        int padding) {
    const auto* binding = static_cast<KeyBinding*>(RSA_get_ex_data(rsa, rsa_index()));
    if (binding == nullptr) return -1;
    Mechanism mechanism;
    if (padding == RSA_PKCS1_PADDING) {
        mechanism = Mechanism::rsa_pkcs1;  // `from` is the DigestInfo; the token pads
    } else if (padding == RSA_NO_PADDING) {
        mechanism = Mechanism::rsa_raw;  // PSS: OpenSSL padded already
    } else {
        crypto::raise_key_failure("RSA padding mode " + std::to_string(padding) +
                                  " not supported by the HSM path");
        return -1;
    }
    std::vector<std::uint8_t> signature;
    if (!sign(*binding, mechanism, from, static_cast<std::size_t>(length), signature)) return -1;
    if (signature.size() != static_cast<std::size_t>(RSA_size(rsa))) return -1;
    std::memcpy(to, signature.data(), signature.size());
    return static_cast<int>(signature.size());
}

int rsa_private_decrypt(int, const unsigned char*, unsigned char*, RSA*, int) {
    crypto::raise_key_failure("RSA decryption with a token key is not used (ECDHE only)");
    return -1;
}

ECDSA_SIG* ec_sign_sig(const unsigned char* digest, int digest_length, const BIGNUM*, const BIGNUM*,
                       EC_KEY* ec) {
    const auto* binding = static_cast<KeyBinding*>(EC_KEY_get_ex_data(ec, ec_index()));
    if (binding == nullptr) return nullptr;
    std::vector<std::uint8_t> raw;
    if (!sign(*binding, Mechanism::ecdsa, digest, static_cast<std::size_t>(digest_length), raw))
        return nullptr;
    if (raw.empty() || raw.size() % 2 != 0) return nullptr;
    const int half = static_cast<int>(raw.size() / 2);
    ECDSA_SIG* sig = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(raw.data(), half, nullptr);
    BIGNUM* s = BN_bin2bn(raw.data() + half, half, nullptr);
    if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return nullptr;
    }
    return sig;
}

int ec_sign_setup(EC_KEY*, BN_CTX*, BIGNUM**, BIGNUM**) {
    return 1;
}

const RSA_METHOD* hsm_rsa_method() {
    static RSA_METHOD* method = [] {
        RSA_METHOD* m = RSA_meth_dup(RSA_get_default_method());
        RSA_meth_set1_name(m, "portcullis-pkcs11");
        RSA_meth_set_priv_enc(m, rsa_private_encrypt);
        RSA_meth_set_priv_dec(m, rsa_private_decrypt);
        RSA_meth_set_flags(m, RSA_meth_get_flags(m) | RSA_FLAG_EXT_PKEY);
        return m;
    }();
    return method;
}

const EC_KEY_METHOD* hsm_ec_method() {
    static EC_KEY_METHOD* method = [] {
        EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_get_default_method());
        int (*default_sign)(int, const unsigned char*, int, unsigned char*, unsigned int*,
                            const BIGNUM*, const BIGNUM*, EC_KEY*) = nullptr;
        EC_KEY_METHOD_get_sign(m, &default_sign, nullptr, nullptr);
        // The DER-producing sign wraps sign_sig, which goes to the token.
        EC_KEY_METHOD_set_sign(m, default_sign, ec_sign_setup, ec_sign_sig);
        return m;
    }();
    return method;
}

crypto::UniqueEvpPkey rsa_key(const KeyInfo& info, KeyBinding* binding, const std::string& name) {
    RSA* rsa = RSA_new();
    BIGNUM* n =
        BN_bin2bn(info.rsa_modulus.data(), static_cast<int>(info.rsa_modulus.size()), nullptr);
    BIGNUM* e =
        BN_bin2bn(info.rsa_exponent.data(), static_cast<int>(info.rsa_exponent.size()), nullptr);
    if (rsa == nullptr || n == nullptr || e == nullptr || RSA_set0_key(rsa, n, e, nullptr) != 1) {
        RSA_free(rsa);
        BN_free(n);
        BN_free(e);
        throw crypto::KeyLoadError("key " + name + ": cannot build the RSA public key");
    }
    RSA_set_method(rsa, hsm_rsa_method());
    RSA_set_ex_data(rsa, rsa_index(), binding);
    crypto::UniqueEvpPkey key(EVP_PKEY_new());
    if (!key || EVP_PKEY_assign_RSA(key.get(), rsa) != 1) {
        RSA_free(rsa);
        throw crypto::KeyLoadError("key " + name + ": EVP_PKEY_assign_RSA failed");
    }
    return key;
}

crypto::UniqueEvpPkey ec_key(const KeyInfo& info, KeyBinding* binding, const std::string& name) {
    const unsigned char* p = info.ec_params.data();
    std::unique_ptr<EC_GROUP, decltype(&EC_GROUP_free)> group(
        d2i_ECPKParameters(nullptr, &p, static_cast<long>(info.ec_params.size())), &EC_GROUP_free);
    p = info.ec_point.data();
    std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> octets(
        d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(info.ec_point.size())),
        &ASN1_OCTET_STRING_free);
    EC_KEY* ec = EC_KEY_new();
    bool ok = group && octets && ec && EC_KEY_set_group(ec, group.get()) == 1;
    if (ok) {
        std::unique_ptr<EC_POINT, decltype(&EC_POINT_free)> point(EC_POINT_new(group.get()),
                                                                  &EC_POINT_free);
        ok = point &&
             EC_POINT_oct2point(group.get(), point.get(), ASN1_STRING_get0_data(octets.get()),
                                static_cast<std::size_t>(ASN1_STRING_length(octets.get())),
                                nullptr) == 1 &&
             EC_KEY_set_public_key(ec, point.get()) == 1;
    }
    if (!ok) {
        EC_KEY_free(ec);
        throw crypto::KeyLoadError("key " + name +
                                   ": cannot build the EC public key from the token");
    }
    EC_KEY_set_method(ec, hsm_ec_method());
    EC_KEY_set_ex_data(ec, ec_index(), binding);
    crypto::UniqueEvpPkey key(EVP_PKEY_new());
    if (!key || EVP_PKEY_assign_EC_KEY(key.get(), ec) != 1) {
        EC_KEY_free(ec);
        throw crypto::KeyLoadError("key " + name + ": EVP_PKEY_assign_EC_KEY failed");
    }
    return key;
}

}  // namespace

bool is_pkcs11_reference(const std::string& reference) {
    return reference.starts_with("pkcs11:");
}

Pkcs11KeySource::Pkcs11KeySource(std::shared_ptr<SigningService> service,
                                 crypto::KeyCompletionSink* completions)
    : service_(std::move(service)), completions_(completions) {}

Pkcs11KeySource::~Pkcs11KeySource() = default;

crypto::UniqueEvpPkey Pkcs11KeySource::load(const std::string& reference) {
    if (!is_pkcs11_reference(reference)) return files_.load(reference);
    if (!service_)
        throw crypto::KeyLoadError("key " + reference + ": a pkcs11: key needs an [hsm] section");
    try {
        auto& entry = service_->key(Pkcs11Uri::parse(reference));
        auto binding =
            std::make_unique<KeyBinding>(KeyBinding{service_.get(), &entry, completions_});
        const auto& info = service_->info(entry);
        auto key = info.type == EVP_PKEY_RSA ? rsa_key(info, binding.get(), reference)
                                             : ec_key(info, binding.get(), reference);
        bindings_.push_back(std::move(binding));
        return key;
    } catch (const crypto::KeyLoadError&) {
        throw;
    } catch (const std::exception& e) {
        throw crypto::KeyLoadError(e.what());
    }
}

}  // namespace portcullis::hsm
