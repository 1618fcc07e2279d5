// libFuzzer target for the PKCS#11 URI parser (hsm/pkcs11_uri.cpp). Any text
// either parses or throws Pkcs11UriError; nothing else escapes (an uncaught
// exception aborts, which libFuzzer reports).
// A URI that parses
//   - names its key (object and/or id) and has type "" or "private",
//   - carries no PIN: no pin-value / pin-source attribute in the path or query,
//   - survives its canonical form: to_string() parses back to the same token,
//     object, id and slot-id (type "private"), and is a fixed point of
//     to_string(parse(.)).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "hsm/pkcs11_uri.hpp"

using portcullis::hsm::Pkcs11Uri;
using portcullis::hsm::Pkcs11UriError;

namespace {

void require(bool holds, const char* what, const std::string& input) {
    if (holds) return;
    std::fprintf(stderr, "pkcs11_uri_fuzz: %s\n  input: %s\n", what, input.c_str());
    std::abort();
}

bool names_a_pin(std::string_view attribute) {
    const auto name = attribute.substr(0, attribute.find('='));
    return name == "pin-value" || name == "pin-source";
}

// The path's attributes, split on ';' as RFC 7512 section 2.3 defines them.
bool path_names_a_pin(std::string_view path) {
    while (!path.empty()) {
        const auto end = path.find(';');
        if (names_a_pin(path.substr(0, end))) return true;
        if (end == std::string_view::npos) break;
        path.remove_prefix(end + 1);
    }
    return false;
}

bool same_key(const Pkcs11Uri& a, const Pkcs11Uri& b) {
    return a.token == b.token && a.object == b.object && a.id == b.id && a.slot_id == b.slot_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    Pkcs11Uri uri;
    try {
        uri = Pkcs11Uri::parse(text);
    } catch (const Pkcs11UriError&) {
        return 0;
    }
    require(text.starts_with("pkcs11:"), "accepted without the pkcs11: scheme", text);
    require(!uri.object.empty() || !uri.id.empty(), "accepted without object or id", text);
    require(uri.type.empty() || uri.type == "private", "accepted a type other than private", text);
    const std::string_view rest = std::string_view(text).substr(7);
    const auto query = rest.find('?');
    require(!path_names_a_pin(rest.substr(0, query)), "accepted a PIN in the path", text);
    if (query != std::string_view::npos) {
        const auto q = rest.substr(query + 1);
        require(q.find("pin-value") == std::string_view::npos &&
                    q.find("pin-source") == std::string_view::npos,
                "accepted a PIN in the query", text);
    }

    const std::string canonical = uri.to_string();
    Pkcs11Uri again;
    try {
        again = Pkcs11Uri::parse(canonical);
    } catch (const Pkcs11UriError& error) {
        std::fprintf(stderr, "canonical form %s refused: %s\n", canonical.c_str(), error.what());
        require(false, "the canonical form does not parse", text);
    }
    require(same_key(uri, again), "the canonical form names another key", text);
    require(again.type == "private", "the canonical form lost type=private", text);
    require(again.to_string() == canonical, "to_string is not a fixed point", text);
    return 0;
}
