#include "mgmt/admin_server.hpp"

#include <httplib.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "crypto/server_tls_context.hpp"
#include "crypto/session_cache.hpp"
#include "mgmt/admin_tls.hpp"
#include "mgmt/metrics.hpp"
#include "mgmt/privileges.hpp"
#include "mgmt/tls_inventory.hpp"

namespace portcullis::mgmt {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto reload_verdict_timeout = std::chrono::seconds(60);
constexpr auto reload_apply_timeout = std::chrono::seconds(30);

void respond(httplib::Response& response, int status, const char* content_type,
             const std::string& body) {
    response.status = status;
    response.set_header("Cache-Control", "no-store");
    response.set_content(body, content_type);
}

// The configuration the admin reports on follows the supervisor's
// generations; certificate files are re-read when it changes.
class AdminState {
  public:
    explicit AdminState(const AdminOptions& options) : options_(options), config_(options.config) {
        inventory_ = read_tls_inventory(config_);
    }

    template <typename Use>
    auto with_current(Use use) {
        std::lock_guard lock(mutex_);
        const auto generation = options_.control->config_generation();
        if (generation != generation_) {
            const auto snapshot = options_.control->config();
            try {
                auto fresh =
                    parse_config(snapshot.text, config_.source_file,
                                 std::filesystem::path(config_.source_file).parent_path().string());
                fresh.workers.count = config_.workers.count;  // fixed for the process
                config_ = std::move(fresh);
                inventory_ = read_tls_inventory(config_);
            } catch (const std::exception& e) {
                spdlog::warn("admin: cannot read configuration generation {}: {}",
                             snapshot.generation, e.what());
            }
            generation_ = snapshot.generation;
        }
        return use(config_, inventory_);
    }

    const AdminOptions& options() const { return options_; }
    std::mutex& reload_mutex() { return reload_mutex_; }

