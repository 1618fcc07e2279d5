// TOML text -> Config, checked top down: one reader per section of the file, built on
// mgmt/toml_reader.hpp (which names file, line, column and key in every error). The accepted
// keys live in one set of lists that both the readers and known_config_keys() use.
#include "mgmt/config.hpp"

#include <arpa/inet.h>
#include <grp.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <utility>

#include "crypto/distribution_points.hpp"
#include "crypto/ocsp_response.hpp"
#include "dataplane/worker_stats.hpp"
#include "hsm/pkcs11_uri.hpp"
#include "mgmt/fetch_stats.hpp"
#include "mgmt/toml_reader.hpp"

namespace portcullis::mgmt {
namespace {

namespace fs = std::filesystem;
using namespace std::string_view_literals;
using namespace toml_reader;

// The keys each table accepts. The reader rejects anything else, and
// known_config_keys() is built from these same lists so the two cannot drift.
constexpr std::array kTopLevelTables{"workers"sv, "log"sv,      "admin"sv,     "resumption"sv,
                                     "hsm"sv,     "listener"sv, "dataplane"sv, "revocation"sv};
constexpr std::array kRevocationKeys{"cache_dir"sv, "fetch_timeout_ms"sv, "ocsp_live_check_s"sv};
constexpr std::array kDataplaneKeys{"transport"sv};
constexpr std::array kDataplaneTables{"dpdk"sv, "keepalive"sv};
constexpr std::array kKeepaliveKeys{"idle_s"sv, "interval_s"sv, "probes"sv};
constexpr std::array kDpdkKeys{
    "eal_args"sv, "device"sv,      "address"sv,          "gateway"sv,         "mtu"sv,
    "mbufs"sv,    "syn_backlog"sv, "queue_per_worker"sv, "checksum_offload"sv};
constexpr std::array kAdminKeys{"address"sv, "insecure"sv};
constexpr std::array kAdminTables{"tls"sv};
constexpr std::array kAdminTlsKeys{"certificate"sv, "key"sv,       "trust_bundle"sv,
                                   "crl_files"sv,   "crl_scope"sv, "verify_depth"sv};
constexpr std::array kAdminRoleTables{"scrape"sv, "operator"sv};
constexpr std::array kHsmKeys{
    "module"sv,   "token"sv,         "failover_token"sv,       "pin_file"sv,         "pin_env"sv,
    "sessions"sv, "max_in_flight"sv, "operation_timeout_ms"sv, "retry_interval_ms"sv};
constexpr std::array kResumptionKeys{"ticket_key_file"sv,    "ticket_rotation_s"sv,
                                     "session_lifetime_s"sv, "session_cache_entries"sv,
                                     "ticket_mode"sv,        "worker_session_cache_entries"sv};
constexpr std::array kWorkersKeys{
    "count"sv, "max_connections"sv, "drain_timeout_ms"sv, "buffer_budget_bytes"sv, "user"sv,
    "group"sv};
constexpr std::array kLogKeys{"level"sv, "access_log"sv, "connection_lines_per_second"sv,
                              "connection_lines_burst"sv};
constexpr std::array kListenerKeys{
    "name"sv,        "address"sv, "backlog"sv, "handshake_timeout_ms"sv, "idle_timeout_ms"sv,
    "buffer_bytes"sv};
constexpr std::array kListenerTables{"tls"sv, "upstream"sv};
constexpr std::array kTlsKeys{"client_auth"sv,
                              "trust_bundle"sv,
                              "trust_dir"sv,
                              "crl_files"sv,
                              "crl_scope"sv,
                              "verify_depth"sv,
                              "require_client_eku"sv,
                              "min_version"sv,
                              "max_version"sv,
                              "ciphers"sv,
                              "ciphersuites"sv,
                              "groups"sv,
                              "alpn"sv,
                              "allow_psk_ke"sv,
                              "verified_chain_cache_entries"sv,
                              "crl_urls"sv,
                              "crl_distribution_points"sv,
                              "crl_refresh_s"sv,
                              "crl_stale"sv,
                              "ocsp_stapling"sv,
                              "ocsp_stapling_responder"sv,
                              "ocsp_stapling_refresh_s"sv,
                              "ocsp"sv,
                              "ocsp_responder"sv,
                              "ocsp_failure"sv,
                              "ocsp_nonce"sv};
constexpr std::array kTlsTables{"certificate"sv, "allow"sv};
constexpr std::array kCertificateKeys{"chain"sv, "key"sv, "server_names"sv};
constexpr std::array kAllowKeys{"subjects"sv, "san_uris"sv, "san_dns"sv, "sha256"sv};
constexpr std::array kUpstreamKeys{"backends"sv, "connect_timeout_ms"sv, "fail_threshold"sv,
                                   "retry_after_ms"sv, "proxy_protocol"sv};

constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
constexpr std::int64_t kMinBufferBytes = 4096;
constexpr std::int64_t kMaxBufferBytes = 16 * 1024 * 1024;
constexpr std::int64_t kMaxWorkers = 1024;
// Workers reserve their connection table up front; beyond this it is a typo, not a plan.
constexpr std::int64_t kMaxConnectionsPerWorker = 10'000'000;
// A million lines a second is every connection a worker can handshake, logged.
constexpr std::int64_t kMaxLogLinesPerSecond = 1'000'000;
// At least a few connections' worth of records in flight; at most a machine's RAM.
constexpr std::int64_t kMinBufferBudgetBytes = 1 << 20;
constexpr std::int64_t kMaxBufferBudgetBytes = std::int64_t{1} << 40;
constexpr std::int64_t kMaxVerifyDepth = 16;
constexpr std::int64_t kMaxTicketRotationSeconds = 7 * 86400;
// RFC 8446 4.6.1: a ticket lifetime above seven days is not allowed.
constexpr std::int64_t kMaxSessionLifetimeSeconds = 7 * 86400;
constexpr std::int64_t kMaxSessionCacheEntries = 16 * 1024 * 1024;
// Per worker and listener, each entry keeps a decoded session and its client
// certificate alive (a few KiB).
constexpr std::int64_t kMaxWorkerSessionCacheEntries = 1'000'000;
// Per listener and worker, about 250 bytes each (no certificate is kept: a hit
// reuses the handshake's own).
constexpr std::int64_t kMaxVerifiedChainCacheEntries = 1'000'000;
constexpr std::size_t kMaxListenerNameLength = 64;
constexpr std::size_t kMaxAlpnProtocolLength = 255;
constexpr std::string_view kPkcs11Scheme = "pkcs11:";
// docs/portcullis.example.toml promises this default; crypto::TlsPolicy's own default is empty.
// No ALPN unless asked for: Portcullis forwards bytes, so offering h2 to
// clients of an HTTP/1.1-only backend would break them.
const std::vector<std::string> kDefaultAlpn{};

constexpr std::array kClientAuthChoices{
    Choice<crypto::ClientAuth>{"require", crypto::ClientAuth::require},
    Choice<crypto::ClientAuth>{"optional", crypto::ClientAuth::optional},
    Choice<crypto::ClientAuth>{"none", crypto::ClientAuth::none},
};
constexpr std::array kCrlScopeChoices{
    Choice<crypto::CrlScope>{"leaf", crypto::CrlScope::leaf},
    Choice<crypto::CrlScope>{"chain", crypto::CrlScope::chain},
};
constexpr std::array kCrlStaleChoices{
    Choice<crypto::CrlStale>{"hard", crypto::CrlStale::hard},
    Choice<crypto::CrlStale>{"soft", crypto::CrlStale::soft},
};
constexpr std::array kOcspChoices{
    Choice<crypto::OcspCheck>{"off", crypto::OcspCheck::off},
    Choice<crypto::OcspCheck>{"leaf", crypto::OcspCheck::leaf},
    Choice<crypto::OcspCheck>{"chain", crypto::OcspCheck::chain},
};
constexpr std::array kOcspFailureChoices{
    Choice<crypto::OcspFailure>{"hard", crypto::OcspFailure::hard},
    Choice<crypto::OcspFailure>{"soft", crypto::OcspFailure::soft},
};
constexpr std::array kVersionChoices{
    Choice<crypto::TlsVersion>{"1.2", crypto::TlsVersion::tls12},
    Choice<crypto::TlsVersion>{"1.3", crypto::TlsVersion::tls13},
};
constexpr std::array kTransportChoices{
    Choice<DataplaneTransport>{"kernel", DataplaneTransport::kernel},
    Choice<DataplaneTransport>{"dpdk", DataplaneTransport::dpdk},
};
constexpr std::array kTicketModeChoices{
    Choice<TicketMode>{"stateless", TicketMode::stateless},
    Choice<TicketMode>{"stateful", TicketMode::stateful},
};
constexpr std::array kLogLevelChoices{
    Choice<std::string_view>{"trace", "trace"}, Choice<std::string_view>{"debug", "debug"},
    Choice<std::string_view>{"info", "info"},   Choice<std::string_view>{"warn", "warn"},
    Choice<std::string_view>{"error", "error"}, Choice<std::string_view>{"critical", "critical"},
    Choice<std::string_view>{"off", "off"},
};

// Two listeners collide when they would bind the same port on the same address, or when one
// of them is the wildcard of that family: with SO_REUSEPORT the kernel would accept both and
// silently split the traffic between two policies.
bool overlaps(const dataplane::SocketAddress& a, const dataplane::SocketAddress& b) {
    if (a.family() != b.family() || a.port() != b.port()) return false;
    return a.host() == b.host() || is_wildcard(a) || is_wildcard(b);
}

bool is_hex_digit(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// 64 hex digits, or 32 two-digit groups separated by ':' (as `openssl x509 -fingerprint` prints).
bool is_sha256_fingerprint(std::string_view text) {
    constexpr std::size_t kBytes = 32;
    if (text.size() == 2 * kBytes) return std::all_of(text.begin(), text.end(), is_hex_digit);
    if (text.size() != 3 * kBytes - 1) return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const bool separator_position = i % 3 == 2;
        if (separator_position ? text[i] != ':' : !is_hex_digit(text[i])) return false;
    }
    return true;
}

bool is_valid_listener_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxListenerNameLength) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    });
}

