// portcullis-bench: mTLS handshake load generator. Each thread runs its own
// epoll loop over a fixed set of connection slots; a slot connects, completes
// a full or resumed handshake, optionally sends one request and reads the
// response, closes, and starts again. Numbers come out as a JSON summary.
// With --identities every connection presents the next client certificate of
// a list (loaded once at start), so a server sees many distinct partners;
// with --warmup the first attempts are not counted, and "measuring" on stderr
// marks the moment counting starts, for scripts that sample the server then.
// With --hold N the slots do not loop: N connections are opened (at most
// --conns handshakes in flight, at most --open-rate a second), kept idle
// until the hold ends, and closed together, so a script can read what an
// idle established connection costs the server ("holding N" on stderr marks
// the moment all are up).
// With --rate R or --sweep FROM:TO:STEP the load is open-loop (issue #18):
// connections start on an arrival schedule whatever the server does, each
// measured from its intended start, in steps of --step-duration; the
// scheduling, counting and reporting are perf/open_loop.hpp's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "crypto/openssl_handles.hpp"
#include "dataplane/socket_address.hpp"
#include "perf/latency_histogram.hpp"
#include "perf/open_loop.hpp"

namespace {

using namespace portcullis;
using Clock = std::chrono::steady_clock;
using base::UniqueFd;

struct Options {
    std::string target;
    std::string sni;
    std::string mode = "full";
    std::string tls = "1.3";
    int conns = 8;
    int threads = 1;
    double duration = 0;
    std::uint64_t handshakes = 0;
    std::string cert, key, ca;
    bool no_verify = false;
    std::string request;
    std::size_t response_bytes = 0;
    std::string json;
    bool progress = false;
    bool quiet = false;
    std::string ciphers, groups, sigalgs;
    int timeout_ms = 10000;
    std::string identities;
    std::uint64_t warmup = 0;
    std::uint64_t hold = 0;  // 0: the slots loop; N: open N connections and hold them
    double hold_seconds = 0;
    double open_rate = 0;
    std::string source_addresses;
    std::string metrics_url;
    std::string memory_metric = "portcullis_worker_resident_bytes";
    // Open loop: --rate or --sweep.
    double rate = 0;
    std::string sweep;
    std::string arrivals = "poisson";
    double step_duration = 10;
    double p99_max_ms = 100;
    double max_error_ratio = 0.01;
    double resume_fraction = 0;
    std::string tls_mix;
    std::string csv;
    std::uint64_t max_in_flight = 1024;
    std::uint64_t seed = 1;

    bool open_loop() const { return rate > 0 || !sweep.empty(); }
};

void free_certificates(STACK_OF(X509) * certificates) {
    sk_X509_pop_free(certificates, X509_free);
}
using UniqueX509Stack = std::unique_ptr<STACK_OF(X509), crypto::OpenSslDeleter<free_certificates>>;

// One client certificate with its chain and key, parsed once and shared
// read-only by every thread (SSL_use_cert_and_key takes its own references).
struct Identity {
    crypto::UniqueX509 leaf;
    UniqueX509Stack chain;  // the certificates after the leaf, sent with it
    crypto::UniqueEvpPkey key;
};

Identity load_identity(const std::string& chain_path, const std::string& key_path) {
    Identity identity;
    crypto::UniqueBio chain_bio(BIO_new_file(chain_path.c_str(), "r"));
    if (!chain_bio) throw std::runtime_error("cannot open " + chain_path);
    identity.leaf.reset(PEM_read_bio_X509(chain_bio.get(), nullptr, nullptr, nullptr));
    if (!identity.leaf) throw std::runtime_error("no certificate in " + chain_path);
    identity.chain.reset(sk_X509_new_null());
    while (X509* extra = PEM_read_bio_X509(chain_bio.get(), nullptr, nullptr, nullptr))
        sk_X509_push(identity.chain.get(), extra);
    ERR_clear_error();  // the end of the file reads as an error
    crypto::UniqueBio key_bio(BIO_new_file(key_path.c_str(), "r"));
    if (key_bio)
        identity.key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!identity.key) throw std::runtime_error("no private key in " + key_path);
    if (X509_check_private_key(identity.leaf.get(), identity.key.get()) != 1)
        throw std::runtime_error(key_path + " is not the key of " + chain_path);
    return identity;
}

// --identities FILE: one "CHAIN KEY" pair of PEM paths a line (KEY left out when
// CHAIN holds the key too), '#' comments.
std::vector<Identity> load_identities(const std::string& list_path) {
    std::ifstream list(list_path);
    if (!list) throw std::runtime_error("cannot open " + list_path);
    std::vector<Identity> identities;
    std::string line;
    while (std::getline(list, line)) {
        std::istringstream fields(line);
        std::string chain, key;
        if (!(fields >> chain) || chain[0] == '#') continue;
        if (!(fields >> key)) key = chain;
        identities.push_back(load_identity(chain, key));
    }
    if (identities.empty()) throw std::runtime_error(list_path + " lists no identity");
    return identities;
}

std::string unescape(const std::string& text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
            const char c = text[++i];
            out += c == 'r' ? '\r' : c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            out += text[i];
        }
    }
    return out;
}

std::string reason_name(std::string text) {
    for (auto& c : text)
        c = std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '_';
    return text;
}

// --source-addresses: "A-B" (an IPv4 range, both ends included), "A", or a
// comma-separated list of either. Each address gives the kernel another
// ephemeral port range towards the one target, so one generator can hold
// more connections than a single source address has ports.
std::vector<dataplane::SocketAddress> parse_source_addresses(const std::string& text) {
    std::vector<dataplane::SocketAddress> addresses;
    std::istringstream items(text);
    std::string item;
    while (std::getline(items, item, ',')) {
        if (item.empty()) continue;
        const auto dash = item.find('-');
        const std::string first = item.substr(0, dash);
        const std::string last = dash == std::string::npos ? first : item.substr(dash + 1);
        in_addr from{}, to{};
        if (::inet_pton(AF_INET, first.c_str(), &from) != 1 ||
            ::inet_pton(AF_INET, last.c_str(), &to) != 1 || ntohl(from.s_addr) > ntohl(to.s_addr))
            throw std::runtime_error("--source-addresses: not an IPv4 address or range: " + item);
        for (std::uint64_t a = ntohl(from.s_addr); a <= ntohl(to.s_addr); ++a) {
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(static_cast<std::uint32_t>(a));
            addresses.push_back(dataplane::SocketAddress::from(
                reinterpret_cast<const sockaddr*>(&sin), sizeof sin));
        }
    }
    if (addresses.empty()) throw std::runtime_error("--source-addresses lists no address");
    return addresses;
}

// http://HOST:PORT/PATH with a numeric host: the admin listener's /metrics.
struct MetricsUrl {
    dataplane::SocketAddress address;
    std::string host_port;
    std::string path;
};

MetricsUrl parse_metrics_url(const std::string& url) {
    const std::string scheme = "http://";
    if (url.rfind(scheme, 0) != 0)
        throw std::runtime_error("--metrics-url must be http://HOST:PORT/PATH, got " + url);
    const auto slash = url.find('/', scheme.size());
    MetricsUrl parsed;
    parsed.host_port = url.substr(scheme.size(), slash - scheme.size());
    parsed.path = slash == std::string::npos ? "/metrics" : url.substr(slash);
    const auto address = dataplane::SocketAddress::parse(parsed.host_port);
    if (!address) throw std::runtime_error("--metrics-url needs a numeric HOST:PORT, got " + url);
    parsed.address = *address;
    return parsed;
}

