#include "mgmt/supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "dataplane/kernel/worker.hpp"
#include "dataplane/unique_fd.hpp"
#include "mgmt/logging.hpp"
#include "mgmt/shared_stats.hpp"

namespace portcullis::mgmt {
namespace {

using dataplane::UniqueFd;
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
    explicit Supervisor(const Config& config)
        : config_(config),
          worker_count_(config.workers.count > 0
                            ? config.workers.count
                            : static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))),
          stats_(static_cast<std::size_t>(worker_count_)),
          slots_(static_cast<std::size_t>(worker_count_)) {
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
        // From the kernel, not OpenSSL: the supervisor holds no OpenSSL state
        // across fork. Lives for the process; rotation comes with issue #4.
        ticket_key_.resize(80);
        if (::getrandom(ticket_key_.data(), ticket_key_.size(), 0) !=
            static_cast<ssize_t>(ticket_key_.size())) {
            throw std::system_error(errno, std::generic_category(), "getrandom ticket key");
        }
    }

    int run() {
        spdlog::info("starting {} workers listeners={}", worker_count_, listener_summary(config_));
        for (int i = 0; i < worker_count_; ++i) start_worker(i);
        while (!stopping_) {
            pollfd fds[2] = {{signals_.get(), POLLIN, 0}, {ready_read_.get(), POLLIN, 0}};
            if (::poll(fds, 2, 1000) < 0 && errno != EINTR) break;
            drain_ready_pipe();
            handle_signals();
        }
        stop_workers();
        spdlog::info("portcullis stats {}", stats_.summary());
        spdlog::info("portcullis stopped");
        return exit_code_;
    }

  private:
    void start_worker(int index) {
        auto& slot = slots_[static_cast<std::size_t>(index)];
        const pid_t pid = ::fork();
        if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
        if (pid == 0) {
            // Child: nothing of the supervisor's event handling survives.
            signals_.reset();
            ready_read_.reset();
            configure_logging("worker-" + std::to_string(index), config_.log.level);
            dataplane::kernel::WorkerOptions options;
            options.index = index;
            options.max_connections = config_.workers.max_connections;
            options.drain_timeout_ms = config_.workers.drain_timeout_ms;
            options.access_log = config_.log.access_log;
            options.listeners = config_.listeners;
            options.stats = &stats_.slot(static_cast<std::size_t>(index));
            options.ready_fd = ready_write_.get();
            options.cpu = index % static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
            options.ticket_key = ticket_key_;
            sigset_t all;
            sigemptyset(&all);
            ::sigprocmask(SIG_SETMASK, &all, nullptr);
            const int code = dataplane::kernel::run_worker(options);
            spdlog::default_logger()->flush();
            ::_exit(code);
        }
        slot.pid = pid;
        slot.ready = false;
        slot.started = Clock::now();
    }

    void drain_ready_pipe() {
        char indexes[64];
        ssize_t n;
        while ((n = ::read(ready_read_.get(), indexes, sizeof indexes)) > 0) {
            for (ssize_t i = 0; i < n; ++i) {
                const auto index = static_cast<std::size_t>(static_cast<unsigned char>(indexes[i]));
                if (index >= slots_.size()) continue;
                slots_[index].ready = true;
                if (announced_ready_) spdlog::info("worker {} ready again", index);
            }
        }
        if (!announced_ready_ && all_ready()) {
            announced_ready_ = true;
            spdlog::info("portcullis ready listeners={} workers={}", listener_summary(config_),
                         worker_count_);
        }
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
                    spdlog::warn(
                        "SIGHUP: live reload is not implemented yet; restart to apply changes");
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
        }
    }

    void on_worker_exit(int index, int status) {
        auto& slot = slots_[static_cast<std::size_t>(index)];
        slot.pid = -1;
        if (stopping_) return;
        const bool startup_failure =
            WIFEXITED(status) &&
            WEXITSTATUS(status) == dataplane::kernel::worker_exit_startup_failed;
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
        stats_.slot(static_cast<std::size_t>(index)).connections_active.set(0);
        if (slot.quick_deaths > 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(200 * slot.quick_deaths));
        start_worker(index);
    }

    void stop_workers() {
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
    }

    bool any_alive() const {
        for (const auto& s : slots_)
            if (s.pid > 0) return true;
        return false;
    }

    const Config& config_;
    int worker_count_;
    SharedStats stats_;
    std::vector<WorkerSlot> slots_;
    UniqueFd signals_;
    UniqueFd ready_read_;
    UniqueFd ready_write_;
    std::vector<std::uint8_t> ticket_key_;
    bool stopping_ = false;
    bool announced_ready_ = false;
    int exit_code_ = 0;
};

}  // namespace

int run_supervisor(const Config& config) {
    Supervisor supervisor(config);
    return supervisor.run();
}

}  // namespace portcullis::mgmt
