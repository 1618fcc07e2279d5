#include "tests/integration/harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/unique_fd.hpp"
#include "dataplane/socket_address.hpp"

namespace portcullis::testing {

using base::UniqueFd;
using Clock = std::chrono::steady_clock;

std::filesystem::path make_temp_dir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "portcullis-test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return pattern;
}

int free_port(const char* host) {
    const bool v6 = std::string(host).find(':') != std::string::npos;
    base::UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0));
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        ::inet_pton(AF_INET6, host, &a->sin6_addr);
        len = sizeof *a;
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        ::inet_pton(AF_INET, host, &a->sin_addr);
        len = sizeof *a;
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return -1;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return dataplane::SocketAddress::from(reinterpret_cast<sockaddr*>(&ss), len).port();
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
    return text;
}

std::string binary_from_env(const char* variable) {
    const char* value = std::getenv(variable);
    if (value == nullptr)
        throw std::runtime_error(std::string(variable) + " is not set (run through meson test)");
    return value;
}

ChildProcess::ChildProcess(std::vector<std::string> argv, std::filesystem::path log)
    : log_(std::move(log)) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    pid_ = pid;
}

// A sanitizer in a forked worker (or any process the test started) reports
// into the captured log and, at most, makes that process exit: the supervisor
// restarts a worker and the test may well pass. The report is the failure.
namespace {
void expect_no_sanitizer_report(const std::filesystem::path& log) {
    const auto text = read_file(log);
    const auto at = text.find("ThreadSanitizer:");  // WARNING, ERROR or FATAL
    if (at == std::string::npos) return;
    ADD_FAILURE() << "ThreadSanitizer reported in " << log.string() << ":\n"
                  << text.substr(at > 200 ? at - 200 : 0, 6000);
}
}  // namespace

ChildProcess::~ChildProcess() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    expect_no_sanitizer_report(log_);
}

bool ChildProcess::wait_for_log(const std::string& text, std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (log().find(text) != std::string::npos) return true;
        if (pid_ > 0 && ::kill(pid_, 0) != 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return log().find(text) != std::string::npos;
}

std::optional<int> ChildProcess::wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (pid_ > 0) {
        int status = 0;
        const pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            pid_ = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
}

bool ChildProcess::running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
    }
    return true;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    if (auto status = wait_exit(grace)) return *status;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
}

Daemon::Daemon(const std::filesystem::path& config, int workers) {
    const auto log = config.parent_path() / (config.stem().string() + ".log");
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{binary_from_env("PORTCULLIS_BIN"), "--config", config.string(),
                                 "--workers", std::to_string(workers)},
        log);
    if (!process_->wait_for_log("portcullis ready", std::chrono::seconds(15))) {
        throw std::runtime_error("daemon did not become ready; log:\n" + process_->log());
    }
}

std::vector<pid_t> Daemon::worker_pids() const {
    std::vector<pid_t> pids;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const auto name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto stat = read_file(entry.path() / "stat");
        const auto close = stat.rfind(')');
        if (close == std::string::npos) continue;
        std::istringstream fields(stat.substr(close + 2));
        std::string state;
        pid_t parent = 0;
        fields >> state >> parent;
        if (parent == process_->pid()) pids.push_back(std::stoi(name));
    }
    return pids;
}

