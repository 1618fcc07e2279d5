#include "crypto/distribution_points.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

namespace portcullis::crypto {

std::vector<std::string> http_crl_distribution_points(X509* cert) {
    std::vector<std::string> urls;
    const std::unique_ptr<STACK_OF(DIST_POINT), void (*)(STACK_OF(DIST_POINT)*)> points(
        static_cast<STACK_OF(DIST_POINT)*>(
            X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr)),
        [](STACK_OF(DIST_POINT) * p) { sk_DIST_POINT_pop_free(p, DIST_POINT_free); });
    ERR_clear_error();
    for (int i = 0; points && i < sk_DIST_POINT_num(points.get()); ++i) {
        const DIST_POINT* point = sk_DIST_POINT_value(points.get(), i);
        if (point->distpoint == nullptr || point->distpoint->type != 0) continue;  // not a fullName
        const GENERAL_NAMES* names = point->distpoint->name.fullname;
        for (int n = 0; n < sk_GENERAL_NAME_num(names); ++n) {
            const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, n);
            if (name->type != GEN_URI) continue;
            const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
            std::string url(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                            static_cast<std::size_t>(ASN1_STRING_length(uri)));
            if (url.starts_with("http://") &&
                std::find(urls.begin(), urls.end(), url) == urls.end())
                urls.push_back(std::move(url));
        }
    }
    return urls;
}

}  // namespace portcullis::crypto
