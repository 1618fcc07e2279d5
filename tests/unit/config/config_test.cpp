// The config parser's contract: the example file and a config using every key map to the
// expected values, omitted keys take the documented defaults, docs/configuration.md lists
// exactly the accepted keys, and each broken config is rejected with the file, line,
// column and key an operator needs to find the mistake.
#include "mgmt/config.hpp"

#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace portcullis::mgmt {
namespace {

namespace fs = std::filesystem;
using crypto::ClientAuth;
using crypto::CrlScope;
using crypto::TlsVersion;

// Where a broken case expects its error: the parser must report exactly this spot.
constexpr std::string_view kMarker = "<@>";
constexpr std::string_view kPathPlaceholder = "{dir}";
constexpr std::string_view kFingerprint =
    "3F:1A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:"
    "CC:9C";

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const fs::path& path, std::string_view text) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
    return text;
}

// meson passes source-tree paths through the environment, so the test runs from any build dir.
fs::path source_file_from_env(const char* variable) {
    const char* value = std::getenv(variable);
    if (value == nullptr)
        throw std::runtime_error(std::string(variable) + " is not set (run via meson test)");
    return value;
}

class TempDirectory {
  public:
    TempDirectory() {
        std::string pattern = (fs::temp_directory_path() / "portcullis-config-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDirectory() {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }
    TempDirectory(const TempDirectory&) = delete;
    TempDirectory& operator=(const TempDirectory&) = delete;

    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

// The PKI files the example file names, plus a few the broken cases need. The parser checks
// that files exist and can be opened; their content is crypto/'s business.
class PkiDirectory : public TempDirectory {
  public:
    PkiDirectory() {
        for (const auto* name : {"server-ec.chain.pem", "server-ec.key.pem", "server-rsa.chain.pem",
                                 "server-rsa.key.pem", "client-ca.pem", "client-ca.crl.pem",
                                 "intermediate.crl.pem", "unreadable.pem", "admin.chain.pem",
                                 "admin.key.pem", "mgmt-ca.pem", "mgmt-ca.crl.pem"}) {
            write_file(path() / "pki" / name, "placeholder: the config parser does not read PEM\n");
        }
        fs::create_directories(path() / "pki" / "hashed");
        write_file(path() / "hsm" / "pin", "not a real PIN\n");
        write_file(path() / "hsm" / "libpkcs11.so", "placeholder: not loaded by the parser\n");
        fs::permissions(path() / "pki" / "unreadable.pem", fs::perms::none);
        write_file(path() / "pki" / "world-readable.key.pem", "placeholder\n");
        fs::permissions(path() / "pki" / "world-readable.key.pem",
                        fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                            fs::perms::others_read);
        // Secrets as an operator keeps them: no access for other users.
        for (const auto* secret :
             {"pki/server-ec.key.pem", "pki/server-rsa.key.pem", "pki/admin.key.pem", "hsm/pin"}) {
            fs::permissions(path() / secret,
                            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
        }
    }

    std::string at(std::string_view relative) const { return (path() / relative).string(); }
};

Config parse_in(const PkiDirectory& pki, std::string_view text) {
    return parse_config(text, pki.at("portcullis.toml"), pki.path().string());
}

// A valid one-listener config in pieces, so each broken case changes just one piece.
struct Parts {
    std::string top;
    std::string listener = "[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:8443\"\n";
    std::string tls =
        "  [listener.tls]\n  client_auth = \"require\"\n  trust_bundle = \"pki/client-ca.pem\"\n";
    std::string certificate =
        "    [[listener.tls.certificate]]\n    chain = \"pki/server-ec.chain.pem\"\n"
        "    key = \"pki/server-ec.key.pem\"\n";
    std::string upstream = "  [listener.upstream]\n  backends = [\"127.0.0.1:9000\"]\n";
    std::string more;

    Parts& replace(std::string Parts::* part, std::string text) {
        this->*part = std::move(text);
        return *this;
    }
    std::string text() const { return top + listener + tls + certificate + upstream + more; }
};

std::string with_top(std::string_view extra) {
    return Parts().replace(&Parts::top, std::string(extra)).text();
}
std::string with_listener(std::string_view extra) {
    Parts parts;
    parts.listener += extra;
    return parts.text();
}
std::string with_tls(std::string_view extra) {
    Parts parts;
    parts.tls += extra;
    return parts.text();
}
std::string with_certificate(std::string_view extra) {
    Parts parts;
    parts.certificate += extra;
    return parts.text();
}
std::string with_upstream(std::string_view extra) {
    Parts parts;
    parts.upstream += extra;
    return parts.text();
}
// A second, valid listener; the caller supplies its name and address lines.
std::string second_listener(std::string_view name_and_address) {
    return "[[listener]]\n" + std::string(name_and_address) +
           "  [listener.tls]\n  client_auth = \"none\"\n"
           "    [[listener.tls.certificate]]\n    chain = \"pki/server-rsa.chain.pem\"\n"
           "    key = \"pki/server-rsa.key.pem\"\n"
           "  [listener.upstream]\n  backends = [\"127.0.0.1:9001\"]\n";
}
std::string with_second_listener(std::string_view name_and_address) {
    return Parts().replace(&Parts::more, second_listener(name_and_address)).text();
}

struct BrokenCase {
    std::string name;
    std::string marked_text;  // kMarker sits where the error must point
    std::string key;
    std::string problem;  // substring; kPathPlaceholder stands for the temp directory
    bool needs_unprivileged = false;
};

std::ostream& operator<<(std::ostream& out, const BrokenCase& c) {
    return out << c.name;
}

constexpr std::string_view kAdminTlsText =
    "  [admin.tls]\n  certificate = \"pki/admin.chain.pem\"\n  key = \"pki/admin.key.pem\"\n"
    "  trust_bundle = \"pki/mgmt-ca.pem\"\n";

std::vector<BrokenCase> broken_cases() {
    const std::string allow_header = "    [listener.tls.allow]\n";
    return {
        // Unknown keys: a typo must never be ignored.
        // The admin listener: plain HTTP beyond loopback only when asked for, TLS with roles.
        {"AdminPlainHttpOffLoopback", with_top("[admin]\naddress = <@>\"0.0.0.0:9443\"\n"),
         "admin.address",
         "needs [admin.tls] (mutual TLS with scrape and operator roles), or "
         "insecure = true"},
        {"AdminTlsWithoutRoles",
         with_top("[admin]\naddress = \"10.0.0.5:9443\"\n  <@>" +
                  std::string(kAdminTlsText.substr(2))),
         "admin.tls.operator", "with neither, no client could use the admin listener"},
        {"AdminTlsWithoutTrust",
         with_top("[admin]\n  <@>[admin.tls]\n  certificate = \"pki/admin.chain.pem\"\n"
                  "  key = \"pki/admin.key.pem\"\n"),
         "admin.tls.trust_bundle", "PEM bundle of the CAs that issue admin clients"},
        {"AdminTlsMissingKeyFile",
         with_top("[admin]\n  [admin.tls]\n  certificate = \"pki/admin.chain.pem\"\n"
                  "  key = <@>\"pki/nowhere.key.pem\"\n  trust_bundle = \"pki/mgmt-ca.pem\"\n"),
         "admin.tls.key", "nowhere.key.pem"},
        {"AdminRoleUnknownKey",
         with_top("[admin]\n" + std::string(kAdminTlsText) +
                  "    [admin.tls.operator]\n    <@>subject = [\"CN=ops\"]\n"),
         "admin.tls.operator.subject",
         "unknown key; expected one of: subjects, san_uris, san_dns, sha256"},
        {"AdminRoleBadFingerprint",
         with_top("[admin]\n" + std::string(kAdminTlsText) +
                  "    [admin.tls.scrape]\n    sha256 = [<@>\"abc\"]\n"),
         "admin.tls.scrape.sha256[0]", "expected a SHA-256 fingerprint"},
        {"WorkersUserUnknown", with_top("[workers]\nuser = <@>\"no-such-user-here\"\n"),
         "workers.user", "no user \"no-such-user-here\" on this system"},
        {"WorkersGroupUnknown",
         with_top("[workers]\nuser = \"root\"\ngroup = <@>\"no-such-group-here\"\n"),
         "workers.group", "no group \"no-such-group-here\" on this system"},
        {"WorkersGroupWithoutUser", with_top("[workers]\nuser = \"\"\ngroup = <@>\"root\"\n"),
         "workers.group", "a group needs workers.user"},
        // Secrets other users could read.
        {"KeyReadableByOthers",
         Parts()
             .replace(&Parts::certificate,
                      "    [[listener.tls.certificate]]\n    chain = \"pki/server-ec.chain.pem\"\n"
                      "    key = <@>\"pki/world-readable.key.pem\"\n")
             .text(),
         "listener[0].tls.certificate[0].key",
         "holds a secret and other users may open it (mode 0644): chmod o-rwx"},
        {"UnknownTopLevelKey", with_top("<@>colour = \"blue\"\n"), "colour",
         "unknown key; expected one of: workers, log, admin, resumption, hsm, listener"},
        {"UnknownTopLevelTable", with_top("[<@>listners]\nname = \"x\"\n"), "listners",
         "unknown key; expected one of: workers, log, admin, resumption, hsm, listener"},
        {"UnknownWorkersKey", with_top("[workers]\n<@>threads = 4\n"), "workers.threads",
         "unknown key; expected one of: count, max_connections, drain_timeout_ms"},
        {"TypoClientAuht", with_tls("  <@>client_auht = \"none\"\n"), "listener[0].tls.client_auht",
         "unknown key; expected one of: client_auth, trust_bundle, trust_dir"},
        {"TypoSuggestsTheKnownKey", with_tls("  <@>client_auht = \"none\"\n"),
         "listener[0].tls.client_auht", "certificate, allow (did you mean client_auth?)"},
        {"UnknownListenerKey", with_listener("<@>port = 8443\n"), "listener[0].port",
         "unknown key; expected one of: name, address, backlog"},
        {"UnknownCertificateKey", with_certificate("    <@>password = \"secret\"\n"),
         "listener[0].tls.certificate[0].password",
         "unknown key; expected one of: chain, key, server_names"},
        {"UnknownAllowKey", with_tls(allow_header + "    <@>subject = [\"CN=a\"]\n"),
         "listener[0].tls.allow.subject",
         "unknown key; expected one of: subjects, san_uris, san_dns, sha256"},
        {"UnknownUpstreamKey", with_upstream("  <@>timeout_ms = 5\n"),
         "listener[0].upstream.timeout_ms",
         "unknown key; expected one of: backends, connect_timeout_ms"},
        // Keys that are not bare are shown quoted, as TOML writes them: an empty key is still
        // named (`"" = 1` was rejected with no key) and a control character cannot break the
        // message's line.
        {"EmptyQuotedKeyIsNamed", with_top("<@>\"\" = 1\n"), "\"\"", "unknown key"},
        {"QuotedKeyIsEscaped", with_listener("<@>\"a.b\\n\\u0001\" = 1\n"),
         "listener[0].\"a.b\\n\\u0001\"", "unknown key"},
        // A value quoted in the problem keeps the message on one line (config_fuzz found the
        // tab of a pkcs11: URI printed raw).
        {"ControlCharacterInAValueIsEscaped",
         Parts()
             .replace(&Parts::certificate,
                      "    [[listener.tls.certificate]]\n    chain = \"pki/server-ec.chain.pem\"\n"
                      "    key = <@>\"pkcs11:\ttype=private\\u001b\"\n")
             .text(),
         "listener[0].tls.certificate[0].key", "unknown attribute \"\\ttype\""},
        {"NewlineInAValueIsEscaped", with_top("[log]\nlevel = <@>\"info\\n\"\n"), "log.level",
         "got \"info\\n\""},

        // Types.
        {"IntegerGivenAsString", with_top("[workers]\ncount = <@>\"4\"\n"), "workers.count",
         "expected an integer, got a string \"4\""},
        {"IntegerGivenAsFloat", with_listener("handshake_timeout_ms = <@>1.5\n"),
         "listener[0].handshake_timeout_ms",
         "expected an integer, got a floating-point number 1.5"},
        {"BooleanGivenAsString", with_upstream("  proxy_protocol = <@>\"yes\"\n"),
         "listener[0].upstream.proxy_protocol", "expected a boolean (true or false), got a string"},
        {"ArrayGivenAsString",
         Parts()
             .replace(&Parts::upstream,
                      "  [listener.upstream]\n  backends = <@>\"127.0.0.1:9000\"\n")
             .text(),
         "listener[0].upstream.backends", "expected an array of strings, got a string"},
        {"ArrayElementOfWrongType", with_tls("  alpn = [\"h2\", <@>11]\n"),
         "listener[0].tls.alpn[1]", "expected a string, got an integer 11"},
        {"TableGivenAsString",
         Parts()
             .replace(&Parts::listener, Parts{}.listener + "tls = <@>\"none\"\n")
             .replace(&Parts::tls, "")
             .replace(&Parts::certificate, "")
             .text(),
         "listener[0].tls", "expected a table ([listener.tls]), got a string"},
        {"CertificateNotArrayOfTables",
         Parts()
             .replace(&Parts::tls, Parts{}.tls + "  certificate = <@>\"pki/server-ec.chain.pem\"\n")
             .replace(&Parts::certificate, "")
             .text(),
         "listener[0].tls.certificate",
         "expected an array of tables ([[listener.tls.certificate]]), got a string"},

        // Enumerations.
        {"BadClientAuth",
         Parts()
             .replace(&Parts::tls,
                      "  [listener.tls]\n  client_auth = <@>\"maybe\"\n"
                      "  trust_bundle = \"pki/client-ca.pem\"\n")
             .text(),
         "listener[0].tls.client_auth",
         "expected one of \"require\", \"optional\", \"none\", got \"maybe\""},
        {"BadCrlScope", with_tls("  crl_scope = <@>\"all\"\n"), "listener[0].tls.crl_scope",
         "expected one of \"leaf\", \"chain\", got \"all\""},
        {"BadTicketMode", with_top("[resumption]\nticket_mode = <@>\"both\"\n"),
         "resumption.ticket_mode", "expected one of \"stateless\", \"stateful\", got \"both\""},
        {"StatefulTicketsWithoutTheSessionCache",
         with_top("[resumption]\nsession_cache_entries = 0\nticket_mode = <@>\"stateful\"\n"),
         "resumption.ticket_mode",
         "stateful tickets are looked up in the session cache, which session_cache_entries = 0 "
         "turns off"},
        {"NegativeWorkerSessionCache",
         with_top("[resumption]\nworker_session_cache_entries = <@>-1\n"),
         "resumption.worker_session_cache_entries", "-1"},
        {"NoConnectionLogLines", with_top("[log]\nconnection_lines_per_second = <@>0\n"),
         "log.connection_lines_per_second", "expected an integer in 1..1000000, got 0"},
        {"ConnectionLogBurstTooLarge", with_top("[log]\nconnection_lines_burst = <@>1000001\n"),
         "log.connection_lines_burst", "expected an integer in 1..1000000, got 1000001"},
        {"BadLogLevel", with_top("[log]\nlevel = <@>\"verbose\"\n"), "log.level",
         "expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", \"critical\", "
         "\"off\", "
         "got \"verbose\""},
        {"TlsVersionTooOld", with_tls("  min_version = <@>\"1.1\"\n"),
         "listener[0].tls.min_version", "expected one of \"1.2\", \"1.3\", got \"1.1\""},
        {"TlsVersionAsNumber", with_tls("  max_version = <@>1.3\n"), "listener[0].tls.max_version",
         "expected one of \"1.2\", \"1.3\", got a floating-point number 1.3"},
        {"MinVersionAboveMax", with_tls("  min_version = \"1.3\"\n  max_version = <@>\"1.2\"\n"),
         "listener[0].tls.max_version", "lower than min_version"},

        // Addresses.
        {"AddressWithHostName",
         Parts()
             .replace(&Parts::listener,
                      "[[listener]]\nname = \"edge\"\naddress = <@>\"localhost:8443\"\n")
             .text(),
         "listener[0].address",
         "expected \"IPv4:port\", \"[IPv6]:port\" or \"*:port\" with a numeric address"},
        {"AddressWithoutPort",
         Parts().replace(&Parts::listener, "[[listener]]\naddress = <@>\"127.0.0.1\"\n").text(),
         "listener[0].address", "got \"127.0.0.1\""},
        {"Ipv6WithoutBrackets",
         Parts().replace(&Parts::listener, "[[listener]]\naddress = <@>\"::1:8443\"\n").text(),
         "listener[0].address", "\"[IPv6]:port\""},
        {"PortOutOfRange",
         Parts().replace(&Parts::listener, "[[listener]]\naddress = <@>\"0.0.0.0:70000\"\n").text(),
         "listener[0].address", "port 70000 is out of range 1..65535"},
        {"PortZero",
         Parts().replace(&Parts::listener, "[[listener]]\naddress = <@>\"*:0\"\n").text(),
         "listener[0].address", "port 0 is out of range 1..65535"},
        {"BackendWithHostName",
         Parts()
             .replace(&Parts::upstream,
                      "  [listener.upstream]\n"
                      "  backends = [\"127.0.0.1:9000\", <@>\"backend.internal:9000\"]\n")
             .text(),
         "listener[0].upstream.backends[1]", "numeric address (no host names)"},
        {"BackendWildcard",
         Parts()
             .replace(&Parts::upstream, "  [listener.upstream]\n  backends = [<@>\"*:9000\"]\n")
             .text(),
         "listener[0].upstream.backends[0]", "a backend needs a concrete address"},

        // Required keys and tables.
        {"NoListener", "<@>[workers]\ncount = 1\n", "listener",
         "missing required key (at least one [[listener]] table)"},
        {"EmptyListenerArray", "listener = <@>[]\n", "listener",
         "expected an array of tables ([[listener]]) with at least one element"},
        {"MissingAddress",
         Parts().replace(&Parts::listener, "<@>[[listener]]\nname = \"edge\"\n").text(),
         "listener[0].address", "missing required key"},
        {"MissingTlsTable",
         Parts()
             .replace(&Parts::listener, "<@>[[listener]]\naddress = \"127.0.0.1:8443\"\n")
             .replace(&Parts::tls, "")
             .replace(&Parts::certificate, "")
             .text(),
         "listener[0].tls.certificate", "missing required key"},
        {"MissingCertificate",
         Parts()
             .replace(&Parts::tls,
                      "  <@>[listener.tls]\n  client_auth = \"require\"\n"
                      "  trust_bundle = \"pki/client-ca.pem\"\n")
             .replace(&Parts::certificate, "")
             .text(),
         "listener[0].tls.certificate", "missing required key"},
        {"MissingChain",
         Parts()
             .replace(&Parts::certificate,
                      "    <@>[[listener.tls.certificate]]\n"
                      "    key = \"pki/server-ec.key.pem\"\n")
             .text(),
         "listener[0].tls.certificate[0].chain", "missing required key"},
        {"MissingUpstream",
         Parts()
             .replace(&Parts::listener, "<@>[[listener]]\naddress = \"127.0.0.1:8443\"\n")
             .replace(&Parts::upstream, "")
             .text(),
         "listener[0].upstream.backends", "missing required key"},
        {"MissingBackends",
         Parts()
             .replace(&Parts::upstream, "  <@>[listener.upstream]\n  connect_timeout_ms = 100\n")
             .text(),
         "listener[0].upstream.backends", "missing required key"},
        {"EmptyBackends",
         Parts().replace(&Parts::upstream, "  [listener.upstream]\n  backends = <@>[]\n").text(),
         "listener[0].upstream.backends", "expected at least one backend address, got []"},

        // Files, resolved against the config file's directory.
        {"MissingChainFile",
         Parts()
             .replace(&Parts::certificate,
                      "    [[listener.tls.certificate]]\n    chain = <@>\"pki/missing.pem\"\n"
                      "    key = \"pki/server-ec.key.pem\"\n")
             .text(),
         "listener[0].tls.certificate[0].chain",
         "\"{dir}/pki/missing.pem\" does not exist (relative paths are resolved against "
         "\"{dir}\")"},
        {"MissingKeyFileInSecondCertificate",
         with_certificate(
             "    [[listener.tls.certificate]]\n"
             "    chain = \"pki/server-rsa.chain.pem\"\n    key = <@>\"pki/rsa.key\"\n"),
         "listener[0].tls.certificate[1].key", "\"{dir}/pki/rsa.key\" does not exist"},
        {"MissingAbsoluteTrustBundle",
         Parts()
             .replace(&Parts::tls,
                      "  [listener.tls]\n  trust_bundle = <@>\"/nonexistent/ca.pem\"\n")
             .text(),
         "listener[0].tls.trust_bundle", "\"/nonexistent/ca.pem\" does not exist"},
        {"ChainIsADirectory",
         Parts()
             .replace(&Parts::certificate,
                      "    [[listener.tls.certificate]]\n    chain = <@>\"pki\"\n"
                      "    key = \"pki/server-ec.key.pem\"\n")
             .text(),
         "listener[0].tls.certificate[0].chain", "\"{dir}/pki\" is a directory, expected a file"},
        {"TrustDirIsAFile", with_tls("  trust_dir = <@>\"pki/client-ca.pem\"\n"),
         "listener[0].tls.trust_dir", "\"{dir}/pki/client-ca.pem\" is not a directory"},
        {"MissingSecondCrl",
         with_tls("  crl_files = [\"pki/client-ca.crl.pem\", <@>\"pki/old.crl.pem\"]\n"),
         "listener[0].tls.crl_files[1]", "\"{dir}/pki/old.crl.pem\" does not exist"},
        {"UnreadableTrustBundle",
         Parts()
             .replace(&Parts::tls, "  [listener.tls]\n  trust_bundle = <@>\"pki/unreadable.pem\"\n")
             .text(),
         "listener[0].tls.trust_bundle",
         "cannot read \"{dir}/pki/unreadable.pem\": Permission denied", true},
        {"EmptyKeyPath",
         Parts()
             .replace(&Parts::certificate,
                      "    [[listener.tls.certificate]]\n"
                      "    chain = \"pki/server-ec.chain.pem\"\n    key = <@>\"\"\n")
             .text(),
         "listener[0].tls.certificate[0].key",
         "expected a key file path or a pkcs11: URI, got \"\""},

        // Ranges.
        {"NegativeIdleTimeout", with_listener("idle_timeout_ms = <@>-5\n"),
         "listener[0].idle_timeout_ms", "expected an integer in 1..2147483647, got -5"},
        {"ZeroConnectTimeout", with_upstream("  connect_timeout_ms = <@>0\n"),
         "listener[0].upstream.connect_timeout_ms", "expected an integer in 1..2147483647, got 0"},
        {"BufferTooSmall", with_listener("buffer_bytes = <@>1024\n"), "listener[0].buffer_bytes",
         "expected an integer in 4096..16777216, got 1024"},
        {"BufferTooLarge", with_listener("buffer_bytes = <@>16777217\n"),
         "listener[0].buffer_bytes", "expected an integer in 4096..16777216, got 16777217"},
        {"VerifyDepthTooLarge", with_tls("  verify_depth = <@>17\n"),
         "listener[0].tls.verify_depth", "expected an integer in 0..16, got 17"},
        {"NegativeChainCache", with_tls("  verified_chain_cache_entries = <@>-1\n"),
         "listener[0].tls.verified_chain_cache_entries",
         "expected an integer in 0..1000000, got -1"},
        {"TooManyWorkers", with_top("[workers]\ncount = <@>2000\n"), "workers.count",
         "expected an integer in 0..1024, got 2000"},
        {"ZeroMaxConnections", with_top("[workers]\nmax_connections = <@>0\n"),
         "workers.max_connections", "expected an integer in 1..10000000, got 0"},
        {"TooManyConnections", with_top("[workers]\nmax_connections = <@>10000001\n"),
         "workers.max_connections", "expected an integer in 1..10000000, got 10000001"},
        {"ZeroBacklog", with_listener("backlog = <@>0\n"), "listener[0].backlog",
         "expected an integer in 1..2147483647, got 0"},
        {"ZeroFailThreshold", with_upstream("  fail_threshold = <@>0\n"),
         "listener[0].upstream.fail_threshold", "expected an integer in 1..2147483647, got 0"},
        {"TimeoutBeyondInt", with_upstream("  retry_after_ms = <@>4294967296\n"),
         "listener[0].upstream.retry_after_ms", "expected an integer in 1..2147483647"},

        // Names and uniqueness across listeners.
        {"ListenerNameWithSpace",
         Parts()
             .replace(&Parts::listener,
                      "[[listener]]\nname = <@>\"edge one\"\naddress = \"127.0.0.1:8443\"\n")
             .text(),
         "listener[0].name", "expected 1..64 letters, digits, '.', '_' or '-', got \"edge one\""},
        {"DuplicateListenerName",
         with_second_listener("name = <@>\"edge\"\naddress = \"127.0.0.1:8444\"\n"),
         "listener[1].name",
         "duplicate listener name \"edge\", already used by listener[0] (\"edge\")"},
        {"DefaultNameClashes",
         Parts()
             .replace(&Parts::listener,
                      "[[listener]]\nname = \"listener1\"\naddress = \"127.0.0.1:8443\"\n")
             .replace(&Parts::more, "<@>" + second_listener("address = \"127.0.0.1:8444\"\n"))
             .text(),
         "listener[1].name", "default name \"listener1\" is already used by listener[0]"},
        {"DuplicateAddress",
         with_second_listener("name = \"other\"\naddress = <@>\"127.0.0.1:8443\"\n"),
         "listener[1].address", "address 127.0.0.1:8443 overlaps 127.0.0.1:8443 of listener[0]"},
        {"WildcardOverlapsAddress",
         with_second_listener("name = \"other\"\naddress = <@>\"*:8443\"\n"), "listener[1].address",
         "address 0.0.0.0:8443 overlaps 127.0.0.1:8443 of listener[0] (\"edge\")"},

        // Policy consistency.
        {"RequireWithoutTrust",
         Parts().replace(&Parts::tls, "  [listener.tls]\n  client_auth = <@>\"require\"\n").text(),
         "listener[0].tls.client_auth", "\"require\" needs trust_bundle or trust_dir"},
        {"DefaultRequireWithoutTrust",
         Parts().replace(&Parts::tls, "  <@>[listener.tls]\n  verify_depth = 2\n").text(),
         "listener[0].tls.client_auth", "\"require\" needs trust_bundle or trust_dir"},
        {"OptionalWithEmptyTrust",
         Parts()
             .replace(&Parts::tls,
                      "  [listener.tls]\n  client_auth = <@>\"optional\"\n  trust_bundle = \"\"\n")
             .text(),
         "listener[0].tls.client_auth", "\"optional\" needs trust_bundle or trust_dir"},
        {"AllowListWithClientAuthNone",
         Parts()
             .replace(&Parts::tls,
                      "  [listener.tls]\n  client_auth = \"none\"\n  <@>[listener.tls.allow]\n"
                      "  san_dns = [\"*.partner.example\"]\n")
             .text(),
         "listener[0].tls.allow", "an allow-list needs client_auth \"require\" or \"optional\""},
        {"CrlWithClientAuthNone",
         Parts()
             .replace(&Parts::tls,
                      "  [listener.tls]\n  client_auth = \"none\"\n"
                      "  crl_files = <@>[\"pki/client-ca.crl.pem\"]\n")
             .text(),
         "listener[0].tls.crl_files", "CRLs apply to client certificates"},
        {"FingerprintPlaceholder", with_tls(allow_header + "    sha256 = [<@>\"3f:1a:...:9c\"]\n"),
         "listener[0].tls.allow.sha256[0]",
         "expected a SHA-256 fingerprint: 64 hex digits, optionally as 32 pairs separated by ':', "
         "got \"3f:1a:...:9c\""},
        {"FingerprintTooShort",
         with_tls(allow_header + "    sha256 = [\"" + std::string(64, 'a') + "\", <@>\"" +
                  std::string(63, 'a') + "\"]\n"),
         "listener[0].tls.allow.sha256[1]", "expected a SHA-256 fingerprint"},
        {"FingerprintNotHex",
         with_tls(allow_header + "    sha256 = [<@>\"" + std::string(63, '0') + "g\"]\n"),
         "listener[0].tls.allow.sha256[0]", "expected a SHA-256 fingerprint"},
        {"EmptyAlpnProtocol", with_tls("  alpn = [\"h2\", <@>\"\"]\n"), "listener[0].tls.alpn[1]",
         "expected an ALPN protocol name of 1..255 bytes, got \"\""},
        {"EmptyServerName", with_certificate("    server_names = [<@>\"\"]\n"),
         "listener[0].tls.certificate[0].server_names[0]", "expected a DNS name, got \"\""},

        // TOML syntax, reported with toml++'s position.
        {"SyntaxMissingValue", with_listener("backlog = <@>\n"), "TOML syntax", "expected value"},
        {"SyntaxUnterminatedString",
         Parts()
             .replace(&Parts::listener,
                      "[[listener]]\nname = \"edge<@>\naddress = \"127.0.0.1:8443\"\n")
             .text(),
         "TOML syntax", "Error while parsing string"},
        {"SyntaxDuplicateKey", with_listener("name = <@>\"again\"\n"), "TOML syntax",
         "cannot redefine existing string 'name'"},

        // The DPDK transport.
        {"UnknownTransport", with_top("[dataplane]\ntransport = <@>\"xdp\"\n"),
         "dataplane.transport", "expected one of \"kernel\", \"dpdk\", got \"xdp\""},
        {"DpdkAddressWithoutPrefix",
         with_top("[dataplane.dpdk]\ndevice = \"net_af_packet0,iface=v0\"\naddress = "
                  "<@>\"127.0.0.1\"\n"),
         "dataplane.dpdk.address", "expected \"IPv4/prefix\" with a prefix in 1..32"},
        {"DpdkGatewayOutsideTheSubnet",
         with_top("[dataplane.dpdk]\ndevice = \"net_af_packet0,iface=v0\"\naddress = "
                  "\"127.0.0.1/24\"\ngateway = <@>\"10.0.0.1\"\n"),
         "dataplane.dpdk.gateway", "the gateway must be inside 127.0.0.1/24"},
        {"DpdkListenerOnAnotherAddress",
         Parts()
             .replace(&Parts::top,
                      "[dataplane]\ntransport = \"dpdk\"\n[dataplane.dpdk]\ndevice = "
                      "\"net_af_packet0,iface=v0\"\naddress = \"10.0.0.1/24\"\n")
             .replace(&Parts::listener,
                      "[[listener]]\nname = \"edge\"\naddress = <@>\"127.0.0.1:8443\"\n")
             .text(),
         "listener[0].address",
         "on the dpdk transport a listener binds to the port's address 10.0.0.1 (or *)"},
        {"DpdkPciPortSharedWithoutQueues",
         with_top("[workers]\ncount = <@>2\n[dataplane]\ntransport = \"dpdk\"\n"
                  "[dataplane.dpdk]\ndevice = \"0000:03:00.0\"\naddress = \"127.0.0.1/8\"\n"
                  "queue_per_worker = false\n"),
         "workers.count",
         "a PCI device on the dpdk transport is shared by workers only with queue_per_worker = "
         "true"},
        {"DpdkQueuesWithoutHugepages",
         with_top("[dataplane]\ntransport = \"dpdk\"\n[dataplane.dpdk]\n"
                  "eal_args = [\"-m\", \"256\", <@>\"--no-huge\"]\ndevice = \"net_tap0\"\n"
                  "address = \"127.0.0.1/8\"\nqueue_per_worker = true\n"),
         "dataplane.dpdk.eal_args",
         "queue_per_worker needs hugepages and a shared DPDK runtime; remove \"--no-huge\""},
        {"DpdkQueuesOnAfPacket",
         with_top("[dataplane]\ntransport = \"dpdk\"\n[dataplane.dpdk]\n"
                  "device = \"net_af_packet0,iface=v0\"\naddress = \"127.0.0.1/8\"\n"
                  "queue_per_worker = <@>true\n"),
         "dataplane.dpdk.queue_per_worker", "net_af_packet cannot serve DPDK secondary processes"},
        {"DpdkChecksumOffloadNotABoolean",
         with_top("[dataplane]\ntransport = \"dpdk\"\n[dataplane.dpdk]\ndevice = \"net_tap0\"\n"
                  "address = \"127.0.0.1/8\"\nchecksum_offload = <@>\"yes\"\n"),
         "dataplane.dpdk.checksum_offload", "expected a boolean"},
        {"KeepaliveWithoutProbes", with_top("[dataplane.keepalive]\nprobes = <@>0\n"),
         "dataplane.keepalive.probes", "expected an integer in 1..127, got 0"},
        {"KeepaliveUnknownKey", with_top("[dataplane.keepalive]\n<@>time_s = 30\n"),
         "dataplane.keepalive.time_s", "unknown key"},
    };
}

struct ExpectedPosition {
    std::string text;
    int line;
    int column;
};

ExpectedPosition strip_marker(std::string_view marked) {
    const auto at = marked.find(kMarker);
    if (at == std::string_view::npos || marked.find(kMarker, at + 1) != std::string_view::npos) {
        throw std::invalid_argument("a broken case needs exactly one " + std::string(kMarker));
    }
    const std::string_view before = marked.substr(0, at);
    const auto line_start = before.rfind('\n');
    ExpectedPosition expected;
    expected.text = std::string(before) + std::string(marked.substr(at + kMarker.size()));
    expected.line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    expected.column =
        1 + static_cast<int>(line_start == std::string_view::npos ? at : at - line_start - 1);
    return expected;
}

class BrokenConfig : public testing::TestWithParam<BrokenCase> {
  protected:
    PkiDirectory pki_;
};

TEST_P(BrokenConfig, IsRejectedWithFileLineColumnAndKey) {
    const BrokenCase& broken = GetParam();
    if (broken.needs_unprivileged && ::geteuid() == 0) {
        GTEST_SKIP() << "SKIPPED LOUDLY: running as root, which can read a mode-000 file; run the "
                        "tests as an unprivileged user to check the unreadable-file error";
    }
    const ExpectedPosition expected = strip_marker(broken.marked_text);
    const std::string file = pki_.at("portcullis.toml");
    const std::string problem = replace_all(broken.problem, kPathPlaceholder, pki_.path().string());
    try {
        parse_in(pki_, expected.text);
        FAIL() << "accepted:\n" << expected.text;
    } catch (const ConfigError& error) {
        EXPECT_EQ(error.file(), file);
        EXPECT_EQ(error.line(), expected.line) << error.what();
        EXPECT_EQ(error.column(), expected.column) << error.what();
        EXPECT_EQ(error.key(), broken.key) << error.what();
        EXPECT_NE(error.problem().find(problem), std::string::npos)
            << "problem: " << error.problem() << "\nexpected to contain: " << problem;
        EXPECT_EQ(std::string(error.what()), file + ":" + std::to_string(expected.line) + ":" +
                                                 std::to_string(expected.column) + ": " +
                                                 broken.key + ": " + error.problem());
    }
}

INSTANTIATE_TEST_SUITE_P(Cases, BrokenConfig, testing::ValuesIn(broken_cases()),
                         [](const testing::TestParamInfo<BrokenCase>& info) {
                             return info.param.name;
                         });

TEST(ConfigError, FormatsFileLineColumnKeyAndProblem) {
    const ConfigError error("/etc/portcullis.toml", 14, 15, "listener[0].tls.client_auth",
                            "expected one of \"require\", \"optional\", \"none\", got \"maybe\"");
    EXPECT_STREQ(error.what(),
                 "/etc/portcullis.toml:14:15: listener[0].tls.client_auth: expected one of "
                 "\"require\", \"optional\", \"none\", got \"maybe\"");
}

TEST(ConfigError, LeavesOutPositionAndKeyWhenThereAreNone) {
    const ConfigError error("/etc/portcullis.toml", 0, 0, "", "cannot read configuration file");
    EXPECT_STREQ(error.what(), "/etc/portcullis.toml: cannot read configuration file");
}

// The example file is the format's contract; with real files next to it, it must load as is
// exactly as shipped.
TEST(ExampleConfig, ParsesToTheDocumentedValues) {
    const PkiDirectory pki;
    const std::string text = read_file(source_file_from_env("PORTCULLIS_EXAMPLE_CONFIG"));
    ASSERT_NE(text.find(kFingerprint), std::string::npos)
        << "the example's sha256 value changed; update this test";

    const Config config = parse_in(pki, text);

    EXPECT_EQ(config.source_file, pki.at("portcullis.toml"));
    EXPECT_EQ(config.workers.count, 0);
    EXPECT_EQ(config.workers.max_connections, 10000);
    EXPECT_EQ(config.log.level, "info");
    ASSERT_EQ(config.listeners.size(), 1u);
    const auto& listener = config.listeners[0];
    EXPECT_EQ(listener.name, "edge");
    EXPECT_EQ(listener.address.to_string(), "0.0.0.0:8443");
    EXPECT_EQ(listener.backlog, 1024);
    EXPECT_EQ(listener.handshake_timeout_ms, 10000);
    EXPECT_EQ(listener.idle_timeout_ms, 300000);
    EXPECT_EQ(listener.buffer_bytes, 65536u);

    const auto& tls = listener.tls;
    EXPECT_EQ(tls.client_auth, ClientAuth::require);
    EXPECT_EQ(tls.trust_file, pki.at("pki/client-ca.pem"));
    EXPECT_EQ(tls.trust_dir, "");
    EXPECT_EQ(tls.crl_files, std::vector<std::string>{pki.at("pki/client-ca.crl.pem")});
    EXPECT_EQ(tls.crl_scope, CrlScope::leaf);
    EXPECT_EQ(tls.verify_depth, 4);
    EXPECT_TRUE(tls.require_client_auth_eku);
    EXPECT_EQ(tls.verified_chain_cache_entries, 10000u);
    EXPECT_EQ(tls.min_version, TlsVersion::tls12);
    EXPECT_EQ(tls.max_version, TlsVersion::tls13);
    EXPECT_EQ(config.hsm.token, "edge");
    EXPECT_EQ(config.hsm.pin_file, pki.at("hsm/pin"));
    EXPECT_EQ(config.hsm.sessions, 4);
    EXPECT_EQ(tls.ciphers, "");
    EXPECT_EQ(tls.ciphersuites, "");
    EXPECT_EQ(tls.groups, "");
    EXPECT_EQ(tls.alpn, (std::vector<std::string>{"http/1.1"}));
    ASSERT_EQ(tls.certificates.size(), 2u);
    EXPECT_EQ(tls.certificates[0].chain_file, pki.at("pki/server-ec.chain.pem"));
    EXPECT_EQ(tls.certificates[0].key, pki.at("pki/server-ec.key.pem"));
    EXPECT_TRUE(tls.certificates[0].server_names.empty());
    EXPECT_EQ(tls.certificates[1].chain_file, pki.at("pki/server-rsa.chain.pem"));
    EXPECT_EQ(tls.certificates[1].key, pki.at("pki/server-rsa.key.pem"));
    EXPECT_EQ(tls.allow.subject_patterns,
              std::vector<std::string>{"CN=partner-*,O=Example Bank,C=GB"});
    EXPECT_EQ(tls.allow.san_uris, std::vector<std::string>{"spiffe://partners.example/*"});
    EXPECT_EQ(tls.allow.san_dns, std::vector<std::string>{"*.partner.example"});
    EXPECT_EQ(tls.allow.sha256_fingerprints, std::vector<std::string>{std::string(kFingerprint)});

    const auto& upstream = listener.upstream;
    ASSERT_EQ(upstream.backends.size(), 2u);
    EXPECT_EQ(upstream.backends[0].to_string(), "127.0.0.1:9000");
    EXPECT_EQ(upstream.backends[1].to_string(), "[::1]:9000");
    EXPECT_EQ(upstream.connect_timeout_ms, 2000);
    EXPECT_EQ(upstream.fail_threshold, 3);
    EXPECT_EQ(upstream.retry_after_ms, 5000);
    EXPECT_FALSE(upstream.proxy_protocol);

    EXPECT_EQ(config.admin.address->to_string(), "127.0.0.1:9443");
    EXPECT_FALSE(config.admin.insecure);
    ASSERT_TRUE(config.admin.tls.has_value());
    const auto& admin = *config.admin.tls;
    EXPECT_EQ(admin.chain_file, pki.at("pki/admin.chain.pem"));
    EXPECT_EQ(admin.key_file, pki.at("pki/admin.key.pem"));
    EXPECT_EQ(admin.trust_file, pki.at("pki/mgmt-ca.pem"));
    EXPECT_EQ(admin.crl_files, std::vector<std::string>{pki.at("pki/mgmt-ca.crl.pem")});
    EXPECT_EQ(admin.crl_scope, CrlScope::chain);
    EXPECT_EQ(admin.verify_depth, 4);
    EXPECT_EQ(admin.roles.scrape.subject_patterns,
              std::vector<std::string>{"CN=prometheus,OU=Monitoring,O=Example Bank,C=GB"});
    EXPECT_EQ(admin.roles.operator_.subject_patterns,
              std::vector<std::string>{"CN=ops-*,OU=Operations,O=Example Bank,C=GB"});
    EXPECT_TRUE(admin.roles.operator_.san_uris.empty());
}

TEST(GoodConfig, WorkersUserAndGroupAreResolvedToIds) {
    const PkiDirectory pki;
    const passwd* nobody = ::getpwnam("nobody");
    const group* nogroup = ::getgrnam("nogroup");
    if (nobody == nullptr || nogroup == nullptr)
        GTEST_SKIP() << "SKIPPED LOUDLY: no user nobody or group nogroup on this system";
    const Config config = parse_in(pki, with_top("[workers]\nuser = \"nobody\"\n"));
    ASSERT_TRUE(config.workers.run_as.has_value());
    EXPECT_EQ(config.workers.run_as->user, "nobody");
    EXPECT_EQ(config.workers.run_as->uid, nobody->pw_uid);
    EXPECT_EQ(config.workers.run_as->gid, nobody->pw_gid);
    const Config grouped =
        parse_in(pki, with_top("[workers]\nuser = \"nobody\"\ngroup = \"nogroup\"\n"));
    EXPECT_EQ(grouped.workers.run_as->group, "nogroup");
    EXPECT_EQ(grouped.workers.run_as->gid, nogroup->gr_gid);
    EXPECT_FALSE(parse_in(pki, with_top("[workers]\nuser = \"\"\n")).workers.run_as);
    // Left out: the portcullis system user where one exists, else no change.
    const auto fallback = parse_in(pki, Parts().text()).workers.run_as;
    if (::getpwnam("portcullis") != nullptr) {
        ASSERT_TRUE(fallback.has_value());
        EXPECT_EQ(fallback->user, "portcullis");
    } else {
        EXPECT_FALSE(fallback.has_value());
    }
}

TEST(GoodConfig, AdminListenerWithoutTlsIsPlainHttpOnLoopback) {
    const PkiDirectory pki;
    const Config config = parse_in(pki, with_top("[admin]\naddress = \"[::1]:9443\"\n"));
    EXPECT_FALSE(config.admin.tls.has_value());
    const Config insecure =
        parse_in(pki, with_top("[admin]\naddress = \"192.0.2.7:9443\"\ninsecure = true\n"));
    EXPECT_TRUE(insecure.admin.insecure);
    EXPECT_EQ(insecure.admin.address->to_string(), "192.0.2.7:9443");
}

TEST(GoodConfig, AdminTlsRolesReachTheirFields) {
    const PkiDirectory pki;
    const Config config = parse_in(
        pki, with_top("[admin]\naddress = \"*:9443\"\n" + std::string(kAdminTlsText) +
                      "  crl_scope = \"leaf\"\n  verify_depth = 2\n"
                      "    [admin.tls.scrape]\n    san_uris = [\"spiffe://mgmt/prometheus\"]\n"
                      "    sha256 = [\"" +
                      std::string(kFingerprint) + "\"]\n"));
    ASSERT_TRUE(config.admin.tls.has_value());
    const auto& tls = *config.admin.tls;
    EXPECT_EQ(tls.trust_file, pki.at("pki/mgmt-ca.pem"));
    EXPECT_TRUE(tls.crl_files.empty());
    EXPECT_EQ(tls.crl_scope, CrlScope::leaf);
    EXPECT_EQ(tls.verify_depth, 2);
    EXPECT_EQ(tls.roles.scrape.san_uris, std::vector<std::string>{"spiffe://mgmt/prometheus"});
    EXPECT_EQ(tls.roles.scrape.sha256_fingerprints,
              std::vector<std::string>{std::string(kFingerprint)});
    EXPECT_TRUE(tls.roles.operator_.empty());
}

TEST(GoodConfig, EveryKeyReachesItsField) {
    const PkiDirectory pki;
    const std::string absolute_crl = pki.at("pki/intermediate.crl.pem");
    const std::string text = R"(
[workers]
count = 3
max_connections = 250
drain_timeout_ms = 1500

[log]
level = "debug"
access_log = "access.log"
connection_lines_per_second = 200
connection_lines_burst = 1000

[hsm]
module = "hsm/libpkcs11.so"
token = "edge"
failover_token = "edge-standby"
pin_env = "PORTCULLIS_PIN"
sessions = 8
max_in_flight = 64
operation_timeout_ms = 500
retry_interval_ms = 250

[[listener]]
name = "partners-v4"
address = "192.0.2.10:443"
backlog = 64
handshake_timeout_ms = 1500
idle_timeout_ms = 60000
buffer_bytes = 4096

  [listener.tls]
  client_auth = "optional"
  trust_dir = "pki/hashed"
  crl_files = ["pki/client-ca.crl.pem", ")" +
                             absolute_crl + R"("]
  crl_scope = "chain"
  verify_depth = 0
  require_client_eku = false
  verified_chain_cache_entries = 0
  min_version = "1.3"
  max_version = "1.3"
  ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384"
  ciphersuites = "TLS_AES_256_GCM_SHA384"
  groups = "P-384"
  alpn = []

    [[listener.tls.certificate]]
    chain = "./pki/../pki/server-ec.chain.pem"
    key = "pkcs11:token=edge;object=server-ec;type=private"
    server_names = ["api.example", "*.api.example"]

    [listener.tls.allow]
    sha256 = [")" + std::string(kFingerprint) +
                             R"(", ")" + std::string(64, 'b') + R"("]

  [listener.upstream]
  backends = ["10.0.0.1:8080", "[2001:db8::7]:8080"]
  connect_timeout_ms = 250
  fail_threshold = 1
  retry_after_ms = 1000
  proxy_protocol = true

[[listener]]
address = "[::1]:443"
buffer_bytes = 16777216
  [listener.tls]
  client_auth = "none"
    [[listener.tls.certificate]]
    chain = "pki/server-rsa.chain.pem"
    key = "pki/server-rsa.key.pem"
  [listener.upstream]
  backends = ["10.0.0.2:8080"]
)";
    const Config config = parse_in(pki, text);

    EXPECT_EQ(config.workers.count, 3);
    EXPECT_EQ(config.workers.max_connections, 250);
    EXPECT_EQ(config.workers.drain_timeout_ms, 1500);
    EXPECT_EQ(config.log.level, "debug");
    EXPECT_EQ(config.log.access_log, pki.at("access.log"));
    EXPECT_EQ(config.log.connection_lines_per_second, 200);
    EXPECT_EQ(config.log.connection_lines_burst, 1000);
    ASSERT_EQ(config.listeners.size(), 2u);

    const auto& first = config.listeners[0];
    EXPECT_EQ(first.name, "partners-v4");
    EXPECT_EQ(first.address.to_string(), "192.0.2.10:443");
    EXPECT_EQ(first.backlog, 64);
    EXPECT_EQ(first.handshake_timeout_ms, 1500);
    EXPECT_EQ(first.idle_timeout_ms, 60000);
    EXPECT_EQ(first.buffer_bytes, 4096u);
    EXPECT_EQ(first.tls.client_auth, ClientAuth::optional);
    EXPECT_EQ(first.tls.trust_file, "");
    EXPECT_EQ(first.tls.trust_dir, pki.at("pki/hashed"));
    EXPECT_EQ(first.tls.crl_files,
              (std::vector<std::string>{pki.at("pki/client-ca.crl.pem"), absolute_crl}));
    EXPECT_EQ(first.tls.crl_scope, CrlScope::chain);
    EXPECT_EQ(first.tls.verify_depth, 0);
    EXPECT_FALSE(first.tls.require_client_auth_eku);
    EXPECT_EQ(first.tls.verified_chain_cache_entries, 0u);
    EXPECT_EQ(first.tls.min_version, TlsVersion::tls13);
    EXPECT_EQ(first.tls.max_version, TlsVersion::tls13);
    EXPECT_EQ(first.tls.ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384");
    EXPECT_EQ(first.tls.ciphersuites, "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(first.tls.groups, "P-384");
    EXPECT_TRUE(first.tls.alpn.empty());
    ASSERT_EQ(first.tls.certificates.size(), 1u);
    EXPECT_EQ(first.tls.certificates[0].chain_file, pki.at("pki/server-ec.chain.pem"));
    EXPECT_EQ(first.tls.certificates[0].key, "pkcs11:token=edge;object=server-ec;type=private");
    EXPECT_EQ(config.hsm.module, pki.at("hsm/libpkcs11.so"));
    EXPECT_EQ(config.hsm.token, "edge");
    EXPECT_EQ(config.hsm.failover_token, "edge-standby");
    EXPECT_EQ(config.hsm.pin_file, "");
    EXPECT_EQ(config.hsm.pin_env, "PORTCULLIS_PIN");
    EXPECT_EQ(config.hsm.sessions, 8);
    EXPECT_EQ(config.hsm.max_in_flight, 64);
    EXPECT_EQ(config.hsm.operation_timeout_ms, 500);
    EXPECT_EQ(config.hsm.retry_interval_ms, 250);
    EXPECT_EQ(first.tls.certificates[0].server_names,
              (std::vector<std::string>{"api.example", "*.api.example"}));
    EXPECT_TRUE(first.tls.allow.subject_patterns.empty());
    EXPECT_EQ(first.tls.allow.sha256_fingerprints,
              (std::vector<std::string>{std::string(kFingerprint), std::string(64, 'b')}));
    ASSERT_EQ(first.upstream.backends.size(), 2u);
    EXPECT_EQ(first.upstream.backends[0].to_string(), "10.0.0.1:8080");
    EXPECT_EQ(first.upstream.backends[1].to_string(), "[2001:db8::7]:8080");
    EXPECT_EQ(first.upstream.connect_timeout_ms, 250);
    EXPECT_EQ(first.upstream.fail_threshold, 1);
    EXPECT_EQ(first.upstream.retry_after_ms, 1000);
    EXPECT_TRUE(first.upstream.proxy_protocol);

    // Same port on another family does not collide; the unnamed listener is named by index.
    const auto& second = config.listeners[1];
    EXPECT_EQ(second.name, "listener1");
    EXPECT_EQ(second.address.to_string(), "[::1]:443");
    EXPECT_EQ(second.buffer_bytes, 16777216u);
    EXPECT_EQ(second.tls.client_auth, ClientAuth::none);
    EXPECT_EQ(second.tls.trust_file, "");
}

// The smallest configuration that parses: one listener, everything else omitted.
constexpr std::string_view minimal_listener = R"(
[[listener]]
address = "*:8443"
  [listener.tls]
  trust_bundle = "pki/client-ca.pem"
    [[listener.tls.certificate]]
    chain = "pki/server-ec.chain.pem"
    key = "pki/server-ec.key.pem"
  [listener.upstream]
  backends = ["127.0.0.1:9000"]
)";

// The defaults are the ones docs/portcullis.example.toml and docs/configuration.md promise,
// written out here rather than taken from the structs, so a changed struct default shows up.
TEST(GoodConfig, OmittedKeysTakeTheDocumentedDefaults) {
    const PkiDirectory pki;
    const Config config = parse_in(pki, minimal_listener);
    EXPECT_EQ(config.workers.count, 0);
    EXPECT_EQ(config.workers.max_connections, 10000);
    EXPECT_EQ(config.log.level, "info");
    EXPECT_EQ(config.log.connection_lines_per_second, 20);
    EXPECT_EQ(config.log.connection_lines_burst, 50);
    ASSERT_EQ(config.listeners.size(), 1u);
    const auto& listener = config.listeners[0];
    EXPECT_EQ(listener.name, "listener0");
    EXPECT_EQ(listener.address.to_string(), "0.0.0.0:8443");
    EXPECT_EQ(listener.backlog, 1024);
    EXPECT_EQ(listener.handshake_timeout_ms, 10000);
    EXPECT_EQ(listener.idle_timeout_ms, 300000);
    EXPECT_EQ(listener.buffer_bytes, 65536u);
    EXPECT_EQ(listener.tls.client_auth, ClientAuth::require);
    EXPECT_EQ(listener.tls.trust_dir, "");
    EXPECT_TRUE(listener.tls.crl_files.empty());
    EXPECT_EQ(listener.tls.crl_scope, CrlScope::leaf);
    EXPECT_EQ(listener.tls.verify_depth, 4);
    EXPECT_TRUE(listener.tls.require_client_auth_eku);
    EXPECT_EQ(listener.tls.verified_chain_cache_entries, 10000u);
    EXPECT_EQ(listener.tls.min_version, TlsVersion::tls12);
    EXPECT_EQ(listener.tls.max_version, TlsVersion::tls13);
    EXPECT_EQ(listener.tls.ciphers, "");
    EXPECT_EQ(listener.tls.ciphersuites, "");
    EXPECT_EQ(listener.tls.groups, "");
    EXPECT_TRUE(listener.tls.alpn.empty());
    ASSERT_EQ(listener.tls.certificates.size(), 1u);
    EXPECT_TRUE(listener.tls.certificates[0].server_names.empty());
    EXPECT_TRUE(listener.tls.allow.empty());
    EXPECT_EQ(listener.upstream.connect_timeout_ms, 2000);
    EXPECT_EQ(listener.upstream.fail_threshold, 3);
    EXPECT_EQ(listener.upstream.retry_after_ms, 5000);
    EXPECT_FALSE(listener.upstream.proxy_protocol);
}

TEST(GoodConfig, ResumptionKeysReachTheirFields) {
    const PkiDirectory pki;
    const Config defaults = parse_in(pki, minimal_listener);
    EXPECT_EQ(defaults.resumption.ticket_mode, TicketMode::stateless);
    EXPECT_EQ(defaults.resumption.worker_session_cache_entries, 1024);
    EXPECT_EQ(defaults.resumption.session_cache_entries, 20480);
    const Config config = parse_in(pki,
                                   "[resumption]\nticket_mode = \"stateful\"\n"
                                   "worker_session_cache_entries = 0\n"
                                   "session_cache_entries = 100\n" +
                                       std::string(minimal_listener));
    EXPECT_EQ(config.resumption.ticket_mode, TicketMode::stateful);
    EXPECT_EQ(config.resumption.worker_session_cache_entries, 0);
    EXPECT_EQ(config.resumption.session_cache_entries, 100);
}

TEST(LoadConfig, ResolvesRelativePathsAgainstTheFilesDirectory) {
    const PkiDirectory pki;
    const fs::path file = pki.path() / "etc" / "portcullis.toml";
    write_file(file, R"(
[[listener]]
address = "127.0.0.1:8443"
  [listener.tls]
  client_auth = "none"
    [[listener.tls.certificate]]
    chain = "../pki/server-ec.chain.pem"
    key = "../pki/server-ec.key.pem"
  [listener.upstream]
  backends = ["127.0.0.1:9000"]
)");
    const Config config = load_config(file.string());
    EXPECT_EQ(config.source_file, file.string());
    ASSERT_EQ(config.listeners.size(), 1u);
    EXPECT_EQ(config.listeners[0].tls.certificates[0].chain_file,
              pki.at("pki/server-ec.chain.pem"));
    EXPECT_EQ(config.listeners[0].tls.certificates[0].key, pki.at("pki/server-ec.key.pem"));
}

TEST(LoadConfig, ReportsTheFileAndLineOfAnError) {
    const PkiDirectory pki;
    const fs::path file = pki.path() / "portcullis.toml";
    write_file(file, "[workers]\ncount = -1\n");
    try {
        load_config(file.string());
        FAIL() << "accepted a negative worker count";
    } catch (const ConfigError& error) {
        EXPECT_EQ(error.file(), file.string());
        EXPECT_EQ(error.line(), 2);
        EXPECT_EQ(error.column(), 9);
        EXPECT_EQ(error.key(), "workers.count");
    }
}

TEST(LoadConfig, MissingFileNamesThePath) {
    const TempDirectory directory;
    const std::string missing = (directory.path() / "no-such" / "portcullis.toml").string();
    try {
        load_config(missing);
        FAIL() << "loaded a file that does not exist";
    } catch (const ConfigError& error) {
        EXPECT_EQ(error.file(), missing);
        EXPECT_EQ(std::string(error.what()),
                  missing + ": cannot read configuration file: No such file or directory");
    }
}

TEST(LoadConfig, DirectoryInsteadOfFileIsAnError) {
    const TempDirectory directory;
    try {
        load_config(directory.path().string());
        FAIL() << "loaded a directory";
    } catch (const ConfigError& error) {
        EXPECT_EQ(error.file(), directory.path().string());
        EXPECT_NE(error.problem().find("is a directory"), std::string::npos) << error.what();
    }
}

// ---- the key list against the documentation and the example ------------------------------

std::set<std::string> known_keys() {
    const auto keys = known_config_keys();
    return {keys.begin(), keys.end()};
}

// "listener[].tls.client_auth": two or more dot-separated lowercase names, each optionally
// followed by "[]". Hand-written because std::regex trips GCC 12 warnings under sanitizers.
bool looks_like_key(std::string_view token) {
    std::size_t segments = 0;
    std::size_t start = 0;
    while (start <= token.size()) {
        const auto dot = token.find('.', start);
        std::string_view segment =
            token.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (segment.ends_with("[]")) segment.remove_suffix(2);
        if (segment.empty() ||
            !(std::islower(static_cast<unsigned char>(segment[0])) || segment[0] == '_')) {
            return false;
        }
        for (const char c : segment) {
            if (!std::islower(static_cast<unsigned char>(c)) &&
                !std::isdigit(static_cast<unsigned char>(c)) && c != '_') {
                return false;
            }
        }
        ++segments;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return segments >= 2;
}

std::vector<std::string> backticked_tokens(std::string_view line) {
    std::vector<std::string> tokens;
    for (auto open = line.find('`'); open != std::string_view::npos;) {
        const auto close = line.find('`', open + 1);
        if (close == std::string_view::npos) break;
        tokens.emplace_back(line.substr(open + 1, close - open - 1));
        open = line.find('`', close + 1);
    }
    return tokens;
}

TEST(KnownKeys, AreUniqueDottedPaths) {
    const auto keys = known_config_keys();
    EXPECT_EQ(known_keys().size(), keys.size()) << "duplicate entries in known_config_keys()";
    for (const auto& key : keys) EXPECT_TRUE(looks_like_key(key)) << key;
    EXPECT_TRUE(known_keys().contains("workers.count"));
    EXPECT_TRUE(known_keys().contains("listener[].tls.certificate[].chain"));
    EXPECT_TRUE(known_keys().contains("listener[].tls.allow.subjects"));
}

void collect_keys(const toml::table& table, const std::string& prefix, std::set<std::string>& out) {
    for (const auto& [name, node] : table) {
        const std::string key = prefix + std::string(name.str());
        if (const auto* sub = node.as_table()) {
            collect_keys(*sub, key + ".", out);
        } else if (const auto* array = node.as_array(); array && array->is_array_of_tables()) {
            for (const auto& element : *array) collect_keys(*element.as_table(), key + "[].", out);
        } else {
            out.insert(key);
        }
    }
}

TEST(KnownKeys, ExampleFileShowsEveryKeyAndNoOther) {
    const auto example =
        toml::parse_file(source_file_from_env("PORTCULLIS_EXAMPLE_CONFIG").string());
    std::set<std::string> used;
    collect_keys(example, "", used);
    EXPECT_EQ(used, known_keys());
}

TEST(KnownKeys, MatchTheReferenceDocumentation) {
    const std::string doc = read_file(source_file_from_env("PORTCULLIS_CONFIGURATION_DOC"));

    std::set<std::string> mentioned;
    std::set<std::string> in_tables;
    std::istringstream lines(doc);
    for (std::string line; std::getline(lines, line);) {
        const bool table_row = line.starts_with("|");
        for (const auto& token : backticked_tokens(line)) {
            mentioned.insert(token);
            if (table_row && looks_like_key(token)) in_tables.insert(token);
        }
    }
    const auto known = known_keys();
    for (const auto& key : known) {
        EXPECT_TRUE(mentioned.contains(key))
            << "docs/configuration.md does not document `" << key << "`";
    }
    for (const auto& token : in_tables) {
        EXPECT_TRUE(known.contains(token)) << "docs/configuration.md documents `" << token
                                           << "`, which the parser does not accept";
    }
}

TEST(GoodConfig, DpdkTransportReachesItsFields) {
    const PkiDirectory pki;
    const Config config = parse_in(pki, R"(
[dataplane]
transport = "dpdk"
[dataplane.dpdk]
eal_args = ["--no-huge", "-m", "256"]
device = "net_af_packet0,iface=veth0"
address = "10.77.0.1/24"
gateway = "10.77.0.254"
mtu = 9000
mbufs = 4095
syn_backlog = 64
)" + std::string(minimal_listener));
    EXPECT_EQ(config.dataplane.transport, DataplaneTransport::dpdk);
    const auto& dpdk = config.dataplane.dpdk;
    EXPECT_EQ(dpdk.eal_args, (std::vector<std::string>{"--no-huge", "-m", "256"}));
    EXPECT_EQ(dpdk.device, "net_af_packet0,iface=veth0");
    EXPECT_FALSE(dpdk.is_pci());
    EXPECT_EQ(dpdk.address, 0x0a4d0001u);
    EXPECT_EQ(dpdk.netmask, 0xffffff00u);
    EXPECT_EQ(dpdk.gateway, 0x0a4d00feu);
    EXPECT_EQ(dpdk.mtu, 9000);
    EXPECT_EQ(dpdk.mbufs, 4095u);
    EXPECT_EQ(dpdk.syn_backlog, 64u);
    EXPECT_EQ(config.workers.count, 0) << "a virtual device may be shared by every worker";
    EXPECT_FALSE(dpdk.queues_per_worker()) << "virtual devices: every worker sees every frame";
    EXPECT_TRUE(dpdk.checksum_offload);
}

TEST(GoodConfig, DpdkPciPortIsSharedByQueues) {
    const PkiDirectory pki;
    const Config config = parse_in(pki, R"(
[workers]
count = 4
[dataplane]
transport = "dpdk"
[dataplane.dpdk]
eal_args = ["--socket-mem", "1024"]
device = "0000:3b:00.0"
address = "10.77.0.1/24"
checksum_offload = false
)" + std::string(minimal_listener));
    const auto& dpdk = config.dataplane.dpdk;
    EXPECT_TRUE(dpdk.is_pci());
    EXPECT_TRUE(dpdk.queues_per_worker()) << "the default for PCI ports";
    EXPECT_FALSE(dpdk.checksum_offload);
    EXPECT_EQ(config.workers.count, 4);
    const Config virtual_device = parse_in(pki, R"(
[dataplane]
transport = "dpdk"
[dataplane.dpdk]
device = "net_tap0,iface=tap0"
address = "10.77.0.1/24"
queue_per_worker = true
)" + std::string(minimal_listener));
    EXPECT_TRUE(virtual_device.dataplane.dpdk.queues_per_worker());
}

TEST(GoodConfig, KeepaliveReachesItsFieldsAndZeroTurnsItOff) {
    const PkiDirectory pki;
    const auto with_keepalive = [&](const std::string& table) {
        return parse_in(pki, table + std::string(minimal_listener));
    };
    const auto defaults = with_keepalive("").dataplane.keepalive;
    EXPECT_EQ(defaults.idle_s, 60);
    EXPECT_EQ(defaults.interval_s, 10);
    EXPECT_EQ(defaults.probes, 6);
    const auto set =
        with_keepalive("[dataplane.keepalive]\nidle_s = 5\ninterval_s = 2\nprobes = 3\n")
            .dataplane.keepalive;
    EXPECT_EQ(set.idle_s, 5);
    EXPECT_EQ(set.interval_s, 2);
    EXPECT_EQ(set.probes, 3);
    EXPECT_EQ(with_keepalive("[dataplane.keepalive]\nidle_s = 0\n").dataplane.keepalive.idle_s, 0);
}

}  // namespace
}  // namespace portcullis::mgmt
