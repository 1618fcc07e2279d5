#include "crypto/openssl_handles.hpp"

#include <openssl/err.h>

#include <string>

namespace portcullis::crypto {

std::string drain_openssl_errors() {
    std::string text;
    unsigned long code;
    char buffer[256];
    while ((code = ERR_get_error()) != 0) {
        ERR_error_string_n(code, buffer, sizeof buffer);
        if (!text.empty()) text += "; ";
        text += buffer;
    }
    return text.empty() ? "no OpenSSL error reported" : text;
}

}  // namespace portcullis::crypto
