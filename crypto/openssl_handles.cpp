#include "crypto/openssl_handles.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

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

std::vector<UniqueX509> read_pem_certificates(const std::string& path) {
    std::vector<UniqueX509> certificates;
    UniqueBio file(BIO_new_file(path.c_str(), "rb"));
    while (file) {
        UniqueX509 certificate(PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr));
        if (!certificate) break;
        certificates.push_back(std::move(certificate));
    }
    ERR_clear_error();  // the loop ends on "no start line"
    return certificates;
}

}  // namespace portcullis::crypto