Backend::Backend(const std::filesystem::path& dir, std::vector<std::string> extra_args, int port) {
    static int counter = 0;
    const auto tag = std::to_string(::getpid()) + "-" + std::to_string(++counter);
    record_ = dir / ("backend-" + tag + ".jsonl");
    const auto ready = dir / ("backend-" + tag + ".port");
    std::vector<std::string> argv{binary_from_env("TEST_BACKEND_BIN"),
                                  "--listen",
                                  "127.0.0.1:" + std::to_string(port),
                                  "--ready-file",
                                  ready.string(),
                                  "--record",
                                  record_.string()};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    process_ = std::make_unique<ChildProcess>(argv, dir / ("backend-" + tag + ".log"));
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
        const auto text = read_file(ready);
        if (!text.empty()) {
            port_ = std::stoi(text);
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("test backend did not start: " + process_->log());
}

namespace {

struct AlertCapture {
    std::string alert;
};

int alert_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

void capture_alert(const SSL* ssl, int where, int value) {
    // SSL_CB_READ_ALERT is two bits, one of them shared with SSL_CB_WRITE_ALERT:
    // only an alert the server sent counts.
    if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT || (value >> 8) != SSL3_AL_FATAL) return;
    if (auto* capture = static_cast<AlertCapture*>(SSL_get_ex_data(ssl, alert_index()))) {
        // OpenSSL 3.0's alert table predates TLS 1.3's certificate_required (116).
        capture->alert =
            (value & 0xff) == 116 ? "certificate required" : SSL_alert_desc_string_long(value);
    }
}

}  // namespace

namespace {

crypto::UniqueSslCtx make_client_context(const ClientOptions& o, std::string& error) {
    crypto::UniqueSslCtx ctx(SSL_CTX_new(TLS_client_method()));
    if (o.security_level_zero) SSL_CTX_set_security_level(ctx.get(), 0);
    if (o.min_version) SSL_CTX_set_min_proto_version(ctx.get(), o.min_version);
    if (o.max_version) SSL_CTX_set_max_proto_version(ctx.get(), o.max_version);
    if (o.security_level_zero) SSL_CTX_set_cipher_list(ctx.get(), "ALL:@SECLEVEL=0");
    if (!o.groups.empty() && SSL_CTX_set1_groups_list(ctx.get(), o.groups.c_str()) != 1) {
        error = "client rejected groups " + o.groups;
        return nullptr;
    }
    if (!o.sigalgs.empty()) {
        SSL_CTX_set1_sigalgs_list(ctx.get(), o.sigalgs.c_str());
        // `sigalgs` steers the server's signature; the client's own
        // certificate must still be able to sign.
        SSL_CTX_set1_client_sigalgs_list(ctx.get(),
                                         "ECDSA+SHA256:ECDSA+SHA384:RSA-PSS+SHA256:RSA+SHA256");
    }
    if (o.cert) {
        SSL_CTX_use_certificate(ctx.get(), const_cast<X509*>(o.cert));
        for (const X509* extra : o.chain)
            SSL_CTX_add1_chain_cert(ctx.get(), const_cast<X509*>(extra));
        if (SSL_CTX_use_PrivateKey(ctx.get(), o.key) != 1) {
            error = "client key rejected: " + crypto::drain_openssl_errors();
            return {};
        }
    }
    if (o.trusted_server_ca) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()),
                            const_cast<X509*>(o.trusted_server_ca));
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    }
    if (!o.alpn.empty()) {
        std::string wire;
        for (const auto& p : o.alpn) wire += static_cast<char>(p.size()) + p;
        SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size()));
    }
    if (!o.cipher_list.empty() && SSL_CTX_set_cipher_list(ctx.get(), o.cipher_list.c_str()) != 1) {
        error = "client rejected cipher list " + o.cipher_list;
        return nullptr;
    }
    if (!o.ciphersuites.empty() &&
        SSL_CTX_set_ciphersuites(ctx.get(), o.ciphersuites.c_str()) != 1) {
        error = "client rejected ciphersuites " + o.ciphersuites;
        return nullptr;
    }
    SSL_CTX_set_info_callback(ctx.get(), capture_alert);
    if (o.customize_context) o.customize_context(ctx.get());
    return ctx;
}

