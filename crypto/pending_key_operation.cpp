#include "crypto/pending_key_operation.hpp"

#include <openssl/err.h>

namespace portcullis::crypto {
namespace {

int key_failure_library() {
    static const int library = ERR_get_next_error_library();
    return library;
}

constexpr int key_failure_reason = 1;

}  // namespace

void raise_key_failure(const std::string& why) {
    ERR_raise_data(key_failure_library(), key_failure_reason, "%s", why.c_str());
}

std::optional<std::string> drain_key_failure(std::string& others) {
    std::optional<std::string> found;
    const char* data = nullptr;
    int flags = 0;
    unsigned long code = 0;
    char buffer[256];
    while ((code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
        if (ERR_GET_LIB(code) == key_failure_library() &&
            ERR_GET_REASON(code) == key_failure_reason) {
            found =
                (flags & ERR_TXT_STRING) != 0 && data != nullptr ? data : "key operation failed";
            continue;
        }
        ERR_error_string_n(code, buffer, sizeof buffer);
        if (!others.empty()) others += "; ";
        others += buffer;
    }
    return found;
}

}  // namespace portcullis::crypto
