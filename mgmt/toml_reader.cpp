#include "mgmt/toml_reader.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <sstream>
#include <utility>

#include "base/unique_fd.hpp"

namespace portcullis::mgmt {
namespace {

bool is_control(char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
}

// As TOML's basic strings escape it ("\n", "\u001B").
void append_escaped_control(std::string& out, char c) {
    switch (c) {
        case '\b':
            out += "\\b";
            return;
        case '\t':
            out += "\\t";
            return;
        case '\n':
            out += "\\n";
            return;
        case '\f':
            out += "\\f";
            return;
        case '\r':
            out += "\\r";
            return;
        default:
            constexpr std::string_view digits = "0123456789ABCDEF";
            out += "\\u00";
            out += digits[(c >> 4) & 0xf];
            out += digits[c & 0xf];
    }
}

// A problem quotes what the file holds, and TOML strings may hold control
// characters (a tab, "\n", "\u001B"): escaped, the message stays one line
// that a terminal or a log shows as written.
std::string on_one_line(std::string text) {
    if (std::none_of(text.begin(), text.end(), is_control)) return text;
    std::string out;
    for (const char c : text) {
        if (is_control(c)) {
            append_escaped_control(out, c);
        } else {
            out += c;
        }
    }
    return out;
}

std::string format_message(const std::string& file, int line, int column, const std::string& key,
                           const std::string& problem) {
    std::string text = file;
    if (line > 0) text += ":" + std::to_string(line) + ":" + std::to_string(column);
    text += ": ";
    if (!key.empty()) text += key + ": ";
    return text + problem;
}

}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key,
                         std::string problem)
    : std::runtime_error(format_message(file, line, column, key, on_one_line(problem))),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_(std::move(key)),
      problem_(on_one_line(std::move(problem))) {}

namespace toml_reader {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kAddressForms =
    "expected \"IPv4:port\", \"[IPv6]:port\" or \"*:port\" with a numeric address "
    "(no host names) and a port in 1..65535";

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> previous(b.size() + 1);
    std::vector<std::size_t> current(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        current[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
        }
        std::swap(previous, current);
    }
    return previous[b.size()];
}

std::string_view type_name(toml::node_type type) {
    switch (type) {
        case toml::node_type::table:
            return "a table";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a floating-point number";
        case toml::node_type::boolean:
            return "a boolean";
        case toml::node_type::date:
            return "a date";
        case toml::node_type::time:
            return "a time";
        case toml::node_type::date_time:
            return "a date-time";
        case toml::node_type::none:
            break;
    }
    return "nothing";
}

bool precedes(const toml::source_region& a, const toml::source_region& b) {
    return std::pair(a.begin.line, a.begin.column) < std::pair(b.begin.line, b.begin.column);
}

}  // namespace

std::string in_quotes(std::string_view text) {
    std::string out = "\"";
    out += text;
    return out + "\"";
}

// A typo such as "client_auht" deserves a pointer to the key that was meant.
std::optional<std::string_view> closest_match(std::string_view unknown,
                                              const std::vector<std::string_view>& candidates) {
    constexpr std::size_t kMaxTypoDistance = 2;
    std::optional<std::string_view> best;
    std::size_t best_distance = kMaxTypoDistance + 1;
    for (const auto candidate : candidates) {
        const std::size_t distance = edit_distance(unknown, candidate);
        if (distance < best_distance && distance < candidate.size() / 2) {
            best = candidate;
            best_distance = distance;
        }
    }
    return best;
}

// "a string \"10\"": the operator sees both what the parser found and the value.
std::string describe(const toml::node& node) {
    std::ostringstream out;
    out << type_name(node.type());
    if (const auto* text = node.as_string()) {
        out << " " << in_quotes(text->get());
    } else if (node.is_value()) {
        node.visit([&out](const auto& value) {
            if constexpr (toml::is_value<decltype(value)>) out << " " << value;
        });
    }
    return out.str();
}
std::string key_name(std::string_view name) {
    const auto bare = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    };
    if (!name.empty() && std::all_of(name.begin(), name.end(), bare)) return std::string(name);
    // TOML basic-string escapes (toml.io, "String"); other bytes are valid UTF-8 already.
    std::string out = "\"";
    for (const char c : name) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (is_control(c)) {
            append_escaped_control(out, c);
        } else {
            out += c;
        }
    }
    return out + "\"";
}

// ---- Source and Section -------------------------------------------------------------------

void Source::fail(const toml::source_region& where, std::string key, std::string problem) const {
    throw ConfigError(file_, static_cast<int>(where.begin.line),
                      static_cast<int>(where.begin.column), std::move(key), std::move(problem));
}

