#include "mgmt/version.hpp"

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#ifdef PORTCULLIS_HAVE_DPDK
#include <rte_version.h>
#endif

namespace portcullis::mgmt {

std::string version_text() {
    std::string text = "portcullis " PORTCULLIS_VERSION "\n";
    text +=
        std::string(OpenSSL_version(OPENSSL_VERSION)) + " (built with " OPENSSL_VERSION_TEXT ")\n";
#ifdef PORTCULLIS_HAVE_DPDK
    text += std::string(rte_version()) + "\n";
#else
    text += "DPDK: not in this build (libdpdk-dev was missing at configure time)\n";
#endif
    return text;
}

}  // namespace portcullis::mgmt
