#include "hsm/pkcs11_uri.hpp"

#include <charconv>

namespace portcullis::hsm {
namespace {

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string percent_decode(const std::string& text, const std::string& uri) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        if (i + 2 >= text.size() || hex(text[i + 1]) < 0 || hex(text[i + 2]) < 0)
            throw Pkcs11UriError(uri + ": bad percent-encoding");
        out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
        i += 2;
    }
    return out;
}

std::string percent_encode(const std::string& text) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (const unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += digits[c >> 4];
            out += digits[c & 15];
        }
    }
    return out;
}

}  // namespace

Pkcs11Uri Pkcs11Uri::parse(const std::string& text) {
    if (!text.starts_with("pkcs11:")) throw Pkcs11UriError(text + ": not a pkcs11: URI");
    Pkcs11Uri uri;
    std::string rest = text.substr(7);
    const auto query = rest.find('?');
    if (query != std::string::npos) {
        const std::string q = rest.substr(query + 1);
        if (q.find("pin-value") != std::string::npos || q.find("pin-source") != std::string::npos)
            throw Pkcs11UriError(
                "a PKCS#11 URI must not carry the PIN (pin-value/pin-source): put it in the file "
                "or environment variable named by [hsm] pin_file / pin_env");
        if (!q.empty() && q.find("module-") == std::string::npos)
            throw Pkcs11UriError("pkcs11 URI query \"" + q + "\" is not supported");
        rest = rest.substr(0, query);
    }
    std::size_t start = 0;
    while (start <= rest.size() && !rest.empty()) {
        const auto end = std::min(rest.find(';', start), rest.size());
        const std::string attribute = rest.substr(start, end - start);
        start = end + 1;
        if (attribute.empty()) {
            if (end >= rest.size()) break;
            continue;
        }
        const auto eq = attribute.find('=');
        if (eq == std::string::npos)
            throw Pkcs11UriError(text + ": attribute \"" + attribute + "\" has no value");
        const std::string name = attribute.substr(0, eq);
        const std::string value = percent_decode(attribute.substr(eq + 1), text);
        if (name == "token") {
            uri.token = value;
        } else if (name == "object") {
            uri.object = value;
        } else if (name == "id") {
            uri.id.assign(value.begin(), value.end());
        } else if (name == "type") {
            if (value != "private")
                throw Pkcs11UriError(text + ": type must be \"private\" for a server key");
            uri.type = value;
        } else if (name == "slot-id") {
            unsigned long slot = 0;
            const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), slot);
            if (ec != std::errc() || p != value.data() + value.size())
                throw Pkcs11UriError(text + ": slot-id must be a number");
            uri.slot_id = slot;
        } else if (name == "pin-value" || name == "pin-source") {
            throw Pkcs11UriError(
                "a PKCS#11 URI must not carry the PIN: use [hsm] pin_file or pin_env");
        } else if (name == "manufacturer" || name == "model" || name == "serial" ||
                   name == "library-description" || name == "library-manufacturer" ||
                   name == "library-version" || name == "slot-description" ||
                   name == "slot-manufacturer") {
            // Accepted for compatibility with tools that print full URIs; not used to select.
        } else {
            throw Pkcs11UriError(text + ": unknown attribute \"" + name + "\"");
        }
        if (end >= rest.size()) break;
    }
    if (uri.object.empty() && uri.id.empty())
        throw Pkcs11UriError(text + ": name the key with object=LABEL and/or id=%xx..");
    return uri;
}

std::string Pkcs11Uri::to_string() const {
    std::string out = "pkcs11:";
    auto add = [&](const std::string& name, const std::string& value) {
        if (out.back() != ':') out += ';';
        out += name + "=" + value;
    };
    if (!token.empty()) add("token", percent_encode(token));
    if (!object.empty()) add("object", percent_encode(object));
    if (!id.empty()) {
        std::string encoded;
        static const char* digits = "0123456789abcdef";
        for (const auto b : id) {
            encoded += '%';
            encoded += digits[b >> 4];
            encoded += digits[b & 15];
        }
        add("id", encoded);
    }
    if (slot_id) add("slot-id", std::to_string(*slot_id));
    add("type", "private");
    return out;
}

}  // namespace portcullis::hsm
