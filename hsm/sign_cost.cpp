// portcullis-hsm-sign-cost (perf tool, kept in hsm/ because it drives the
// deprecated ENGINE API): the cost of one ECDSA signature through each way
// OpenSSL can reach a key — PEM in memory, the libp11 PKCS#11 engine,
// pkcs11-provider (OpenSSL 3's provider for PKCS#11, in a library context
// of its own) and hsm/'s Pkcs11KeySource (the module called directly) — on
// the same token key, in one process, one thread, synchronously. Prints µs per signature
// (wall and CPU) and writes JSON. Used to choose between the engine and the
// module (docs/hsm.md); the asynchronous behaviour is measured end to end by
// perf/hsm_latency.py.
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "hsm/pkcs11_key_source.hpp"

namespace {

using namespace portcullis;

double process_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Cost {
    double wall_us = 0, cpu_us = 0;
    int failures = 0;
};

// `libctx` is where the key's provider lives (nullptr: the default context).
Cost measure(EVP_PKEY* key, int signatures, OSSL_LIB_CTX* libctx = nullptr) {
    const unsigned char message[32] = {1, 2, 3};
    unsigned char signature[1024];
    Cost cost;
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = process_cpu_seconds();
    for (int i = 0; i < signatures; ++i) {
        std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                    &EVP_MD_CTX_free);
        std::size_t length = sizeof signature;
        if (EVP_DigestSignInit_ex(ctx.get(), nullptr, "SHA256", libctx, nullptr, key, nullptr) !=
                1 ||
            EVP_DigestSign(ctx.get(), signature, &length, message, sizeof message) != 1)
            ++cost.failures;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cost.wall_us = wall * 1e6 / signatures;
    cost.cpu_us = (process_cpu_seconds() - cpu_start) * 1e6 / signatures;
    return cost;
}

using UniqueLibCtx = std::unique_ptr<OSSL_LIB_CTX, decltype(&OSSL_LIB_CTX_free)>;

// pkcs11-provider loaded by name from OpenSSL's modules directory into a
// context of its own, told the module and PIN the way its documentation's
// configuration file would; the key comes from its OSSL_STORE by URI.
void measure_pkcs11_provider(const hsm::HsmSettings& settings, const std::string& uri,
                             int signatures, std::vector<std::pair<std::string, Cost>>& results) {
    UniqueLibCtx libctx(OSSL_LIB_CTX_new(), &OSSL_LIB_CTX_free);
    std::string module = settings.module;
    std::string pin = "file:" + settings.pin_file;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string("pkcs11-module-path", module.data(), 0),
        OSSL_PARAM_construct_utf8_string("pkcs11-module-token-pin", pin.data(), 0),
        OSSL_PARAM_construct_end()};
    OSSL_PROVIDER* base = OSSL_PROVIDER_load(libctx.get(), "default");
    OSSL_PROVIDER* pkcs11 = OSSL_PROVIDER_load_ex(libctx.get(), "pkcs11", params);
    if (base == nullptr || pkcs11 == nullptr) {
        std::cerr << "pkcs11-provider unavailable (Debian package pkcs11-provider)\n";
    } else {
        crypto::UniqueEvpPkey key;
        if (OSSL_STORE_CTX* store = OSSL_STORE_open_ex(uri.c_str(), libctx.get(), nullptr, nullptr,
                                                       nullptr, nullptr, nullptr, nullptr)) {
            while (!key && !OSSL_STORE_eof(store)) {
                OSSL_STORE_INFO* info = OSSL_STORE_load(store);
                if (info != nullptr && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                    key.reset(OSSL_STORE_INFO_get1_PKEY(info));
                OSSL_STORE_INFO_free(info);
            }
            OSSL_STORE_close(store);
        }
        if (key)
            results.emplace_back("pkcs11-provider", measure(key.get(), signatures, libctx.get()));
        else
            std::cerr << "pkcs11-provider: no private key at " << uri << "\n";
    }
    if (pkcs11) OSSL_PROVIDER_unload(pkcs11);
    if (base) OSSL_PROVIDER_unload(base);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "ECDSA signature cost: PEM vs libp11 engine vs pkcs11-provider vs hsm/ module path"};
    hsm::HsmSettings settings;
    std::string pem, uri, json;
    int signatures = 2000;
    app.add_option("--module", settings.module, "PKCS#11 library")->required();
    app.add_option("--token", settings.token, "token label")->required();
    app.add_option("--pin-file", settings.pin_file, "user PIN file")->required();
    app.add_option("--key", uri, "pkcs11: URI of the key")->required();
    app.add_option("--pem", pem, "the same key as PEM, for the baseline");
    app.add_option("--signatures", signatures, "signatures per method");
    app.add_option("--json", json, "write results here");
    CLI11_PARSE(app, argc, argv);
    settings.sessions = 1;

    std::string pin;
    std::ifstream(settings.pin_file) >> pin;
    std::vector<std::pair<std::string, Cost>> results;

    if (!pem.empty()) {
        const crypto::UniqueBio f(BIO_new_file(pem.c_str(), "r"));
        crypto::UniqueEvpPkey key(f ? PEM_read_bio_PrivateKey(f.get(), nullptr, nullptr, nullptr)
                                    : nullptr);
        if (key) results.emplace_back("pem", measure(key.get(), signatures));
    }
    {
        // The design card's engine, configured the documented way.
        ENGINE_load_builtin_engines();
        ENGINE* engine = ENGINE_by_id("pkcs11");
        if (engine == nullptr ||
            ENGINE_ctrl_cmd_string(engine, "MODULE_PATH", settings.module.c_str(), 0) != 1 ||
            ENGINE_ctrl_cmd_string(engine, "PIN", pin.c_str(), 0) != 1 ||
            ENGINE_init(engine) != 1) {
            std::cerr << "libp11 engine unavailable (libengine-pkcs11-openssl)\n";
        } else {
            crypto::UniqueEvpPkey key(
                ENGINE_load_private_key(engine, uri.c_str(), nullptr, nullptr));
            if (key) results.emplace_back("libp11-engine", measure(key.get(), signatures));
            key.reset();
            ENGINE_finish(engine);
        }
        if (engine) ENGINE_free(engine);
    }
    measure_pkcs11_provider(settings, uri, signatures, results);
    {
        auto service = std::make_shared<hsm::SigningService>(settings, nullptr);
        hsm::Pkcs11KeySource keys(service);
        auto key = keys.load(uri);
        results.emplace_back("portcullis-module", measure(key.get(), signatures));
    }

    std::printf("%-18s %12s %12s %9s\n", "path", "wall us/sig", "cpu us/sig", "failures");
    for (const auto& [name, cost] : results)
        std::printf("%-18s %12.1f %12.1f %9d\n", name.c_str(), cost.wall_us, cost.cpu_us,
                    cost.failures);
    if (!json.empty()) {
        std::ofstream out(json);
        out << "{\"signatures\":" << signatures << ",\"results\":[";
        for (std::size_t i = 0; i < results.size(); ++i)
            out << (i ? "," : "") << "{\"path\":\"" << results[i].first
                << "\",\"wall_us\":" << results[i].second.wall_us
                << ",\"cpu_us\":" << results[i].second.cpu_us
                << ",\"failures\":" << results[i].second.failures << "}";
        out << "]}\n";
    }
    return 0;
}
