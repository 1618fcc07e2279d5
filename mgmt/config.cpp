// TOML -> Config. A TableReader wraps each table: it hands out typed values,
// remembers which keys were read, and finish() turns every key nobody read
// into an "unknown key" error. Every error carries file, line, column and the
// dotted key path.
#include "mgmt/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace portcullis::mgmt {
namespace {

namespace fs = std::filesystem;
using crypto::ClientAuth;
using crypto::CrlScope;
using crypto::TlsVersion;

struct Source {
    std::string file;
    fs::path base;
};

[[noreturn]] void fail(const Source& src, const toml::source_region& where, const std::string& key,
                       const std::string& problem) {
    throw ConfigError(src.file, static_cast<int>(where.begin.line), static_cast<int>(where.begin.column), key,
                      problem);
}

std::string type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::array: return "an array";
        case toml::node_type::table: return "a table";
        default: return "a date/time";
    }
}

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
}

class TableReader {
public:
    TableReader(const toml::table& table, std::string path, const Source& src, std::vector<std::string> allowed)
        : table_(table), path_(std::move(path)), src_(src), allowed_(std::move(allowed)) {}

    std::string key_path(std::string_view key) const {
        return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    }

    const toml::node* find(std::string_view key) {
        read_.insert(std::string(key));
        return table_.get(key);
    }

    [[noreturn]] void fail_at(const toml::node& node, std::string_view key, const std::string& problem) const {
        fail(src_, node.source(), key_path(key), problem);
    }

    [[noreturn]] void fail_missing(std::string_view key) const {
        fail(src_, table_.source(), key_path(key), "missing required key");
    }

    std::optional<std::string> string(std::string_view key) {
        const auto* node = find(key);
        if (!node) return std::nullopt;
        if (!node->is_string()) fail_at(*node, key, "expected a string, got " + type_name(*node));
        return node->as_string()->get();
    }

    std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max) {
        const auto* node = find(key);
        if (!node) return std::nullopt;
        if (!node->is_integer()) fail_at(*node, key, "expected an integer, got " + type_name(*node));
        const auto value = node->as_integer()->get();
        if (value < min || value > max) {
            fail_at(*node, key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                                    ", got " + std::to_string(value));
        }
        return value;
    }

    std::optional<bool> boolean(std::string_view key) {
        const auto* node = find(key);
        if (!node) return std::nullopt;
        if (!node->is_boolean()) fail_at(*node, key, "expected true or false, got " + type_name(*node));
        return node->as_boolean()->get();
    }

    std::optional<std::vector<std::string>> strings(std::string_view key) {
        const auto* node = find(key);
        if (!node) return std::nullopt;
        if (!node->is_array()) fail_at(*node, key, "expected an array of strings, got " + type_name(*node));
        std::vector<std::string> out;
        std::size_t i = 0;
        for (const auto& item : *node->as_array()) {
            if (!item.is_string()) {
                fail(src_, item.source(), key_path(key) + "[" + std::to_string(i) + "]",
                     "expected a string, got " + type_name(item));
            }
            out.push_back(item.as_string()->get());
            ++i;
        }
        return out;
    }

    template <typename Enum>
    std::optional<Enum> choice(std::string_view key, const std::vector<std::pair<std::string, Enum>>& options) {
        const auto* node = find(key);
        if (!node) return std::nullopt;
        std::vector<std::string> names;
        for (const auto& [name, value] : options) names.push_back("\"" + name + "\"");
        if (!node->is_string()) fail_at(*node, key, "expected one of " + join(names) + ", got " + type_name(*node));
        const auto text = node->as_string()->get();
        for (const auto& [name, value] : options) {
            if (name == text) return value;
        }
        fail_at(*node, key, "expected one of " + join(names) + ", got \"" + text + "\"");
    }

    const toml::table* subtable(std::string_view key) {
        const auto* node = find(key);
        if (!node) return nullptr;
        if (!node->is_table()) fail_at(*node, key, "expected a table, got " + type_name(*node));
        return node->as_table();
    }

    // [[key]] arrays of tables.
    const toml::array* table_array(std::string_view key) {
        const auto* node = find(key);
        if (!node) return nullptr;
        if (!node->is_array_of_tables()) {
            fail_at(*node, key, "expected an array of tables ([[" + key_path(key) + "]]), got " + type_name(*node));
        }
        return node->as_array();
    }

    // A file path relative to the config file's directory; must be readable.
    std::optional<std::string> file(std::string_view key, bool directory = false) {
        const auto value = string(key);
        if (!value || value->empty()) return value;
        return resolve(*find(key), key, *value, directory);
    }

    std::string resolve(const toml::node& node, std::string_view key, const std::string& value, bool directory) const {
        const fs::path path = fs::path(value).is_absolute() ? fs::path(value) : src_.base / value;
        std::error_code ec;
        const auto status = fs::status(path, ec);
        if (ec || !fs::exists(status)) fail_at(node, key, "file not found: " + path.string());
        if (directory && !fs::is_directory(status)) fail_at(node, key, "not a directory: " + path.string());
        if (!directory && fs::is_directory(status)) fail_at(node, key, "expected a file, found a directory: " + path.string());
        if (::access(path.c_str(), R_OK) != 0) fail_at(node, key, "not readable: " + path.string());
        return path.string();
    }

    void finish() const {
        for (const auto& [key, node] : table_) {
            const std::string name(key.str());
            if (read_.count(name)) continue;
            if (std::find(allowed_.begin(), allowed_.end(), name) != allowed_.end()) continue;
            fail(src_, key.source().begin.line ? key.source() : node.source(), key_path(name),
                 "unknown key; expected one of: " + join(allowed_));
        }
    }

    const toml::table& table() const { return table_; }
    const Source& source() const { return src_; }

