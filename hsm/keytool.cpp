// portcullis-keytool: operators' helper for keys that never leave the token.
//   generate  create a key pair inside the token (private key sensitive, not extractable)
//   csr       a certificate signing request signed by a token key
//   list      the private keys on the token, as pkcs11: URIs
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "crypto/pending_key_operation.hpp"
#include "hsm/pkcs11_key_source.hpp"
#include "hsm/pkcs11_module.hpp"

namespace {

using namespace portcullis;

std::vector<std::uint8_t> parse_hex(const std::string& text) {
    std::vector<std::uint8_t> bytes;
    for (std::size_t i = 0; i + 1 < text.size(); i += 2)
        bytes.push_back(static_cast<std::uint8_t>(std::stoul(text.substr(i, 2), nullptr, 16)));
    return bytes;
}

std::string read_pin(const hsm::HsmSettings& s) {
    // SigningService reads it the same way; duplicated here to log in for generation.
    if (!s.pin_file.empty()) {
        std::FILE* f = std::fopen(s.pin_file.c_str(), "r");
        if (!f) throw std::runtime_error("PIN file " + s.pin_file + ": cannot read");
        char line[256] = {};
        const bool ok = std::fgets(line, sizeof line, f) != nullptr;
        std::fclose(f);
        std::string pin = ok ? line : "";
        while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
        return pin;
    }
    const char* pin = std::getenv(s.pin_env.c_str());
    if (!pin) throw std::runtime_error("environment variable " + s.pin_env + " is not set");
    return pin;
}

int generate(const hsm::HsmSettings& s, const std::string& label, const std::string& id_hex,
             const std::string& type) {
    hsm::Pkcs11Module module(s.module);
    const auto slot = module.find_token(s.token);
    if (!slot) throw std::runtime_error("no token labelled \"" + s.token + "\"");
    CK_SESSION_HANDLE session;
    if (module->C_OpenSession(*slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                              &session) != CKR_OK)
        throw std::runtime_error("cannot open a session on token \"" + s.token + "\"");
    auto pin = read_pin(s);
    CK_RV rv =
        module->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()), pin.size());
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        throw std::runtime_error("login to \"" + s.token + "\" failed: " + hsm::ckr_name(rv));
    auto id = parse_hex(id_hex);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    std::vector<CK_ATTRIBUTE> pub = {{CKA_TOKEN, &yes, 1},
                                     {CKA_VERIFY, &yes, 1},
                                     {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                                     {CKA_ID, id.data(), id.size()}};
    std::vector<CK_ATTRIBUTE> priv = {
        {CKA_TOKEN, &yes, 1},          {CKA_PRIVATE, &yes, 1},
        {CKA_SIGN, &yes, 1},           {CKA_SENSITIVE, &yes, 1},
        {CKA_EXTRACTABLE, &no, 1},     {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
        {CKA_ID, id.data(), id.size()}};
    CK_MECHANISM mechanism{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
    // DER OIDs of the named curves.
    static const CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static const CK_BYTE p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    CK_ULONG bits = 0;
    static CK_BYTE exponent[] = {0x01, 0x00, 0x01};
    if (type == "ec-p256") {
        pub.push_back({CKA_EC_PARAMS, const_cast<CK_BYTE*>(p256), sizeof p256});
    } else if (type == "ec-p384") {
        pub.push_back({CKA_EC_PARAMS, const_cast<CK_BYTE*>(p384), sizeof p384});
    } else if (type == "rsa-2048" || type == "rsa-3072" || type == "rsa-4096") {
        mechanism.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
        bits = std::stoul(type.substr(4));
        pub.push_back({CKA_MODULUS_BITS, &bits, sizeof bits});
        pub.push_back({CKA_PUBLIC_EXPONENT, exponent, sizeof exponent});
    } else {
        throw std::runtime_error("--type must be ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096");
    }
    CK_OBJECT_HANDLE pub_handle, priv_handle;
    rv = module->C_GenerateKeyPair(session, &mechanism, pub.data(), pub.size(), priv.data(),
                                   priv.size(), &pub_handle, &priv_handle);
    if (rv != CKR_OK) throw std::runtime_error("C_GenerateKeyPair failed: " + hsm::ckr_name(rv));
    module->C_CloseSession(session);
    hsm::Pkcs11Uri uri;
    uri.token = s.token;
    uri.object = label;
    uri.id = id;
    std::cout << uri.to_string() << "\n";
    return 0;
}

int csr(const hsm::HsmSettings& s, const std::string& key_uri, const std::string& subject,
        const std::vector<std::string>& dns, const std::string& out) {
    hsm::HsmSettings settings = s;
    settings.sessions = 1;
    auto service = std::make_shared<hsm::SigningService>(settings, nullptr);
    hsm::Pkcs11KeySource keys(service);
    auto key = keys.load(key_uri);
    std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), &X509_REQ_free);
    std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> name(X509_NAME_new(), &X509_NAME_free);
    // "/CN=edge/O=Bank/C=GB"
    std::size_t at = 1;
    while (at < subject.size()) {
        const auto end = std::min(subject.find('/', at), subject.size());
        const auto part = subject.substr(at, end - at);
        const auto eq = part.find('=');
        if (eq == std::string::npos ||
            X509_NAME_add_entry_by_txt(
                name.get(), part.substr(0, eq).c_str(), MBSTRING_UTF8,
                reinterpret_cast<const unsigned char*>(part.c_str() + eq + 1), -1, -1, 0) != 1)
            throw std::runtime_error("bad --subject component \"" + part + "\"");
        at = end + 1;
    }
    X509_REQ_set_version(req.get(), 0);
    X509_REQ_set_subject_name(req.get(), name.get());
    X509_REQ_set_pubkey(req.get(), key.get());
    if (!dns.empty()) {
        std::string san;
        for (const auto& d : dns) san += (san.empty() ? "DNS:" : ",DNS:") + d;
        STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
        X509_EXTENSION* ext =
            X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str());
        sk_X509_EXTENSION_push(extensions, ext);
        X509_REQ_add_extensions(req.get(), extensions);
        sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    }
    ERR_clear_error();
    if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
        std::string others;
        const auto why = crypto::drain_key_failure(others);
        throw std::runtime_error("signing the CSR with the token key failed: " +
                                 (why ? *why : others));
    }
    std::FILE* f = out == "-" ? stdout : std::fopen(out.c_str(), "w");
    if (!f) throw std::runtime_error(out + ": cannot write");
    PEM_write_X509_REQ(f, req.get());
    if (f != stdout) std::fclose(f);
    return 0;
}

