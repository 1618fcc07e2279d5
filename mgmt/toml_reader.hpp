// The machinery the configuration reader is built from, apart from what the
// daemon's sections mean: a Section wraps one TOML table with its dotted key
// path ("listener[0].tls"), rejects keys it was not told about (naming the
// nearest known key), and reads typed values; the value checks below resolve
// paths against the file's directory and parse addresses. Every failure
// throws ConfigError naming file, line, column and key.
//
// It knows no section, key or default of the daemon: those live with the
// section readers (mgmt/config.cpp). A Section refers to its toml++ table and
// to its Source; both outlive it (one parse, one thread).
#pragma once

#include <toml++/toml.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/socket_address.hpp"
#include "mgmt/config.hpp"

namespace portcullis::mgmt::toml_reader {

// One accepted text of an enumerated key and the value it stands for.
template <typename Value>
struct Choice {
    std::string_view text;
    Value value;
};

std::string in_quotes(std::string_view text);

template <typename Range>
std::string joined(const Range& items, std::string_view separator, bool quote) {
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) out += separator;
        out += quote ? in_quotes(item) : std::string(item);
    }
    return out;
}

// The candidate within a small edit distance of `unknown`, if any.
std::optional<std::string_view> closest_match(std::string_view unknown,
                                              const std::vector<std::string_view>& candidates);

// "a string \"10\"": the operator sees both what the parser found and the value.
std::string describe(const toml::node& node);

// One key of a dotted path as TOML writes it: bare where it can be (client_auth), otherwise
// quoted with escapes ("", "a.b", "tab\there"), so an error names the key unambiguously and on
// one line.
std::string key_name(std::string_view name);

// A string value together with where it came from, so later checks can point at it.
struct StringField {
    std::string value;
    const toml::node* node;
    std::string key;
};

struct StringList {
    std::vector<StringField> items;
    const toml::node* node;
    std::string key;
};

// Everything an error needs besides the node: the file name and where relative paths start.
class Source {
  public:
    Source(std::string file, std::filesystem::path base_directory)
        : file_(std::move(file)), base_directory_(std::move(base_directory)) {}

    [[noreturn]] void fail(const toml::source_region& where, std::string key,
                           std::string problem) const;
    [[noreturn]] void fail(const toml::node& node, std::string key, std::string problem) const {
        fail(node.source(), std::move(key), std::move(problem));
    }

    const std::filesystem::path& base_directory() const { return base_directory_; }

  private:
    std::string file_;
    std::filesystem::path base_directory_;
};

class Section {
  public:
    Section(const toml::table& table, std::string path, const Source& source)
        : table_(table), path_(std::move(path)), source_(source) {}

    const std::string& path() const { return path_; }
    const toml::table& table() const { return table_; }
    const Source& source() const { return source_; }

    // The dotted path of this table's key `name` (one key, quoted if it is not bare).
    std::string key_of(std::string_view name) const {
        return path_.empty() ? key_name(name) : path_ + "." + key_name(name);
    }

    // Reports the unknown key that comes first in the file, whatever order toml++ keeps.
    void reject_unknown_keys(std::span<const std::string_view> keys,
                             std::span<const std::string_view> tables = {}) const;
    [[noreturn]] void fail_missing(std::string_view name, std::string_view hint = {}) const;

    // Absent keys give nullopt or the fallback; a present key of the wrong
    // type or out of range throws.
    std::optional<std::int64_t> integer(std::string_view name, std::int64_t min,
                                        std::int64_t max) const;
    int integer_or(std::string_view name, int fallback, std::int64_t min, std::int64_t max) const {
        return static_cast<int>(integer(name, min, max).value_or(fallback));
    }
    bool boolean_or(std::string_view name, bool fallback) const;
    std::string string_or(std::string_view name, std::string fallback) const {
        const auto field = string(name);
        return field ? field->value : std::move(fallback);
    }
    std::optional<StringField> string(std::string_view name) const;
    std::optional<StringList> string_list(std::string_view name) const;

    template <typename Value, std::size_t N>
    Value choice_or(std::string_view name, Value fallback,
                    const std::array<Choice<Value>, N>& choices) const {
        const toml::node* node = table_.get(name);
        if (node == nullptr) return fallback;
        std::vector<std::string_view> texts;
        for (const auto& choice : choices) texts.push_back(choice.text);
        const std::string expected = "expected one of " + joined(texts, ", ", true);
        const auto* value = node->as_string();
        if (value == nullptr) {
            source_.fail(*node, key_of(name), expected + ", got " + describe(*node));
        }
        for (const auto& choice : choices) {
            if (choice.text == value->get()) return choice.value;
        }
        source_.fail(*node, key_of(name), expected + ", got " + in_quotes(value->get()));
    }

    std::optional<Section> subtable(std::string_view name) const;
    // Absent = empty; the caller decides whether that is an error.
    std::vector<Section> table_array(std::string_view name) const;

    toml::source_region table_position() const;

  private:
    StringField string_of(const toml::node& node, std::string key) const;
    std::string table_header(std::string_view name) const;

    const toml::table& table_;
    std::string path_;
    const Source& source_;
};

// ---- value checks -------------------------------------------------------------------------

bool is_wildcard(const dataplane::SocketAddress& address);

// "IPv4:port", "[IPv6]:port" or "*:port"; a backend (wildcard_allowed false)
// needs a concrete address.
dataplane::SocketAddress address_of(const Section& section, const StringField& field,
                                    bool wildcard_allowed);

// A numeric IPv4 address, in host byte order.
std::uint32_t ipv4_of(const Section& section, const StringField& field);

void require_non_empty(const Section& section, const StringField& field, std::string_view what);

enum class PathKind { file, directory };

// Resolves against the configuration's directory and proves the path can be opened now, so a
// typo fails at start-up with the key that holds it rather than in a worker later.
std::string existing_path(const Section& section, const StringField& field, PathKind kind);

// A log file: it must open for appending (it is created if missing), so a
// typo fails at --check-config rather than when the first client arrives.
std::string writable_log_path(const Section& section, const StringField& field);

}  // namespace portcullis::mgmt::toml_reader
