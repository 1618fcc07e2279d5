// Integration-test harness: the real daemon and the real test backend as
// child processes, files in a temp directory, and a blocking OpenSSL client.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "crypto/openssl_handles.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::testing {

std::filesystem::path make_temp_dir();
int free_port(const char* host = "127.0.0.1");
std::string read_file(const std::filesystem::path& path);
// Every occurrence of `from` replaced (std::regex trips GCC 12 warnings under sanitizers).
std::string replace_all(std::string text, const std::string& from, const std::string& to);
// Path of a built binary from an environment variable meson sets.
std::string binary_from_env(const char* variable);

// A child process with stdout+stderr captured to a file.
class ChildProcess {
  public:
    ChildProcess(std::vector<std::string> argv, std::filesystem::path log);
    ~ChildProcess();
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    pid_t pid() const { return pid_; }
    const std::filesystem::path& log_path() const { return log_; }
    std::string log() const { return read_file(log_); }
    // Waits until the log contains `text`.
    bool wait_for_log(const std::string& text,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
    // SIGTERM and wait; returns the exit status (or -1).
    int stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
    // Waits for the process to exit by itself.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    bool running();

  private:
    pid_t pid_ = -1;
    std::filesystem::path log_;
};

// portcullis --config FILE, ready when it logs "portcullis ready".
class Daemon {
  public:
    Daemon(const std::filesystem::path& config, int workers = 1);
    ChildProcess& process() { return *process_; }
    std::string log() const { return process_->log(); }
    bool wait_for_log(const std::string& text,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
        return process_->wait_for_log(text, timeout);
    }
    std::vector<pid_t> worker_pids() const;

  private:
    std::unique_ptr<ChildProcess> process_;
};

// portcullis-test-backend on an ephemeral port.
class Backend {
  public:
    Backend(const std::filesystem::path& dir, std::vector<std::string> extra_args, int port = 0);
    int port() const { return port_; }
    std::filesystem::path record_path() const { return record_; }
    pid_t pid() const { return process_->pid(); }
    void stop() { process_.reset(); }

  private:
    std::filesystem::path record_;
    std::unique_ptr<ChildProcess> process_;
    int port_ = 0;
};

struct ClientOptions {
    std::string sni = "localhost";
    const X509* cert = nullptr;      // leaf to present
    std::vector<const X509*> chain;  // intermediates sent after the leaf
    EVP_PKEY* key = nullptr;
    const X509* trusted_server_ca = nullptr;  // verify the server when set
    int min_version = 0;                      // TLS1_2_VERSION...; 0 = library default
    int max_version = 0;
    bool security_level_zero = false;  // needed to really offer TLS 1.0/1.1
    std::string sigalgs;
    std::string groups;  // key-exchange groups offered; empty = the library's default
    std::vector<std::string> alpn;
    std::string send = "ping\n";         // written after the handshake; echo expected
    bool half_close = false;             // shutdown(SHUT_WR) after sending
    SSL_SESSION* resume_from = nullptr;  // offer this session
    bool no_ticket = false;              // TLS 1.2: ask for session-ID resumption, not tickets
    std::string cipher_list;             // TLS 1.2 suites offered; empty = the library's default
    std::string ciphersuites;            // TLS 1.3 suites offered; empty = the library's default
    // Last say over the client context before it connects (e.g. a key-log callback).
    std::function<void(SSL_CTX*)> customize_context;
};

using UniqueSession = std::unique_ptr<SSL_SESSION, crypto::OpenSslDeleter<SSL_SESSION_free>>;

struct ClientResult {
    bool handshake_ok = false;  // client side completed the handshake
    bool exchanged = false;     // got the echo of `send` back: the server accepted us
    std::string received;
    std::string alert;  // fatal alert received, e.g. "certificate revoked"
    std::string error;
    int local_port = 0;
    std::string version, cipher, alpn;
    std::string group;  // negotiated key-exchange group, e.g. "X25519MLKEM768"
    std::string server_leaf_cn;
    int server_key_type = 0;      // EVP_PKEY_EC / EVP_PKEY_RSA of the server leaf
    bool eof_after_data = false;  // the connection ended cleanly after the echo
    bool resumed = false;         // SSL_session_reused on the client
    UniqueSession session;        // the session to resume next time (after the exchange)
};

ClientResult run_client(int port, const ClientOptions& options, const char* host = "127.0.0.1");

// A blocking client connection after its handshake, for tests that drive the
// TLS session by hand (renegotiation, backpressure, idle). Socket reads and
// writes time out after 5 s; `ok` is false when connect or the handshake failed.
struct TlsSession {
    crypto::UniqueSslCtx ctx;
    base::UniqueFd fd;
    crypto::UniqueSsl ssl;
    bool ok = false;
};
TlsSession open_tls_session(int port, const ClientOptions& options);

// Writes `text` on `session` and reads until as many bytes came back (the
// backend echoes): what came, shorter when the connection ended first.
std::string echo_on(TlsSession& session, const std::string& text);

// Milliseconds from `since` until the server ends `session` with
// close_notify; -1 when it ends any other way or the 5 s socket timeout
// passes first.
long ms_until_close_notify(TlsSession& session, std::chrono::steady_clock::time_point since);

// Connects with `options` until the server refuses it with an alert (each
// worker applies a reload on its own, so for a moment some may still let it
// in), for at most `within`: the refused attempt's result, or the last one.
ClientResult first_refusal(int port, const ClientOptions& options,
                           std::chrono::milliseconds within = std::chrono::seconds(5));

// A blocking HTTP/1.1 request on loopback (the admin listener); status 0 when
// the connection failed.
struct HttpResponse {
    int status = 0;
    std::string body;
};
HttpResponse http_request(int port, const std::string& method, const std::string& path);

// The value of one sample in Prometheus text format, e.g.
// metric_value(text, "portcullis_handshakes_total{listener=\"edge\",kind=\"full\",result=\"ok\"}").
// NaN when the sample is missing.
double metric_value(const std::string& metrics, const std::string& sample);

// A shell command (a real client such as curl) with stdout and stderr together.
struct Run {
    int status = -1;  // exit status; -1 when it did not exit normally
    std::string output;
};
Run run(const std::string& command);
bool have(const std::string& tool);  // on PATH

// /proc/PID/status as name -> value ("Uid" -> "0\t0\t0\t0", "CapEff" -> ...).
std::map<std::string, std::string> proc_status(pid_t pid);
// "ID\tID\tID\tID": real, effective, saved and filesystem IDs alike.
std::string four_ids(unsigned id);
// Every file in `dir` to root:`group` mode 0640 and `dir` to 0750: what a
// deployment does so that workers running as workers.user read them on reload.
void share_with_group(const std::filesystem::path& dir, gid_t group);

// The log line for a rejected client on `local_port` with `reason`.
std::string rejection_marker(int local_port, const std::string& reason);

}  // namespace portcullis::testing