std::vector<std::string> values_of(const StringList& list) {
    std::vector<std::string> values;
    for (const auto& item : list.items) values.push_back(item.value);
    return values;
}

// ---- sections, top down -------------------------------------------------------------------

// A file holding a secret (private key, PIN, ticket keys): as existing_path,
// and not open to every user. Group access stays allowed, so that workers
// running as workers.user can read it through their group on a reload.
std::string private_file(const Section& section, const StringField& field) {
    std::string path = existing_path(section, field, PathKind::file);
    struct stat status{};
    if (::stat(path.c_str(), &status) == 0 && (status.st_mode & S_IRWXO) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
        section.source().fail(*field.node, field.key,
                              in_quotes(path) +
                                  " holds a secret and other users may open it (mode " + mode +
                                  "): chmod o-rwx, and give it to the workers' group " +
                                  "(chgrp) if they run as workers.user");
    }
    return path;
}

// workers.user and workers.group as IDs. A key left out means the
// "portcullis" system user where one exists, or no change of user.
std::optional<RunAs> read_run_as(const Section& section) {
    const auto user_field = section.string("user");
    std::string user = user_field ? user_field->value : std::string();
    if (!user_field && ::getpwnam("portcullis") != nullptr) user = "portcullis";
    const auto group_field = section.string("group");
    if (user.empty()) {
        if (group_field && !group_field->value.empty()) {
            section.source().fail(*group_field->node, group_field->key,
                                  "a group needs workers.user: with user \"\" the workers keep "
                                  "the user and groups they were started with");
        }
        return std::nullopt;
    }
    const passwd* account = ::getpwnam(user.c_str());
    if (account == nullptr) {
        section.source().fail(*user_field->node, user_field->key,
                              "no user " + in_quotes(user) +
                                  " on this system (getpwnam); create "
                                  "it (adduser --system --group " +
                                  user + ") or name another");
    }
    RunAs run_as{user, "", account->pw_uid, account->pw_gid};
    if (group_field && !group_field->value.empty()) {
        const group* found = ::getgrnam(group_field->value.c_str());
        if (found == nullptr) {
            section.source().fail(
                *group_field->node, group_field->key,
                "no group " + in_quotes(group_field->value) + " on this system (getgrnam)");
        }
        run_as.gid = found->gr_gid;
        run_as.group = group_field->value;
    } else if (const group* primary = ::getgrgid(account->pw_gid)) {
        run_as.group = primary->gr_name;
    }
    return run_as;
}

WorkerSettings read_workers(const Section& section) {
    section.reject_unknown_keys(kWorkersKeys);
    WorkerSettings workers;
    workers.count = section.integer_or("count", workers.count, 0, kMaxWorkers);
    workers.max_connections =
        section.integer_or("max_connections", workers.max_connections, 1, kMaxConnectionsPerWorker);
    workers.drain_timeout_ms =
        section.integer_or("drain_timeout_ms", workers.drain_timeout_ms, 0, kIntMax);
    workers.buffer_budget_bytes = static_cast<std::size_t>(
        section.integer("buffer_budget_bytes", kMinBufferBudgetBytes, kMaxBufferBudgetBytes)
            .value_or(static_cast<std::int64_t>(workers.buffer_budget_bytes)));
    workers.run_as = read_run_as(section);
    return workers;
}