private:
    const toml::table& table_;
    std::string path_;
    const Source& src_;
    std::vector<std::string> allowed_;
    std::set<std::string> read_;
};

constexpr std::int64_t max_ms = 24LL * 3600 * 1000;

TlsVersion parse_version(TableReader& r, std::string_view key, TlsVersion fallback) {
    return r.choice<TlsVersion>(key, {{"1.2", TlsVersion::tls12}, {"1.3", TlsVersion::tls13}}).value_or(fallback);
}

std::string canonical_fingerprint(const std::string& text) {
    std::string hex;
    for (const char c : text) {
        if (c == ':') continue;
        hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    return hex;
}

void parse_allow(TableReader& tls, crypto::AllowList& allow, const toml::table& table) {
    TableReader r(table, tls.key_path("allow"), tls.source(), {"subjects", "san_uris", "san_dns", "sha256"});
    allow.subject_patterns = r.strings("subjects").value_or(std::vector<std::string>{});
    allow.san_uris = r.strings("san_uris").value_or(std::vector<std::string>{});
    allow.san_dns = r.strings("san_dns").value_or(std::vector<std::string>{});
    allow.sha256_fingerprints = r.strings("sha256").value_or(std::vector<std::string>{});
    if (const auto* node = table.get("sha256")) {
        std::size_t i = 0;
        for (const auto& item : *node->as_array()) {
            const auto hex = canonical_fingerprint(item.as_string()->get());
            const bool ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
            if (!ok) {
                fail(tls.source(), item.source(), r.key_path("sha256") + "[" + std::to_string(i) + "]",
                     "expected a SHA-256 fingerprint: 64 hex digits, ':' separators optional");
            }
            ++i;
        }
    }
    r.finish();
}

void parse_certificate(TableReader& tls, std::size_t index, const toml::table& table, crypto::CertificateSpec& spec) {
    TableReader r(table, tls.key_path("certificate") + "[" + std::to_string(index) + "]", tls.source(),
                  {"chain", "key", "server_names"});
    const auto chain = r.file("chain");
    if (!chain || chain->empty()) r.fail_missing("chain");
    spec.chain_file = *chain;
    const auto key = r.string("key");
    if (!key || key->empty()) r.fail_missing("key");
    // A PKCS#11 URI names a token object, not a file.
    spec.key = key->starts_with("pkcs11:") ? *key : r.resolve(*table.get("key"), "key", *key, false);
    spec.server_names = r.strings("server_names").value_or(std::vector<std::string>{});
    r.finish();
}

void parse_tls(TableReader& listener, const toml::table& table, crypto::TlsPolicy& tls) {
    TableReader r(table, listener.key_path("tls"), listener.source(),
                  {"client_auth", "trust_bundle", "trust_dir", "crl_files", "crl_scope", "verify_depth",
                   "require_client_eku", "min_version", "max_version", "ciphers", "ciphersuites", "groups", "alpn",
                   "certificate", "allow"});
    tls.client_auth = r.choice<ClientAuth>("client_auth", {{"require", ClientAuth::require},
                                                           {"optional", ClientAuth::optional},
                                                           {"none", ClientAuth::none}})
                          .value_or(ClientAuth::require);
    tls.trust_file = r.file("trust_bundle").value_or("");
    tls.trust_dir = r.file("trust_dir", true).value_or("");
    if (const auto* node = table.get("crl_files")) {
        const auto crls = r.strings("crl_files").value();
        for (std::size_t i = 0; i < crls.size(); ++i) {
            tls.crl_files.push_back(r.resolve((*node->as_array())[i], "crl_files[" + std::to_string(i) + "]", crls[i], false));
        }
    } else {
        r.find("crl_files");
    }
    tls.crl_scope = r.choice<CrlScope>("crl_scope", {{"leaf", CrlScope::leaf}, {"chain", CrlScope::chain}})
                        .value_or(CrlScope::leaf);
    tls.verify_depth = static_cast<int>(r.integer("verify_depth", 0, 16).value_or(4));
    tls.require_client_auth_eku = r.boolean("require_client_eku").value_or(true);
    tls.min_version = parse_version(r, "min_version", TlsVersion::tls12);
    tls.max_version = parse_version(r, "max_version", TlsVersion::tls13);
    if (tls.min_version == TlsVersion::tls13 && tls.max_version == TlsVersion::tls12) {
        r.fail_at(*table.get("min_version"), "min_version", "min_version \"1.3\" is above max_version \"1.2\"");
    }
    tls.ciphers = r.string("ciphers").value_or("");
    tls.ciphersuites = r.string("ciphersuites").value_or("");
    tls.groups = r.string("groups").value_or("");
    tls.alpn = r.strings("alpn").value_or(std::vector<std::string>{});
    for (std::size_t i = 0; i < tls.alpn.size(); ++i) {
        if (tls.alpn[i].empty() || tls.alpn[i].size() > 255) {
            fail(r.source(), (*table.get("alpn")->as_array())[i].source(), r.key_path("alpn") + "[" + std::to_string(i) + "]",
                 "expected a protocol name of 1 to 255 bytes");
        }
    }

    const auto* certificates = r.table_array("certificate");
    if (!certificates || certificates->empty()) {
        fail(r.source(), table.source(), r.key_path("certificate"),
             "missing required key: at least one [[" + r.key_path("certificate") + "]] with chain and key");
    }
    for (std::size_t i = 0; i < certificates->size(); ++i) {
        parse_certificate(r, i, *(*certificates)[i].as_table(), tls.certificates.emplace_back());
    }

    if (tls.client_auth != ClientAuth::none && tls.trust_file.empty() && tls.trust_dir.empty()) {
        const auto* where = table.get("client_auth");
        fail(r.source(), where ? where->source() : table.source(), r.key_path("trust_bundle"),
             "client_auth = \"" + std::string(tls.client_auth == ClientAuth::require ? "require" : "optional") +
                 "\" needs trust_bundle or trust_dir (the CAs that issue client certificates)");
    }
    if (const auto* allow = r.subtable("allow")) {
        parse_allow(r, tls.allow, *allow);
        if (tls.client_auth == ClientAuth::none && !tls.allow.empty()) {
            fail(r.source(), allow->source(), r.key_path("allow"),
                 "an allow-list needs client certificates: set client_auth to \"require\" or \"optional\"");
        }
    }
    if (tls.client_auth == ClientAuth::none && !tls.crl_files.empty()) {
        fail(r.source(), table.get("crl_files")->source(), r.key_path("crl_files"),
             "CRLs apply to client certificates: set client_auth to \"require\" or \"optional\"");
    }
    r.finish();
}

dataplane::SocketAddress parse_address(TableReader& r, const toml::node& node, std::string_view key,
                                       const std::string& text) {
    const auto address = dataplane::SocketAddress::parse(text);
    if (!address) {
        r.fail_at(node, key, "expected a numeric address with port: \"192.0.2.1:443\", \"*:443\" or \"[2001:db8::1]:443\", got \"" +
                                 text + "\"");
    }
    return *address;
}

void parse_upstream(TableReader& listener, const toml::table& table, dataplane::UpstreamSettings& up) {
    TableReader r(table, listener.key_path("upstream"), listener.source(),
                  {"backends", "connect_timeout_ms", "fail_threshold", "retry_after_ms", "proxy_protocol"});
    const auto backends = r.strings("backends");
    if (!backends || backends->empty()) {
        const auto* node = table.get("backends");
        fail(r.source(), node ? node->source() : table.source(), r.key_path("backends"),
             node ? "expected at least one backend address" : "missing required key");
    }
    for (std::size_t i = 0; i < backends->size(); ++i) {
        up.backends.push_back(parse_address(r, (*table.get("backends")->as_array())[i],
                                            "backends[" + std::to_string(i) + "]", (*backends)[i]));
    }
    up.connect_timeout_ms = static_cast<int>(r.integer("connect_timeout_ms", 1, max_ms).value_or(2000));
    up.fail_threshold = static_cast<int>(r.integer("fail_threshold", 1, 1000).value_or(3));
    up.retry_after_ms = static_cast<int>(r.integer("retry_after_ms", 1, max_ms).value_or(5000));
    up.proxy_protocol = r.boolean("proxy_protocol").value_or(false);
    r.finish();
}

void parse_listener(TableReader& root, std::size_t index, const toml::table& table, dataplane::ListenerSettings& l) {
    TableReader r(table, "listener[" + std::to_string(index) + "]", root.source(),
                  {"name", "address", "backlog", "handshake_timeout_ms", "idle_timeout_ms", "buffer_bytes", "tls",
                   "upstream"});
    l.name = r.string("name").value_or("listener" + std::to_string(index));
    if (l.name.empty()) r.fail_at(*table.get("name"), "name", "expected a non-empty name");
    const auto address = r.string("address");
    if (!address) r.fail_missing("address");
    l.address = parse_address(r, *table.get("address"), "address", *address);
    l.backlog = static_cast<int>(r.integer("backlog", 1, 65535).value_or(1024));
    l.handshake_timeout_ms = static_cast<int>(r.integer("handshake_timeout_ms", 1, max_ms).value_or(10000));
    l.idle_timeout_ms = static_cast<int>(r.integer("idle_timeout_ms", 1, max_ms).value_or(300000));
    l.buffer_bytes = static_cast<std::size_t>(r.integer("buffer_bytes", 4096, 16 * 1024 * 1024).value_or(64 * 1024));
    const auto* tls = r.subtable("tls");
    if (!tls) r.fail_missing("tls");
    parse_tls(r, *tls, l.tls);
    const auto* upstream = r.subtable("upstream");
    if (!upstream) r.fail_missing("upstream");
    parse_upstream(r, *upstream, l.upstream);
    r.finish();
}

}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key, std::string problem)
    : std::runtime_error(file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + key + ": " + problem),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_(std::move(key)),
      problem_(std::move(problem)) {}

