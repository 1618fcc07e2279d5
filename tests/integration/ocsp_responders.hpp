// OCSP responders for the integration tests: the real `openssl ocsp -index`
// responder, and an HTTP server that answers with whatever response a test
// crafted (forged, stale, replayed).
#pragma once

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.hpp"

namespace portcullis::testing {

// Upper-case hex serial, as `openssl ocsp -index` looks it up.
std::string serial_hex(const X509* cert);

// One line of an `openssl ca` index file for `cert`: valid, or revoked.
std::string index_entry(const X509* cert, bool revoked);

// `openssl ocsp` on 127.0.0.1:`port` answering for `ca` from `index` (which
// the test writes: index_entry lines), with nextUpdate 10 minutes ahead.
// Empty (null process) when the openssl tool is missing.
std::unique_ptr<ChildProcess> start_openssl_responder(const std::filesystem::path& dir,
                                                      const CertificateAuthority& ca,
                                                      const std::string& index, int port);

// An HTTP OCSP responder whose answer the test sets (POST, any path).
class CraftedResponder {
  public:
    CraftedResponder();
    ~CraftedResponder();
    // An empty body answers HTTP 500.
    void serve(std::string der);
    // Every answer from now on waits this long first (a slow responder).
    void delay(std::chrono::milliseconds wait);
    int requests();
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

  private:
    httplib::Server server_;
    std::thread thread_;
    std::mutex mutex_;
    std::string body_;
    std::chrono::milliseconds delay_{0};
    int requests_ = 0;
    int port_ = 0;
};

}  // namespace portcullis::testing