LogSettings read_log(const Section& section) {
    section.reject_unknown_keys(kLogKeys);
    LogSettings log;
    log.level =
        std::string(section.choice_or("level", std::string_view(log.level), kLogLevelChoices));
    if (const auto access = section.string("access_log"); access && !access->value.empty()) {
        log.access_log = access->value == "-" ? "-" : writable_log_path(section, *access);
    }
    log.connection_lines_per_second = section.integer_or(
        "connection_lines_per_second", log.connection_lines_per_second, 1, kMaxLogLinesPerSecond);
    log.connection_lines_burst = section.integer_or(
        "connection_lines_burst", log.connection_lines_burst, 1, kMaxLogLinesPerSecond);
    return log;
}

hsm::HsmSettings read_hsm(const Section& section) {
    section.reject_unknown_keys(kHsmKeys);
    hsm::HsmSettings settings;
    const auto module = section.string("module");
    if (!module) section.fail_missing("module", "path of the PKCS#11 library");
    settings.module = existing_path(section, *module, PathKind::file);
    const auto token = section.string("token");
    if (!token) section.fail_missing("token", "label of the token holding the keys");
    require_non_empty(section, *token, "a token label");
    settings.token = token->value;
    settings.failover_token = section.string_or("failover_token", "");
    if (settings.failover_token == settings.token) {
        section.source().fail(*section.table().get("failover_token"),
                              section.key_of("failover_token"),
                              "the failover token must differ from the primary token");
    }
    // "" means not set, so the example file can show both keys.
    auto pin_file = section.string("pin_file");
    auto pin_env = section.string("pin_env");
    if (pin_file && pin_file->value.empty()) pin_file.reset();
    if (pin_env && pin_env->value.empty()) pin_env.reset();
    if (pin_file && pin_env) {
        section.source().fail(*pin_env->node, pin_env->key, "give pin_file or pin_env, not both");
    }
    if (!pin_file && !pin_env) {
        section.fail_missing("pin_file",
                             "a PIN file (or pin_env = \"VARIABLE\"); the PIN itself never goes in "
                             "this file");
    }
    if (pin_file) settings.pin_file = private_file(section, *pin_file);
    if (pin_env) settings.pin_env = pin_env->value;
    settings.sessions = section.integer_or("sessions", settings.sessions, 1, 1024);
    settings.max_in_flight =
        section.integer_or("max_in_flight", settings.max_in_flight, 1, 1'000'000);
    settings.operation_timeout_ms =
        section.integer_or("operation_timeout_ms", settings.operation_timeout_ms, 1, 600'000);
    settings.retry_interval_ms =
        section.integer_or("retry_interval_ms", settings.retry_interval_ms, 1, 600'000);
    return settings;
}

bool is_loopback(const dataplane::SocketAddress& address) {
    if (address.family() == AF_INET)
        return (ntohl(reinterpret_cast<const sockaddr_in*>(&address.storage)->sin_addr.s_addr) >>
                24) == 127;
    if (address.family() == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(
            &reinterpret_cast<const sockaddr_in6*>(&address.storage)->sin6_addr);
    return false;
}

crypto::AllowList read_allow_list(const Section& section);
AdminTlsSettings read_admin_tls(const Section& section);

AdminSettings read_admin(const Section& section) {
    section.reject_unknown_keys(kAdminKeys, kAdminTables);
    AdminSettings admin;
    const auto address = section.string("address");
    if (address) {
        admin.address = address->value.empty() ? std::nullopt
                                               : std::optional(address_of(section, *address, true));
    }
    admin.insecure = section.boolean_or("insecure", admin.insecure);
    if (const auto tls = section.subtable("tls")) admin.tls = read_admin_tls(*tls);
    if (admin.address && !admin.tls && !admin.insecure && !is_loopback(*admin.address)) {
        const std::string problem =
            "the admin listener serves POST /reload and /status; on an address other than "
            "loopback it needs [admin.tls] (mutual TLS with scrape and operator roles), or "
            "insecure = true to serve plain HTTP to anyone who reaches " +
            admin.address->to_string();
        if (address) section.source().fail(*address->node, address->key, problem);
        section.fail_missing("address", problem);
    }
    return admin;
}

dataplane::dpdk::DpdkSettings read_dpdk(const Section& section) {
    section.reject_unknown_keys(kDpdkKeys);
    dataplane::dpdk::DpdkSettings dpdk;
    if (const auto args = section.string_list("eal_args"))
        for (const auto& arg : args->items) dpdk.eal_args.push_back(arg.value);
    const auto device = section.string("device");
    if (!device) {
        section.fail_missing("device",
                             "a PCI address such as \"0000:03:00.0\" or a virtual device such as "
                             "\"net_af_packet0,iface=veth0\"");
    }
    require_non_empty(section, *device, "a PCI address or a virtual device");
    dpdk.device = device->value;
    const auto address = section.string("address");
    if (!address)
        section.fail_missing("address", "the port's IPv4 address with prefix, \"10.0.0.1/24\"");
    const auto slash = address->value.find('/');
    int prefix = -1;
    if (slash != std::string::npos) {
        const auto digits = address->value.substr(slash + 1);
        const auto [end, error] =
            std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (error != std::errc{} || end != digits.data() + digits.size()) prefix = -1;
    }
    if (prefix < 1 || prefix > 32) {
        section.source().fail(
            *address->node, address->key,
            "expected \"IPv4/prefix\" with a prefix in 1..32, got " + in_quotes(address->value));
    }
    dpdk.address =
        ipv4_of(section, StringField{address->value.substr(0, slash), address->node, address->key});
    dpdk.netmask = prefix == 32 ? 0xffffffffu : ~((1u << (32 - prefix)) - 1);
    if (const auto gateway = section.string("gateway"); gateway && !gateway->value.empty()) {
        dpdk.gateway = ipv4_of(section, *gateway);
        if ((dpdk.gateway & dpdk.netmask) != (dpdk.address & dpdk.netmask)) {
            section.source().fail(*gateway->node, gateway->key,
                                  "the gateway must be inside " + address->value);
        }
    }
    dpdk.mtu = static_cast<std::uint16_t>(section.integer_or("mtu", dpdk.mtu, 576, 9000));
    dpdk.mbufs = static_cast<unsigned>(
        section.integer_or("mbufs", static_cast<int>(dpdk.mbufs), 1023, 1 << 20));
    dpdk.syn_backlog = static_cast<std::size_t>(
        section.integer_or("syn_backlog", static_cast<int>(dpdk.syn_backlog), 1, 1 << 20));
    dpdk.checksum_offload = section.boolean_or("checksum_offload", dpdk.checksum_offload);
    if (section.table().get("queue_per_worker") != nullptr)
        dpdk.queue_per_worker = section.boolean_or("queue_per_worker", false);
    if (dpdk.queue_per_worker.value_or(false) &&
        (dpdk.device.starts_with("net_af_packet") || dpdk.device.starts_with("eth_af_packet"))) {
        section.source().fail(*section.table().get("queue_per_worker"),
                              section.key_of("queue_per_worker"),
                              "net_af_packet cannot serve DPDK secondary processes (they get no "
                              "RX/TX); use queue_per_worker = false");
    }
    if (dpdk.queue_per_worker.value_or(false)) {
        // Secondary processes map the primary's memory: hugepage files and a
        // shared runtime directory.
        if (const auto args = section.string_list("eal_args"))
            for (const auto& arg : args->items)
                if (arg.value == "--no-huge" || arg.value == "--no-shconf" ||
                    arg.value == "--in-memory")
                    section.source().fail(*arg.node, args->key,
                                          "queue_per_worker needs hugepages and a shared "
                                          "DPDK runtime; remove " +
                                              in_quotes(arg.value));
    }
    return dpdk;
}

dataplane::KeepaliveSettings read_keepalive(const Section& section) {
    section.reject_unknown_keys(kKeepaliveKeys);
    dataplane::KeepaliveSettings keepalive;
    // Linux refuses TCP_KEEPIDLE above 32767 s; both transports take the same range.
    keepalive.idle_s = section.integer_or("idle_s", keepalive.idle_s, 0, 32767);
    keepalive.interval_s = section.integer_or("interval_s", keepalive.interval_s, 1, 3600);
    keepalive.probes = section.integer_or("probes", keepalive.probes, 1, 127);
    return keepalive;
}

DataplaneSettings read_dataplane(const Section& section) {
    section.reject_unknown_keys(kDataplaneKeys, kDataplaneTables);
    DataplaneSettings dataplane;
    dataplane.transport = section.choice_or("transport", dataplane.transport, kTransportChoices);
    // Checked even on the kernel transport: switching over must not reveal typos.
    const auto dpdk = section.subtable("dpdk");
    if (dpdk) dataplane.dpdk = read_dpdk(*dpdk);
    if (const auto keepalive = section.subtable("keepalive"))
        dataplane.keepalive = read_keepalive(*keepalive);
    if (dataplane.transport == DataplaneTransport::dpdk && !dpdk)
        section.fail_missing("dpdk", "a [dataplane.dpdk] table for transport \"dpdk\"");
    return dataplane;
}

// On the DPDK transport the userspace stack owns one IPv4 address: listeners
// bind to it (or to *), backends are IPv4.
void check_dpdk_addresses(const Section& listener_section,
                          const dataplane::ListenerSettings& listener,
                          const dataplane::dpdk::DpdkSettings& dpdk) {
    const auto fail = [&](const std::string& key, const std::string& problem) {
        const toml::node* node = listener_section.table().get(key);
        if (node != nullptr)
            listener_section.source().fail(*node, listener_section.key_of(key), problem);
        listener_section.source().fail(listener_section.table_position(),
                                       listener_section.key_of(key), problem);
    };
    const auto& address = listener.address;
    const auto* sin = reinterpret_cast<const sockaddr_in*>(address.sa());
    if (address.family() != AF_INET ||
        (sin->sin_addr.s_addr != 0 && ntohl(sin->sin_addr.s_addr) != dpdk.address)) {
        in_addr port_address{htonl(dpdk.address)};
        char text[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &port_address, text, sizeof text);
        fail("address", "on the dpdk transport a listener binds to the port's address " +
                            std::string(text) + " (or *), got " + address.to_string());
    }
    for (const auto& backend : listener.upstream.backends) {
        if (backend.family() != AF_INET) {
            const auto upstream = listener_section.subtable("upstream");
            upstream->source().fail(
                *upstream->table().get("backends"), upstream->key_of("backends"),
                "the dpdk transport reaches IPv4 backends only, got " + backend.to_string());
        }
    }
}

ResumptionSettings read_resumption(const Section& section) {
    section.reject_unknown_keys(kResumptionKeys);
    ResumptionSettings resumption;
    if (const auto file = section.string("ticket_key_file"); file && !file->value.empty())
        resumption.ticket_key_file = private_file(section, *file);
    resumption.ticket_rotation_s = section.integer_or(
        "ticket_rotation_s", resumption.ticket_rotation_s, 1, kMaxTicketRotationSeconds);
    resumption.session_lifetime_s = section.integer_or(
        "session_lifetime_s", resumption.session_lifetime_s, 1, kMaxSessionLifetimeSeconds);
    resumption.session_cache_entries = section.integer_or(
        "session_cache_entries", resumption.session_cache_entries, 0, kMaxSessionCacheEntries);
    resumption.ticket_mode =
        section.choice_or("ticket_mode", resumption.ticket_mode, kTicketModeChoices);
    if (resumption.ticket_mode == TicketMode::stateful && resumption.session_cache_entries == 0) {
        section.source().fail(*section.table().get("ticket_mode"), section.key_of("ticket_mode"),
                              "stateful tickets are looked up in the session cache, which "
                              "session_cache_entries = 0 turns off");
    }
    resumption.worker_session_cache_entries =
        section.integer_or("worker_session_cache_entries", resumption.worker_session_cache_entries,
                           0, kMaxWorkerSessionCacheEntries);
    return resumption;
}

crypto::CertificateSpec read_certificate(const Section& section) {
    section.reject_unknown_keys(kCertificateKeys);
    crypto::CertificateSpec certificate;
    const auto chain = section.string("chain");
    if (!chain) section.fail_missing("chain", "PEM file: leaf first, then intermediates");
    certificate.chain_file = existing_path(section, *chain, PathKind::file);

    const auto key = section.string("key");
    if (!key) section.fail_missing("key", "PEM file of the private key");
    require_non_empty(section, *key, "a key file path or a pkcs11: URI");
    if (key->value.starts_with(kPkcs11Scheme)) {
        try {
            hsm::Pkcs11Uri::parse(key->value);
        } catch (const hsm::Pkcs11UriError& e) {
            section.source().fail(*key->node, key->key, e.what());
        }
        certificate.key = key->value;
    } else {
        certificate.key = private_file(section, *key);
    }

    if (const auto names = section.string_list("server_names")) {
        for (const auto& name : names->items) require_non_empty(section, name, "a DNS name");
        certificate.server_names = values_of(*names);
    }
    return certificate;
}

crypto::AllowList read_allow_list(const Section& section) {
    section.reject_unknown_keys(kAllowKeys);
    crypto::AllowList allow;
    const auto patterns = [&section](std::string_view name) {
        std::vector<std::string> values;
        if (const auto list = section.string_list(name)) {
            for (const auto& item : list->items) require_non_empty(section, item, "a pattern");
            values = values_of(*list);
        }
        return values;
    };
    allow.subject_patterns = patterns("subjects");
    allow.san_uris = patterns("san_uris");
    allow.san_dns = patterns("san_dns");
    if (const auto fingerprints = section.string_list("sha256")) {
        for (const auto& item : fingerprints->items) {
            if (!is_sha256_fingerprint(item.value)) {
                section.source().fail(*item.node, item.key,
                                      "expected a SHA-256 fingerprint: 64 hex digits, optionally "
                                      "as 32 pairs separated by ':', got " +
                                          in_quotes(item.value));
            }
        }
        allow.sha256_fingerprints = values_of(*fingerprints);
    }
    return allow;
}

AdminTlsSettings read_admin_tls(const Section& section) {
    section.reject_unknown_keys(kAdminTlsKeys, kAdminRoleTables);
    AdminTlsSettings tls;
    const auto required_file = [&section](std::string_view name, std::string_view hint) {
        const auto field = section.string(name);
        if (!field) section.fail_missing(name, hint);
        require_non_empty(section, *field, hint);
        return existing_path(section, *field, PathKind::file);
    };
    tls.chain_file =
        required_file("certificate", "PEM file of the admin server's certificate chain");
    const auto key = section.string("key");
    if (!key) section.fail_missing("key", "PEM file of the admin server's private key");
    tls.key_file = private_file(section, *key);
    tls.trust_file =
        required_file("trust_bundle", "PEM bundle of the CAs that issue admin clients");
    if (const auto crls = section.string_list("crl_files")) {
        for (const auto& crl : crls->items)
            tls.crl_files.push_back(existing_path(section, crl, PathKind::file));
    }
    tls.crl_scope = section.choice_or("crl_scope", tls.crl_scope, kCrlScopeChoices);
    tls.verify_depth = section.integer_or("verify_depth", tls.verify_depth, 0, kMaxVerifyDepth);
    if (const auto scrape = section.subtable("scrape")) tls.roles.scrape = read_allow_list(*scrape);
    if (const auto ops = section.subtable("operator")) tls.roles.operator_ = read_allow_list(*ops);
    if (tls.roles.scrape.empty() && tls.roles.operator_.empty()) {
        section.fail_missing("operator",
                             "[admin.tls.scrape] or [admin.tls.operator] naming at least one "
                             "client identity (subjects, san_uris, san_dns or sha256); with "
                             "neither, no client could use the admin listener");
    }
    return tls;
}

crypto::TlsPolicy read_tls(const Section& section) {
    section.reject_unknown_keys(kTlsKeys, kTlsTables);
    crypto::TlsPolicy tls;
    tls.client_auth = section.choice_or("client_auth", tls.client_auth, kClientAuthChoices);

    // "" means "not set", so the example file can list both keys with one of them empty.
    if (const auto bundle = section.string("trust_bundle"); bundle && !bundle->value.empty()) {
        tls.trust_file = existing_path(section, *bundle, PathKind::file);
    }
    if (const auto dir = section.string("trust_dir"); dir && !dir->value.empty()) {
        tls.trust_dir = existing_path(section, *dir, PathKind::directory);
    }
    if (const auto crls = section.string_list("crl_files")) {
        for (const auto& crl : crls->items) {
            tls.crl_files.push_back(existing_path(section, crl, PathKind::file));
        }
    }
    if (tls.client_auth == crypto::ClientAuth::none && !tls.crl_files.empty()) {
        const auto& crls = *section.table().get("crl_files");
        section.source().fail(crls, section.key_of("crl_files"),
                              "CRLs apply to client certificates, which client_auth \"none\" never "
                              "asks for; set client_auth to \"require\" or \"optional\"");
    }
    tls.crl_scope = section.choice_or("crl_scope", tls.crl_scope, kCrlScopeChoices);
    tls.crl_stale = section.choice_or("crl_stale", tls.crl_stale, kCrlStaleChoices);
    tls.ocsp = section.choice_or("ocsp", tls.ocsp, kOcspChoices);
    tls.ocsp_failure = section.choice_or("ocsp_failure", tls.ocsp_failure, kOcspFailureChoices);
    tls.ocsp_nonce = section.boolean_or("ocsp_nonce", tls.ocsp_nonce);
    if (const auto responder = section.string("ocsp_responder");
        responder && !responder->value.empty()) {
        if (!responder->value.starts_with("http://") || responder->value.size() <= 7) {
            section.source().fail(*responder->node, responder->key,
                                  "expected an http:// URL (http://host[:port][/path]), got " +
                                      in_quotes(responder->value));
        }
        tls.ocsp_responder = responder->value;
    }
    if (tls.client_auth == crypto::ClientAuth::none && tls.ocsp != crypto::OcspCheck::off) {
        section.source().fail(*section.table().get("ocsp"), section.key_of("ocsp"),
                              "OCSP checks apply to client certificates, which client_auth "
                              "\"none\" never asks for; set client_auth to \"require\" or "
                              "\"optional\"");
    }
    tls.verify_depth = section.integer_or("verify_depth", tls.verify_depth, 0, kMaxVerifyDepth);
    tls.require_client_auth_eku =
        section.boolean_or("require_client_eku", tls.require_client_auth_eku);
    tls.allow_psk_ke = section.boolean_or("allow_psk_ke", tls.allow_psk_ke);
    tls.verified_chain_cache_entries = static_cast<std::size_t>(
        section.integer("verified_chain_cache_entries", 0, kMaxVerifiedChainCacheEntries)
            .value_or(static_cast<std::int64_t>(tls.verified_chain_cache_entries)));

    tls.min_version = section.choice_or("min_version", tls.min_version, kVersionChoices);
    tls.max_version = section.choice_or("max_version", tls.max_version, kVersionChoices);
    if (tls.min_version > tls.max_version) {
        // Only "1.3" > "1.2" can get here, so both keys were written explicitly.
        section.source().fail(*section.table().get("max_version"), section.key_of("max_version"),
                              "max_version \"1.2\" is lower than min_version \"1.3\"");
    }

    tls.ciphers = section.string_or("ciphers", tls.ciphers);
    tls.ciphersuites = section.string_or("ciphersuites", tls.ciphersuites);
    tls.groups = section.string_or("groups", tls.groups);

    tls.alpn = kDefaultAlpn;
    if (const auto alpn = section.string_list("alpn")) {
        for (const auto& protocol : alpn->items) {
            if (protocol.value.empty() || protocol.value.size() > kMaxAlpnProtocolLength) {
                section.source().fail(*protocol.node, protocol.key,
                                      "expected an ALPN protocol name of 1..255 bytes, got " +
                                          in_quotes(protocol.value));
            }
        }
        tls.alpn = values_of(*alpn);
    }

    for (const auto& certificate : section.table_array("certificate")) {
        tls.certificates.push_back(read_certificate(certificate));
    }
    if (tls.certificates.empty()) {
        section.fail_missing("certificate",
                             "at least one [[listener.tls.certificate]] with chain and key");
    }

    if (const auto allow = section.subtable("allow")) {
        tls.allow = read_allow_list(*allow);
        if (tls.client_auth == crypto::ClientAuth::none && !tls.allow.empty()) {
            section.source().fail(allow->table_position(), allow->path(),
                                  "an allow-list needs client_auth \"require\" or \"optional\"; "
                                  "with \"none\" no client certificate is asked for");
        }
    }

    if (tls.client_auth != crypto::ClientAuth::none && tls.trust_file.empty() &&
        tls.trust_dir.empty()) {
        const std::string problem =
            "client_auth \"" +
            std::string(tls.client_auth == crypto::ClientAuth::require ? "require" : "optional") +
            "\" needs trust_bundle or trust_dir (the CAs that issue client certificates)";
        if (const toml::node* node = section.table().get("client_auth")) {
            section.source().fail(*node, section.key_of("client_auth"), problem);
        }
        section.source().fail(section.table_position(), section.key_of("client_auth"), problem);
    }
    return tls;
}

dataplane::UpstreamSettings read_upstream(const Section& section) {
    section.reject_unknown_keys(kUpstreamKeys);
    dataplane::UpstreamSettings upstream;
    const auto backends = section.string_list("backends");
    if (!backends) section.fail_missing("backends", "at least one \"address:port\"");
    if (backends->items.empty()) {
        section.source().fail(*backends->node, backends->key,
                              "expected at least one backend address, got []");
    }
    if (backends->items.size() > dataplane::max_backends_per_listener) {
        section.source().fail(*backends->node, backends->key,
                              "at most " + std::to_string(dataplane::max_backends_per_listener) +
                                  " backends per listener (per-backend metrics are fixed slots)");
    }
    for (const auto& backend : backends->items) {
        upstream.backends.push_back(address_of(section, backend, false));
    }
    upstream.connect_timeout_ms =
        section.integer_or("connect_timeout_ms", upstream.connect_timeout_ms, 1, kIntMax);
    upstream.fail_threshold =
        section.integer_or("fail_threshold", upstream.fail_threshold, 1, kIntMax);
    upstream.retry_after_ms =
        section.integer_or("retry_after_ms", upstream.retry_after_ms, 1, kIntMax);
    upstream.proxy_protocol = section.boolean_or("proxy_protocol", upstream.proxy_protocol);
    return upstream;
}

dataplane::ListenerSettings read_listener(const Section& section, std::size_t index) {
    section.reject_unknown_keys(kListenerKeys, kListenerTables);
    dataplane::ListenerSettings listener;
    listener.name = "listener" + std::to_string(index);
    if (const auto name = section.string("name")) {
        if (!is_valid_listener_name(name->value)) {
            section.source().fail(
                *name->node, name->key,
                "expected 1..64 letters, digits, '.', '_' or '-', got " + in_quotes(name->value));
        }
        listener.name = name->value;
    }
    const auto address = section.string("address");
    if (!address) section.fail_missing("address", "e.g. \"0.0.0.0:8443\"");
    listener.address = address_of(section, *address, true);

    listener.backlog = section.integer_or("backlog", listener.backlog, 1, kIntMax);
    listener.handshake_timeout_ms =
        section.integer_or("handshake_timeout_ms", listener.handshake_timeout_ms, 1, kIntMax);
    listener.idle_timeout_ms =
        section.integer_or("idle_timeout_ms", listener.idle_timeout_ms, 1, kIntMax);
    listener.buffer_bytes =
        static_cast<std::size_t>(section.integer("buffer_bytes", kMinBufferBytes, kMaxBufferBytes)
                                     .value_or(static_cast<std::int64_t>(listener.buffer_bytes)));

    const auto tls = section.subtable("tls");
    if (!tls) {
        section.source().fail(section.table_position(), section.key_of("tls") + ".certificate",
                              "missing required key (at least one [[listener.tls.certificate]] "
                              "with chain and key)");
    }
    listener.tls = read_tls(*tls);

    const auto upstream = section.subtable("upstream");
    if (!upstream) {
        section.source().fail(section.table_position(), section.key_of("upstream") + ".backends",
                              "missing required key (at least one \"address:port\")");
    }
    listener.upstream = read_upstream(*upstream);
    return listener;
}

// Checked after each listener is read so the error points at the second of the two.
void check_unique(const Section& section, const dataplane::ListenerSettings& listener,
                  std::span<const dataplane::ListenerSettings> earlier) {
    for (std::size_t i = 0; i < earlier.size(); ++i) {
        const auto& other = earlier[i];
        const std::string other_ref =
            "listener[" + std::to_string(i) + "] (" + in_quotes(other.name) + ")";
        if (other.name == listener.name) {
            if (const toml::node* node = section.table().get("name")) {
                section.source().fail(*node, section.key_of("name"),
                                      "duplicate listener name " + in_quotes(listener.name) +
                                          ", already used by " + other_ref);
            }
            section.source().fail(section.table_position(), section.key_of("name"),
                                  "default name " + in_quotes(listener.name) +
                                      " is already used by " + other_ref + "; set a unique name");
        }
        if (overlaps(other.address, listener.address)) {
            section.source().fail(*section.table().get("address"), section.key_of("address"),
                                  "address " + listener.address.to_string() + " overlaps " +
                                      other.address.to_string() + " of " + other_ref);
        }
    }
}

RevocationSettings read_revocation(const Section& section) {
    section.reject_unknown_keys(kRevocationKeys);
    RevocationSettings revocation;
    if (const auto dir = section.string("cache_dir")) {
        require_non_empty(section, *dir, "a directory path");
        const fs::path written(dir->value);
        revocation.cache_dir =
            (written.is_absolute() ? written : section.source().base_directory() / written)
                .lexically_normal()
                .string();
        std::error_code error;
        if (fs::exists(revocation.cache_dir, error) && !fs::is_directory(revocation.cache_dir)) {
            section.source().fail(*dir->node, dir->key,
                                  in_quotes(revocation.cache_dir) + " is not a directory");
        }
    }
    revocation.fetch_timeout_ms =
        section.integer_or("fetch_timeout_ms", revocation.fetch_timeout_ms, 100, 60000);
    revocation.ocsp_live_check_s =
        section.integer_or("ocsp_live_check_s", revocation.ocsp_live_check_s, 1, 3600);
    return revocation;
}

std::string sha256_hex(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
        hex += digits[digest[i] >> 4];
        hex += digits[digest[i] & 0xf];
    }
    return hex;
}

// listener[i].tls.crl_urls: each URL's last good CRL (if any yet) joins the
// listener's crl_files, and the supervisor fetches it (crl_fetcher.hpp).
void read_crl_sources(const Section& listener_section, std::size_t index,
                      dataplane::ListenerSettings& listener, Config& config) {
    const auto tls = listener_section.subtable("tls");
    if (!tls) return;
    auto urls = tls->string_list("crl_urls");
    const int refresh_s = tls->integer_or("crl_refresh_s", 3600, 1, 7 * 86400);
    // The trust bundle's CAs name where their issuers' CRLs are published:
    // each http:// point joins crl_urls, reported against this key.
    if (tls->boolean_or("crl_distribution_points", false)) {
        const toml::node& enabled = *tls->table().get("crl_distribution_points");
        const std::string key = tls->key_of("crl_distribution_points");
        if (listener.tls.trust_file.empty())
            tls->source().fail(enabled, key,
                               "distribution points are read from trust_bundle, which is not set");
        if (!urls) urls.emplace();
        if (urls->node == nullptr) {
            urls->node = &enabled;
            urls->key = key;
        }
        for (const auto& ca : crypto::read_pem_certificates(listener.tls.trust_file)) {
            for (auto& point : crypto::http_crl_distribution_points(ca.get())) {
                const bool listed =
                    std::any_of(urls->items.begin(), urls->items.end(),
                                [&](const auto& item) { return item.value == point; });
                if (!listed) urls->items.push_back({std::move(point), &enabled, key});
            }
        }
    }
    if (!urls) return;
    if (listener.tls.client_auth == crypto::ClientAuth::none && !urls->items.empty()) {
        tls->source().fail(*urls->node, urls->key,
                           "CRLs apply to client certificates, which client_auth \"none\" never "
                           "asks for");
    }
    if (!urls->items.empty() && listener.tls.trust_file.empty()) {
        tls->source().fail(*urls->node, urls->key,
                           "a fetched CRL is checked against trust_bundle, which is not set");
    }
    for (const auto& url : urls->items) {
        if (config.crl_sources.size() >= max_crl_sources) {
            tls->source().fail(*url.node, url.key,
                               "at most " + std::to_string(max_crl_sources) +
                                   " crl_urls in all (their counters are fixed slots)");
        }
        if (!url.value.starts_with("http://") || url.value.size() <= 7 ||
            url.value.find('/', 7) == std::string::npos) {
            tls->source().fail(*url.node, url.key,
                               "expected an http:// URL with a path (http://host[:port]/path), "
                               "got " +
                                   in_quotes(url.value));
        }
        CrlSource source;
        source.listener = index;
        source.url = url.value;
        source.cache_file = (fs::path(config.revocation.cache_dir) /
                             ("crl-" + sha256_hex(url.value).substr(0, 32) + ".pem"))
                                .string();
        source.trust_file = listener.tls.trust_file;
        source.refresh_s = refresh_s;
        std::error_code error;
        if (fs::is_regular_file(source.cache_file, error))
            listener.tls.crl_files.push_back(source.cache_file);
        config.crl_sources.push_back(std::move(source));
    }
}

// listener[i].tls.ocsp_stapling: every certificate of the listener gets its
// OCSP response fetched (ocsp_staple_fetcher.hpp) and stapled by the workers.
// Checked here, so that a certificate that could never be stapled is a
// configuration error rather than a silent absence.
void read_staple_sources(const Section& listener_section, std::size_t index,
                         dataplane::ListenerSettings& listener, Config& config) {
    const auto tls = listener_section.subtable("tls");
    if (!tls || !tls->boolean_or("ocsp_stapling", false)) return;
    const toml::node& enabled = *tls->table().get("ocsp_stapling");
    const std::string key = tls->key_of("ocsp_stapling");
    const auto responder = tls->string("ocsp_stapling_responder");
    if (responder && (!responder->value.starts_with("http://") || responder->value.size() <= 7)) {
        tls->source().fail(*responder->node, responder->key,
                           "expected an http:// URL (http://host[:port][/path]), got " +
                               in_quotes(responder->value));
    }
    const int refresh_s = tls->integer_or("ocsp_stapling_refresh_s", 3600, 1, 7 * 86400);
    for (std::size_t c = 0; c < listener.tls.certificates.size(); ++c) {
        const auto& chain_file = listener.tls.certificates[c].chain_file;
        if (config.staple_sources.size() >= max_staple_sources) {
            tls->source().fail(enabled, key,
                               "at most " + std::to_string(max_staple_sources) +
                                   " stapled certificates in all (their counters are fixed slots)");
        }
        const auto chain = crypto::read_pem_certificates(chain_file);
        if (chain.size() < 2) {
            tls->source().fail(enabled, key,
                               "stapling needs the issuer of the certificate, and " + chain_file +
                                   " holds no certificate after the leaf");
        }
        OcspStapleSource source;
        source.listener = index;
        source.certificate = c;
        source.chain_file = chain_file;
        source.responder =
            responder ? responder->value : crypto::ocsp_responder_of(chain.front().get());
        if (source.responder.empty()) {
            tls->source().fail(enabled, key,
                               "the certificate in " + chain_file +
                                   " names no OCSP responder (Authority Information Access); "
                                   "set ocsp_stapling_responder");
        }
        if (!source.responder.starts_with("http://")) {
            tls->source().fail(enabled, key,
                               "the certificate in " + chain_file + " names the OCSP responder " +
                                   in_quotes(source.responder) +
                                   ", which is not http://; set ocsp_stapling_responder");
        }
        source.cache_dir = config.revocation.cache_dir;
        source.refresh_s = refresh_s;
        config.staple_sources.push_back(std::move(source));
    }
    listener.tls.ocsp_staple_dir = config.revocation.cache_dir;
}

Config read_config(const toml::table& root, const Source& source) {
    const Section top(root, "", source);
    top.reject_unknown_keys({}, kTopLevelTables);
    Config config;
    if (const auto workers = top.subtable("workers")) config.workers = read_workers(*workers);
    if (const auto log = top.subtable("log")) config.log = read_log(*log);
    if (const auto admin = top.subtable("admin")) config.admin = read_admin(*admin);
    if (const auto resumption = top.subtable("resumption"))
        config.resumption = read_resumption(*resumption);
    if (const auto hsm = top.subtable("hsm")) config.hsm = read_hsm(*hsm);
    if (const auto dataplane = top.subtable("dataplane"))
        config.dataplane = read_dataplane(*dataplane);
    if (const auto revocation = top.subtable("revocation"))
        config.revocation = read_revocation(*revocation);
    const bool dpdk = config.dataplane.transport == DataplaneTransport::dpdk;
    if (dpdk && config.dataplane.dpdk.is_pci() && config.workers.count == 0)
        config.workers.count = 1;
    if (dpdk && config.dataplane.dpdk.is_pci() && !config.dataplane.dpdk.queues_per_worker() &&
        config.workers.count != 1) {
        // Without a queue each, workers share a port only through a virtual
        // device that hands each of them every frame.
        const auto workers = top.subtable("workers");
        const auto& at = workers ? *workers : top;
        const toml::node* count = workers ? workers->table().get("count") : nullptr;
        const std::string problem =
            "a PCI device on the dpdk transport is shared by workers only with "
            "queue_per_worker = true; set that or count = 1";
        if (count != nullptr) at.source().fail(*count, "workers.count", problem);
        at.source().fail(at.table_position(), "workers.count", problem);
    }

    const auto listeners = top.table_array("listener");
    if (listeners.empty()) {
        top.fail_missing("listener", "at least one [[listener]] table");
    }
    if (listeners.size() > dataplane::max_listeners) {
        listeners[dataplane::max_listeners].source().fail(
            listeners[dataplane::max_listeners].table_position(), "listener",
            "at most " + std::to_string(dataplane::max_listeners) +
                " listeners (per-listener metrics are fixed slots)");
    }
    for (std::size_t i = 0; i < listeners.size(); ++i) {
        auto listener = read_listener(listeners[i], i);
        listener.tls.session_lifetime_s = config.resumption.session_lifetime_s;
        for (std::size_t c = 0; c < listener.tls.certificates.size(); ++c) {
            if (listener.tls.certificates[c].key.starts_with(kPkcs11Scheme) &&
                !config.hsm.enabled()) {
                listeners[i].source().fail(
                    listeners[i].table_position(),
                    "listener[" + std::to_string(i) + "].tls.certificate[" + std::to_string(c) +
                        "].key",
                    "a pkcs11: key needs an [hsm] section (module, token, pin_file or pin_env)");
            }
        }
        read_crl_sources(listeners[i], i, listener, config);
        read_staple_sources(listeners[i], i, listener, config);
        check_unique(listeners[i], listener, config.listeners);
        if (dpdk) check_dpdk_addresses(listeners[i], listener, config.dataplane.dpdk);
        config.listeners.push_back(std::move(listener));
    }
    return config;
}

// Resolved paths are absolute so that nothing depends on the daemon's working directory later.
fs::path absolute_directory(const std::string& directory) {
    std::error_code error;
    const fs::path absolute =
        directory.empty() ? fs::current_path(error) : fs::absolute(directory, error);
    if (error) return directory;
    fs::path normal = absolute.lexically_normal();
    // "/etc/portcullis/." normalises to "/etc/portcullis/"; messages read better without the slash.
    if (!normal.has_filename() && normal.has_relative_path()) normal = normal.parent_path();
    return normal;
}

void append_keys(std::vector<std::string>& keys, std::string_view prefix,
                 std::span<const std::string_view> names) {
    for (const auto name : names) keys.push_back(std::string(prefix) + std::string(name));
}

}  // namespace

Config load_config(const std::string& path) {
    std::error_code error;
    if (fs::is_directory(path, error)) {
        throw ConfigError(path, 0, 0, "", "cannot read configuration file: is a directory");
    }
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw ConfigError(path, 0, 0, "",
                          "cannot read configuration file: " + std::string(std::strerror(errno)));
    }
    std::ostringstream text;
    text << file.rdbuf();
    if (file.bad()) {
        throw ConfigError(path, 0, 0, "", "cannot read configuration file: read error");
    }
    return parse_config(text.str(), path, fs::path(path).parent_path().string());
}