// The sum of every sample of `metric` (all label sets: one per worker) on
// the Prometheus text page at `url`; nothing when the page cannot be read
// within about a second or has no such sample. Read from the progress loop,
// so it must never wait long on a server that does not answer.
std::optional<double> scrape_metric_sum(const MetricsUrl& url, const std::string& metric) {
    UniqueFd fd(::socket(url.address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return std::nullopt;
    if (::connect(fd.get(), url.address.sa(), url.address.length) != 0) {
        if (errno != EINPROGRESS) return std::nullopt;
        pollfd pfd{fd.get(), POLLOUT, 0};
        int error = 0;
        socklen_t len = sizeof error;
        if (::poll(&pfd, 1, 1000) != 1 ||
            ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0)
            return std::nullopt;
    }
    // HTTP/1.0: the answer is not chunked and ends when the server closes.
    const std::string request =
        "GET " + url.path + " HTTP/1.0\r\nHost: " + url.host_port + "\r\nConnection: close\r\n\r\n";
    std::string response;
    std::size_t sent = 0;
    const auto deadline = Clock::now() + std::chrono::seconds(1);
    bool complete = false;
    while (!complete && Clock::now() < deadline) {
        const bool sending = sent < request.size();
        pollfd pfd{fd.get(), static_cast<short>(sending ? POLLOUT : POLLIN), 0};
        if (::poll(&pfd, 1, 100) < 0) return std::nullopt;
        if (sending) {
            const auto n =
                ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN) return std::nullopt;
            if (n > 0) sent += static_cast<std::size_t>(n);
            continue;
        }
        char buffer[16384];
        const auto n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        complete = n == 0;
        if (n < 0 && errno != EAGAIN) return std::nullopt;
        if (n > 0) response.append(buffer, static_cast<std::size_t>(n));
    }
    if (!complete || response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") != 8)
        return std::nullopt;
    const auto body = response.find("\r\n\r\n");
    if (body == std::string::npos) return std::nullopt;
    std::istringstream lines(response.substr(body + 4));
    std::string line;
    double sum = 0;
    bool found = false;
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto name_end = line.find_first_of("{ ");
        if (name_end == std::string::npos || line.compare(0, name_end, metric) != 0 ||
            name_end != metric.size())
            continue;
        auto value_at = name_end;
        if (line[name_end] == '{') value_at = line.find('}', name_end);
        if (value_at == std::string::npos) continue;
        std::istringstream value_text(line.substr(value_at + 1));
        double value = 0;
        if (value_text >> value) {
            sum += value;
            found = true;
        }
    }
    if (!found) return std::nullopt;
    return sum;
}

volatile std::sig_atomic_t interrupted = 0;
void on_interrupt(int) {
    interrupted = 1;
}

struct Shared {
    const Options& options;
    dataplane::SocketAddress target;
    std::string request;
    const std::vector<Identity>& identities;
    std::vector<dataplane::SocketAddress> sources;
    std::atomic<std::uint64_t> completed{0};  // attempts finished while measuring
    std::atomic<std::uint64_t> warmed{0};     // attempts finished before
    std::atomic<bool> measuring{false};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> next_source{0};
    // Hold mode, written by every client thread and read by the main one.
    Clock::time_point open_start{};  // set before any client thread starts
    std::atomic<std::uint64_t> opens_started{0};
    std::atomic<std::uint64_t> opened{0};  // handshakes done (and request answered)
    std::atomic<std::uint64_t> open_failed{0};
    std::atomic<std::uint64_t> held_now{0};
    std::atomic<std::uint64_t> hold_failures{0};
    std::atomic<std::int64_t> last_opened_ns{0};  // since open_start
    // Open loop, set before any client thread starts.
    perf::TlsMix tls_mix{};
    // Open loop: the step the client threads run next, written by the main
    // thread before the barrier that starts it and read by them after it.
    struct StepPlan {
        int number = 0;
        double rate = 0;
        Clock::time_point start{}, end{};
    } plan{};

    // --open-rate: the connection attempts allowed by now, shared by all
    // threads so the rate is the whole generator's.
    bool may_open(Clock::time_point now) {
        if (options.open_rate <= 0) return true;
        const auto allowed = static_cast<std::uint64_t>(
            options.open_rate * std::chrono::duration<double>(now - open_start).count() + 1);
        auto started = opens_started.load(std::memory_order_relaxed);
        while (started < allowed) {
            if (opens_started.compare_exchange_weak(started, started + 1)) return true;
        }
        return false;
    }
};

struct ThreadResult {
    perf::LatencyHistogram latency;
    std::uint64_t full = 0;
    std::uint64_t resumed = 0;
    std::uint64_t tickets = 0;  // sessions the server handed out on successful connections
    std::map<std::string, std::uint64_t> errors;
    std::map<std::string, std::uint64_t> hold_failures;  // by how a held connection ended
    std::uint64_t held_at_end = 0;                       // still open when the hold ended
};

class Slot;

using UniqueSession = std::unique_ptr<SSL_SESSION, crypto::OpenSslDeleter<SSL_SESSION_free>>;

// One client thread: its own SSL_CTX (no cross-thread OpenSSL contention in
// the client) and epoll. With identities, thread t of T owns identities t,
// t+T, t+2T... and hands them out in turn, one per connection; the session
// to resume is kept per identity then (a returning partner resumes its own
// session), per slot otherwise. In hold mode each slot is one connection,
// opened once, and at most `in_flight_cap` of them handshake at a time.
class ClientThread {
  public:
    ClientThread(Shared& shared, int slots, int index, int thread_count, int in_flight_cap = 0)
        : shared_(shared),
          slot_count_(slots),
          in_flight_cap_(in_flight_cap),
          index_(index),
          thread_count_(thread_count) {
        for (std::size_t i = static_cast<std::size_t>(index); i < shared.identities.size();
             i += static_cast<std::size_t>(thread_count))
            identities_.push_back(&shared.identities[i]);
        if (open_loop()) {
            // One session per identity and TLS version: a 1.2 session cannot resume 1.3.
            sessions_.resize(2 * std::max<std::size_t>(1, identities_.size()));
        } else {
            sessions_.resize(identities_.empty() ? static_cast<std::size_t>(slots)
                                                 : identities_.size());
        }
    }
    void run();
    // Open loop: primes the sessions to resume, then runs each step between
    // the barrier's phases (see run_open_loop in main) until `stop`.
    void run_open_loop(std::barrier<>& sync);
    ThreadResult result;
    // Open loop: the current step's counts, read by the main thread after the step.
    perf::StepStats step;
    std::uint64_t primed_sessions() const;

  private:
    friend class Slot;
    void build_context();
    void run_hold(std::vector<std::unique_ptr<Slot>>& slots);
    // One epoll_wait and the events it returned, handed to their slots; how many.
    int dispatch_events(int timeout_ms);
    bool holding() const { return shared_.options.hold > 0; }
    bool open_loop() const { return shared_.options.open_loop(); }
    // Whether connections keep the sessions they are handed, to resume later.
    bool keeps_sessions() const {
        return open_loop() ? shared_.options.resume_fraction > 0 : shared_.options.mode == "resume";
    }
    // Open loop: one full handshake per identity and TLS version, not counted,
    // so that the first resumption of each has a session.
    void prime();
    void run_step();
    // Starts a connection intended at `intended` on a free slot, or counts an
    // overload when every slot is busy.
    void launch(Clock::time_point intended, bool counted, bool resume, int version);
    void release(Slot* slot) { free_.push_back(slot); }
    std::size_t in_flight() const { return slots_.size() - free_.size(); }
    // epoll until `until` at the latest (ns resolution: arrivals are
    // sub-millisecond apart), then the timeouts of busy slots when due.
    void drive(Clock::time_point until);
    Shared& shared_;
    int slot_count_;
    int in_flight_cap_;
    int index_;
    int thread_count_;
    std::vector<std::unique_ptr<Slot>> slots_;  // open loop
    std::vector<Slot*> free_;                   // open loop: idle slots
    Clock::time_point next_check_{};
    // Hold mode: slots started, and how many of them left the opening phase.
    std::uint64_t started_ = 0;
    std::uint64_t opened_ = 0;
    std::uint64_t open_failed_ = 0;
    std::vector<const Identity*> identities_;
    std::size_t next_identity_ = 0;
    std::vector<UniqueSession> sessions_;
    crypto::UniqueSslCtx ctx_;
    base::UniqueFd epoll_;
};

int slot_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

class Slot {
  public:
    Slot(ClientThread& owner, std::size_t index) : owner_(owner), index_(index) {}

    void start() {
        reset();
        started_ = intended_ = Clock::now();
        open_socket();
    }

    // Open loop: a connection the schedule meant to start at `intended`,
    // counted in the step or not (priming), offering the identity's saved
    // session or not, pinned to `version`.
    void start_open(Clock::time_point intended, bool counted, bool resume, int version) {
        reset();
        started_ = Clock::now();
        intended_ = intended;
        counted_ = counted;
        resume_ = resume;
        version_ = version;
        open_socket();
    }

    void on_event(std::uint32_t events) {
        if (state_ == State::connecting) {
            int error = 0;
            socklen_t len = sizeof error;
            ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &len);
            if (error != 0)
                return fail(error == ECONNREFUSED ? "connect_refused" : "connect_error");
            if (!(events & EPOLLOUT)) return;
            begin_tls();
        }
        advance();
    }

    // The deadline runs from the intended start: in the open loop a
    // connection the generator started late has already waited that long.
    void check_timeout(Clock::time_point now) {
        if (state_ != State::idle && state_ != State::held &&
            now - intended_ > std::chrono::milliseconds(owner_.shared_.options.timeout_ms)) {
            fail(state_ == State::connecting ? "connect_timeout" : "timeout");
        }
    }

    bool idle() const { return state_ == State::idle; }
    bool held() const { return state_ == State::held; }

    // The end of the hold: close_notify, then the socket, not counted as lost.
    void close_held() {
        if (state_ == State::held) finish();
    }

    static void on_alert(const SSL* ssl, int where, int value) {
        if (!(where & SSL_CB_READ_ALERT)) return;
        auto* slot = static_cast<Slot*>(SSL_get_ex_data(ssl, slot_index()));
        if (!slot || (value >> 8) != SSL3_AL_FATAL) return;
        // OpenSSL 3.0's alert table predates TLS 1.3's certificate_required (116).
        slot->alert_ =
            (value & 0xff) == 116 ? "certificate required" : SSL_alert_desc_string_long(value);
    }

    static int on_new_session(SSL* ssl, SSL_SESSION* session) {
        auto* slot = static_cast<Slot*>(SSL_get_ex_data(ssl, slot_index()));
        if (!slot) return 0;
        if (slot->owner_.holding()) {
            ++(slot->state_ == State::held ? slot->owner_.result.tickets : slot->tickets_);
            // A held connection never reconnects: nothing would resume the session.
            return 0;
        }
        // We keep the reference OpenSSL hands us.
        slot->owner_.sessions_[slot->session_key_].reset(session);
        slot->fresh_ticket_ = true;
        ++slot->tickets_;
        return 1;
    }

  private:
    enum class State { idle, connecting, handshaking, writing, reading, ticket, held };

    void open_socket() {
        auto& shared = owner_.shared_;
        const auto& target = shared.target;
        fd_.reset(::socket(target.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd_)
            return fail(errno == EMFILE || errno == ENFILE ? "no_descriptor" : "socket_error");
        const int one = 1;
        ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!shared.sources.empty()) {
            // Without IP_BIND_ADDRESS_NO_PORT, bind() would pick the port
            // alone, unique per address whatever the destination, and the
            // ports of one address would run out at the ephemeral range's size.
            ::setsockopt(fd_.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            const auto& source =
                shared.sources[shared.next_source.fetch_add(1) % shared.sources.size()];
            if (::bind(fd_.get(), source.sa(), source.length) != 0) return fail("bind_error");
        }
        if (::connect(fd_.get(), target.sa(), target.length) != 0 && errno != EINPROGRESS) {
            fail(errno == ECONNREFUSED    ? "connect_refused"
                 : errno == EADDRNOTAVAIL ? "no_source_port"
                                          : "connect_error");
            return;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
        ev.data.ptr = this;
        ::epoll_ctl(owner_.epoll_.get(), EPOLL_CTL_ADD, fd_.get(), &ev);
        state_ = State::connecting;
    }

    void begin_tls() {
        ssl_.reset(SSL_new(owner_.ctx_.get()));
        SSL_set_ex_data(ssl_.get(), slot_index(), this);
        SSL_set_fd(ssl_.get(), fd_.get());
        const auto& o = owner_.shared_.options;
        if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl_.get(), o.sni.c_str());
        session_key_ = index_;
        std::size_t identity_index = 0;
        if (!owner_.identities_.empty()) {
            identity_index = session_key_ = owner_.next_identity_;
            owner_.next_identity_ = (owner_.next_identity_ + 1) % owner_.identities_.size();
            const Identity& identity = *owner_.identities_[session_key_];
            if (SSL_use_cert_and_key(ssl_.get(), identity.leaf.get(), identity.key.get(),
                                     identity.chain.get(), 1) != 1) {
                throw std::runtime_error("SSL_use_cert_and_key: " + crypto::drain_openssl_errors());
            }
        }
        bool offer_session = o.mode == "resume";
        if (owner_.open_loop()) {
            SSL_set_min_proto_version(ssl_.get(), version_);
            SSL_set_max_proto_version(ssl_.get(), version_);
            session_key_ = 2 * identity_index + (version_ == TLS1_2_VERSION ? 1 : 0);
            offer_session = resume_;
        }
        const auto& session = owner_.sessions_[session_key_];
        if (offer_session && session && owner_.open_loop()) {
            // Connections of one identity overlap here, and OpenSSL's client
            // marks a TLS 1.3 session unresumable once a connection resumes
            // it (tickets are single use, RFC 8446 C.4): each connection gets
            // its own copy of the identity's newest session, so one
            // resumption never turns the next into a full handshake. The
            // server may see one ticket more than once.
            const UniqueSession copy(SSL_SESSION_dup(session.get()));
            if (!copy) throw std::runtime_error("SSL_SESSION_dup: out of memory");
            SSL_set_session(ssl_.get(), copy.get());
            if (counted_) ++owner_.step.resume_offered;
        } else if (offer_session && session) {
            SSL_set_session(ssl_.get(), session.get());
        }
        state_ = State::handshaking;
    }

    void advance() {
        const auto& o = owner_.shared_.options;
        while (true) {
            ERR_clear_error();
            if (state_ == State::handshaking) {
                const int r = SSL_connect(ssl_.get());
                if (r != 1) return handle_io_error(r);
                handshake_done_ = Clock::now();
                resumed_ = SSL_session_reused(ssl_.get()) == 1;
                if (!owner_.shared_.request.empty()) {
                    state_ = State::writing;
                } else if (owner_.holding()) {
                    hold();
                } else if (owner_.keeps_sessions() && SSL_version(ssl_.get()) == TLS1_3_VERSION) {
                    // TLS 1.3 tickets arrive after the handshake and are single
                    // use: wait for this connection's own, resumed or not.
                    state_ = State::ticket;
                } else {
                    return succeed();
                }
            } else if (state_ == State::writing) {
                const auto& request = owner_.shared_.request;
                std::size_t written = 0;
                const int r = SSL_write_ex(ssl_.get(), request.data() + request_offset_,
                                           request.size() - request_offset_, &written);
                if (r != 1) return handle_io_error(r);
                request_offset_ += written;
                if (request_offset_ == request.size()) state_ = State::reading;
            } else if (state_ == State::reading || state_ == State::ticket) {
                char buffer[16384];
                std::size_t n = 0;
                const int r = SSL_read_ex(ssl_.get(), buffer, sizeof buffer, &n);
                if (r == 1) {
                    response_bytes_ += n;
                    // Held once answered: the first bytes, or --response-bytes of them.
                    if (owner_.holding() && state_ == State::reading &&
                        response_bytes_ >= std::max<std::size_t>(o.response_bytes, 1)) {
                        hold();
                    } else if (o.response_bytes > 0 && response_bytes_ >= o.response_bytes) {
                        return succeed();
                    }
                    continue;
                }
                const int error = SSL_get_error(ssl_.get(), r);
                if (state_ == State::ticket && error == SSL_ERROR_WANT_READ && fresh_ticket_)
                    return succeed();
                if (state_ == State::reading && !owner_.holding() &&
                    (error == SSL_ERROR_ZERO_RETURN || error == SSL_ERROR_SYSCALL) &&
                    response_bytes_ > 0) {
                    return succeed();  // the backend answered and closed
                }
                // A server that refuses the client after a TLS 1.3 handshake
                // may close cleanly without a byte (nginx's stream module does):
                // that is a refusal, not an answer.
                if (state_ == State::reading && error == SSL_ERROR_ZERO_RETURN)
                    return fail("closed_without_response");
                return handle_io_error(r);
            } else if (state_ == State::held) {
                // Read to keep the socket drained (edge-triggered epoll) and
                // to see the server's post-handshake messages (tickets) and
                // a close; whatever data arrives is dropped.
                char buffer[16384];
                std::size_t n = 0;
                const int r = SSL_read_ex(ssl_.get(), buffer, sizeof buffer, &n);
                if (r == 1) continue;
                const int error = SSL_get_error(ssl_.get(), r);
                if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return;
                return lose_held(error);
            } else {
                return;
            }
        }
    }

    // Hold mode: the connection is up (and its request answered); it stays
    // open until the hold ends. Counted as a handshake like a loop's success.
    void hold() {
        auto& result = owner_.result;
        const auto micros =
            std::chrono::duration_cast<std::chrono::microseconds>(handshake_done_ - started_)
                .count();
        result.latency.record(static_cast<std::uint64_t>(micros));
        (resumed_ ? result.resumed : result.full)++;
        result.tickets += tickets_;
        state_ = State::held;
        ++owner_.opened_;
        auto& shared = owner_.shared_;
        shared.held_now.fetch_add(1);
        shared.opened.fetch_add(1);
        shared.last_opened_ns.store(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - shared.open_start)
                .count());
    }

    // A held connection ended before the hold did: the server (or something
    // between) closed or reset it.
    void lose_held(int ssl_error) {
        std::string how = "other";
        if (!alert_.empty()) {
            how = "alert_" + reason_name(alert_);
        } else if (ssl_error == SSL_ERROR_ZERO_RETURN) {
            how = "close_notify";
        } else if (ssl_error == SSL_ERROR_SYSCALL) {
            how = errno == ECONNRESET ? "reset" : "eof";
        }
        ++owner_.result.hold_failures[how];
        auto& shared = owner_.shared_;
        shared.held_now.fetch_sub(1);
        shared.hold_failures.fetch_add(1);
        // The peer is gone: no close_notify to send.
        reset();
    }

    void handle_io_error(int ret) {
        const int error = SSL_get_error(ssl_.get(), ret);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return;
        if (!alert_.empty()) return fail("handshake_alert_" + reason_name(alert_));
        if (SSL_get_verify_result(ssl_.get()) != X509_V_OK) return fail("verify_failed");
        if (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_ZERO_RETURN) {
            return fail(errno == ECONNRESET            ? "reset"
                        : state_ == State::handshaking ? "handshake_eof"
                                                       : "eof");
        }
        fail("other");
    }

    void succeed() {
        if (owner_.open_loop()) {
            if (counted_) owner_.step.record_ok(Clock::now() - intended_, resumed_);
            return finish();
        }
        if (!counting()) return finish();
        auto& result = owner_.result;
        const auto micros =
            std::chrono::duration_cast<std::chrono::microseconds>(handshake_done_ - started_)
                .count();
        result.latency.record(static_cast<std::uint64_t>(micros));
        (resumed_ ? result.resumed : result.full)++;
        result.tickets += tickets_;
        owner_.shared_.completed.fetch_add(1, std::memory_order_relaxed);
        finish();
    }

    void fail(const std::string& reason) {
        if (owner_.open_loop()) {
            if (counted_) owner_.step.record_error(category_of(reason), reason);
            return finish();
        }
        if (owner_.holding()) {
            ++owner_.open_failed_;
            owner_.shared_.open_failed.fetch_add(1);
        }
        if (!counting()) return finish();
        ++owner_.result.errors[reason];
        owner_.shared_.completed.fetch_add(1, std::memory_order_relaxed);
        finish();
    }

    // Open loop: what the step's errors_by_reason counts `reason` as, from the
    // reason and where the connection was when it failed.
    std::string category_of(const std::string& reason) const {
        if (reason == "timeout" || reason == "connect_timeout") return "timeout";
        if (state_ == State::idle || state_ == State::connecting) return "connect";
        if (state_ == State::handshaking || reason.rfind("handshake_", 0) == 0 ||
            reason == "verify_failed")
            return "handshake";
        if (state_ == State::writing || state_ == State::reading || state_ == State::ticket)
            return "response";
        return "other";
    }

    // False during the warm-up, whose attempts only count towards its end.
    bool counting() {
        auto& shared = owner_.shared_;
        if (shared.measuring.load(std::memory_order_relaxed)) return true;
        shared.warmed.fetch_add(1, std::memory_order_relaxed);
        return false;
    }

    void finish() {
        if (ssl_) {
            SSL_set_quiet_shutdown(ssl_.get(), 0);
            SSL_shutdown(ssl_.get());  // sends close_notify; we do not wait for the peer's
        }
        reset();
        if (owner_.open_loop()) owner_.release(this);
    }

    void reset() {
        ssl_.reset();
        fd_.reset();
        state_ = State::idle;
        alert_.clear();
        request_offset_ = 0;
        response_bytes_ = 0;
        resumed_ = false;
        fresh_ticket_ = false;
        tickets_ = 0;
        counted_ = true;
        resume_ = false;
    }

    ClientThread& owner_;
    const std::size_t index_;
    std::size_t session_key_ = 0;  // where this connection's new session goes
    base::UniqueFd fd_;
    crypto::UniqueSsl ssl_;
    State state_ = State::idle;
    Clock::time_point started_;
    Clock::time_point intended_;  // the schedule's start (open loop), or started_
    Clock::time_point handshake_done_;
    std::string alert_;
    std::size_t request_offset_ = 0;
    std::size_t response_bytes_ = 0;
    bool resumed_ = false;
    bool fresh_ticket_ = false;  // a ticket arrived on the current connection
    std::uint64_t tickets_ = 0;
    // Open loop, set by start_open.
    bool counted_ = true;
    bool resume_ = false;
    int version_ = TLS1_3_VERSION;
};

