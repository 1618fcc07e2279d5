// A SoftHSM2 token store for integration tests that put the daemon's server
// keys behind PKCS#11: the test module (PORTCULLIS_TEST_PKCS11, SoftHSM with
// latency and errors a control file injects) loads it through the
// environment this object sets for the daemons the test starts. One object
// per TestDeployment at a time; it owns the environment variables while it
// lives, and the tokens live in the deployment's directory.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/integration/environment.hpp"

namespace portcullis::testing {

class SoftHsm {
  public:
    static constexpr const char* pin = "pin-7391-secret";

    explicit SoftHsm(const TestDeployment& env) : env_(env) {
        const auto store = env.dir / "tokens";
        std::filesystem::create_directories(store);
        write_file(env.dir / "softhsm2.conf",
                   "directories.tokendir = " + store.string() +
                       "\nobjectstore.backend = file\nlog.level = ERROR\n");
        ::setenv("SOFTHSM2_CONF", (env.dir / "softhsm2.conf").c_str(), 1);
        control_ = env.dir / "hsm-control";
        ::setenv("PORTCULLIS_TEST_PKCS11_CONTROL", control_.c_str(), 1);
        write_file(env.dir / "pin", std::string(pin) + "\n");
    }
    ~SoftHsm() { ::unsetenv("PORTCULLIS_TEST_PKCS11_CONTROL"); }
    SoftHsm(const SoftHsm&) = delete;
    SoftHsm& operator=(const SoftHsm&) = delete;

    static bool available() {
        return quiet("command -v softhsm2-util") &&
               std::filesystem::exists("/usr/lib/softhsm/libsofthsm2.so");
    }

    // A token holding the deployment's server keys, imported as an operator
    // migrating keys would.
    void token(const std::string& label) {
        ASSERT_TRUE(quiet("softhsm2-util --init-token --free --label " + label + " --pin " + pin +
                          " --so-pin 0000"));
        write_file(env_.dir / "server-ec.p8", env_.server_ec.key_pem());
        write_file(env_.dir / "server-rsa.p8", env_.server_rsa.key_pem());
        ASSERT_TRUE(quiet("softhsm2-util --import " + (env_.dir / "server-ec.p8").string() +
                          " --token " + label + " --label server-ec --id 01 --pin " + pin));
        ASSERT_TRUE(quiet("softhsm2-util --import " + (env_.dir / "server-rsa.p8").string() +
                          " --token " + label + " --label server-rsa --id 02 --pin " + pin));
    }

    // The test module's control file: "latency_ms = N" and the like, read
    // again by the module when it changes.
    void control(const std::string& text) { write_file(control_, text); }

    // [hsm] plus a listener whose keys are token objects; `sessions` bounds
    // the signatures a worker runs at once.
    std::string config(int port, const std::string& hsm_extra = "", int admin = 0,
                       int sessions = 4) const {
        std::string listener = env_.listener("edge", port);
        listener = replace_all(listener, "key = \"server-ec.key\"",
                               "key = \"pkcs11:object=server-ec;type=private\"");
        listener = replace_all(listener, "key = \"server-rsa.key\"",
                               "key = \"pkcs11:object=server-rsa;type=private\"");
        const std::string admin_block =
            admin ? "[admin]\naddress = \"127.0.0.1:" + std::to_string(admin) + "\"\n\n" : "";
        return admin_block + "[hsm]\nmodule = \"" + binary_from_env("PORTCULLIS_TEST_PKCS11") +
               "\"\ntoken = \"edge\"\npin_file = \"pin\"\nsessions = " + std::to_string(sessions) +
               "\n" + hsm_extra + "\n" + listener;
    }

  private:
    static bool quiet(const std::string& command) {
        return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
    }

    const TestDeployment& env_;
    std::filesystem::path control_;
};

#define SKIP_WITHOUT_SOFTHSM()                                                        \
    if (!SoftHsm::available()) {                                                      \
        GTEST_SKIP() << "SKIPPED LOUDLY: softhsm2 is not installed (scripts/test.sh " \
                        "installs it)";                                               \
    }

}  // namespace portcullis::testing
