#include "mgmt/supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "crypto/session_cache.hpp"
#include "crypto/ticket_keys.hpp"
#include "dataplane/kernel/socket_transport.hpp"
#ifdef PORTCULLIS_HAVE_DPDK
#include "dataplane/dpdk/dpdk_transport.hpp"
#endif
#include "base/allowed_cpus.hpp"
#include "base/unique_fd.hpp"
#include "dataplane/worker.hpp"
#include "hsm/pkcs11_key_source.hpp"
#include "mgmt/admin_server.hpp"
#include "mgmt/child_process.hpp"
#include "mgmt/control_block.hpp"
#include "mgmt/crl_fetcher.hpp"
#include "mgmt/http_fetch.hpp"
#include "mgmt/logging.hpp"
#include "mgmt/ocsp_staple_fetcher.hpp"
#include "mgmt/privileges.hpp"
#include "mgmt/reload.hpp"
#include "mgmt/revocation_news.hpp"
#include "mgmt/shared_stats.hpp"
#include "mgmt/ticket_rotation.hpp"

namespace portcullis::mgmt {
namespace {

// A worker's keys: its own PKCS#11 signing service, opened in the worker
// after fork (PKCS#11 handles do not survive fork), and PEM files.
std::unique_ptr<crypto::KeySource> make_hsm_key_source(const Config& config, hsm::HsmStats* stats,
                                                       crypto::KeyCompletionSink& completions) {
    std::shared_ptr<hsm::SigningService> signing;
    try {
        signing = std::make_shared<hsm::SigningService>(config.hsm, stats);
    } catch (const hsm::HsmError& e) {
        // Name the keys that cannot be used, not just the token.
        std::string keys;
        for (const auto& listener : config.listeners)
            for (const auto& certificate : listener.tls.certificates)
                if (hsm::is_pkcs11_reference(certificate.key))
                    keys += (keys.empty() ? "" : ", ") + certificate.key;
        throw hsm::HsmError("keys " + keys + ": " + e.what());
    }
    return std::make_unique<hsm::Pkcs11KeySource>(std::move(signing), &completions);
}

using base::UniqueFd;
using Clock = std::chrono::steady_clock;

// A worker that dies this soon after its start counts as crash-looping.
constexpr auto quick_death = std::chrono::seconds(2);
constexpr int max_quick_deaths = 5;
constexpr auto stop_grace = std::chrono::seconds(10);
struct WorkerSlot {
    pid_t pid = -1;
    bool ready = false;
    Clock::time_point started;
    int quick_deaths = 0;
    std::optional<Clock::time_point> restart_at;  // dead, to be started again then
};

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

std::string listener_summary(const Config& config) {
    std::string text;
    for (const auto& l : config.listeners)
        text += (text.empty() ? "" : ",") + l.name + "@" + l.address.to_string();
    return text;
}

class Supervisor {
  public:
    Supervisor(const Config& config, const Overrides& overrides)
        : config_(config),
          overrides_(overrides),
          cpus_(base::allowed_cpus()),
          worker_count_(config.workers.count > 0 ? config.workers.count
                                                 : static_cast<int>(cpus_.size())),
          stats_(static_cast<std::size_t>(worker_count_)),
          revocation_news_(static_cast<std::size_t>(worker_count_)),
          tickets_(control_, config_.resumption),
          slots_(static_cast<std::size_t>(worker_count_)) {
        control_.set_supervisor_pid(::getpid());
        control_.publish_config(config_.text);
        if (config_.resumption.session_cache_entries > 0) {
            crypto::SessionCacheLimits limits;
            limits.max_entries = static_cast<std::size_t>(config_.resumption.session_cache_entries);
            session_cache_ = std::make_unique<crypto::SharedSessionCache>(limits);
        }
        sigset_t mask;
        sigemptyset(&mask);
        for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1}) sigaddset(&mask, sig);
        ::sigprocmask(SIG_BLOCK, &mask, nullptr);
        signals_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
        int pipe_fds[2];
        if (!signals_ || ::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
            throw std::system_error(errno, std::generic_category(), "supervisor setup");
        }
        ready_read_.reset(pipe_fds[0]);
        ready_write_.reset(pipe_fds[1]);
        // The admin process asks for a reload here: once it runs as
        // workers.user it may no longer signal the supervisor.
        if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0)
            throw std::system_error(errno, std::generic_category(), "supervisor setup");
        reload_read_.reset(pipe_fds[0]);
        reload_write_.reset(pipe_fds[1]);
    }

    int run() {
        spdlog::info("starting {} workers listeners={}", worker_count_, listener_summary(config_));
        prepare_access_log(config_.log.access_log, config_.workers.run_as);
        start_fetcher(true);
        for (int i = 0; i < worker_count_; ++i) start_worker(i);
        start_admin();
        while (!stopping_) {
            pollfd fds[4] = {{signals_.get(), POLLIN, 0},
                             {ready_read_.get(), POLLIN, 0},
                             {reload_read_.get(), POLLIN, 0},
                             {fetch_news_read_ ? fetch_news_read_.get() : -1, POLLIN, 0}};
            const auto until_next = std::chrono::duration_cast<std::chrono::milliseconds>(
                next_deadline() - Clock::now());
            const int timeout =
                static_cast<int>(std::clamp<std::int64_t>(until_next.count() + 1, 0, 1000));
            if (::poll(fds, 4, timeout) < 0 && errno != EINTR) break;
            drain_ready_pipe();
            if (fds[3].revents & POLLIN) read_fetcher_news();
            handle_signals();
            if (drain_reload_requests()) reload();
            restart_due_workers();
            if (Clock::now() >= tickets_.next_rotation()) tickets_.rotate();
            purge_due_sessions();
            if (admin_pid_ < 0 && admin_restart_at_ && Clock::now() >= *admin_restart_at_)
                start_admin();
            if (fetcher_pid_ < 0 && fetcher_restart_at_ && Clock::now() >= *fetcher_restart_at_)
                start_fetcher(false);
        }
        stop_workers();
        spdlog::info("portcullis stats {}", stats_.summary());
        spdlog::info("portcullis stopped");
        return exit_code_;
    }

  private:
    // The supervisor frees dead sessions' slots, so the cache's entries
    // follow the live sessions even where nobody returns to resume.
    void purge_due_sessions() {
        if (!session_cache_ || Clock::now() < next_purge_) return;
        next_purge_ = Clock::now() + session_purge_interval;
        session_cache_->purge_expired(static_cast<std::int64_t>(::time(nullptr)));
    }

    // The earliest time the loop has something to do without being woken.
    Clock::time_point next_deadline() const {
        auto next = tickets_.next_rotation();
        if (session_cache_) next = std::min(next, next_purge_);
        if (admin_restart_at_) next = std::min(next, *admin_restart_at_);
        if (group_restart_at_) next = std::min(next, *group_restart_at_);
        for (const auto& slot : slots_)
            if (slot.restart_at) next = std::min(next, *slot.restart_at);
        return next;
    }

    // Nothing of the supervisor's event handling survives in a child: the
    // worker keeps only the readiness pipe's write end.
    ChildSetup child_setup(bool keep_ready_pipe, bool keep_reload_request = false,
                           bool keep_fetch_news = false) {
        ChildSetup setup{control_.supervisor_pid(),
                         {&signals_, &ready_read_, &reload_read_, &fetch_news_read_}};
        if (!keep_ready_pipe) setup.inherited.push_back(&ready_write_);
        if (!keep_reload_request) setup.inherited.push_back(&reload_write_);
        if (!keep_fetch_news) setup.inherited.push_back(&fetch_news_write_);
        return setup;
    }

    void start_worker(int index) {
        auto& slot = slots_[static_cast<std::size_t>(index)];
        slot.restart_at.reset();
        const bool ocsp = std::any_of(
            config_.listeners.begin(), config_.listeners.end(),
            [](const auto& listener) { return listener.tls.ocsp != crypto::OcspCheck::off; });
        if (ocsp) prepare_cache_dir();
        const pid_t pid = fork_child(child_setup(true), [this, index, ocsp] {
            configure_logging("worker-" + std::to_string(index), config_.log.level);
            dataplane::WorkerOptions options;
            options.index = index;
            options.max_connections = config_.workers.max_connections;
            options.drain_timeout_ms = config_.workers.drain_timeout_ms;
            options.buffer_budget_bytes = config_.workers.buffer_budget_bytes;
            options.access_log = config_.log.access_log;
            options.connection_lines_per_second = config_.log.connection_lines_per_second;
            options.connection_lines_burst = config_.log.connection_lines_burst;
            options.listeners = config_.listeners;
            options.stats = &stats_.slot(static_cast<std::size_t>(index));
            options.ready_fd = ready_write_.get();
            options.cpu = cpus_[static_cast<std::size_t>(index) % cpus_.size()];
            options.session_cache = session_cache_.get();
            options.stateful_tickets = config_.resumption.ticket_mode == TicketMode::stateful;
            options.local_session_entries =
                static_cast<std::size_t>(config_.resumption.worker_session_cache_entries);
            if (config_.hsm.enabled())
                options.make_key_source = [this, index](crypto::KeyCompletionSink& completions) {
                    return make_hsm_key_source(
                        config_, &stats_.hsm(static_cast<std::size_t>(index)), completions);
                };
            if (ocsp) {
                options.ocsp_transport.post = [](const std::string& url, std::string_view request,
                                                 std::chrono::milliseconds timeout) {
                    auto answer = http_post(url, timeout, "application/ocsp-request", request);
                    return crypto::OcspHttpAnswer{std::move(answer.error), answer.status,
                                                  std::move(answer.body)};
                };
                options.ocsp_transport.keep = [](const std::string& path, std::string_view bytes) {
                    std::string error;
                    if (write_file_atomically(path, bytes, error)) return true;
                    spdlog::warn("cannot keep an OCSP answer in {}: {}", path, error);
                    return false;
                };
                options.publish_revocations =
                    [this, index](const std::vector<crypto::OcspClient::CertDigest>& digests) {
                        revocation_news_.publish(static_cast<std::size_t>(index), digests);
                    };
                options.poll_revocations = [reader = std::make_shared<RevocationNews::Reader>(
                                                revocation_news_)] { return reader->poll(); };
                options.ocsp_settings.cache_dir = config_.revocation.cache_dir;
                options.ocsp_live_check =
                    std::chrono::seconds(config_.revocation.ocsp_live_check_s);
                options.ocsp_settings.timeout =
                    std::chrono::milliseconds(config_.revocation.fetch_timeout_ms);
            }
            options.make_transport = [this, index, cpu = options.cpu, stats = options.stats](
                                         dataplane::Reactor& reactor,
                                         dataplane::TransportHost& host) {
                return make_transport(index, cpu, reactor, host, stats->packets);
            };
            options.poll_ticket_keys = [this](std::uint64_t& generation,
                                              std::vector<crypto::TicketKey>& keys) {
                if (control_.ticket_generation() == generation) return false;
                auto snapshot = control_.ticket_keys();
                generation = snapshot.generation;
                keys = std::move(snapshot.keys);
                return true;
            };
            options.load_reloaded = [this] {
                const auto snapshot = control_.config();
                auto fresh = published_config(snapshot);
                return dataplane::ReloadedSettings{
                    snapshot.generation, std::move(fresh.listeners), fresh.log.level,
                    fresh.log.connection_lines_per_second, fresh.log.connection_lines_burst};
            };
            options.drop_privileges = [this, index] {
                drop_privileges(config_.workers.run_as, "worker " + std::to_string(index));
            };
            return dataplane::run_worker(options);
        });
        if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
        slot.pid = pid;
        slot.ready = false;
        slot.started = Clock::now();
    }

    std::unique_ptr<dataplane::Transport> make_transport(int index, int cpu,
                                                         dataplane::Reactor& reactor,
                                                         dataplane::TransportHost& host,
                                                         dataplane::PacketStats& stats) const {
        if (config_.dataplane.transport == DataplaneTransport::kernel)
            return std::make_unique<dataplane::kernel::SocketTransport>(
                reactor, host, config_.dataplane.keepalive);
#ifdef PORTCULLIS_HAVE_DPDK
        dataplane::dpdk::WorkerPlacement placement{
            index, worker_count_, cpu, static_cast<int>(control_.supervisor_pid()), nullptr};
        if (index > 0) placement.primary_ready = [this] { return control_.worker_ready(0); };
        return dataplane::dpdk::make_dpdk_transport(
            config_.dataplane.dpdk, config_.dataplane.keepalive, placement, reactor, host, &stats);
#else
        (void)index, (void)cpu, (void)stats;
        throw std::runtime_error(
            "transport \"dpdk\": this build has no DPDK (install libdpdk-dev and rebuild)");
#endif
    }

    void drain_ready_pipe() {
        char indexes[64];
        ssize_t n;
        while ((n = ::read(ready_read_.get(), indexes, sizeof indexes)) > 0) {
            for (ssize_t i = 0; i < n; ++i) {
                const auto index = static_cast<std::size_t>(static_cast<unsigned char>(indexes[i]));
                if (index >= slots_.size()) continue;
                slots_[index].ready = true;
                control_.set_worker_ready(index, true);
                if (announced_ready_) spdlog::info("worker {} ready again", index);
            }
        }
        if (!announced_ready_ && all_ready()) {
            announced_ready_ = true;
            spdlog::info("portcullis ready listeners={} workers={}", listener_summary(config_),
                         worker_count_);
        }
    }

    // Requests that arrived together are one reload: each reads the file as it is now.
    bool drain_reload_requests() {
        char requests[64];
        bool any = false;
        while (::read(reload_read_.get(), requests, sizeof requests) > 0) any = true;
        return any;
    }

    bool all_ready() const {
        for (const auto& s : slots_)
            if (!s.ready) return false;
        return true;
    }

    void handle_signals() {
        signalfd_siginfo info{};
        while (::read(signals_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            switch (info.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                    spdlog::info("received {}, stopping",
                                 ::strsignal(static_cast<int>(info.ssi_signo)));
                    stopping_ = true;
                    break;
                case SIGCHLD:
                    reap_children();
                    break;
                case SIGUSR1:
                    spdlog::info("portcullis stats {}", stats_.summary());
                    break;
                case SIGHUP:
                    reload();
                    break;
                default:
                    break;
            }
        }
    }

    void reap_children() {
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            for (std::size_t i = 0; i < slots_.size(); ++i) {
                if (slots_[i].pid == pid) on_worker_exit(static_cast<int>(i), status);
            }
            if (pid == admin_pid_) on_admin_exit(status);
            if (pid == fetcher_pid_) {
                fetcher_pid_ = -1;
                if (!stopping_) {
                    spdlog::error("revocation fetcher died ({}); restarting in 5 s",
                                  describe_status(status));
                    fetcher_restart_at_ = Clock::now() + std::chrono::seconds(5);
                }
            }
        }
    }

    // ---- fetched CRLs and OCSP responses --------------------------------------------------

    // The revocation fetcher is a process of its own, as workers.user: it
    // talks to the network and parses what comes back, and a stalled CRL
    // server or OCSP responder must not hold up the supervisor. After each
    // round it writes one byte: 'c' when a CRL or OCSP response on disk
    // changed, 'u' after a first round that changed nothing. On the first
    // start the workers wait for that first round (bounded by the fetch
    // timeout), so they begin with everything that could be had.
    // revocation.cache_dir, writable by workers.user: the fetcher keeps CRLs
    // and staples there, and workers with tls.ocsp the answers they fetched.
    void prepare_cache_dir() const {
        std::error_code error;
        std::filesystem::create_directories(config_.revocation.cache_dir, error);
        if (config_.workers.run_as && ::geteuid() == 0) {
            [[maybe_unused]] const int rc =
                ::chown(config_.revocation.cache_dir.c_str(), config_.workers.run_as->uid,
                        config_.workers.run_as->gid);
        }
    }

    void start_fetcher(bool first) {
        fetcher_restart_at_.reset();
        const std::size_t sources = config_.crl_sources.size() + config_.staple_sources.size();
        if (sources == 0) return;
        if (!fetch_news_read_) {
            int pipe_fds[2];
            if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
                spdlog::error("cannot start the revocation fetcher: {}", std::strerror(errno));
                return;
            }
            fetch_news_read_.reset(pipe_fds[0]);
            fetch_news_write_.reset(pipe_fds[1]);
        }
        prepare_cache_dir();
        const pid_t pid = fork_child(child_setup(false, false, true), [this] {
            configure_logging("revocation-fetcher", config_.log.level);
            drop_privileges(config_.workers.run_as, "revocation fetcher");
            CrlFetcher crls(config_, &stats_.crl(0));
            OcspStapleFetcher staples(config_, &stats_.staple(0));
            for (bool first_round = true;; first_round = false) {
                const bool changed = crls.fetch_due() | staples.fetch_due();
                if (changed || first_round) {
                    const char news = changed ? 'c' : 'u';
                    if (::write(fetch_news_write_.get(), &news, 1) != 1) return 1;
                }
                std::this_thread::sleep_until(
                    std::min({crls.next_due(), staples.next_due(),
                              FetchClock::now() + std::chrono::seconds(60)}));
            }
        });
        if (pid < 0) {
            spdlog::error("cannot start the revocation fetcher: {}", std::strerror(errno));
            return;
        }
        fetcher_pid_ = pid;
        if (!first) return;
        pollfd first_round{fetch_news_read_.get(), POLLIN, 0};
        const int wait_ms =
            config_.revocation.fetch_timeout_ms * static_cast<int>(2 * sources) + 1000;
        if (::poll(&first_round, 1, wait_ms) == 1) {
            read_fetcher_news();
        } else {
            spdlog::warn(
                "revocation fetcher: first round not done in {} ms; starting with the CRLs "
                "and OCSP responses kept on disk",
                wait_ms);
        }
    }

    void read_fetcher_news() {
        char news[64];
        const ssize_t n = ::read(fetch_news_read_.get(), news, sizeof news);
        if (n <= 0 || std::find(news, news + n, 'c') == news + n) return;
        // The listeners' crl_files now name the new cache files.
        auto fresh = published_config(control_.config());
        config_.listeners = std::move(fresh.listeners);
        int signalled = 0;
        for (const auto& s : slots_) {
            if (s.pid > 0 && ::kill(s.pid, SIGHUP) == 0) ++signalled;
        }
        if (signalled > 0)
            spdlog::info("fetched CRLs or OCSP responses changed: {} workers load them", signalled);
    }

    void on_worker_exit(int index, int status) {
        auto& slot = slots_[static_cast<std::size_t>(index)];
        slot.pid = -1;
        control_.set_worker_ready(static_cast<std::size_t>(index), false);
        if (stopping_) return;
        const bool startup_failure =
            WIFEXITED(status) && WEXITSTATUS(status) == dataplane::worker_exit_startup_failed;
        if (startup_failure && !slot.ready) {
            spdlog::critical("worker {} could not start ({}); see the error above. Stopping.",
                             index, describe_status(status));
            exit_code_ = 1;
            stopping_ = true;
            return;
        }
        slot.quick_deaths = Clock::now() - slot.started < quick_death ? slot.quick_deaths + 1 : 0;
        if (slot.quick_deaths >= max_quick_deaths) {
            spdlog::critical("worker {} died {} times in a row right after starting; stopping",
                             index, slot.quick_deaths);
            exit_code_ = 1;
            stopping_ = true;
            return;
        }
        spdlog::error("worker {} died ({}); restarting", index, describe_status(status));
        stats_.slot(static_cast<std::size_t>(index)).restarts.add();
        // The dead worker's connections are gone; its gauge must not linger.
        for (auto& listener : stats_.slot(static_cast<std::size_t>(index)).listeners)
            listener.connections_active.set(0);
        // A worker that keeps dying right after its start waits longer each
        // time. The loop carries the restart out at its time, so signals
        // and readiness are handled meanwhile instead of waiting behind it.
        const auto at = Clock::now() + std::chrono::milliseconds(200 * slot.quick_deaths);
        if (workers_share_queues() && (index == 0 || group_restart_at_)) {
            // A secondary that dies meanwhile is started again with the group.
            if (index == 0) group_restart_at_ = at;
            return;
        }
        slot.restart_at = at;
    }

    void restart_due_workers() {
        if (stopping_) return;
        const auto now = Clock::now();
        if (group_restart_at_ && now >= *group_restart_at_) {
            group_restart_at_.reset();
            restart_queue_group();
        }
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const auto& slot = slots_[i];
            if (slot.pid < 0 && slot.restart_at && now >= *slot.restart_at)
                start_worker(static_cast<int>(i));
        }
    }

    bool workers_share_queues() const {
        return config_.dataplane.transport == DataplaneTransport::dpdk && worker_count_ > 1 &&
               config_.dataplane.dpdk.queues_per_worker();
    }

    // The secondaries poll queues of the port the dead primary started; a new
    // primary starts it afresh, so they go too and attach to the new one.
    void restart_queue_group() {
        for (std::size_t i = 1; i < slots_.size(); ++i) {
            auto& secondary = slots_[i];
            if (secondary.pid <= 0) continue;
            ::kill(secondary.pid, SIGKILL);
            ::waitpid(secondary.pid, nullptr, 0);
            secondary.pid = -1;
            control_.set_worker_ready(i, false);
            stats_.slot(i).restarts.add();
            for (auto& listener : stats_.slot(i).listeners) listener.connections_active.set(0);
        }
        for (int i = 0; i < worker_count_; ++i) start_worker(i);
    }

    void stop_fetcher() {
        if (fetcher_pid_ <= 0) return;
        ::kill(fetcher_pid_, SIGKILL);
        ::waitpid(fetcher_pid_, nullptr, 0);
        fetcher_pid_ = -1;
    }

    void stop_workers() {
        if (admin_pid_ > 0) ::kill(admin_pid_, SIGTERM);
        stop_fetcher();
        for (const auto& s : slots_)
            if (s.pid > 0) ::kill(s.pid, SIGTERM);
        // Workers drain first; the grace covers their own shutdown after it.
        const auto deadline =
            Clock::now() + std::chrono::milliseconds(config_.workers.drain_timeout_ms) + stop_grace;
        while (any_alive() && Clock::now() < deadline) {
            reap_children();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        for (auto& s : slots_) {
            if (s.pid > 0) {
                spdlog::warn("worker pid {} did not stop in time; killing it", s.pid);
                ::kill(s.pid, SIGKILL);
                ::waitpid(s.pid, nullptr, 0);
                s.pid = -1;
            }
        }
        if (admin_pid_ > 0) {
            ::kill(admin_pid_, SIGKILL);
            ::waitpid(admin_pid_, nullptr, 0);
            admin_pid_ = -1;
        }
    }

    bool any_alive() const {
        for (const auto& s : slots_)
            if (s.pid > 0) return true;
        return admin_pid_ > 0;
    }

    std::string config_directory() const {
        return std::filesystem::path(config_.source_file).parent_path().string();
    }

    // The configuration in the control block, as a worker reads it on
    // SIGHUP: listeners' crl_files then name every fetched CRL kept so far.
    Config published_config(const ConfigSnapshot& snapshot) const {
        auto config = parse_config(snapshot.text, config_.source_file, config_directory());
        apply_overrides(config);
        return config;
    }

    void apply_overrides(Config& config) const {
        if (overrides_.workers >= 0) config.workers.count = overrides_.workers;
        if (!overrides_.log_level.empty()) config.log.level = overrides_.log_level;
    }

    // ---- reload ------------------------------------------------------------------------

    // Everything is checked before anything changes: a broken configuration
    // is rejected whole and the running one keeps serving.
    void reload() {
        spdlog::info("reload requested: reading {}", config_.source_file);
        std::string problem;
        std::optional<Config> fresh;
        std::vector<crypto::TicketKey> file_keys;
        try {
            fresh = load_config(config_.source_file);
            apply_overrides(*fresh);
            problem = restart_only_changes(config_, *fresh);
            if (problem.empty()) problem = check_tls_material_in_child(*fresh, child_setup(false));
            if (problem.empty() && !fresh->resumption.ticket_key_file.empty())
                file_keys = crypto::read_ticket_key_file(fresh->resumption.ticket_key_file);
            if (problem.empty()) control_.publish_config(fresh->text);
        } catch (const std::exception& e) {
            problem = e.what();
        }
        if (!problem.empty()) {
            spdlog::error("reload rejected, the running configuration stays in service: {}",
                          problem);
            control_.publish_reload(false, problem);
            return;
        }
        tickets_.reload(fresh->resumption, std::move(file_keys));
        config_ = std::move(*fresh);
        // Its sources may have changed with the configuration.
        stop_fetcher();
        start_fetcher(false);
        spdlog::set_level(spdlog::level::from_str(config_.log.level));
        for (const auto& s : slots_)
            if (s.pid > 0) ::kill(s.pid, SIGHUP);
        control_.publish_reload(true, "");
        spdlog::info("reload accepted: configuration generation {} sent to {} workers",
                     control_.config_generation(), worker_count_);
    }

    // ---- admin process -----------------------------------------------------------------

    void start_admin() {
        admin_restart_at_.reset();
        if (!config_.admin.address) return;
        const pid_t pid = fork_child(child_setup(false, true), [this] {
            configure_logging("admin", config_.log.level);
            AdminOptions options;
            options.address = *config_.admin.address;
            options.config = config_;
            options.stats = &stats_;
            options.control = &control_;
            options.session_cache = session_cache_.get();
            options.reload_request_fd = reload_write_.get();
            return run_admin(options);
        });
        if (pid < 0) {
            spdlog::error("cannot start the admin process: {}", std::strerror(errno));
            return;
        }
        admin_pid_ = pid;
        admin_started_ = Clock::now();
    }

    void on_admin_exit(int status) {
        admin_pid_ = -1;
        if (stopping_) return;
        if (WIFEXITED(status) && WEXITSTATUS(status) == admin_exit_cannot_listen) {
            spdlog::critical(
                "admin listener {} unavailable: no /metrics, /readyz or /reload; traffic is "
                "still served. Trying again in 30 s",
                config_.admin.address->to_string());
            admin_restart_at_ = Clock::now() + std::chrono::seconds(30);
            return;
        }
        spdlog::error("admin process died ({}); restarting", describe_status(status));
        admin_restart_at_ =
            Clock::now() + (Clock::now() - admin_started_ < quick_death ? std::chrono::seconds(5)
                                                                        : std::chrono::seconds(0));
    }

    Config config_;
    Overrides overrides_;
    std::vector<int> cpus_;  // where workers are pinned, in turn
    int worker_count_;
    SharedStats stats_;
    RevocationNews revocation_news_;  // OCSP revocations one worker tells the others
    ControlBlock control_;
    std::unique_ptr<crypto::SharedSessionCache> session_cache_;
    static constexpr auto session_purge_interval = std::chrono::seconds(5);
    Clock::time_point next_purge_ = Clock::now() + session_purge_interval;
    TicketKeyRotation tickets_;
    pid_t admin_pid_ = -1;
    Clock::time_point admin_started_;
    std::optional<Clock::time_point> admin_restart_at_;
    std::vector<WorkerSlot> slots_;
    std::optional<Clock::time_point> group_restart_at_;  // DPDK queue group, after worker 0 died
    base::UniqueFd signals_;
    base::UniqueFd ready_read_;
    base::UniqueFd ready_write_;
    base::UniqueFd reload_read_;
    base::UniqueFd reload_write_;
    base::UniqueFd fetch_news_read_;   // the revocation fetcher's news
    base::UniqueFd fetch_news_write_;  // kept for the fetcher's restarts
    pid_t fetcher_pid_ = -1;
    std::optional<Clock::time_point> fetcher_restart_at_;
    bool stopping_ = false;
    bool announced_ready_ = false;
    int exit_code_ = 0;
};

}  // namespace

int run_supervisor(const Config& config, const Overrides& overrides) {
    Supervisor supervisor(config, overrides);
    return supervisor.run();
}

}  // namespace portcullis::mgmt
