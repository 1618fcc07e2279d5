// portcullis-hsm-sign-cost (perf tool, kept in hsm/ because it drives the
// deprecated ENGINE API): the cost of one ECDSA signature through each way
// OpenSSL can reach a key — PEM in memory, the libp11 PKCS#11 engine, and
// hsm/'s Pkcs11KeySource (the module called directly) — on the same token
// key, in one process, one thread, synchronously. Prints µs per signature
// (wall and CPU) and writes JSON. Used to choose between the engine and the
// module (docs/hsm.md); the asynchronous behaviour is measured end to end by
// perf/hsm_latency.py.
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
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

Cost measure(EVP_PKEY* key, int signatures) {
    const unsigned char message[32] = {1, 2, 3};
    unsigned char signature[1024];
    Cost cost;
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = process_cpu_seconds();
    for (int i = 0; i < signatures; ++i) {
        std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                    &EVP_MD_CTX_free);
        std::size_t length = sizeof signature;
        if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
            EVP_DigestSign(ctx.get(), signature, &length, message, sizeof message) != 1)
            ++cost.failures;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cost.wall_us = wall * 1e6 / signatures;
    cost.cpu_us = (process_cpu_seconds() - cpu_start) * 1e6 / signatures;
    return cost;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ECDSA signature cost: PEM vs libp11 engine vs hsm/ module path"};
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
