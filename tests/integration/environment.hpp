// A complete test deployment: PKI files (root CA, client intermediate, server
// ECDSA + RSA certificates, CRLs) in a temp directory, a PROXY-v2 echo
// backend, and helpers to write configs.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "tests/integration/harness.hpp"

namespace portcullis::testing {

struct TestDeployment {
    std::filesystem::path dir = make_temp_dir();
    CertificateAuthority root = CertificateAuthority::root("Test Root CA");
    CertificateAuthority client_ca = root.intermediate("Test Client CA");
    IssuedCert server_ec;
    IssuedCert server_rsa;
    std::unique_ptr<Backend> backend;

    TestDeployment();
    ~TestDeployment();

    // A client certificate issued by client_ca.
    IssuedCert client(const std::string& cn, CertOptions options = {}) const;
    // A client presenting `cert` with the client CA as its chain and
    // verifying the server against the root.
    ClientOptions options_for(const IssuedCert& cert) const;
    // Rewrites the CRL files from the CAs' current revocation lists.
    void write_crls() const;

    // A [[listener]] block with the deployment's certificates; `tls_extra`
    // and `listener_extra` are TOML lines added to the tls / listener tables.
    // The upstream is the deployment's echo backend unless `backend_port` is set.
    std::string listener(const std::string& name, int port, const std::string& tls_extra = "",
                         const std::string& listener_extra = "",
                         const std::string& upstream_extra = "", int backend_port = 0) const;
    std::filesystem::path write_config(const std::string& name, const std::string& body) const;
};

}  // namespace portcullis::testing
