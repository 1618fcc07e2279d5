// portcullis: the daemon's entry point. Parses flags, loads and validates the
// configuration, then hands over to the supervisor.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "base/heap_tunables.hpp"
#include "crypto/key_source.hpp"
#include "crypto/server_tls_context.hpp"
#include "mgmt/config.hpp"
#include "mgmt/descriptor_limit.hpp"
#include "mgmt/logging.hpp"
#include "mgmt/reload.hpp"
#include "mgmt/supervisor.hpp"
#include "mgmt/version.hpp"

namespace {

using namespace portcullis;

// Loads every listener's certificates and keys the way a worker will, so a
// config that passes --check-config also starts.
int report_tls_material(const mgmt::Config& config) {
    const auto problem = mgmt::check_tls_material(config);
    if (problem.empty()) return 0;
    std::cerr << problem << "\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Portcullis mutual-TLS terminator"};
    std::string config_path;
    std::string check_path;
    int workers = -1;
    std::string log_level;
    auto* run_opt = app.add_option("-c,--config", config_path, "run with this configuration file");
    auto* check_opt =
        app.add_option("--check-config", check_path, "validate this configuration file and exit");
    app.add_option("--workers", workers, "override workers.count")->check(CLI::Range(0, 1024));
    app.add_option("--log-level", log_level, "override log.level");
    app.set_version_flag("--version", [] {
        std::string text = mgmt::version_text();
        text.pop_back();  // CLI11 ends the line itself
        return text;
    });
    run_opt->excludes(check_opt);
    CLI11_PARSE(app, argc, argv);
    if (config_path.empty() && check_path.empty()) {
        std::cerr << "portcullis: give --config FILE to run or --check-config FILE to validate\n"
                  << app.help();
        return 2;
    }

    const bool checking = !check_path.empty();
    if (!checking) base::reexec_with_worker_tunables(argv);
    ::signal(SIGPIPE, SIG_IGN);
    mgmt::Config config;
    try {
        config = mgmt::load_config(checking ? check_path : config_path);
    } catch (const mgmt::ConfigError& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    if (workers >= 0) config.workers.count = workers;
    if (!log_level.empty()) config.log.level = log_level;
    try {
        mgmt::configure_logging("supervisor", config.log.level);
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }

    if (checking) {
        const int rc = report_tls_material(config);
        if (rc == 0) std::cout << "configuration OK\n";
        return rc;
    }
    mgmt::raise_descriptor_limit(config.workers.max_connections);
    try {
        return mgmt::run_supervisor(config, mgmt::Overrides{workers, log_level});
    } catch (const std::exception& e) {
        std::cerr << "portcullis: " << e.what() << "\n";
        return 1;
    }
}
