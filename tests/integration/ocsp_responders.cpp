#include "tests/integration/ocsp_responders.hpp"

#include <gtest/gtest.h>
#include <openssl/bn.h>

namespace portcullis::testing {

std::string serial_hex(const X509* cert) {
    const std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(
        ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr), BN_free);
    const std::unique_ptr<char, void (*)(char*)> hex(BN_bn2hex(bn.get()),
                                                     [](char* p) { OPENSSL_free(p); });
    return hex.get();
}

std::string index_entry(const X509* cert, bool revoked) {
    return std::string(revoked ? "R\t301231235959Z\t261201000000Z,keyCompromise\t"
                               : "V\t301231235959Z\t\t") +
           serial_hex(cert) + "\tunknown\t/CN=any\n";
}

std::unique_ptr<ChildProcess> start_openssl_responder(const std::filesystem::path& dir,
                                                      const CertificateAuthority& ca,
                                                      const std::string& index, int port) {
    // ChildProcess runs a path, not a name looked up on PATH.
    auto openssl = run("command -v openssl").output;
    while (!openssl.empty() && (openssl.back() == '\n' || openssl.back() == ' '))
        openssl.pop_back();
    if (openssl.empty()) return nullptr;
    const auto name = "responder-" + std::to_string(port);
    write_file(dir / (name + ".pem"), ca.cert_pem());
    write_file(dir / (name + ".key"), ca.key_pem());
    write_file(dir / (name + "-index.txt"), index);
    auto responder = std::make_unique<ChildProcess>(
        std::vector<std::string>{openssl, "ocsp", "-index", (dir / (name + "-index.txt")).string(),
                                 "-port", std::to_string(port), "-rsigner",
                                 (dir / (name + ".pem")).string(), "-rkey",
                                 (dir / (name + ".key")).string(), "-CA",
                                 (dir / (name + ".pem")).string(), "-nmin", "10"},
        dir / (name + ".log"));
    // A connection made only to probe the port would hold up the responder,
    // which serves one connection at a time.
    EXPECT_TRUE(responder->wait_for_log("waiting for OCSP client connections")) << responder->log();
    return responder;
}

CraftedResponder::CraftedResponder() {
    server_.Post(".*", [this](const httplib::Request&, httplib::Response& out) {
        std::chrono::milliseconds wait;
        {
            const std::lock_guard lock(mutex_);
            wait = delay_;
        }
        std::this_thread::sleep_for(wait);
        const std::lock_guard lock(mutex_);
        ++requests_;
        if (body_.empty()) {
            out.status = 500;
            return;
        }
        out.set_content(body_, "application/ocsp-response");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    server_.wait_until_ready();
}

CraftedResponder::~CraftedResponder() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
}

void CraftedResponder::serve(std::string der) {
    const std::lock_guard lock(mutex_);
    body_ = std::move(der);
}

void CraftedResponder::delay(std::chrono::milliseconds wait) {
    const std::lock_guard lock(mutex_);
    delay_ = wait;
}

int CraftedResponder::requests() {
    const std::lock_guard lock(mutex_);
    return requests_;
}

}  // namespace portcullis::testing