void Section::reject_unknown_keys(std::span<const std::string_view> keys,
                                  std::span<const std::string_view> tables) const {
    const toml::key* first_unknown = nullptr;
    for (const auto& [name, node] : table_) {
        const auto known = [&name](std::span<const std::string_view> list) {
            return std::find(list.begin(), list.end(), name.str()) != list.end();
        };
        if (known(keys) || known(tables)) continue;
        if (first_unknown == nullptr || precedes(name.source(), first_unknown->source())) {
            first_unknown = &name;
        }
    }
    if (first_unknown == nullptr) return;
    std::vector<std::string_view> expected(keys.begin(), keys.end());
    expected.insert(expected.end(), tables.begin(), tables.end());
    std::string problem = "unknown key; expected one of: " + joined(expected, ", ", false);
    if (const auto guess = closest_match(first_unknown->str(), expected)) {
        problem += " (did you mean " + std::string(*guess) + "?)";
    }
    source_.fail(first_unknown->source(), key_of(first_unknown->str()), problem);
}

void Section::fail_missing(std::string_view name, std::string_view hint) const {
    std::string problem = "missing required key";
    if (!hint.empty()) problem += " (" + std::string(hint) + ")";
    source_.fail(table_position(), key_of(name), problem);
}

std::optional<std::int64_t> Section::integer(std::string_view name, std::int64_t min,
                                             std::int64_t max) const {
    const toml::node* node = table_.get(name);
    if (node == nullptr) return std::nullopt;
    const auto* value = node->as_integer();
    if (value == nullptr) {
        source_.fail(*node, key_of(name), "expected an integer, got " + describe(*node));
    }
    if (value->get() < min || value->get() > max) {
        source_.fail(*node, key_of(name),
                     "expected an integer in " + std::to_string(min) + ".." + std::to_string(max) +
                         ", got " + std::to_string(value->get()));
    }
    return value->get();
}

bool Section::boolean_or(std::string_view name, bool fallback) const {
    const toml::node* node = table_.get(name);
    if (node == nullptr) return fallback;
    const auto* value = node->as_boolean();
    if (value == nullptr) {
        source_.fail(*node, key_of(name),
                     "expected a boolean (true or false), got " + describe(*node));
    }
    return value->get();
}

std::optional<StringField> Section::string(std::string_view name) const {
    const toml::node* node = table_.get(name);
    if (node == nullptr) return std::nullopt;
    return string_of(*node, key_of(name));
}

std::optional<StringList> Section::string_list(std::string_view name) const {
    const toml::node* node = table_.get(name);
    if (node == nullptr) return std::nullopt;
    const auto* array = node->as_array();
    if (array == nullptr) {
        source_.fail(*node, key_of(name), "expected an array of strings, got " + describe(*node));
    }
    StringList list{{}, node, key_of(name)};
    for (std::size_t i = 0; i < array->size(); ++i) {
        list.items.push_back(string_of(*array->get(i), list.key + "[" + std::to_string(i) + "]"));
    }
    return list;
}

std::optional<Section> Section::subtable(std::string_view name) const {
    const toml::node* node = table_.get(name);
    if (node == nullptr) return std::nullopt;
    const auto* table = node->as_table();
    if (table == nullptr) {
        source_.fail(*node, key_of(name),
                     "expected a table ([" + table_header(name) + "]), got " + describe(*node));
    }
    return Section(*table, key_of(name), source_);
}

std::vector<Section> Section::table_array(std::string_view name) const {
    std::vector<Section> sections;
    const toml::node* node = table_.get(name);
    if (node == nullptr) return sections;
    const std::string expected = "expected an array of tables ([[" + table_header(name) + "]])";
    const auto* array = node->as_array();
    if (array == nullptr) {
        source_.fail(*node, key_of(name), expected + ", got " + describe(*node));
    }
    if (array->empty()) {
        source_.fail(*node, key_of(name), expected + " with at least one element, got []");
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = *array->get(i);
        const std::string key = key_of(name) + "[" + std::to_string(i) + "]";
        const auto* table = element.as_table();
        if (table == nullptr) {
            source_.fail(element, key, expected + ", got " + describe(element));
        }
        sections.emplace_back(*table, key, source_);
    }
    return sections;
}

toml::source_region Section::table_position() const {
    toml::source_region where = table_.source();
    // The root table of a document carries no position of its own.
    if (where.begin.line == 0) where.begin = {1, 1};
    return where;
}

StringField Section::string_of(const toml::node& node, std::string key) const {
    const auto* value = node.as_string();
    if (value == nullptr) source_.fail(node, key, "expected a string, got " + describe(node));
    return StringField{value->get(), &node, std::move(key)};
}

