// A SoftHSM2 token made for one test, reached through the test PKCS#11 module
// (hsm/test_module: SoftHSM behind injected latency and errors): its own token
// store, PIN file and control file under a temporary directory, and an EC
// P-256 server certificate whose key lives in the token as "server-ec".
// The environment variables it sets (SOFTHSM2_CONF, the module's control
// file) are process-wide: one SoftToken at a time.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "hsm/hsm_settings.hpp"
#include "tests/support/test_pki.hpp"

namespace portcullis::hsm::testing {

namespace fs = std::filesystem;

inline constexpr const char* token_pin = "unit-pin-4711";

inline bool run_quietly(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

class SoftToken {
  public:
    // Empty when SoftHSM2 or the test module is missing (then skip loudly).
    static std::string missing() {
        if (std::getenv("PORTCULLIS_TEST_PKCS11") == nullptr)
            return "PORTCULLIS_TEST_PKCS11 is not set (run through meson test)";
        if (!run_quietly("command -v softhsm2-util") ||
            !fs::exists("/usr/lib/softhsm/libsofthsm2.so"))
            return "softhsm2 is not installed (scripts/test.sh installs it)";
        return "";
    }

    SoftToken() {
        std::string pattern = (fs::temp_directory_path() / "portcullis-hsm-unit.XXXXXX").string();
        dir = ::mkdtemp(pattern.data());
        fs::create_directories(dir / "tokens");
        portcullis::testing::write_file(dir / "softhsm2.conf",
                                        "directories.tokendir = " + (dir / "tokens").string() +
                                            "\nobjectstore.backend = file\nlog.level = ERROR\n");
        ::setenv("SOFTHSM2_CONF", (dir / "softhsm2.conf").c_str(), 1);
        ::setenv("PORTCULLIS_TEST_PKCS11_CONTROL", (dir / "control").c_str(), 1);
        control("");
        portcullis::testing::write_file(dir / "pin", std::string(token_pin) + "\n");
        portcullis::testing::CertOptions options;
        options.common_name = "localhost";
        options.dns_names = {"localhost"};
        options.client_auth = false;
        options.server_auth = true;
        server = root.issue(options);
        portcullis::testing::write_file(dir / "server.pem", server.cert_pem());
        portcullis::testing::write_file(dir / "server.p8", server.key_pem());
        ready = run_quietly(std::string("softhsm2-util --init-token --free --label unit --pin ") +
                            token_pin + " --so-pin 0000") &&
                run_quietly("softhsm2-util --import " + (dir / "server.p8").string() +
                            " --token unit --label server-ec --id 01 --pin " + token_pin);
    }
    ~SoftToken() {
        ::unsetenv("PORTCULLIS_TEST_PKCS11_CONTROL");
        fs::remove_all(dir);
    }
    SoftToken(const SoftToken&) = delete;
    SoftToken& operator=(const SoftToken&) = delete;

    // The test module re-reads this file when its modification time changes.
    void control(const std::string& text) const {
        portcullis::testing::write_file(dir / "control", text);
    }

    HsmSettings settings() const {
        HsmSettings s;
        s.module = std::getenv("PORTCULLIS_TEST_PKCS11");
        s.token = "unit";
        s.pin_file = (dir / "pin").string();
        s.sessions = 2;
        s.max_in_flight = 64;
        s.operation_timeout_ms = 2000;
        s.retry_interval_ms = 50;
        return s;
    }

    static constexpr const char* key_uri = "pkcs11:token=unit;object=server-ec;type=private";

    fs::path dir;
    portcullis::testing::CertificateAuthority root =
        portcullis::testing::CertificateAuthority::root("HSM Unit Root");
    portcullis::testing::IssuedCert server;
    bool ready = false;
};

}  // namespace portcullis::hsm::testing