Config parse_config(std::string_view toml_text, const std::string& source_name, const std::string& base_directory) {
    const Source src{source_name, fs::path(base_directory)};
    toml::table root;
    try {
        root = toml::parse(toml_text, source_name);
    } catch (const toml::parse_error& e) {
        throw ConfigError(source_name, static_cast<int>(e.source().begin.line),
                          static_cast<int>(e.source().begin.column), "(syntax)",
                          "invalid TOML: " + std::string(e.description()));
    }
    Config config;
    config.source_file = source_name;
    TableReader r(root, "", src, {"workers", "log", "listener"});
    if (const auto* workers = r.subtable("workers")) {
        TableReader w(*workers, "workers", src, {"count", "max_connections"});
        config.workers.count = static_cast<int>(w.integer("count", 0, 1024).value_or(0));
        config.workers.max_connections = static_cast<int>(w.integer("max_connections", 1, 10'000'000).value_or(10000));
        w.finish();
    }
    if (const auto* log = r.subtable("log")) {
        TableReader l(*log, "log", src, {"level"});
        const auto level = l.choice<std::string>(
            "level", {{"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"},
                      {"error", "error"}, {"critical", "critical"}, {"off", "off"}});
        config.log.level = level.value_or("info");
        l.finish();
    }
    const auto* listeners = r.table_array("listener");
    if (!listeners || listeners->empty()) {
        fail(src, root.source(), "listener", "missing required key: at least one [[listener]] is needed");
    }
    for (std::size_t i = 0; i < listeners->size(); ++i) {
        const auto& table = *(*listeners)[i].as_table();
        auto& listener = config.listeners.emplace_back();
        parse_listener(r, i, table, listener);
        for (std::size_t j = 0; j < i; ++j) {
            const auto& other = config.listeners[j];
            const auto* name_node = table.get("name");
            if (other.name == listener.name) {
                fail(src, name_node ? name_node->source() : table.source(), "listener[" + std::to_string(i) + "].name",
                     "duplicate listener name \"" + listener.name + "\" (also listener[" + std::to_string(j) + "])");
            }
            if (other.address.to_string() == listener.address.to_string()) {
                fail(src, table.get("address")->source(), "listener[" + std::to_string(i) + "].address",
                     "address " + listener.address.to_string() + " is already used by listener[" + std::to_string(j) + "]");
            }
        }
    }
    r.finish();
    return config;
}