std::string Section::table_header(std::string_view name) const {
    std::string header;
    for (std::size_t i = 0; i < path_.size(); ++i) {
        if (path_[i] == '[') {
            i = path_.find(']', i);
            continue;
        }
        header += path_[i];
    }
    if (!header.empty()) header += ".";
    return header + std::string(name);
}

// ---- value checks -------------------------------------------------------------------------

bool is_wildcard(const dataplane::SocketAddress& address) {
    if (address.family() == AF_INET) {
        return reinterpret_cast<const sockaddr_in*>(address.sa())->sin_addr.s_addr ==
               htonl(INADDR_ANY);
    }
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(address.sa())->sin6_addr);
}

dataplane::SocketAddress address_of(const Section& section, const StringField& field,
                                    bool wildcard_allowed) {
    const std::string& text = field.value;
    const auto parsed = dataplane::SocketAddress::parse(text);
    if (!parsed) {
        std::string problem;
        const auto colon = text.rfind(':');
        if (colon != std::string::npos) {
            // A numeric but out-of-range port is the most common slip; say so directly.
            std::uint64_t port = 0;
            const char* first = text.data() + colon + 1;
            const char* last = text.data() + text.size();
            const auto [end, error] = std::from_chars(first, last, port);
            if (error == std::errc::result_out_of_range ||
                (error == std::errc() && end == last && (port == 0 || port > 65535))) {
                problem = "port " + text.substr(colon + 1) + " is out of range 1..65535; ";
            }
        }
        section.source().fail(*field.node, field.key,
                              problem + std::string(kAddressForms) + ", got " + in_quotes(text));
    }
    if (!wildcard_allowed && is_wildcard(*parsed)) {
        section.source().fail(
            *field.node, field.key,
            "a backend needs a concrete address, not the wildcard " + in_quotes(text));
    }
    return *parsed;
}

void require_non_empty(const Section& section, const StringField& field, std::string_view what) {
    if (field.value.empty()) {
        section.source().fail(*field.node, field.key,
                              "expected " + std::string(what) + ", got \"\"");
    }
}

std::string writable_log_path(const Section& section, const StringField& field) {
    const fs::path written(field.value);
    const fs::path resolved =
        (written.is_absolute() ? written : section.source().base_directory() / written)
            .lexically_normal();
    const base::UniqueFd opened(
        ::open(resolved.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!opened) {
        section.source().fail(*field.node, field.key,
                              "cannot open " + in_quotes(resolved.string()) +
                                  " for appending: " + std::strerror(errno));
    }
    return resolved.string();
}

std::string existing_path(const Section& section, const StringField& field, PathKind kind) {
    require_non_empty(section, field, kind == PathKind::file ? "a file path" : "a directory path");
    const fs::path written(field.value);
    const fs::path resolved =
        (written.is_absolute() ? written : section.source().base_directory() / written)
            .lexically_normal();
    const std::string shown = in_quotes(resolved.string());
    const std::string relative_note =
        written.is_absolute() ? std::string()
                              : " (relative paths are resolved against " +
                                    in_quotes(section.source().base_directory().string()) + ")";
    const auto fail = [&](const std::string& problem) {
        section.source().fail(*field.node, field.key, problem);
    };

    struct stat status{};
    if (::stat(resolved.c_str(), &status) != 0) {
        const int error = errno;
        if (error == ENOENT) fail(shown + " does not exist" + relative_note);
        fail("cannot access " + shown + ": " + std::strerror(error));
    }
    if (kind == PathKind::file && S_ISDIR(status.st_mode)) {
        fail(shown + " is a directory, expected a file");
    }
    if (kind == PathKind::file && !S_ISREG(status.st_mode)) {
        fail(shown + " is not a regular file");
    }
    if (kind == PathKind::directory && !S_ISDIR(status.st_mode)) {
        fail(shown + " is not a directory");
    }

    const int flags =
        O_RDONLY | O_CLOEXEC | O_NONBLOCK | (kind == PathKind::directory ? O_DIRECTORY : 0);
    const base::UniqueFd opened(::open(resolved.c_str(), flags));
    if (!opened) fail("cannot read " + shown + ": " + std::strerror(errno));
    return resolved.string();
}

std::uint32_t ipv4_of(const Section& section, const StringField& field) {
    in_addr address{};
    if (::inet_pton(AF_INET, field.value.c_str(), &address) != 1) {
        section.source().fail(*field.node, field.key,
                              "expected a numeric IPv4 address, got " + in_quotes(field.value));
    }
    return ntohl(address.s_addr);
}
}  // namespace toml_reader
}  // namespace portcullis::mgmt