int list(const hsm::HsmSettings& s) {
    hsm::HsmSettings settings = s;
    settings.sessions = 1;
    hsm::Pkcs11Module module(s.module);
    const auto slot = module.find_token(s.token);
    if (!slot) throw std::runtime_error("no token labelled \"" + s.token + "\"");
    CK_SESSION_HANDLE session;
    module->C_OpenSession(*slot, CKF_SERIAL_SESSION, nullptr, nullptr, &session);
    auto pin = read_pin(s);
    module->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()), pin.size());
    for (auto handle : hsm::find_objects(module, session, CKO_PRIVATE_KEY, "", {})) {
        hsm::Pkcs11Uri uri;
        uri.token = s.token;
        const auto label = hsm::read_attribute(module, session, handle, CKA_LABEL);
        const auto id = hsm::read_attribute(module, session, handle, CKA_ID);
        uri.object.assign(label.begin(), label.end());
        uri.id.assign(id.begin(), id.end());
        std::cout << uri.to_string() << "\n";
    }
    module->C_CloseSession(session);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"portcullis-keytool: server keys inside a PKCS#11 token"};
    hsm::HsmSettings s;
    app.require_subcommand(1);
    auto common = [&](CLI::App* sub) {
        sub->add_option("--module", s.module, "PKCS#11 library")->required();
        sub->add_option("--token", s.token, "token label")->required();
        auto* file = sub->add_option("--pin-file", s.pin_file, "file holding the user PIN");
        auto* env = sub->add_option("--pin-env", s.pin_env, "environment variable holding the PIN");
        file->excludes(env);
    };
    std::string label, id = "01", type = "ec-p256", key_uri, subject, out = "-";
    std::vector<std::string> dns;
    auto* gen = app.add_subcommand("generate", "create a key pair in the token");
    common(gen);
    gen->add_option("--label", label, "CKA_LABEL of the new key")->required();
    gen->add_option("--id", id, "CKA_ID in hex (default 01)");
    gen->add_option("--type", type, "ec-p256 | ec-p384 | rsa-2048 | rsa-3072 | rsa-4096");
    auto* req = app.add_subcommand("csr", "certificate signing request signed in the token");
    common(req);
    req->add_option("--key", key_uri, "pkcs11: URI of the key")->required();
    req->add_option("--subject", subject, "e.g. /CN=edge.example/O=Bank/C=GB")->required();
    req->add_option("--dns", dns, "subjectAltName DNS names");
    req->add_option("--out", out, "PEM output file (- = stdout)");
    auto* ls = app.add_subcommand("list", "private keys in the token as pkcs11: URIs");
    common(ls);
    CLI11_PARSE(app, argc, argv);
    if (s.pin_file.empty() && s.pin_env.empty()) {
        std::cerr << "portcullis-keytool: give --pin-file or --pin-env (never the PIN itself)\n";
        return 2;
    }
    try {
        if (gen->parsed()) return generate(s, label, id, type);
        if (req->parsed()) return csr(s, key_uri, subject, dns, out);
        return list(s);
    } catch (const std::exception& e) {
        std::cerr << "portcullis-keytool: " << e.what() << "\n";
        return 1;
    }
}
