// portcullis-tls-core-cost: server CPU per handshake of the TLS core alone,
// full or resumed. An OpenSSL client and a TlsConnection talk through memory
// in one thread; only the server's calls are measured (thread CPU clock), so
// the number is what crypto/ costs before any socket, epoll or backend is
// involved. Compare it with kernel_scaling.py's server CPU per handshake to
// see what the transport adds.
//
// The server is a worker's: ServerTlsContext with the daemon's ticket keyring
// (current and previous key) and the shared TLS 1.2 session-ID cache attached
// at its default size, so a full handshake pays for the ticket it issues and
// the session it stores, as in production. Three phases are measured apart:
//   setup      TlsConnection construction (SSL_new, the BIO pair);
//   handshake  every server call until both sides are done (OpenSSL 3.5
//              writes the TLS 1.3 ticket inside SSL_do_handshake), plus the
//              first read after it, as the daemon's pump makes it, and with
//              --read-identity what the access log and PROXY v2 read from
//              the peer identity;
//   teardown   close_notify and the TlsConnection's destruction (SSL_free).
// Moving bytes into the client's memory BIO is the harness, not the server,
// and is left out of every phase.
//
// --mode resumed: each client slot first makes one full handshake (never
// measured), then every handshake resumes its slot's newest session: TLS 1.3
// through the ticket of the slot's previous handshake, TLS 1.2 through its
// session ID in the shared cache (or, with --tickets on, a ticket). A
// handshake that either side reports as not resumed (SSL_session_reused) ends
// the run with an error; so does a resumed one in --mode full.
//
// --callgrind: run under `valgrind --tool=callgrind --collect-atstart=no`.
// Collection is switched on exactly while server code of a measured handshake
// runs, each phase inside a function of its own (server_setup,
// server_receive, server_handshake, server_first_read, server_read_identity,
// server_teardown), so
// callgrind's inclusive costs of those functions split the phases.
// perf/tls_core_profile.sh drives it.
#include <openssl/err.h>
#include <time.h>
#include <valgrind/callgrind.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/heap_policy.hpp"
#include "base/heap_tunables.hpp"
#include "crypto/server_tls_context.hpp"
#include "crypto/session_cache.hpp"
#include "crypto/tls_connection.hpp"
#include "tests/support/test_pki.hpp"

namespace {

using namespace portcullis;
namespace fs = std::filesystem;
using UniqueSession = std::unique_ptr<SSL_SESSION, crypto::OpenSslDeleter<SSL_SESSION_free>>;

double thread_cpu_us() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

// Server CPU time per phase of the handshakes it is armed for and, under
// --callgrind, callgrind's collection switched on exactly while it measures.
// harness() runs client-side work in the middle of a phase without counting it.
class Meter {
  public:
    enum Phase { setup, handshake, teardown };
    static constexpr std::size_t phases = 3;
    static constexpr std::array<const char*, phases> keys = {"setup", "handshake", "teardown"};

    explicit Meter(bool callgrind) : callgrind_(callgrind) {}

    void arm(bool measured) { armed_ = measured; }

    template <typename F>
    auto run(Phase phase, F&& f) {
        if (!armed_) return f();
        begin(phase);
        const Stop stop{*this};
        return f();
    }

    template <typename F>
    void harness(F&& f) {
        if (!measuring_) {
            f();
            return;
        }
        const Phase phase = phase_;
        end();
        f();
        begin(phase);
    }

    std::array<double, phases> us_per(int handshakes) const {
        auto per = us_;
        for (double& us : per) us /= handshakes;
        return per;
    }

  private:
    struct Stop {
        Meter& meter;
        ~Stop() { meter.end(); }
    };

    void begin(Phase phase) {
        phase_ = phase;
        measuring_ = true;
        start_us_ = thread_cpu_us();
        if (callgrind_) CALLGRIND_TOGGLE_COLLECT;
    }

    void end() {
        if (callgrind_) CALLGRIND_TOGGLE_COLLECT;
        us_[phase_] += thread_cpu_us() - start_us_;
        measuring_ = false;
    }

