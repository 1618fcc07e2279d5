#include "mgmt/reload.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.hpp"
#include "crypto/key_source.hpp"
#include "crypto/server_tls_context.hpp"
#include "hsm/pkcs11_key_source.hpp"

namespace portcullis::mgmt {

std::string check_tls_material(const Config& config) {
    std::shared_ptr<hsm::SigningService> signing;
    if (config.hsm.enabled()) {
        try {
            signing = std::make_shared<hsm::SigningService>(config.hsm, nullptr);
        } catch (const std::exception& e) {
            return config.source_file + ": [hsm]: " + e.what();
        }
    }
    hsm::Pkcs11KeySource keys(signing);
    for (std::size_t i = 0; i < config.listeners.size(); ++i) {
        const auto& listener = config.listeners[i];
        try {
            crypto::ServerTlsContext context(listener.tls, keys);
        } catch (const std::exception& e) {
            return config.source_file + ": listener[" + std::to_string(i) + "] (" + listener.name +
                   ").tls: " + e.what();
        }
    }
    return {};
}

std::string check_tls_material_in_child(const Config& config, ChildSetup setup) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
    base::UniqueFd read_end(fds[0]);
    base::UniqueFd write_end(fds[1]);
    setup.inherited.push_back(&read_end);
    const pid_t pid = fork_child(setup, [&config, &write_end] {
        const std::string problem = check_tls_material(config);
        std::size_t written = 0;
        while (written < problem.size()) {
            const ssize_t n =
                ::write(write_end.get(), problem.data() + written, problem.size() - written);
            if (n <= 0) break;
            written += static_cast<std::size_t>(n);
        }
        return problem.empty() ? 0 : 1;
    });
    if (pid < 0) return std::string("fork: ") + std::strerror(errno);
    write_end.reset();
    std::string problem;
    char chunk[1024];
    ssize_t n;
    while ((n = ::read(read_end.get(), chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR)) {
        if (n > 0) problem.append(chunk, static_cast<std::size_t>(n));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (problem.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        problem = "TLS check process failed (status " + std::to_string(status) + ")";
    return problem;
}

std::string restart_only_changes(const Config& running, const Config& fresh) {
    if (running.listeners.size() != fresh.listeners.size())
        return "the number of listeners changed; that needs a restart";
    for (std::size_t i = 0; i < running.listeners.size(); ++i) {
        const auto& a = running.listeners[i];
        const auto& b = fresh.listeners[i];
        if (a.name != b.name)
            return "listener[" + std::to_string(i) + "] was renamed from " + a.name + " to " +
                   b.name + "; that needs a restart";
        if (a.address.to_string() != b.address.to_string() || a.backlog != b.backlog)
            return "listener " + a.name + ": address or backlog changed; that needs a restart";
    }
    if (running.workers.count != fresh.workers.count)
        return "workers.count changed; that needs a restart";
    if (running.workers.max_connections != fresh.workers.max_connections ||
        running.workers.drain_timeout_ms != fresh.workers.drain_timeout_ms ||
        running.workers.buffer_budget_bytes != fresh.workers.buffer_budget_bytes)
        return "workers.max_connections, drain_timeout_ms or buffer_budget_bytes changed; that "
               "needs a restart";
    const auto admin = [](const Config& c) {
        return c.admin.address ? c.admin.address->to_string() : std::string("off");
    };
    if (admin(running) != admin(fresh)) return "admin.address changed; that needs a restart";
    if (running.log.access_log != fresh.log.access_log)
        return "log.access_log changed; that needs a restart";
    if (running.resumption.session_cache_entries != fresh.resumption.session_cache_entries)
        return "resumption.session_cache_entries changed; that needs a restart";
    if (running.resumption.ticket_mode != fresh.resumption.ticket_mode)
        return "resumption.ticket_mode changed; that needs a restart";
    if (running.resumption.worker_session_cache_entries !=
        fresh.resumption.worker_session_cache_entries)
        return "resumption.worker_session_cache_entries changed; that needs a restart";
    const auto& a = running.hsm;
    const auto& b = fresh.hsm;
    if (a.module != b.module || a.token != b.token || a.failover_token != b.failover_token ||
        a.pin_file != b.pin_file || a.pin_env != b.pin_env || a.sessions != b.sessions ||
        a.max_in_flight != b.max_in_flight || a.operation_timeout_ms != b.operation_timeout_ms ||
        a.retry_interval_ms != b.retry_interval_ms)
        return "[hsm] changed; that needs a restart (keys in the token may change with a reload)";
    return {};
}

}  // namespace portcullis::mgmt