void ClientThread::build_context() {
    const auto& o = shared_.options;
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    const int version = o.tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    SSL_CTX_set_min_proto_version(ctx_.get(), version);
    SSL_CTX_set_max_proto_version(ctx_.get(), version);
    if (!o.cert.empty() &&
        (SSL_CTX_use_certificate_chain_file(ctx_.get(), o.cert.c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx_.get(), o.key.c_str(), SSL_FILETYPE_PEM) != 1)) {
        throw std::runtime_error("client certificate/key: " + crypto::drain_openssl_errors());
    }
    if (!o.no_verify) {
        if (o.ca.empty() || SSL_CTX_load_verify_locations(ctx_.get(), o.ca.c_str(), nullptr) != 1) {
            throw std::runtime_error("--ca is required unless --no-verify: " +
                                     crypto::drain_openssl_errors());
        }
        SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    }
    if (!o.ciphers.empty()) {
        SSL_CTX_set_cipher_list(ctx_.get(), o.ciphers.c_str());
        SSL_CTX_set_ciphersuites(ctx_.get(), o.ciphers.c_str());
    }
    if (!o.groups.empty()) SSL_CTX_set1_groups_list(ctx_.get(), o.groups.c_str());
    if (!o.sigalgs.empty()) SSL_CTX_set1_sigalgs_list(ctx_.get(), o.sigalgs.c_str());
    SSL_CTX_set_info_callback(ctx_.get(), Slot::on_alert);
    // Keep sessions ourselves, one per slot, so resumption is per connection slot.
    SSL_CTX_set_session_cache_mode(ctx_.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx_.get(), Slot::on_new_session);
    // An idle connection then keeps no 16 KiB record buffers, so the
    // generator's memory stays small next to the server's it measures.
    if (holding()) SSL_CTX_set_mode(ctx_.get(), SSL_MODE_RELEASE_BUFFERS);
}