// Blocking TCP connection with 5 s send/receive timeouts.
base::UniqueFd connect_tcp(int port, const char* host, std::string& error) {
    const bool v6 = std::string(host).find(':') != std::string::npos;
    auto address =
        dataplane::SocketAddress::parse(v6 ? "[" + std::string(host) + "]:" + std::to_string(port)
                                           : std::string(host) + ":" + std::to_string(port));
    base::UniqueFd fd(::socket(address->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval timeout{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (::connect(fd.get(), address->sa(), address->length) != 0) {
        error = std::string("connect: ") + std::strerror(errno);
        return {};
    }
    return fd;
}

}  // namespace

TlsSession open_tls_session(int port, const ClientOptions& options) {
    ::signal(SIGPIPE, SIG_IGN);
    TlsSession session;
    std::string error;
    session.ctx = make_client_context(options, error);
    if (!session.ctx) return session;
    session.fd = connect_tcp(port, "127.0.0.1", error);
    if (!session.fd) return session;
    session.ssl.reset(SSL_new(session.ctx.get()));
    SSL_set_fd(session.ssl.get(), session.fd.get());
    if (!options.sni.empty()) SSL_set_tlsext_host_name(session.ssl.get(), options.sni.c_str());
    session.ok = SSL_connect(session.ssl.get()) == 1;
    return session;
}

std::string echo_on(TlsSession& session, const std::string& text) {
    if (SSL_write(session.ssl.get(), text.data(), static_cast<int>(text.size())) <= 0) {
        ERR_clear_error();
        return "<write failed>";
    }
    std::string got;
    char buffer[256];
    while (got.size() < text.size()) {
        const int n = SSL_read(session.ssl.get(), buffer, sizeof buffer);
        if (n <= 0) break;
        got.append(buffer, static_cast<std::size_t>(n));
    }
    ERR_clear_error();
    return got;
}

long ms_until_close_notify(TlsSession& session, std::chrono::steady_clock::time_point since) {
    char byte;
    const int n = SSL_read(session.ssl.get(), &byte, 1);
    const bool close_notify =
        n == 0 && SSL_get_error(session.ssl.get(), n) == SSL_ERROR_ZERO_RETURN;
    ERR_clear_error();
    if (!close_notify) return -1;
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 since)
        .count();
}

ClientResult first_refusal(int port, const ClientOptions& options,
                           std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (true) {
        auto result = run_client(port, options);
        // Refused is an alert saying why; a connection a worker let in and
        // then cut at its reload is neither.
        const bool refused = !result.exchanged && !result.alert.empty();
        if (refused || std::chrono::steady_clock::now() >= deadline) return result;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

ClientResult run_client(int port, const ClientOptions& o, const char* host) {
    ::signal(SIGPIPE, SIG_IGN);  // a server that closes must fail the test, not kill it
    ClientResult result;
    auto ctx = make_client_context(o, result.error);
    if (!ctx) return result;
    base::UniqueFd fd = connect_tcp(port, host, result.error);
    if (!fd) return result;
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len);
    result.local_port =
        dataplane::SocketAddress::from(reinterpret_cast<sockaddr*>(&local), local_len).port();

    AlertCapture capture;
    crypto::UniqueSsl ssl(SSL_new(ctx.get()));
    SSL_set_ex_data(ssl.get(), alert_index(), &capture);
    SSL_set_fd(ssl.get(), fd.get());
    if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl.get(), o.sni.c_str());
    if (o.resume_from) SSL_set_session(ssl.get(), o.resume_from);
    if (o.no_ticket) SSL_set_options(ssl.get(), SSL_OP_NO_TICKET);
    ERR_clear_error();
    if (SSL_connect(ssl.get()) != 1) {
        result.alert = capture.alert;
        result.error = crypto::drain_openssl_errors();
        return result;
    }
    result.handshake_ok = true;
    result.resumed = SSL_session_reused(ssl.get()) == 1;
    result.version = SSL_get_version(ssl.get());
    result.cipher = SSL_get_cipher_name(ssl.get());
    if (const char* group = SSL_get0_group_name(ssl.get())) result.group = group;
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_len);
    result.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    if (X509* server = SSL_get0_peer_certificate(ssl.get())) {
        char cn[256] = {};
        X509_NAME_get_text_by_NID(X509_get_subject_name(server), NID_commonName, cn, sizeof cn);
        result.server_leaf_cn = cn;
        result.server_key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(server));
    }
    if (o.send.empty()) return result;
    std::size_t written = 0;
    if (SSL_write_ex(ssl.get(), o.send.data(), o.send.size(), &written) != 1) {
        result.alert = capture.alert;
        result.error = "write: " + crypto::drain_openssl_errors();
        return result;
    }
    if (o.half_close) ::shutdown(fd.get(), SHUT_WR);
    char buffer[4096];
    while (result.received.size() < o.send.size() || o.half_close) {
        std::size_t n = 0;
        if (SSL_read_ex(ssl.get(), buffer, sizeof buffer, &n) != 1) {
            const int error = SSL_get_error(ssl.get(), 0);
            result.eof_after_data = error == SSL_ERROR_ZERO_RETURN;
            if (!result.eof_after_data) {
                result.alert = capture.alert;
                result.error = "read: " + crypto::drain_openssl_errors();
            }
            break;
        }
        result.received.append(buffer, n);
    }
    result.exchanged = result.received.starts_with(o.send);
    // After the exchange, TLS 1.3 tickets have arrived.
    result.session.reset(SSL_get1_session(ssl.get()));
    SSL_shutdown(ssl.get());
    return result;
}