Config load_config(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(path, 0, 0, "(file)", "cannot read configuration file");
    std::stringstream text;
    text << in.rdbuf();
    const auto base = fs::absolute(fs::path(path)).parent_path();
    return parse_config(text.str(), path, base.string());
}

std::vector<std::string> known_config_keys() {
    return {
        "workers.count", "workers.max_connections", "log.level",
        "listener[].name", "listener[].address", "listener[].backlog", "listener[].handshake_timeout_ms",
        "listener[].idle_timeout_ms", "listener[].buffer_bytes",
        "listener[].tls.client_auth", "listener[].tls.trust_bundle", "listener[].tls.trust_dir",
        "listener[].tls.crl_files", "listener[].tls.crl_scope", "listener[].tls.verify_depth",
        "listener[].tls.require_client_eku", "listener[].tls.min_version", "listener[].tls.max_version",
        "listener[].tls.ciphers", "listener[].tls.ciphersuites", "listener[].tls.groups", "listener[].tls.alpn",
        "listener[].tls.certificate[].chain", "listener[].tls.certificate[].key",
        "listener[].tls.certificate[].server_names",
        "listener[].tls.allow.subjects", "listener[].tls.allow.san_uris", "listener[].tls.allow.san_dns",
        "listener[].tls.allow.sha256",
        "listener[].upstream.backends", "listener[].upstream.connect_timeout_ms",
        "listener[].upstream.fail_threshold", "listener[].upstream.retry_after_ms",
        "listener[].upstream.proxy_protocol",
    };
}

}  // namespace portcullis::mgmt