  private:
    const AdminOptions& options_;
    std::mutex mutex_;
    std::mutex reload_mutex_;  // one reload at a time
    Config config_;
    std::vector<ListenerInventory> inventory_;
    std::uint64_t generation_ = 1;  // the supervisor published the start-up text as 1
};

std::size_t worker_count(const AdminState& state) {
    return state.options().stats->size();
}

std::vector<std::string> readiness_problems(AdminState& state) {
    std::vector<std::string> problems;
    const auto& options = state.options();
    for (std::size_t w = 0; w < worker_count(state); ++w)
        if (!options.control->worker_ready(w))
            problems.push_back("worker " + std::to_string(w) + " not ready");
    state.with_current([&](const Config& config, const auto&) {
        for (std::size_t i = 0; i < config.listeners.size() && i < dataplane::max_listeners; ++i) {
            const auto& backends = config.listeners[i].upstream.backends;
            bool any_up = false;
            for (std::size_t b = 0; b < backends.size() && b < dataplane::max_backends_per_listener;
                 ++b) {
                bool down = false;
                for (std::size_t w = 0; w < worker_count(state); ++w)
                    down |= options.stats->slot(w).listeners[i].backend_down[b].get() != 0;
                any_up |= !down;
            }
            if (!any_up)
                problems.push_back("listener " + config.listeners[i].name + ": no backend up");
        }
        return 0;
    });
    return problems;
}

Json status_json(AdminState& state) {
    const auto& options = state.options();
    Json status;
    status["version"] = PORTCULLIS_VERSION;
    status["supervisor_pid"] = options.control->supervisor_pid();
    const auto now = static_cast<std::int64_t>(::time(nullptr));
    const auto generation = options.control->config_generation();
    state.with_current([&](const Config& config, const std::vector<ListenerInventory>& inventory) {
        status["config"] = {{"file", config.source_file}, {"generation", generation}};
        Json workers = Json::array();
        for (std::size_t w = 0; w < worker_count(state); ++w) {
            const auto& slot = options.stats->slot(w);
            workers.push_back({{"index", w},
                               {"ready", options.control->worker_ready(w)},
                               {"config_generation", slot.config_generation.get()},
                               {"reload_failures", slot.reload_failures.get()},
                               {"restarts", slot.restarts.get()}});
        }
        status["workers"] = workers;
        Json listeners = Json::array();
        for (std::size_t i = 0; i < config.listeners.size(); ++i) {
            const auto& listener = config.listeners[i];
            Json entry = {{"name", listener.name}, {"address", listener.address.to_string()}};
            Json certificates = Json::array();
            Json crls = Json::array();
            Json problems = Json::array();
            if (i < inventory.size()) {
                for (const auto& c : inventory[i].certificates)
                    certificates.push_back({{"file", c.file},
                                            {"subject", c.subject},
                                            {"not_after_unix", c.not_after_unix},
                                            {"seconds_left", c.not_after_unix - now}});
                for (const auto& c : inventory[i].crls)
                    crls.push_back(
                        {{"file", c.file},
                         {"issuer", c.issuer},
                         {"last_update_unix", c.last_update_unix},
                         {"next_update_unix", c.next_update_unix},
                         {"overdue", c.next_update_unix != 0 && c.next_update_unix < now}});
                for (const auto& p : inventory[i].problems) problems.push_back(p);
            }
            Json backends = Json::array();
            for (std::size_t b = 0;
                 b < listener.upstream.backends.size() && b < dataplane::max_backends_per_listener;
                 ++b) {
                bool down = false;
                for (std::size_t w = 0; w < worker_count(state); ++w)
                    down |= options.stats->slot(w).listeners[i].backend_down[b].get() != 0;
                backends.push_back(
                    {{"address", listener.upstream.backends[b].to_string()}, {"up", !down}});
            }
            // Fetched CRLs and stapled OCSP responses: where each comes from
            // and how its last fetch went (the revocation fetcher's counters).
            const auto fetch_status = [now](const FetchStats& f) {
                const auto last_success = static_cast<std::int64_t>(f.last_success_unix.get());
                const auto next_update = static_cast<std::int64_t>(f.next_update_unix.get());
                const auto this_update = static_cast<std::int64_t>(f.this_update_unix.get());
                return Json{{"last_attempt_unix", f.last_attempt_unix.get()},
                            {"last_success_unix", last_success},
                            {"last_fetch_ok", last_success != 0 && f.last_failed.get() == 0},
                            {"fetches_ok", f.fetches_ok.get()},
                            {"fetches_failed", f.fetches_failed.get()},
                            {"this_update_unix", this_update},
                            {"age_s", this_update != 0 ? now - this_update : 0},
                            {"next_update_unix", next_update},
                            {"overdue", next_update != 0 && next_update < now}};
            };
            Json fetched = Json::array();
            for (std::size_t c = 0; c < config.crl_sources.size() && c < max_crl_sources; ++c) {
                const auto& source = config.crl_sources[c];
                if (source.listener != i) continue;
                auto item = fetch_status(options.stats->crl(c));
                item["url"] = source.url;
                item["cache_file"] = source.cache_file;
                fetched.push_back(std::move(item));
            }
            Json staples = Json::array();
            for (std::size_t c = 0; c < config.staple_sources.size() && c < max_staple_sources;
                 ++c) {
                const auto& source = config.staple_sources[c];
                if (source.listener != i) continue;
                auto item = fetch_status(options.stats->staple(c));
                item["certificate"] = source.chain_file;
                item["responder"] = source.responder;
                staples.push_back(std::move(item));
            }
            entry["certificates"] = certificates;
            entry["crls"] = crls;
            entry["fetched_crls"] = fetched;
            entry["ocsp_staples"] = staples;
            entry["backends"] = backends;
            entry["problems"] = problems;
            listeners.push_back(entry);
        }
        status["listeners"] = listeners;
        const auto keys = options.control->ticket_keys();
        status["ticket_keys"] = {
            {"source", config.resumption.ticket_key_file.empty() ? "generated" : "file"},
            {"file", config.resumption.ticket_key_file},
            {"keys", keys.keys.size()},
            {"generation", keys.generation},
            {"rotations", keys.rotations},
            {"current_age_seconds", now - keys.current_created_unix},
            {"rotation_interval_s", config.resumption.ticket_rotation_s}};
        return 0;
    });
    if (options.session_cache != nullptr) {
        const auto c = options.session_cache->counters();
        status["session_cache"] = {
            {"entries", c.entries}, {"capacity", options.session_cache->limits().max_entries},
            {"bytes", c.bytes},     {"hits", c.hits},
            {"misses", c.misses},   {"evictions", c.evictions}};
    } else {
        status["session_cache"] = nullptr;
    }
    const auto reload = options.control->reload_status();
    status["reload"] = {{"attempts", reload.attempts},   {"successes", reload.successes},
                        {"failures", reload.failures},   {"last_ok", reload.last_ok},
                        {"last_unix", reload.last_unix}, {"last_error", reload.last_error}};
    state.with_current([&](const Config& config, const auto&) {
        if (!config.hsm.enabled()) {
            status["hsm"] = nullptr;
            return 0;
        }
        Json workers = Json::array();
        for (std::size_t w = 0; w < worker_count(state); ++w) {
            const auto& h = options.stats->hsm(w);
            Json keys = Json::array();
            for (std::size_t k = 0; k < h.key_count.get() && k < hsm::max_hsm_keys; ++k) {
                std::uint64_t ok = h.keys[k].signs[0].get();
                std::uint64_t failed = 0;
                for (std::size_t r = 1; r < hsm::sign_result_count; ++r)
                    failed += h.keys[k].signs[r].get();
                keys.push_back({{"key", std::string(h.key_names[k].data())},
                                {"signatures_ok", ok},
                                {"signatures_failed", failed},
                                {"in_flight", h.keys[k].in_flight.get()}});
            }
            workers.push_back({{"worker", w},
                               {"primary_token_healthy", h.primary_healthy.get() == 1},
                               {"sessions_open", h.sessions_open.get()},
                               {"failovers", h.failovers.get()},
                               {"keys", keys}});
        }
        status["hsm"] = {{"module", config.hsm.module},
                         {"token", config.hsm.token},
                         {"failover_token", config.hsm.failover_token},
                         {"sessions_per_worker", config.hsm.sessions},
                         {"workers", workers}};
        return 0;
    });
    const auto problems = readiness_problems(state);
    status["ready"] = problems.empty();
    status["not_ready_because"] = problems;
    return status;
}

// Asks the supervisor (a byte on its reload pipe), waits for its verdict, then for every worker
// to serve the new generation, so a 200 means the new material is in use.
std::pair<int, Json> reload(AdminState& state) {
    const auto& options = state.options();
    std::lock_guard lock(state.reload_mutex());
    const auto before = options.control->reload_status();
    const char request = 1;
    if (::write(options.reload_request_fd, &request, 1) != 1)
        return {500, {{"result", "failure"}, {"error", "cannot reach the supervisor"}}};
    auto deadline = Clock::now() + reload_verdict_timeout;
    ReloadStatus after = before;
    while ((after = options.control->reload_status()).attempts == before.attempts) {
        if (Clock::now() > deadline)
            return {500, {{"result", "failure"}, {"error", "no verdict from the supervisor"}}};
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!after.last_ok) return {422, {{"result", "failure"}, {"error", after.last_error}}};
    const auto generation = options.control->config_generation();
    deadline = Clock::now() + reload_apply_timeout;
    while (true) {
        std::vector<std::size_t> behind;
        for (std::size_t w = 0; w < worker_count(state); ++w) {
            const auto& slot = options.stats->slot(w);
            if (options.control->worker_ready(w) && slot.config_generation.get() < generation)
                behind.push_back(w);
        }
        if (behind.empty()) break;
        if (Clock::now() > deadline) {
            return {500,
                    {{"result", "failure"},
                     {"error", "workers did not apply the new configuration in time; see logs"},
                     {"workers_behind", behind}}};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {200, {{"result", "success"}, {"generation", generation}}};
}

void serve_get(AdminState& state, const std::string& path, httplib::Response& response) {
    if (path == "/metrics") {
        const auto text = state.with_current([&](const Config& config, const auto& inventory) {
            return render_metrics({config, inventory, *state.options().stats,
                                   *state.options().control, state.options().session_cache});
        });
        respond(response, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    } else if (path == "/healthz") {
        respond(response, 200, "text/plain", "ok\n");
    } else if (path == "/readyz") {
        const auto problems = readiness_problems(state);
        std::string body = problems.empty() ? "ready\n" : "";
        for (const auto& p : problems) body += p + "\n";
        respond(response, problems.empty() ? 200 : 503, "text/plain", body);
    } else if (path == "/status") {
        respond(response, 200, "application/json", status_json(state).dump(2) + "\n");
    } else if (path == "/reload") {
        respond(response, 405, "text/plain", "use POST /reload\n");
    }
}

constexpr std::array kRoutes{"/metrics", "/healthz", "/readyz", "/status", "/reload"};

void add_routes(httplib::Server& server, AdminState& state) {
    for (const char* path : kRoutes) {
        server.Get(path, [&state, path](const httplib::Request&, httplib::Response& response) {
            try {
                serve_get(state, path, response);
            } catch (const std::exception& e) {
                respond(response, 500, "text/plain", std::string("error: ") + e.what() + "\n");
            }
        });
        // A reader handler: the body is never read, so a POST without
        // Content-Length (curl -X POST) is answered at once instead of
        // after waiting for a body until the read timeout.
        server.Post(path, [&state, path](const httplib::Request&, httplib::Response& response,
                                         const httplib::ContentReader&) {
            if (std::string_view(path) != "/reload") {
                respond(response, 405, "text/plain", "use GET\n");
                return;
            }
            const auto [status, body] = reload(state);
            spdlog::info("admin: POST /reload -> {} {}", status, body.dump());
            respond(response, status, "application/json", body.dump() + "\n");
        });
    }
}

// With TLS, every request is checked against the role its client
// certificate holds before any route sees it.
void require_roles(httplib::Server& server, const AdminRoles& roles) {
    server.set_pre_routing_handler(
        [&roles](const httplib::Request& request, httplib::Response& response) {
            const AdminRole held = admin_role(roles, request.ssl);
            const AdminRole needed = required_role(request.method, request.path);
            if (role_permits(held, needed)) return httplib::Server::HandlerResponse::Unhandled;
            spdlog::warn("admin: 403 {} {} from {} for {} (role {}, needs {})", request.method,
                         request.path, request.remote_addr, client_subject(request.ssl),
                         role_name(held), role_name(needed));
            respond(response, 403, "text/plain",
                    std::string("forbidden: this route needs the ") +
                        std::string(role_name(needed)) + " role\n");
            return httplib::Server::HandlerResponse::Handled;
        });
}

std::unique_ptr<httplib::Server> make_server(const AdminSettings& settings) {
    if (!settings.tls) return std::make_unique<httplib::Server>();
    std::string error;
    auto server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
        try {
            configure_admin_tls(ctx, *settings.tls);
            return true;
        } catch (const std::exception& e) {
            error = e.what();
            return false;
        }
    });
    if (!server->is_valid())
        throw crypto::TlsConfigError(error.empty() ? "admin TLS setup failed" : error);
    return server;
}

}  // namespace

int run_admin(const AdminOptions& options) {
    // Blocked before the HTTP server starts its threads, so they inherit the mask and
    // only sigwait below sees the signals.
    sigset_t signals;
    sigemptyset(&signals);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&signals, sig);
    ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    AdminState state(options);
    const AdminSettings& settings = options.config.admin;
    std::unique_ptr<httplib::Server> server;
    try {
        server = make_server(settings);
    } catch (const std::exception& e) {
        spdlog::critical("admin: cannot serve TLS on {}: {}", options.address.to_string(),
                         e.what());
        return admin_exit_cannot_listen;
    }
    add_routes(*server, state);
    if (settings.tls) require_roles(*server, settings.tls->roles);
    // One request per connection, as Prometheus and curl expect of a
    // management endpoint; a client that goes quiet is dropped.
    server->set_keep_alive_max_count(1);
    server->set_read_timeout(10);
    server->set_write_timeout(10);
    if (!server->bind_to_port(options.address.host(), options.address.port())) {
        spdlog::critical("admin: cannot listen on {}: {}", options.address.to_string(),
                         std::strerror(errno));
        return admin_exit_cannot_listen;
    }
    try {
        drop_privileges(options.config.workers.run_as, "admin");
    } catch (const std::exception& e) {
        spdlog::critical("admin: cannot give up its privileges: {}", e.what());
        return 1;
    }
    std::thread serving([&server] { server->listen_after_bind(); });
    spdlog::info("admin listening on {}://{} (/metrics /healthz /readyz /status POST /reload{})",
                 settings.tls ? "https" : "http", options.address.to_string(),
                 settings.tls ? "; mutual TLS, roles scrape and operator" : "");
    while (true) {
        int sig = 0;
        if (::sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGTERM || sig == SIGINT) break;
    }
    server->stop();
    serving.join();
    return 0;
}

}  // namespace portcullis::mgmt