    bool callgrind_;
    bool armed_ = false;
    bool measuring_ = false;
    Phase phase_ = setup;
    double start_us_ = 0;
    std::array<double, phases> us_{};
};

// Hands the server's ciphertext to the client: reading outbound() is the
// server's work, writing it into the client's BIO is the harness's.
void deliver(crypto::TlsConnection& conn, SSL* client, Meter& meter) {
    for (auto out = conn.outbound(); !out.empty(); out = conn.outbound()) {
        meter.harness(
            [&] { BIO_write(SSL_get_rbio(client), out.data(), static_cast<int>(out.size())); });
        conn.consume_outbound(out.size());
    }
}

// The server's side, one function per kind of call: callgrind's inclusive
// cost of each is the phase's instruction count (see the banner).
[[gnu::noinline]] void server_setup(std::optional<crypto::TlsConnection>& conn,
                                    const crypto::ServerTlsContext& context) {
    conn.emplace(context);
}

[[gnu::noinline]] void server_receive(crypto::TlsConnection& conn,
                                      std::span<const std::uint8_t> bytes) {
    const auto space = conn.inbound_space();
    if (space.size() < bytes.size()) throw std::runtime_error("server inbound buffer full");
    std::memcpy(space.data(), bytes.data(), bytes.size());
    conn.commit_inbound(bytes.size());
}

[[gnu::noinline]] crypto::TlsConnection::Step server_handshake(crypto::TlsConnection& conn,
                                                               SSL* client, Meter& meter) {
    const auto step = conn.handshake();
    deliver(conn, client, meter);
    return step;
}

// The daemon's pump reads right after the handshake; any ticket OpenSSL
// still owes the client would be written here.
[[gnu::noinline]] void server_first_read(crypto::TlsConnection& conn, SSL* client, Meter& meter) {
    std::uint8_t plain[64];
    conn.read_plaintext(plain);
    deliver(conn, client, meter);
}

// What the access log line and the PROXY v2 header read from the identity
// (subject DN, CN, SHA-256 fingerprint), for --read-identity: the identity
// computes them only when asked. Returns their total length.
[[gnu::noinline]] std::size_t server_read_identity(const crypto::TlsConnection& conn) {
    const auto& certificate = conn.peer().certificate;
    return certificate.subject_dn().size() + certificate.common_name().size() +
           certificate.sha256_hex().size();
}

[[gnu::noinline]] void server_teardown(std::optional<crypto::TlsConnection>& conn, SSL* client,
                                       Meter& meter) {
    conn->close();
    deliver(*conn, client, meter);
    conn.reset();
}

struct Outcome {
    bool server_resumed = false;
    bool client_resumed = false;
    UniqueSession session;  // the client's newest: what its next visit offers
    std::string group;
    std::string cipher;
};

// One handshake between a fresh client (offering `offer` unless null) and a
// fresh TlsConnection. Throws std::runtime_error when it does not complete.
Outcome run_handshake(const crypto::ServerTlsContext& context, SSL_CTX* client_ctx,
                      SSL_SESSION* offer, bool read_identity, Meter& meter) {
    crypto::UniqueSsl client(SSL_new(client_ctx));
    if (!client) throw std::runtime_error("client SSL_new: " + crypto::drain_openssl_errors());
    SSL_set_bio(client.get(), BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(client.get());
    SSL_set_tlsext_host_name(client.get(), "localhost");
    if (offer != nullptr && SSL_set_session(client.get(), offer) != 1)
        throw std::runtime_error("client SSL_set_session: " + crypto::drain_openssl_errors());

    std::optional<crypto::TlsConnection> conn;
    meter.run(Meter::setup, [&] { server_setup(conn, context); });
    bool finished = false;
    for (int round = 0; round < 20 && !finished; ++round) {
        SSL_do_handshake(client.get());
        std::uint8_t buffer[16384];
        int n;
        while ((n = BIO_read(SSL_get_wbio(client.get()), buffer, sizeof buffer)) > 0) {
            const std::span<const std::uint8_t> bytes(buffer, static_cast<std::size_t>(n));
            meter.run(Meter::handshake, [&] { server_receive(*conn, bytes); });
        }
        const auto step = meter.run(Meter::handshake,
                                    [&] { return server_handshake(*conn, client.get(), meter); });
        if (step == crypto::TlsConnection::Step::failed)
            throw std::runtime_error("server refused the handshake: " + conn->failure().detail);
        finished = step == crypto::TlsConnection::Step::done && SSL_is_init_finished(client.get());
    }
    if (!finished) throw std::runtime_error("handshake did not finish in 20 rounds");
    meter.run(Meter::handshake, [&] { server_first_read(*conn, client.get(), meter); });
    if (read_identity &&
        meter.run(Meter::handshake, [&] { return server_read_identity(*conn); }) == 0)
        throw std::runtime_error("the peer identity has no subject, CN or fingerprint");
    char sink[64];
    SSL_read(client.get(), sink, sizeof sink);  // the client takes its ticket, if any
    ERR_clear_error();

    Outcome outcome;
    outcome.server_resumed = conn->peer().resumed;
    outcome.client_resumed = SSL_session_reused(client.get()) == 1;
    outcome.session.reset(SSL_get1_session(client.get()));
    if (const char* name = SSL_get0_group_name(client.get())) outcome.group = name;
    outcome.cipher = SSL_get_cipher_name(client.get());
    meter.run(Meter::teardown, [&] { server_teardown(conn, client.get(), meter); });
    // The client answers the close_notify: an SSL freed without it marks
    // its session not resumable.
    SSL_shutdown(client.get());
    ERR_clear_error();
    return outcome;
}

// Counts what the TLS core reports, as a worker's listener events do.
class CountingEvents final : public crypto::TlsEventSink {
  public:
    void ticket_decrypted(crypto::TicketKeyring::Match key_age) override {
        ++(key_age == crypto::TicketKeyring::Match::current    ? current
           : key_age == crypto::TicketKeyring::Match::previous ? previous
                                                               : unknown);
    }
    void resumption_refused(crypto::ResumptionRefusal) override { ++refused; }
    void local_session_cache(crypto::LocalSessionEvent event) override {
        ++(event == crypto::LocalSessionEvent::hit    ? local_hits
           : event == crypto::LocalSessionEvent::miss ? local_misses
                                                      : local_evictions);
    }

    std::uint64_t current = 0, previous = 0, unknown = 0, refused = 0;
    std::uint64_t local_hits = 0, local_misses = 0, local_evictions = 0;
};

struct Settings {
    std::string mode = "full";
    std::string tls = "1.3";
    std::string tickets;  // "" = on for TLS 1.3, off for TLS 1.2
    bool session_cache = true;
    bool crl = true;
    std::string groups;
    int handshakes = 300;
    int warmup = 20;
    int slots = 16;
    bool callgrind = false;
    bool read_identity = false;
    std::size_t chain_cache_entries = crypto::TlsPolicy{}.verified_chain_cache_entries;
    std::string ticket_mode = "stateless";
    std::size_t worker_session_entries = 1024;  // the daemon's default
    bool default_heap = false;
    std::string json;
};

std::string on_off(bool value) {
    return value ? "on" : "off";
}

void print_table(const Settings& s, const std::string& group, const std::string& cipher,
                 const std::array<double, Meter::phases>& us) {
    std::cout << "TLS " << s.tls << ", " << s.mode << " handshakes, " << cipher << ", " << group
              << ", CRL " << on_off(s.crl) << ", client tickets " << s.tickets << ", session cache "
              << on_off(s.session_cache) << ", " << s.ticket_mode
              << " tickets, worker session cache " << s.worker_session_entries << ": "
              << s.handshakes << " measured after " << s.warmup << " warm-up"
              << (s.callgrind ? " (under callgrind: CPU times are valgrind's)" : "")
              << "\n\n| phase | server CPU µs per handshake |\n| --- | ---: |\n";
    const std::array<const char*, Meter::phases> names = {"setup (SSL_new, BIO pair)", "handshake",
                                                          "teardown (close_notify, SSL_free)"};
    std::cout << std::fixed << std::setprecision(1);
    for (std::size_t p = 0; p < Meter::phases; ++p)
        std::cout << "| " << names[p] << " | " << us[p] << " |\n";
    std::cout << "| total | " << us[0] + us[1] + us[2] << " |\n\n";
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"server CPU per handshake of the Portcullis TLS core (no sockets)"};
    Settings s;
    app.add_option("--mode", s.mode, "full | resumed")->check(CLI::IsMember({"full", "resumed"}));
    app.add_option("--tls", s.tls, "1.2 | 1.3")->check(CLI::IsMember({"1.2", "1.3"}));
    app.add_option("--tickets", s.tickets,
                   "on | off: whether the client offers session tickets (default on for TLS 1.3, "
                   "off for TLS 1.2, which then resumes by session ID through the shared cache); "
                   "the server always runs as the daemon does, tickets on")
        ->check(CLI::IsMember({"on", "off"}));
    app.add_option("--session-cache", s.session_cache,
                   "attach the shared TLS 1.2 session-ID cache, as the daemon does by default "
                   "(default true)");
    app.add_option("--handshakes", s.handshakes, "measured handshakes (default 300)")
        ->check(CLI::PositiveNumber);
    app.add_option("--warmup", s.warmup,
                   "handshakes of the same mode run first and not measured (default 20)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--slots", s.slots,
                   "client sessions kept in --mode resumed, each resumed in turn (default 16)")
        ->check(CLI::PositiveNumber);
    app.add_option("--crl", s.crl, "check client certificates against a CRL (default true)");
    app.add_option("--chain-cache-entries", s.chain_cache_entries,
                   "the listener's verified_chain_cache_entries (0: every chain verified in full; "
                   "the client presents one certificate, a returning partner)");
    app.add_option("--groups", s.groups,
                   "key-exchange groups the client offers (default: OpenSSL's, which puts "
                   "X25519MLKEM768 first); the server keeps Portcullis's default");
    app.add_flag("--callgrind", s.callgrind,
                 "count only the server side of measured handshakes; needs valgrind "
                 "--tool=callgrind --collect-atstart=no");
    app.add_flag("--read-identity", s.read_identity,
                 "after each handshake read what the access log and the PROXY v2 header read "
                 "from the peer identity (subject DN, CN, SHA-256), in the handshake phase");
    app.add_option("--ticket-mode", s.ticket_mode,
                   "stateless | stateful: the daemon's resumption.ticket_mode (default stateless)")
        ->check(CLI::IsMember({"stateless", "stateful"}));
    app.add_option("--worker-session-entries", s.worker_session_entries,
                   "the daemon's resumption.worker_session_cache_entries: decoded sessions kept "
                   "in front of the shared cache (default 1024; 0: every lookup decodes)");
    app.add_flag(
        "--default-heap", s.default_heap,
        "leave glibc's heap at its defaults; without it the tool keeps the heap resident and "
        "runs with the per-thread cache a worker has (base::keep_heap_resident, "
        "base/heap_tunables.hpp; under valgrind, GLIBC_TUNABLES as given)");
    app.add_option("--json", s.json, "write the result here too");
    CLI11_PARSE(app, argc, argv);

    if (s.tickets.empty()) s.tickets = s.tls == "1.3" ? "on" : "off";
    if (s.tls == "1.3" && s.tickets == "off") {
        std::cerr << "--tickets off: TLS 1.3 resumes only through tickets\n";
        return 2;
    }
    if (s.mode == "resumed" && s.tickets == "off" && !s.session_cache) {
        std::cerr << "--mode resumed with --tickets off needs the session cache\n";
        return 2;
    }
    if (!s.default_heap) {
        base::reexec_with_worker_tunables(argv);
        base::keep_heap_resident();
        const char* tunables = std::getenv("GLIBC_TUNABLES");
        if (RUNNING_ON_VALGRIND != 0 &&
            !base::with_worker_tunables(tunables ? tunables : "").empty())
            std::cerr << "note: under valgrind the tool cannot re-execute itself with a worker's "
                         "GLIBC_TUNABLES; set GLIBC_TUNABLES="
                      << base::with_worker_tunables(tunables ? tunables : "")
                      << " to count what a worker runs\n";
    }
    if (s.ticket_mode == "stateful" && !s.session_cache) {
        std::cerr << "--ticket-mode stateful needs the session cache\n";
        return 2;
    }
    if (s.callgrind && RUNNING_ON_VALGRIND == 0) {
        std::cerr << "--callgrind: not running under valgrind (valgrind --tool=callgrind "
                     "--collect-atstart=no ...)\n";
        return 2;
    }

    // The same shape as the quickstart: ECDSA P-256 server, client leaf under an intermediate.
    const auto root = testing::CertificateAuthority::root("Bench Root");
    const auto intermediate = root.intermediate("Bench Client CA");
    const auto server_cert = root.issue(testing::localhost_server());
    const auto client_cert = intermediate.issue(testing::CertOptions{});
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
    if (s.crl)
        policy.crl_files = {(dir / "root.crl").string(), (dir / "intermediate.crl").string()};
    policy.verified_chain_cache_entries = s.chain_cache_entries;
    crypto::PemFileKeySource keys;
    crypto::TicketKeyring tickets;  // current and previous, as after a rotation
    tickets.replace({crypto::TicketKey::random(), crypto::TicketKey::random()});
    crypto::SharedSessionCache cache{crypto::SessionCacheLimits{}};
    CountingEvents events;
    crypto::ServerTlsOptions tls_options;
    tls_options.tickets = &tickets;
    tls_options.events = &events;
    tls_options.session_cache = s.session_cache ? &cache : nullptr;
    tls_options.stateful_tickets = s.ticket_mode == "stateful";
    tls_options.local_session_entries = s.worker_session_entries;
    crypto::ServerTlsContext context(policy, keys, tls_options);
    fs::remove_all(dir);

    crypto::UniqueSslCtx client_ctx(SSL_CTX_new(TLS_client_method()));
    const int version = s.tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(client_ctx.get(), version);
    SSL_CTX_set_max_proto_version(client_ctx.get(), version);
    if (s.tickets == "off") SSL_CTX_set_options(client_ctx.get(), SSL_OP_NO_TICKET);
    SSL_CTX_use_certificate(client_ctx.get(), client_cert.cert.get());
    SSL_CTX_add1_chain_cert(client_ctx.get(), intermediate.cert());
    SSL_CTX_use_PrivateKey(client_ctx.get(), client_cert.key.get());
    if (!s.groups.empty() && SSL_CTX_set1_groups_list(client_ctx.get(), s.groups.c_str()) != 1) {
        std::cerr << "--groups " << s.groups << ": not accepted by OpenSSL\n";
        return 2;
    }

    const bool resumed = s.mode == "resumed";
    Meter meter(s.callgrind);
    std::vector<UniqueSession> sessions(static_cast<std::size_t>(resumed ? s.slots : 0));
    std::string group = "?", cipher = "?";
    int measured_resumed = 0;
    try {
        for (std::size_t slot = 0; slot < sessions.size(); ++slot) {
            auto first = run_handshake(context, client_ctx.get(), nullptr, s.read_identity, meter);
            if (!first.session || SSL_SESSION_is_resumable(first.session.get()) != 1)
                throw std::runtime_error("slot " + std::to_string(slot) +
                                         ": the full handshake left no resumable session");
            sessions[slot] = std::move(first.session);
        }
        for (int i = 0; i < s.warmup + s.handshakes; ++i) {
            const bool measured = i >= s.warmup;
            const std::size_t slot = resumed ? static_cast<std::size_t>(i % s.slots) : 0;
            meter.arm(measured);
            auto outcome =
                run_handshake(context, client_ctx.get(), resumed ? sessions[slot].get() : nullptr,
                              s.read_identity, meter);
            meter.arm(false);
            if (outcome.server_resumed != resumed || outcome.client_resumed != resumed) {
                throw std::runtime_error(
                    "handshake " + std::to_string(i) +
                    (resumed ? " (slot " + std::to_string(slot) + ")" : "") +
                    ": SSL_session_reused says server " +
                    (outcome.server_resumed ? "resumed" : "full") + ", client " +
                    (outcome.client_resumed ? "resumed" : "full") + " in --mode " + s.mode);
            }
            if (resumed) sessions[slot] = std::move(outcome.session);
            if (measured && outcome.server_resumed) ++measured_resumed;
            group = outcome.group;
            cipher = outcome.cipher;
        }
    } catch (const std::exception& e) {
        std::cerr << "FAILED: " << e.what() << "\n";
        return 1;
    }

    const auto us = meter.us_per(s.handshakes);
    print_table(s, group, cipher, us);
    nlohmann::json phases_us;
    for (std::size_t p = 0; p < Meter::phases; ++p) phases_us[Meter::keys[p]] = us[p];
    phases_us["total"] = us[0] + us[1] + us[2];
    const auto counters = cache.counters();
    const nlohmann::json result = {
        {"mode", s.mode},
        {"tls", s.tls},
        {"group", group},
        {"cipher", cipher},
        {"crl", s.crl},
        {"client_tickets", s.tickets == "on"},
        {"session_cache", s.session_cache},
        {"ticket_mode", s.ticket_mode},
        {"default_heap", s.default_heap},
        {"glibc_tunables", std::getenv("GLIBC_TUNABLES") ? std::getenv("GLIBC_TUNABLES") : ""},
        {"worker_session_entries", s.worker_session_entries},
        {"handshakes", s.handshakes},
        {"warmup", s.warmup},
        {"slots", resumed ? s.slots : 0},
        {"resumed", measured_resumed},
        {"callgrind", s.callgrind},
        {"read_identity", s.read_identity},
        {"server_cpu_us_per_handshake", phases_us},
        // Over the whole run: first handshakes of the slots and warm-up included.
        {"tickets_decrypted",
         {{"current", events.current}, {"previous", events.previous}, {"unknown", events.unknown}}},
        {"resumptions_refused", events.refused},
        {"worker_session_cache",
         {{"hits", events.local_hits},
          {"misses", events.local_misses},
          {"evictions", events.local_evictions}}},
        {"session_cache_counters",
         {{"hits", counters.hits},
          {"misses", counters.misses},
          {"stores", counters.stores},
          {"entries", counters.entries}}},
    };
    std::cout << result.dump() << std::endl;
    if (!s.json.empty()) std::ofstream(s.json) << result.dump(2) << "\n";
    return 0;
}