int ClientThread::dispatch_events(int timeout_ms) {
    epoll_event events[256];
    const int n = ::epoll_wait(epoll_.get(), events, 256, timeout_ms);
    for (int i = 0; i < n; ++i) static_cast<Slot*>(events[i].data.ptr)->on_event(events[i].events);
    return n;
}

void ClientThread::run() {
    build_context();
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    std::vector<std::unique_ptr<Slot>> slots;
    for (int i = 0; i < slot_count_; ++i)
        slots.push_back(std::make_unique<Slot>(*this, static_cast<std::size_t>(i)));
    if (holding()) return run_hold(slots);
    for (auto& slot : slots) slot->start();
    auto next_check = Clock::now();
    while (!shared_.stop.load(std::memory_order_relaxed)) {
        dispatch_events(50);
        const auto now = Clock::now();
        if (now >= next_check) {
            for (auto& slot : slots) slot->check_timeout(now);
            next_check = now + std::chrono::milliseconds(50);
        }
        for (auto& slot : slots) {
            if (slot->idle() && !shared_.stop.load(std::memory_order_relaxed)) slot->start();
        }
    }
}

// Opens this thread's connections in order, each once, while fewer than
// in_flight_cap_ handshake and the shared rate allows; then waits, handling
// what the held connections receive, until the main thread ends the hold.
void ClientThread::run_hold(std::vector<std::unique_ptr<Slot>>& slots) {
    std::size_t next_to_open = 0;
    std::vector<Slot*> opening;  // started and not yet held or failed, for the timeouts
    auto next_check = Clock::now();
    while (!shared_.stop.load(std::memory_order_relaxed)) {
        dispatch_events(20);
        const auto now = Clock::now();
        if (now >= next_check) {
            for (auto* slot : opening) slot->check_timeout(now);
            std::erase_if(opening, [](const Slot* slot) { return slot->idle() || slot->held(); });
            next_check = now + std::chrono::milliseconds(50);
        }
        while (next_to_open < slots.size() &&
               started_ - opened_ - open_failed_ < static_cast<std::uint64_t>(in_flight_cap_) &&
               shared_.may_open(now)) {
            Slot& slot = *slots[next_to_open++];
            ++started_;
            slot.start();
            if (!slot.idle() && !slot.held()) opening.push_back(&slot);
        }
    }
    // What arrived just before the end still counts against the hold.
    while (dispatch_events(0) > 0) {
    }
    for (auto& slot : slots) {
        if (slot->held()) ++result.held_at_end;
        slot->close_held();
    }
}

