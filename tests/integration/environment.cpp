#include "tests/integration/environment.hpp"

namespace portcullis::testing {

TestDeployment::TestDeployment() {
    CertOptions ec;
    ec.common_name = "localhost";
    ec.dns_names = {"localhost"};
    ec.client_auth = false;
    ec.server_auth = true;
    server_ec = root.issue(ec);
    CertOptions rsa = ec;
    rsa.key = KeyKind::rsa2048;
    server_rsa = root.issue(rsa);
    write_file(dir / "root.pem", root.cert_pem());
    write_file(dir / "server-ec.pem", server_ec.cert_pem());
    write_file(dir / "server-ec.key", server_ec.key_pem());
    write_file(dir / "server-rsa.pem", server_rsa.cert_pem());
    write_file(dir / "server-rsa.key", server_rsa.key_pem());
    write_crls();
    backend = std::make_unique<Backend>(
        dir, std::vector<std::string>{"--mode", "echo", "--proxy-protocol"});
}

TestDeployment::~TestDeployment() {
    backend.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

IssuedCert TestDeployment::client(const std::string& cn, CertOptions options) const {
    options.common_name = cn;
    return client_ca.issue(options);
}

ClientOptions TestDeployment::options_for(const IssuedCert& cert) const {
    ClientOptions o;
    o.cert = cert.cert.get();
    o.key = cert.key.get();
    o.chain.push_back(client_ca.cert());
    o.trusted_server_ca = root.cert();
    return o;
}

void TestDeployment::write_crls() const {
    write_file(dir / "root.crl", root.crl_pem());
    write_file(dir / "client-ca.crl", client_ca.crl_pem());
}

std::string TestDeployment::listener(const std::string& name, int port,
                                     const std::string& tls_extra,
                                     const std::string& listener_extra,
                                     const std::string& upstream_extra, int backend_port) const {
    return "[[listener]]\nname = \"" + name + "\"\naddress = \"127.0.0.1:" + std::to_string(port) +
           "\"\n" + listener_extra +
           "\n[listener.tls]\ntrust_bundle = \"root.pem\"\ncrl_files = [\"root.crl\", "
           "\"client-ca.crl\"]\n" +
           tls_extra +
           "\n[[listener.tls.certificate]]\nchain = \"server-ec.pem\"\nkey = \"server-ec.key\"\n"
           "[[listener.tls.certificate]]\nchain = \"server-rsa.pem\"\nkey = \"server-rsa.key\"\n"
           "[listener.upstream]\nbackends = [\"127.0.0.1:" +
           std::to_string(backend_port ? backend_port : backend->port()) +
           "\"]\nproxy_protocol = true\n" + upstream_extra + "\n";
}

std::filesystem::path TestDeployment::write_config(const std::string& name,
                                                   const std::string& body) const {
    const auto path = dir / (name + ".toml");
    // Many daemons run at once in the tests: no admin listener unless asked for.
    // Tests find a client's rejection by its log line, so one suite's daemon
    // must log every line however fast its clients come (the bucket is
    // tested on its own: LogLimiter's unit tests, LogBucket in limits_test).
    // Appended, so line numbers in error messages stay those of `body`.
    std::string text = body;
    if (text.find("[admin]") == std::string::npos) text += "\n\n[admin]\naddress = \"\"\n";
    if (text.find("[log]") == std::string::npos)
        text +=
            "\n[log]\nconnection_lines_per_second = 1000000\nconnection_lines_burst = 1000000\n";
    write_file(path, text);
    return path;
}

}  // namespace portcullis::testing
