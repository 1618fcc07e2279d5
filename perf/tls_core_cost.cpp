// portcullis-tls-core-cost: server CPU per full handshake of the TLS core alone.
// An OpenSSL client and a TlsConnection talk through memory in one thread;
// only the server's calls are timed (thread CPU clock), so the number is what
// crypto/ costs before any socket, epoll or backend is involved. Compare it
// with kernel_scaling.py's server CPU per handshake to see what the transport adds.
#include <openssl/err.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "crypto/server_tls_context.hpp"
#include "crypto/tls_connection.hpp"
#include "tests/support/test_pki.hpp"

namespace {

using namespace portcullis;
namespace fs = std::filesystem;

double thread_cpu_us() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

struct Timer {
    double total_us = 0;
    template <typename F>
    auto operator()(F&& f) {
        const double start = thread_cpu_us();
        auto result = f();
        total_us += thread_cpu_us() - start;
        return result;
    }
};

// Moves the server's ciphertext into the client's input.
int flush_to_client(crypto::TlsConnection& conn, SSL* client) {
    for (auto out = conn.outbound(); !out.empty(); out = conn.outbound()) {
        BIO_write(SSL_get_rbio(client), out.data(), static_cast<int>(out.size()));
        conn.consume_outbound(out.size());
    }
    return 0;
}

// One handshake; returns true when both sides finished. Server time goes to `server`.
bool handshake(crypto::TlsConnection& conn, SSL* client, Timer& server) {
    for (int round = 0; round < 20; ++round) {
        SSL_do_handshake(client);
        char buffer[16384];
        int n;
        while ((n = BIO_read(SSL_get_wbio(client), buffer, sizeof buffer)) > 0) {
            server([&] {
                auto space = conn.inbound_space();
                std::memcpy(space.data(), buffer, static_cast<std::size_t>(n));
                conn.commit_inbound(static_cast<std::size_t>(n));
                return 0;
            });
        }
        const auto step = server([&] { return conn.handshake(); });
        server([&] { return flush_to_client(conn, client); });
        if (step == crypto::TlsConnection::Step::failed) return false;
        if (step == crypto::TlsConnection::Step::done && SSL_is_init_finished(client)) {
            // OpenSSL writes TLS 1.3 tickets on the server's first read after
            // the handshake, as the daemon's pump does: part of the cost.
            server([&] {
                std::uint8_t plain[64];
                conn.read_plaintext(plain);
                return flush_to_client(conn, client);
            });
            char sink[64];
            SSL_read(client, sink, sizeof sink);  // the client takes its tickets
            return true;
        }
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"server CPU per handshake of the Portcullis TLS core (no sockets)"};
    int count = 300;
    bool crl = true;
    std::string tls = "1.3";
    std::string groups;
    std::string json;
    int partners = 1;
    std::size_t chain_cache_entries = crypto::TlsPolicy{}.verified_chain_cache_entries;
    app.add_option("--handshakes", count, "handshakes per mode");
    app.add_option("--partners", partners,
                   "distinct client certificates, used in turn (1: a returning partner)")
        ->check(CLI::Range(1, 1000000));
    app.add_option("--chain-cache-entries", chain_cache_entries,
                   "the listener's verified_chain_cache_entries (0: every chain verified in full)");
    app.add_option("--crl", crl, "check client certificates against a CRL (default true)");
    app.add_option("--tls", tls, "1.2 | 1.3")->check(CLI::IsMember({"1.2", "1.3"}));
    app.add_option("--groups", groups,
                   "key-exchange groups the client offers (default: OpenSSL's, which puts "
                   "X25519MLKEM768 first); the server keeps Portcullis's default");
    app.add_option("--json", json, "write the result here too");
    CLI11_PARSE(app, argc, argv);

    // The same shape as the quickstart: ECDSA P-256 server, client leaf under an intermediate.
    const auto root = testing::CertificateAuthority::root("Bench Root");
    const auto intermediate = root.intermediate("Bench Client CA");
    testing::CertOptions server_options;
    server_options.common_name = "localhost";
    server_options.dns_names = {"localhost"};
    server_options.client_auth = false;
    server_options.server_auth = true;
    const auto server_cert = root.issue(server_options);
    std::vector<testing::IssuedCert> client_certs;
    for (int i = 0; i < partners; ++i) {
        testing::CertOptions partner;
        partner.common_name = "partner-" + std::to_string(i);
        client_certs.push_back(intermediate.issue(partner));
    }
    const fs::path dir =
        fs::temp_directory_path() / ("portcullis-cost-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    testing::write_file(dir / "server.pem", server_cert.cert_pem());
    testing::write_file(dir / "server.key", server_cert.key_pem());
    testing::write_file(dir / "root.pem", root.cert_pem());
    testing::write_file(dir / "root.crl", root.crl_pem());
    testing::write_file(dir / "intermediate.crl", intermediate.crl_pem());

    crypto::TlsPolicy policy;
    policy.certificates = {{(dir / "server.pem").string(), (dir / "server.key").string(), {}}};
    policy.trust_file = (dir / "root.pem").string();
    if (crl) policy.crl_files = {(dir / "root.crl").string(), (dir / "intermediate.crl").string()};
    policy.verified_chain_cache_entries = chain_cache_entries;
    crypto::PemFileKeySource keys;
    crypto::TicketKeyring tickets;
    tickets.replace({crypto::TicketKey::random()});
    crypto::ServerTlsOptions tls_options;
    tls_options.tickets = &tickets;  // the daemon's ticket path, as in a worker
    crypto::ServerTlsContext context(policy, keys, tls_options);

    crypto::UniqueSslCtx client_ctx(SSL_CTX_new(TLS_client_method()));
    const int version = tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(client_ctx.get(), version);
    SSL_CTX_set_max_proto_version(client_ctx.get(), version);
    if (!groups.empty() && SSL_CTX_set1_groups_list(client_ctx.get(), groups.c_str()) != 1) {
        std::cerr << "--groups " << groups << ": not accepted by OpenSSL\n";
        return 2;
    }
    std::string negotiated = "?";

    double full_us = 0;
    int full_ok = 0;
    for (int i = 0; i < count; ++i) {
        crypto::TlsConnection conn(context);
        crypto::UniqueSsl client(SSL_new(client_ctx.get()));
        const auto& partner = client_certs[static_cast<std::size_t>(i % partners)];
        SSL_use_certificate(client.get(), partner.cert.get());
        SSL_use_PrivateKey(client.get(), partner.key.get());
        SSL_add1_chain_cert(client.get(), intermediate.cert());
        SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(client.get());
        SSL_set_tlsext_host_name(client.get(), "localhost");
        Timer server;
        if (!handshake(conn, client.get(), server)) {
            std::cerr << "handshake failed: " << conn.failure().detail << "\n";
            return 1;
        }
        full_us += server.total_us;
        ++full_ok;
        if (const char* name = SSL_get0_group_name(client.get())) negotiated = name;
    }
    fs::remove_all(dir);
    char text[512];
    std::snprintf(text, sizeof text,
                  "{\"tls\":\"%s\",\"group\":\"%s\",\"crl\":%s,\"partners\":%d,"
                  "\"chain_cache_entries\":%zu,\"full_handshakes\":%d,"
                  "\"server_cpu_us_per_full\":%.1f}",
                  tls.c_str(), negotiated.c_str(), crl ? "true" : "false", partners,
                  chain_cache_entries, full_ok, full_ok ? full_us / full_ok : 0.0);
    std::cout << text << std::endl;
    if (!json.empty()) std::ofstream(json) << text << "\n";
    return 0;
}