void ClientThread::run_open_loop(std::barrier<>& sync) {
    build_context();
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    for (int i = 0; i < slot_count_; ++i) {
        slots_.push_back(std::make_unique<Slot>(*this, static_cast<std::size_t>(i)));
        free_.push_back(slots_.back().get());
    }
    if (keeps_sessions()) prime();
    sync.arrive_and_wait();  // primed
    while (true) {
        sync.arrive_and_wait();  // the plan is published, or stop
        if (shared_.stop.load()) return;
        run_step();
        sync.arrive_and_wait();  // the step's counts are ready
    }
}

void ClientThread::prime() {
    const std::size_t keys = std::max<std::size_t>(1, identities_.size());
    for (const int version : shared_.tls_mix.versions()) {
        // Slots take the identities in turn, so `keys` starts cover each once.
        for (std::size_t k = 0; k < keys; ++k) {
            while (free_.empty()) drive(Clock::now() + std::chrono::milliseconds(10));
            launch(Clock::now(), false, false, version);
        }
    }
    while (in_flight() > 0) drive(Clock::now() + std::chrono::milliseconds(10));
}

std::uint64_t ClientThread::primed_sessions() const {
    return static_cast<std::uint64_t>(
        std::count_if(sessions_.begin(), sessions_.end(), [](const auto& s) { return !!s; }));
}

// Starts every arrival of this thread's share of the step at its time, busy
// slots or not, then waits for the step's connections to end; an arrival
// that finds no idle slot is an overload error, never queued.
void ClientThread::run_step() {
    const auto& plan = shared_.plan;
    const auto& o = shared_.options;
    step = perf::StepStats{};
    perf::ArrivalSchedule schedule(
        o.arrivals == "uniform" ? perf::Arrival::uniform : perf::Arrival::poisson, plan.rate,
        index_, thread_count_, o.seed, plan.number);
    std::seed_seq mix_seed{o.seed, static_cast<std::uint64_t>(index_),
                           static_cast<std::uint64_t>(plan.number), std::uint64_t{1}};
    std::mt19937_64 mix(mix_seed);
    std::uniform_real_distribution<double> draw(0.0, 1.0);
    auto next = plan.start + schedule.next();
    while (true) {
        const auto now = Clock::now();
        while (next < plan.end && next <= now) {
            const bool resume = draw(mix) < o.resume_fraction;
            launch(next, true, resume, shared_.tls_mix.pick(draw(mix)));
            next = plan.start + schedule.next();
        }
        const bool arriving = next < plan.end;
        if (!arriving && in_flight() == 0) break;
        const auto tick = now + std::chrono::milliseconds(10);
        drive(arriving ? std::min(next, tick) : tick);
    }
}

void ClientThread::launch(Clock::time_point intended, bool counted, bool resume, int version) {
    if (counted) {
        ++step.connections;
        step.max_start_lag = std::max(step.max_start_lag, Clock::now() - intended);
    }
    if (free_.empty()) {
        if (counted) step.record_error("overload", "overload");
        return;
    }
    Slot* slot = free_.back();
    free_.pop_back();
    slot->start_open(intended, counted, resume, version);
}

