// The daemon's configuration: one TOML file parsed into value types. Every
// error names the file, line, column and key, and says what was expected, on
// one line (control characters escaped; tests/fuzz/config_fuzz checks it);
// unknown keys are errors (a typo must never silently weaken a bank's policy).
#pragma once

#include <sys/types.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/tls_policy.hpp"
#include "dataplane/dpdk/dpdk_settings.hpp"
#include "dataplane/keepalive_settings.hpp"
#include "dataplane/listener_settings.hpp"
#include "dataplane/log_limiter.hpp"
#include "hsm/hsm_settings.hpp"

namespace portcullis::mgmt {

// The unprivileged user and group the workers and the admin process switch to.
struct RunAs {
    std::string user;
    std::string group;
    uid_t uid = 0;
    gid_t gid = 0;
};

struct WorkerSettings {
    int count = 0;                 // 0 = one per online CPU
    int max_connections = 10000;   // per worker
    int drain_timeout_ms = 10000;  // on SIGTERM: how long established connections may finish
    // Ciphertext and plaintext queued in all of a worker's connections
    // together; beyond it, reads pause until some of it is sent.
    std::size_t buffer_budget_bytes = std::size_t{64} << 20;
    std::optional<RunAs> run_as;  // nullopt = keep the user the daemon was started as
};

struct LogSettings {
    std::string level = "info";  // trace|debug|info|warn|error|critical|off
    std::string access_log;      // "" = off, "-" = stderr, else a file appended to
    // Per worker, the token bucket of per-connection lines (rejections,
    // refusals, early closes): a flood of bad clients costs a bounded log.
    int connection_lines_per_second = dataplane::kDefaultLogLinesPerSecond;
    int connection_lines_burst = dataplane::kDefaultLogLinesBurst;
};

// Who may use the admin listener, by client certificate identity (the forms
// of a listener's allow-list). An empty list gives the role to nobody.
struct AdminRoles {
    crypto::AllowList scrape;     // GET /metrics, /healthz, /readyz
    crypto::AllowList operator_;  // every route, /status and POST /reload too
};

// The admin listener over mutual TLS: its own server certificate and its own
// client trust, apart from every traffic listener's.
struct AdminTlsSettings {
    std::string chain_file;  // PEM: leaf first, then intermediates
    std::string key_file;    // PEM private key
    std::string trust_file;  // PEM bundle of the CAs that issue admin clients
    std::vector<std::string> crl_files;
    crypto::CrlScope crl_scope = crypto::CrlScope::chain;
    int verify_depth = 4;
    AdminRoles roles;
};

struct AdminSettings {
    // /metrics, /healthz, /readyz, /status, POST /reload.
    std::optional<dataplane::SocketAddress> address =
        dataplane::SocketAddress::parse("127.0.0.1:9443");  // nullopt = no admin listener
    std::optional<AdminTlsSettings> tls;  // nullopt = plain HTTP, every route to anyone
    // Plain HTTP on an address other than loopback, which gives /reload to
    // whoever reaches it: refused unless this says so.
    bool insecure = false;
};

enum class TicketMode { stateless, stateful };

struct ResumptionSettings {
    std::string ticket_key_file;   // "" = keys generated in memory and rotated
    int ticket_rotation_s = 3600;  // the previous key still decrypts for one more period
    int session_lifetime_s = 7200;
    int session_cache_entries = 20480;  // TLS 1.2 session-ID cache shared by workers; 0 = off
    // stateless: TLS 1.3 tickets carry the session (any appliance with the key
    // file resumes it); stateful: they are session IDs into the cache above.
    TicketMode ticket_mode = TicketMode::stateless;
    int worker_session_cache_entries = 1024;  // decoded sessions per worker and listener
};

enum class DataplaneTransport { kernel, dpdk };

struct DataplaneSettings {
    DataplaneTransport transport = DataplaneTransport::kernel;
    dataplane::dpdk::DpdkSettings dpdk;  // with transport = dpdk
    dataplane::KeepaliveSettings keepalive;
};

// Where fetched CRLs and OCSP responses are kept (mgmt/crl_fetcher.hpp,
// mgmt/ocsp_staple_fetcher.hpp) and how long a fetch may take.
struct RevocationSettings {
    std::string cache_dir = "/var/lib/portcullis/crl";
    int fetch_timeout_ms = 5000;
    // How often each worker looks for established connections whose OCSP
    // answer (tls.ocsp) has passed its nextUpdate, and asks again.
    int ocsp_live_check_s = 5;
};

// A CRL a listener fetches over HTTP. Its last good copy is `cache_file`,
// which the listener's crl_files include whenever it exists.
struct CrlSource {
    std::size_t listener = 0;
    std::string url;         // http://host[:port]/path
    std::string cache_file;  // in revocation.cache_dir, named by the URL's SHA-256
    std::string trust_file;  // the listener's trust bundle: the CRL's signer is in it
    int refresh_s = 3600;    // at the latest; earlier when its nextUpdate comes first
};

// A server certificate whose OCSP response is fetched for stapling
// (listener[].tls.ocsp_stapling). The response is kept in cache_dir under a
// name made from the leaf itself (crypto/ocsp_response.hpp).
struct OcspStapleSource {
    std::size_t listener = 0;
    std::size_t certificate = 0;  // in the listener's tls.certificates
    std::string chain_file;       // leaf first, then its issuer
    std::string responder;        // http:// URL: ocsp_stapling_responder, or the leaf's AIA
    std::string cache_dir;        // revocation.cache_dir
    int refresh_s = 3600;         // at the latest; earlier when its nextUpdate comes first
};

struct Config {
    std::string source_file;
    std::string text;  // the TOML as read: reloads hand exactly this to the workers
    WorkerSettings workers;
    LogSettings log;
    AdminSettings admin;
    ResumptionSettings resumption;
    hsm::HsmSettings hsm;  // module "" = no HSM
    DataplaneSettings dataplane;
    std::vector<dataplane::ListenerSettings> listeners;  // at least one
    RevocationSettings revocation;
    std::vector<CrlSource> crl_sources;
    std::vector<OcspStapleSource> staple_sources;
};

class ConfigError : public std::runtime_error {
  public:
    ConfigError(std::string file, int line, int column, std::string key, std::string problem);
    const std::string& file() const { return file_; }
    int line() const { return line_; }
    int column() const { return column_; }
    const std::string& key() const { return key_; }  // e.g. "listener[0].tls.client_auth"
    const std::string& problem() const { return problem_; }

  private:
    std::string file_;
    int line_;
    int column_;
    std::string key_;
    std::string problem_;
};

// Relative paths inside the file are resolved against the file's directory.
// Referenced files (certificates, keys, CAs, CRLs) must exist and be readable.
Config load_config(const std::string& path);
Config parse_config(std::string_view toml_text, const std::string& source_name,
                    const std::string& base_directory);

// Every key the parser accepts, in dotted form with "[]" for arrays of tables
// ("listener[].tls.client_auth"); docs/configuration.md is checked against it.
std::vector<std::string> known_config_keys();

}  // namespace portcullis::mgmt