Config parse_config(std::string_view toml_text, const std::string& source_name,
                    const std::string& base_directory) {
    toml::table root;
    try {
        root = toml::parse(toml_text, source_name);
    } catch (const toml::parse_error& error) {
        const auto& where = error.source().begin;
        throw ConfigError(source_name, static_cast<int>(where.line), static_cast<int>(where.column),
                          "TOML syntax", std::string(error.description()));
    }
    const Source source(source_name, absolute_directory(base_directory));
    Config config = read_config(root, source);
    config.source_file = source_name;
    config.text = std::string(toml_text);
    return config;
}

std::vector<std::string> known_config_keys() {
    std::vector<std::string> keys;
    append_keys(keys, "workers.", kWorkersKeys);
    append_keys(keys, "log.", kLogKeys);
    append_keys(keys, "admin.", kAdminKeys);
    append_keys(keys, "admin.tls.", kAdminTlsKeys);
    append_keys(keys, "admin.tls.scrape.", kAllowKeys);
    append_keys(keys, "admin.tls.operator.", kAllowKeys);
    append_keys(keys, "hsm.", kHsmKeys);
    append_keys(keys, "resumption.", kResumptionKeys);
    append_keys(keys, "revocation.", kRevocationKeys);
    append_keys(keys, "dataplane.", kDataplaneKeys);
    append_keys(keys, "dataplane.dpdk.", kDpdkKeys);
    append_keys(keys, "dataplane.keepalive.", kKeepaliveKeys);
    append_keys(keys, "listener[].", kListenerKeys);
    append_keys(keys, "listener[].tls.", kTlsKeys);
    append_keys(keys, "listener[].tls.certificate[].", kCertificateKeys);
    append_keys(keys, "listener[].tls.allow.", kAllowKeys);
    append_keys(keys, "listener[].upstream.", kUpstreamKeys);
    return keys;
}

}  // namespace portcullis::mgmt
