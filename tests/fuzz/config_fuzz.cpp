// libFuzzer target for the TOML configuration reader (mgmt/config.cpp,
// mgmt/toml_reader.cpp), fed from memory through parse_config(). The contract
// it asserts, as docs/configuration.md states it to operators:
//   - any input is either accepted or rejected with a ConfigError; no other
//     exception, no crash;
//   - every rejection names the file (the name passed in), a line of the input
//     (1..number of lines) and a column (>= 1), and a key: the dotted key path
//     ("listener[0].tls.client_auth") or, for text that is not TOML at all,
//     the pseudo-key "TOML syntax"; no part of the path is empty (a key that
//     is not bare is shown quoted, as TOML writes it);
//   - the message is one line, "FILE:LINE:COLUMN: KEY: PROBLEM", with no
//     control character (values are shown with TOML's escapes);
//   - an accepted input has at least one listener and keeps the text as read.
// Referenced files are resolved against a scratch directory under TMPDIR that
// holds the files the seeds name (the reader checks that they exist, never
// what is in them). Inputs whose log.access_log would create a file outside
// that directory are skipped: the reader opens that file for appending.
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "mgmt/config.hpp"

namespace {

namespace fs = std::filesystem;
using portcullis::mgmt::ConfigError;

fs::path scratch;  // set once by LLVMFuzzerInitialize

void write_file(const fs::path& path) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << "placeholder: the config reader does not read this file\n";
}

[[noreturn]] void broken(const char* what, const std::string& detail, std::string_view input) {
    std::fprintf(stderr, "config_fuzz: %s\n  %s\n  input (%zu bytes):\n%.*s\n", what,
                 detail.c_str(), input.size(), static_cast<int>(input.size()), input.data());
    std::abort();
}

std::string source_name() {
    return (scratch / "portcullis.toml").string();
}

// An access log outside the scratch directory would be created for real.
bool writes_outside_scratch(std::string_view input) {
    toml::table root;
    try {
        root = toml::parse(input);
    } catch (const toml::parse_error&) {
        return false;
    }
    const auto* log = root.get_as<toml::table>("log");
    const auto* access = log != nullptr ? log->get_as<std::string>("access_log") : nullptr;
    if (access == nullptr || access->get().empty() || access->get() == "-") return false;
    const fs::path path(access->get());
    return path.is_absolute() ||
           std::any_of(path.begin(), path.end(), [](const fs::path& part) { return part == ".."; });
}

bool is_control(char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
}

// "a.b[0].\"x.y\"": '.' outside quotes separates the parts, none of them empty.
bool has_empty_part(std::string_view key) {
    bool quoted = false;
    bool part_empty = true;
    for (std::size_t i = 0; i < key.size(); ++i) {
        const char c = key[i];
        if (quoted && c == '\\') {
            ++i;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == '.' && !quoted) {
            if (part_empty) return true;
            part_empty = true;
            continue;
        }
        part_empty = false;
    }
    return part_empty || quoted;
}

void check_rejection(const ConfigError& error, std::string_view input) {
    const auto lines = static_cast<int>(std::count(input.begin(), input.end(), '\n')) + 1;
    const std::string where = "at " + error.file() + ":" + std::to_string(error.line()) + ":" +
                              std::to_string(error.column()) + " key \"" + error.key() +
                              "\": " + error.what();
    if (error.file() != source_name()) broken("the error names another file", where, input);
    if (error.line() < 1 || error.line() > lines)
        broken("the error names no line of the input", where, input);
    if (error.column() < 1) broken("the error names no column", where, input);
    if (error.key().empty() || has_empty_part(error.key()))
        broken("the error names no key, or a path with an empty part", where, input);
    const std::string expected = error.file() + ":" + std::to_string(error.line()) + ":" +
                                 std::to_string(error.column()) + ": " + error.key() + ": " +
                                 error.problem();
    if (std::string_view(error.what()) != expected)
        broken("the message is not FILE:LINE:COLUMN: KEY: PROBLEM", where, input);
    if (std::any_of(expected.begin(), expected.end(), is_control))
        broken("the message holds a control character (it is not one line)", where, input);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    std::string pattern = (fs::temp_directory_path() / "config_fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        std::perror("config_fuzz: mkdtemp");
        std::abort();
    }
    scratch = pattern;
    // What docs/portcullis.example.toml and the seeds refer to.
    for (const char* name :
         {"pki/server-ec.chain.pem", "pki/server-ec.key.pem", "pki/server-rsa.chain.pem",
          "pki/server-rsa.key.pem", "pki/client-ca.pem", "pki/client-ca.crl.pem",
          "pki/intermediate.crl.pem", "hsm/pin", "hsm/libpkcs11.so", "tickets.keys"}) {
        write_file(scratch / name);
    }
    fs::create_directories(scratch / "pki" / "hashed");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    if (writes_outside_scratch(input)) return -1;  // -1: not kept in the corpus
    try {
        const auto config = portcullis::mgmt::parse_config(input, source_name(), scratch.string());
        if (config.listeners.empty()) broken("accepted without a listener", "", input);
        if (config.text != input) broken("accepted but the kept text differs", "", input);
    } catch (const ConfigError& error) {
        check_rejection(error, input);
    } catch (const std::exception& error) {
        broken("an exception other than ConfigError", error.what(), input);
    } catch (...) {
        broken("a non-standard exception", "", input);
    }
    return 0;
}