void ClientThread::drive(Clock::time_point until) {
    const auto wait = std::max(Clock::duration::zero(), until - Clock::now());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    const timespec timeout{static_cast<time_t>(ns / 1000000000),
                           static_cast<long>(ns % 1000000000)};
    epoll_event events[256];
    const int n = ::epoll_pwait2(epoll_.get(), events, 256, &timeout, nullptr);
    for (int i = 0; i < n; ++i) static_cast<Slot*>(events[i].data.ptr)->on_event(events[i].events);
    const auto now = Clock::now();
    if (now >= next_check_) {
        for (auto& slot : slots_) slot->check_timeout(now);
        next_check_ = now + std::chrono::milliseconds(10);
    }
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (const char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// The generator's own peak resident memory, to show it stays small next to
// the server's while it holds connections.
long max_rss_bytes() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss * 1024;
}

// --rate or --sweep: the steps one after another, every client thread
// running its share of each between the phases of one barrier (primed ->
// plan published -> counts ready -> ...), so a step's counts are read only
// once every thread has finished it.
int run_open_loop(Shared& shared, const std::vector<double>& rates) {
    const Options& o = shared.options;
    std::vector<std::unique_ptr<ClientThread>> clients;
    for (int t = 0; t < o.threads; ++t) {
        const auto share = o.max_in_flight / static_cast<std::uint64_t>(o.threads) +
                           (static_cast<std::uint64_t>(t) < o.max_in_flight % o.threads ? 1 : 0);
        clients.push_back(
            std::make_unique<ClientThread>(shared, static_cast<int>(share), t, o.threads));
    }
    std::barrier<> sync(o.threads + 1);
    std::atomic<int> failed_threads{0};
    std::vector<std::thread> threads;
    const double cpu_before = cpu_seconds();
    for (auto& client : clients) {
        threads.emplace_back([&client, &failed_threads, &shared, &sync] {
            try {
                client->run_open_loop(sync);
            } catch (const std::exception& e) {
                std::cerr << "portcullis-bench: " << e.what() << "\n";
                failed_threads.fetch_add(1);
                shared.stop = true;
                sync.arrive_and_drop();
            }
        });
    }
    sync.arrive_and_wait();  // primed
    perf::RunSettings settings;
    for (const auto& client : clients) settings.primed_sessions += client->primed_sessions();
    if (o.resume_fraction > 0 && !o.quiet)
        std::fprintf(stderr, "primed %llu sessions\n",
                     static_cast<unsigned long long>(settings.primed_sessions));
    const perf::Bounds bounds{o.p99_max_ms, o.max_error_ratio};
    std::vector<perf::StepReport> steps;
    for (std::size_t i = 0; i < rates.size() && !shared.stop.load(); ++i) {
        auto& plan = shared.plan;
        plan.number = static_cast<int>(i);
        plan.rate = rates[i];
        // A little ahead, so that no thread starts the step already behind.
        plan.start = Clock::now() + std::chrono::milliseconds(20);
        plan.end = plan.start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(o.step_duration));
        if (!o.quiet) {
            std::fprintf(stderr, "step %zu/%zu: %.1f/s for %.1f s\n", i + 1, rates.size(), rates[i],
                         o.step_duration);
            std::fflush(stderr);
        }
        const double step_cpu_before = cpu_seconds();
        sync.arrive_and_wait();  // plan published
        sync.arrive_and_wait();  // counts ready
        if (failed_threads > 0) break;
        perf::StepReport report;
        report.offered_rate = rates[i];
        report.client_cpu_s = cpu_seconds() - step_cpu_before;
        for (const auto& client : clients) report.stats.merge(client->step);
        report.duration_s =
            std::chrono::duration<double>(std::max(plan.end, report.stats.last_end) - plan.start)
                .count();
        if (!o.quiet) {
            std::fprintf(stderr, "%s\n",
                         perf::progress_line(i + 1, rates.size(), report, bounds).c_str());
            std::fflush(stderr);
        }
        steps.push_back(std::move(report));
    }
    shared.stop = true;
    sync.arrive_and_wait();  // stop
    for (auto& t : threads) t.join();
    if (failed_threads > 0) return 2;

    settings.target = o.target;
    settings.arrival = o.arrivals == "uniform" ? perf::Arrival::uniform : perf::Arrival::poisson;
    settings.resume_fraction = o.resume_fraction;
    settings.tls_mix = shared.tls_mix;
    settings.identities = !shared.identities.empty() ? shared.identities.size()
                          : !o.cert.empty()          ? 1
                                                     : 0;
    settings.bounds = bounds;
    settings.step_duration_s = o.step_duration;
    settings.threads = o.threads;
    settings.max_in_flight = o.max_in_flight;
    settings.seed = o.seed;
    settings.timeout_ms = o.timeout_ms;
    settings.client_cpu_s = cpu_seconds() - cpu_before;
    const auto json = perf::open_loop_json(settings, steps);
    std::cout << json << std::endl;
    if (!o.json.empty()) std::ofstream(o.json) << json << "\n";
    if (!o.csv.empty()) std::ofstream(o.csv) << perf::open_loop_csv(steps, bounds);
    std::uint64_t completed = 0, refused = 0, errors = 0;
    for (const auto& step : steps) {
        completed += step.stats.completed;
        errors += step.errors();
        const auto found = step.stats.error_details.find("connect_refused");
        if (found != step.stats.error_details.end()) refused += found->second;
    }
    return completed == 0 && errors > 0 && refused == errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"portcullis-bench: mTLS handshake load generator"};
    app.add_option("--target", o.target, "server address, numeric HOST:PORT or [IPv6]:PORT")
        ->required();
    app.add_option("--sni", o.sni, "server name to send");
    app.add_option("--mode", o.mode, "full | resume")->check(CLI::IsMember({"full", "resume"}));
    app.add_option("--tls", o.tls, "1.2 | 1.3")->check(CLI::IsMember({"1.2", "1.3"}));
    app.add_option("--conns", o.conns, "concurrent connections (all threads)")
        ->check(CLI::Range(1, 100000));
    app.add_option("--threads", o.threads, "client threads")->check(CLI::Range(1, 256));
    app.add_option("--duration", o.duration, "seconds to run");
    app.add_option("--handshakes", o.handshakes,
                   "stop after this many connection attempts have finished (ok or not)");
    app.add_option("--cert", o.cert, "client certificate chain (PEM)");
    app.add_option("--key", o.key, "client private key (PEM)");
    app.add_option("--ca", o.ca, "CA bundle to verify the server");
    app.add_flag("--no-verify", o.no_verify, "do not verify the server certificate");
    app.add_option("--request", o.request,
                   "send this after the handshake (\\r \\n escapes) and read the response");
    app.add_option("--response-bytes", o.response_bytes,
                   "response is complete after this many bytes (default: at close)");
    app.add_option("--json", o.json, "write the JSON summary to this file too");
    app.add_flag("--progress", o.progress, "print a progress line every second");
    app.add_flag("--quiet", o.quiet, "print only the JSON summary");
    app.add_option("--ciphers", o.ciphers, "cipher list / TLS 1.3 suites");
    app.add_option("--groups", o.groups, "key exchange groups");
    app.add_option("--sigalgs", o.sigalgs,
                   "signature algorithms (e.g. RSA-PSS+SHA256 to force RSA)");
    app.add_option("--timeout-ms", o.timeout_ms, "per-connection timeout");
    app.add_option("--identities", o.identities,
                   "file of client identities, \"CHAIN.pem KEY.pem\" a line: each connection "
                   "presents the next one (instead of --cert/--key)");
    app.add_option("--warmup", o.warmup,
                   "attempts to finish before counting starts (prints \"measuring\" to stderr "
                   "then)");
    app.add_option("--hold", o.hold,
                   "open this many connections, keep them idle after the handshake (and the "
                   "--request's answer), then close them all; prints \"holding N\" to stderr once "
                   "all are up")
        ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{2147483647}));
    app.add_option("--hold-seconds", o.hold_seconds,
                   "with --hold: seconds to hold once all are up (default: until --duration or "
                   "SIGINT/SIGTERM)");
    app.add_option("--open-rate", o.open_rate,
                   "with --hold: connections opened per second at most (0 = as fast as --conns "
                   "handshakes in flight allow)");
    app.add_option("--source-addresses", o.source_addresses,
                   "bind client sockets to these IPv4 addresses in turn, e.g. 127.0.0.2-127.0.0.20 "
                   "(more connections than one address has ephemeral ports)");
    app.add_option("--metrics-url", o.metrics_url,
                   "with --progress: http://HOST:PORT/metrics of the server, whose memory each "
                   "progress line shows");
    app.add_option("--memory-metric", o.memory_metric,
                   "metric summed over its samples for the server's memory");
    app.add_option("--rate", o.rate,
                   "open loop: new connections per second (Poisson arrivals unless --arrivals "
                   "uniform) for one step of --step-duration, each timed from its intended start");
    app.add_option("--sweep", o.sweep,
                   "open loop: FROM:TO:STEP, one step of --step-duration per rate, and the knee "
                   "(the highest rate up to which every step passed)");
    app.add_option("--arrivals", o.arrivals,
                   "open loop: poisson (default: exponential gaps) | uniform (equal gaps)")
        ->check(CLI::IsMember({"poisson", "uniform"}));
    app.add_option("--step-duration", o.step_duration,
                   "open loop: seconds of arrivals a step (default 10)");
    app.add_option("--p99-max", o.p99_max_ms,
                   "open loop: a step passes with p99 latency at most this many ms (default 100)");
    app.add_option("--max-error-ratio", o.max_error_ratio,
                   "open loop: a step passes with errors / connections at most this (default "
                   "0.01)");
    app.add_option("--resume-fraction", o.resume_fraction,
                   "open loop: the share of connections that offer their identity's session to "
                   "resume (default 0: all full)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--tls-mix", o.tls_mix,
                   "open loop: TLS versions by share, e.g. 1.3=0.8,1.2=0.2 (default: --tls)");
    app.add_option("--csv", o.csv, "open loop: one CSV row per step to this file");
    app.add_option("--max-in-flight", o.max_in_flight,
                   "open loop: connections outstanding at most (all threads, default 1024); an "
                   "arrival beyond is dropped and counted as an 'overload' error, never delayed")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}));
    app.add_option("--seed", o.seed, "open loop: seed of the arrival times and the mix draws");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return 2;
    }
    if (o.hold > 0 && (o.handshakes > 0 || o.warmup > 0 || o.mode != "full")) {
        std::cerr << "portcullis-bench: --hold opens each connection once, with a full handshake: "
                     "no --handshakes, --warmup or --mode resume\n";
        return 2;
    }
    std::vector<double> rates;
    if (o.open_loop()) {
        for (const char* closed_only :
             {"--conns", "--duration", "--handshakes", "--warmup", "--hold", "--mode"}) {
            if (app.count(closed_only) > 0) {
                std::cerr << "portcullis-bench: " << closed_only
                          << " is for the closed loop; --rate and --sweep take --max-in-flight, "
                             "--step-duration and --resume-fraction\n";
                return 2;
            }
        }
        if (o.rate > 0 && !o.sweep.empty()) {
            std::cerr << "portcullis-bench: --rate or --sweep, not both\n";
            return 2;
        }
        if (!(o.step_duration > 0) || o.max_in_flight < static_cast<std::uint64_t>(o.threads)) {
            std::cerr << "portcullis-bench: --step-duration must be above 0 and --max-in-flight "
                         "at least --threads\n";
            return 2;
        }
        try {
            rates = o.sweep.empty() ? std::vector<double>{o.rate} : perf::parse_sweep(o.sweep);
        } catch (const std::exception& e) {
            std::cerr << "portcullis-bench: " << e.what() << "\n";
            return 2;
        }
        if (!o.quiet) o.progress = true;
    } else if (app.count("--rate") > 0) {
        std::cerr << "portcullis-bench: --rate must be above 0\n";
        return 2;
    }
    if (o.duration <= 0 && o.handshakes == 0 && o.hold == 0) o.duration = 5;
    if (!o.cert.empty() && o.key.empty()) o.key = o.cert;
    if (o.duration > 5 && !o.quiet) o.progress = true;
    const auto target = dataplane::SocketAddress::parse(o.target);
    if (!target) {
        std::cerr << "portcullis-bench: --target must be numeric HOST:PORT, got " << o.target
                  << "\n";
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    std::vector<dataplane::SocketAddress> sources;
    std::optional<MetricsUrl> metrics_url;
    try {
        if (!o.source_addresses.empty()) sources = parse_source_addresses(o.source_addresses);
        if (!o.metrics_url.empty()) metrics_url = parse_metrics_url(o.metrics_url);
    } catch (const std::exception& e) {
        std::cerr << "portcullis-bench: " << e.what() << "\n";
        return 2;
    }
    if (!sources.empty() && target->family() != AF_INET) {
        std::cerr << "portcullis-bench: --source-addresses are IPv4, --target is not\n";
        return 2;
    }
    if (o.hold > 0 || o.open_loop()) {
        // One descriptor per held (or outstanding) connection, plus stdio,
        // the epolls and a scrape's socket.
        const rlim_t needed = static_cast<rlim_t>(o.open_loop() ? o.max_in_flight : o.hold) + 64;
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        if (limit.rlim_max < needed) {
            rlimit raised{needed, needed};
            if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
                std::cerr << "portcullis-bench: "
                          << (o.open_loop() ? "--max-in-flight " : "--hold ")
                          << (o.open_loop() ? o.max_in_flight : o.hold) << " needs " << needed
                          << " descriptors; RLIMIT_NOFILE's hard limit is " << limit.rlim_max
                          << " and raising it needs CAP_SYS_RESOURCE (at most "
                          << (limit.rlim_max > 64 ? limit.rlim_max - 64 : 0) << " here)\n";
                return 2;
            }
        } else {
            limit.rlim_cur = limit.rlim_max;
            ::setrlimit(RLIMIT_NOFILE, &limit);
        }
        if (o.hold > 0) {
            ::signal(SIGINT, on_interrupt);
            ::signal(SIGTERM, on_interrupt);
        }
    }

    std::vector<Identity> identities;
    if (!o.identities.empty()) {
        if (!o.cert.empty()) {
            std::cerr << "portcullis-bench: --identities replaces --cert/--key\n";
            return 2;
        }
        try {
            identities = load_identities(o.identities);
        } catch (const std::exception& e) {
            std::cerr << "portcullis-bench: " << e.what() << "\n";
            return 2;
        }
        if (identities.size() < static_cast<std::size_t>(o.threads)) {
            std::cerr << "portcullis-bench: fewer identities than --threads\n";
            return 2;
        }
    }

    Shared shared{o, *target, unescape(o.request), identities, std::move(sources)};
    if (o.open_loop()) {
        try {
            shared.tls_mix = perf::parse_tls_mix(o.tls_mix.empty() ? o.tls : o.tls_mix);
        } catch (const std::exception& e) {
            std::cerr << "portcullis-bench: " << e.what() << "\n";
            return 2;
        }
        return run_open_loop(shared, rates);
    }
    std::vector<std::unique_ptr<ClientThread>> clients;
    for (int t = 0; t < o.threads; ++t) {
        if (o.hold > 0) {
            // This thread's share of the connections, and of the handshakes in flight.
            const auto share = o.hold / static_cast<std::uint64_t>(o.threads) +
                               (static_cast<std::uint64_t>(t) < o.hold % o.threads ? 1 : 0);
            const int cap = std::max(1, o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0));
            if (share > 0)
                clients.push_back(std::make_unique<ClientThread>(shared, static_cast<int>(share), t,
                                                                 o.threads, cap));
            continue;
        }
        const int slots = o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0);
        if (slots > 0)
            clients.push_back(std::make_unique<ClientThread>(shared, slots, t, o.threads));
    }
    double cpu_before = cpu_seconds();
    auto start = Clock::now();
    shared.open_start = start;
    shared.measuring = o.warmup == 0;
    std::vector<std::thread> threads;
    std::atomic<int> failed_threads{0};
    for (auto& client : clients) {
        threads.emplace_back([&client, &failed_threads, &shared] {
            try {
                client->run();
            } catch (const std::exception& e) {
                std::cerr << "portcullis-bench: " << e.what() << "\n";
                failed_threads.fetch_add(1);
                shared.stop = true;
            }
        });
    }
    std::uint64_t last = 0;
    auto next_report = start + std::chrono::seconds(1);
    // Hold mode: when opening ended (every connection held or failed), and
    // when the hold did.
    std::optional<Clock::time_point> hold_start;
    Clock::time_point hold_end;
    std::optional<double> server_memory;
    while (o.hold > 0 && !shared.stop) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const auto now = Clock::now();
        const auto opened = shared.opened.load();
        const auto open_failed = shared.open_failed.load();
        if (!hold_start && opened + open_failed >= o.hold) {
            hold_start = now;
            if (shared.held_now.load() == o.hold) {
                std::fprintf(stderr, "holding %llu\n", static_cast<unsigned long long>(o.hold));
            } else {
                std::fprintf(stderr, "opening done: %llu of %llu held, %llu failed to open\n",
                             static_cast<unsigned long long>(shared.held_now.load()),
                             static_cast<unsigned long long>(o.hold),
                             static_cast<unsigned long long>(open_failed));
            }
            std::fflush(stderr);
        }
        if (interrupted ||
            (o.duration > 0 && now - start >= std::chrono::duration<double>(o.duration)) ||
            (hold_start && o.hold_seconds > 0 &&
             now - *hold_start >= std::chrono::duration<double>(o.hold_seconds))) {
            hold_end = now;
            if (metrics_url) server_memory = scrape_metric_sum(*metrics_url, o.memory_metric);
            shared.stop = true;
        }
        if (o.progress && now >= next_report) {
            std::string memory = "n/a";
            if (metrics_url) {
                server_memory = scrape_metric_sum(*metrics_url, o.memory_metric);
                if (server_memory) {
                    char text[64];
                    std::snprintf(text, sizeof text, "%.1f MiB", *server_memory / 1048576.0);
                    memory = text;
                }
            }
            std::fprintf(stderr,
                         "%6.1fs  opened %llu  held %llu  failed %llu  hold_failures %llu  "
                         "server memory %s\n",
                         std::chrono::duration<double>(now - start).count(),
                         static_cast<unsigned long long>(opened),
                         static_cast<unsigned long long>(shared.held_now.load()),
                         static_cast<unsigned long long>(open_failed),
                         static_cast<unsigned long long>(shared.hold_failures.load()),
                         memory.c_str());
            std::fflush(stderr);
            next_report += std::chrono::seconds(1);
        }
    }
    while (o.hold == 0 && !shared.stop) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const auto now = Clock::now();
        if (!shared.measuring && shared.warmed.load() >= o.warmup) {
            shared.measuring = true;
            start = now;
            next_report = start + std::chrono::seconds(1);
            cpu_before = cpu_seconds();
            std::fprintf(stderr, "measuring\n");
            std::fflush(stderr);
            continue;
        }
        if (!shared.measuring) continue;
        const auto done = shared.completed.load();
        if ((o.duration > 0 && now - start >= std::chrono::duration<double>(o.duration)) ||
            (o.handshakes > 0 && done >= o.handshakes)) {
            shared.stop = true;
        }
        if (o.progress && now >= next_report) {
            std::fprintf(stderr, "%6.1fs  %8llu attempts/s  total %llu\n",
                         std::chrono::duration<double>(now - start).count(),
                         static_cast<unsigned long long>(done - last),
                         static_cast<unsigned long long>(done));
            last = done;
            next_report += std::chrono::seconds(1);
        }
    }
    if (o.hold > 0 && hold_end == Clock::time_point{}) hold_end = Clock::now();
    for (auto& t : threads) t.join();
    if (failed_threads > 0) return 2;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const double client_cpu = cpu_seconds() - cpu_before;

    ThreadResult total;
    for (const auto& client : clients) {
        total.latency.merge(client->result.latency);
        total.full += client->result.full;
        total.resumed += client->result.resumed;
        total.tickets += client->result.tickets;
        for (const auto& [reason, count] : client->result.errors) total.errors[reason] += count;
        for (const auto& [how, count] : client->result.hold_failures)
            total.hold_failures[how] += count;
        total.held_at_end += client->result.held_at_end;
    }
    const std::uint64_t handshakes = total.full + total.resumed;
    std::uint64_t errors_total = 0;
    std::string errors_json;
    for (const auto& [reason, count] : total.errors) {
        errors_total += count;
        errors_json += (errors_json.empty() ? "" : ",") + std::string("\"") + json_escape(reason) +
                       "\":" + std::to_string(count);
    }
    std::ostringstream json;
    json.setf(std::ios::fixed);
    json.precision(3);
    json << "{\"target\":\"" << json_escape(o.target) << "\",\"mode\":\"" << o.mode
         << "\",\"tls\":\"" << o.tls << "\",\"threads\":" << o.threads << ",\"conns\":" << o.conns
         << ",\"identities\":" << identities.size() << ",\"warmup\":" << o.warmup
         << ",\"duration_s\":" << elapsed << ",\"handshakes\":" << handshakes
         << ",\"handshakes_per_s\":"
         << (elapsed > 0 ? static_cast<double>(handshakes) / elapsed : 0)
         << ",\"full\":" << total.full << ",\"resumed\":" << total.resumed
         << ",\"tickets\":" << total.tickets << ",\"resumed_fraction\":"
         << (handshakes ? static_cast<double>(total.resumed) / static_cast<double>(handshakes)
                        : 0.0)
         << ",\"latency_us\":{\"p50\":" << total.latency.quantile(0.5)
         << ",\"p99\":" << total.latency.quantile(0.99)
         << ",\"p999\":" << total.latency.quantile(0.999) << ",\"max\":" << total.latency.max()
         << "}"
         << ",\"errors\":{" << errors_json << "},\"errors_total\":" << errors_total
         << ",\"client_cpu_s\":" << client_cpu;
    std::uint64_t hold_failures = 0;
    if (o.hold > 0) {
        std::string how_json;
        for (const auto& [how, count] : total.hold_failures) {
            hold_failures += count;
            how_json += (how_json.empty() ? "" : ",") + std::string("\"") + json_escape(how) +
                        "\":" + std::to_string(count);
        }
        const double opening_s = static_cast<double>(shared.last_opened_ns.load()) / 1e9;
        json << ",\"hold\":" << o.hold << ",\"held\":" << total.held_at_end
             << ",\"opened\":" << handshakes << ",\"hold_seconds\":"
             << (hold_start ? std::chrono::duration<double>(hold_end - *hold_start).count() : 0.0)
             << ",\"hold_failures\":" << hold_failures << ",\"hold_failure_reasons\":{" << how_json
             << "},\"open_rate_achieved\":"
             << (opening_s > 0 ? static_cast<double>(handshakes) / opening_s : 0.0)
             << ",\"source_addresses\":" << shared.sources.size()
             << ",\"client_max_rss_bytes\":" << max_rss_bytes() << ",\"server_memory_bytes\":";
        if (server_memory)
            json << *server_memory;
        else
            json << "null";
    }
    json << "}";
    std::cout << json.str() << std::endl;
    if (!o.json.empty()) std::ofstream(o.json) << json.str() << "\n";
    const bool unreachable = handshakes == 0 && (total.errors.count("connect_refused") ||
                                                 total.errors.count("connect_timeout"));
    if (o.hold > 0) return total.held_at_end == o.hold && hold_failures == 0 ? 0 : 1;
    return unreachable ? 1 : 0;
}