Run run(const std::string& command) {
    Run result;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (!pipe) return result;
    char buffer[4096];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
    const int status = ::pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

bool have(const std::string& tool) {
    return run("command -v " + tool).status == 0;
}

std::map<std::string, std::string> proc_status(pid_t pid) {
    std::map<std::string, std::string> fields;
    std::istringstream lines(read_file("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(lines, line);) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        auto value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
        fields[line.substr(0, colon)] = value;
    }
    return fields;
}

std::string four_ids(unsigned id) {
    const auto s = std::to_string(id);
    return s + "\t" + s + "\t" + s + "\t" + s;
}

void share_with_group(const std::filesystem::path& dir, gid_t group) {
    const auto give = [group](const std::filesystem::path& path, mode_t mode) {
        if (::chown(path.c_str(), 0, group) != 0 || ::chmod(path.c_str(), mode) != 0)
            throw std::runtime_error("cannot share " + path.string() + " with group " +
                                     std::to_string(group));
    };
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        if (entry.is_regular_file()) give(entry.path(), 0640);
    give(dir, 0750);
}

std::string rejection_marker(int local_port, const std::string& reason) {
    return "client=127.0.0.1:" + std::to_string(local_port) + " reason=" + reason + " ";
}

}  // namespace portcullis::testing

namespace portcullis::testing {

HttpResponse http_request(int port, const std::string& method, const std::string& path) {
    HttpResponse response;
    base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout{60, 0};  // POST /reload waits for every worker
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
        return response;
    const std::string request = method + " " + path +
                                " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size()))
        return response;
    std::string raw;
    char chunk[16384];
    ssize_t n;
    while ((n = ::recv(fd.get(), chunk, sizeof chunk, 0)) > 0)
        raw.append(chunk, static_cast<std::size_t>(n));
    const auto space = raw.find(' ');
    const auto body = raw.find("\r\n\r\n");
    if (space == std::string::npos || body == std::string::npos) return response;
    response.status = std::atoi(raw.c_str() + space + 1);
    response.body = raw.substr(body + 4);
    return response;
}

double metric_value(const std::string& metrics, const std::string& sample) {
    std::size_t at = 0;
    while ((at = metrics.find(sample + " ", at)) != std::string::npos) {
        if (at == 0 || metrics[at - 1] == '\n')
            return std::strtod(metrics.c_str() + at + sample.size() + 1, nullptr);
        at += sample.size();
    }
    return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace portcullis::testing
