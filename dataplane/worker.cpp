#include "dataplane/worker.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "base/heap_policy.hpp"
#include "base/os_error.hpp"
#include "crypto/key_completion_queue.hpp"
#include "crypto/key_source.hpp"
#include "crypto/ocsp_client.hpp"
#include "dataplane/connection.hpp"
#include "dataplane/memory_return.hpp"
#include "dataplane/reactor.hpp"

namespace portcullis::dataplane {
namespace {

constexpr int tick_interval_ms = 100;
constexpr auto resident_interval = std::chrono::seconds(1);
constexpr auto trim_interval = std::chrono::seconds(10);

// The process's resident set, in bytes (statm's second field, in pages).
std::uint64_t resident_bytes() {
    base::UniqueFd fd(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC));
    if (!fd) return 0;
    char text[128] = {};
    if (::read(fd.get(), text, sizeof text - 1) <= 0) return 0;
    unsigned long long size = 0, resident = 0;
    if (std::sscanf(text, "%llu %llu", &size, &resident) != 2) return 0;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// The worker's own descriptors in its reactor.
enum ControlTag : unsigned { signals_tag = 0, reload_tag = 1, key_operations_tag = 2 };

base::UniqueFd open_signal_fd() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    // Operators signal the process group; only the supervisor acts on these.
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    base::UniqueFd fd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd) throw base::os_error("signalfd");
    return fd;
}

static_assert(static_cast<std::size_t>(crypto::OcspSource::responder) + 1 == ocsp_sources);
static_assert(static_cast<std::size_t>(crypto::OcspVerdict::Kind::unavailable) + 1 ==
              ocsp_verdicts);

class ListenerEvents final : public crypto::TlsEventSink {
  public:
    ListenerEvents(WorkerStats& worker, ListenerStats& listener)
        : worker_(worker), listener_(listener) {}
    void ticket_decrypted(crypto::TicketKeyring::Match key_age) override {
        const auto age = key_age == crypto::TicketKeyring::Match::current ? TicketKeyAge::current
                         : key_age == crypto::TicketKeyring::Match::previous
                             ? TicketKeyAge::previous
                             : TicketKeyAge::unknown;
        worker_.ticket_decryptions[static_cast<std::size_t>(age)].add();
    }
    void resumption_refused(crypto::ResumptionRefusal reason) override {
        switch (reason) {
            case crypto::ResumptionRefusal::revoked:
                listener_.resumptions_refused_revoked.add();
                break;
            case crypto::ResumptionRefusal::expired:
                listener_.resumptions_refused_expired.add();
                break;
            case crypto::ResumptionRefusal::ocsp_unchecked:
                listener_.resumptions_refused_ocsp_unchecked.add();
                break;
        }
    }
    void chain_cache(crypto::ChainCacheEvent event) override {
        switch (event) {
            case crypto::ChainCacheEvent::hit:
                listener_.chain_cache_hits.add();
                break;
            case crypto::ChainCacheEvent::miss:
                listener_.chain_cache_misses.add();
                break;
            case crypto::ChainCacheEvent::eviction:
                listener_.chain_cache_evictions.add();
                break;
        }
    }
    void stale_crl_accepted() override { listener_.stale_crl_accepted.add(); }
    void ocsp_stapled() override { listener_.ocsp_staples_sent.add(); }
    void ocsp_checked(crypto::OcspSource source, crypto::OcspVerdict::Kind kind) override {
        listener_
            .ocsp_checks[ocsp_check_slot(static_cast<std::size_t>(source),
                                         static_cast<std::size_t>(kind))]
            .add();
    }
    void ocsp_soft_accepted() override { listener_.ocsp_soft_accepted.add(); }
    void local_session_cache(crypto::LocalSessionEvent event) override {
        switch (event) {
            case crypto::LocalSessionEvent::hit:
                worker_.local_session_hits.add();
                break;
            case crypto::LocalSessionEvent::miss:
                worker_.local_session_misses.add();
                break;
            case crypto::LocalSessionEvent::eviction:
                worker_.local_session_evictions.add();
                break;
        }
    }

  private:
    WorkerStats& worker_;
    ListenerStats& listener_;
};

bool same_upstream(const UpstreamSettings& a, const UpstreamSettings& b) {
    if (a.backends.size() != b.backends.size()) return false;
    for (std::size_t i = 0; i < a.backends.size(); ++i)
        if (a.backends[i].to_string() != b.backends[i].to_string()) return false;
    return a.connect_timeout_ms == b.connect_timeout_ms && a.fail_threshold == b.fail_threshold &&
           a.retry_after_ms == b.retry_after_ms && a.proxy_protocol == b.proxy_protocol;
}

class Worker final : public TransportHost, private Reactor::Handler {
  public:
    explicit Worker(const WorkerOptions& options)
        : options_(options),
          buffers_(base::BufferPoolLimits{.budget_bytes = options.buffer_budget_bytes}),
          reactor_(runtime_.now, options.stats->busy_ns) {
        runtime_.index = options.index;
        runtime_.buffers = &buffers_;
        runtime_.stats = options.stats;
        runtime_.now = Clock::now();
        runtime_.log_limiter.resize(options.connection_lines_per_second,
                                    options.connection_lines_burst);
        access_log_ = AccessLog(options.access_log);
        runtime_.access_log = &access_log_;
        signals_ = open_signal_fd();
        reactor_.add(signals_.get(), EPOLLIN, *this, signals_tag);

        const bool ocsp = options.ocsp_transport.post &&
                          std::any_of(options.listeners.begin(), options.listeners.end(),
                                      [](const ListenerSettings& listener) {
                                          return listener.tls.ocsp != crypto::OcspCheck::off;
                                      });
        // OCSP lookups pause handshakes through the same queue as HSM signatures.
        if (options.make_key_source || ocsp) {
            completions_ = std::make_unique<crypto::KeyCompletionQueue>();
            runtime_.key_completions = completions_.get();
            reactor_.add(completions_->fd(), EPOLLIN, *this, key_operations_tag);
        }
        if (ocsp) {
            ocsp_ =
                std::make_unique<crypto::OcspClient>(options.ocsp_transport, options.ocsp_settings);
        }
        if (options.make_key_source) {
            keys_ = options.make_key_source(*completions_);
        } else {
            keys_ = std::make_unique<crypto::PemFileKeySource>();
        }
        reload_done_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        if (!reload_done_) throw base::os_error("eventfd");
        reactor_.add(reload_done_.get(), EPOLLIN, *this, reload_tag);
        refresh_ticket_keys();
        transport_ = options.make_transport(reactor_, *this);
        runtime_.transport = transport_.get();
        spdlog::info("worker {} transport {}", options.index, transport_->describe());

        for (std::size_t i = 0; i < options.listeners.size(); ++i) {
            const auto& settings = options.listeners[i];
            auto listener = std::make_unique<ListenerRuntime>();
            listener->settings = settings;
            listener->stats = &options.stats->listeners.at(i);
            listener->events = std::make_unique<ListenerEvents>(*options.stats, *listener->stats);
            listener->tls = build_context(settings, *listener);
            listener->backends = std::make_shared<BackendPool>(settings.upstream);
            transport_->listen(*listener);
            listeners_.push_back(std::move(listener));
        }
        connections_.reserve(static_cast<std::size_t>(options.max_connections));
        tick_after_.reserve(static_cast<std::size_t>(options.max_connections));
        if (options.drop_privileges) options.drop_privileges();
    }

    ~Worker() {
        if (reload_thread_.joinable()) reload_thread_.join();
    }

    int run() {
        if (options_.ready_fd >= 0) {
            const char byte = static_cast<char>(options_.index);
            [[maybe_unused]] const auto n = ::write(options_.ready_fd, &byte, 1);
        }
        auto next_tick = Clock::now();
        next_resident_ = next_tick;
        next_trim_ = next_tick + trim_interval;
        while (!drained()) {
            const auto turn = reactor_.turn(tick_interval_ms);
            resume_starved();
            if (turn.looked && runtime_.now >= next_tick) {
                // The hints are contiguous: with 100 000 idle connections a
                // tick reads 800 KB instead of touching 100 000 objects.
                for (std::size_t i = 0; i < connections_.size(); ++i) {
                    if (runtime_.now < tick_after_[i]) continue;
                    auto& connection = connections_[i];
                    if (connection->finished()) continue;
                    tick_after_[i] = connection->on_tick();
                    if (connection->finished()) finished_.push_back(connection.get());
                }
                refresh_ticket_keys();
                exchange_ocsp_revocations();
                transport_->publish_stats();
                publish_memory();
                next_tick = runtime_.now + std::chrono::milliseconds(tick_interval_ms);
            }
            reap_finished();
            // The gap between two epoll_waits is work: its sum over time is
            // this core's busy fraction (capacity planning reads it). A
            // polling reactor counts its poller's work itself.
            if (turn.looked && (!reactor_.polls() || turn.dispatched > 0)) {
                options_.stats->busy_ns.add(
                    static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   Clock::now() - turn.started)
                                                   .count()));
            }
        }
        if (!connections_.empty()) {
            spdlog::warn("worker {} drain deadline passed; closing {} connections", options_.index,
                         connections_.size());
        }
        spdlog::info("worker {} stopped", options_.index);
        return worker_exit_ok;
    }

  private:
    // Connections the pool refused a block get their turn again, oldest
    // first, as soon as there is a block to give: each once per pass, a
    // connection refused again going to the back. Stopping a pass at the
    // first refusal was measured slower: 20 000 clients closing at once on
    // the DPDK transport with a 1 MiB budget were all gone after 1 s this
    // way, after 3 s that way (docs/performance.md).
    void resume_starved() {
        if (runtime_.starved.empty() || buffers_.returns() == returns_at_resume_ ||
            !buffers_.available(base::BufferPool::Use::transform)) {
            return;
        }
        returns_at_resume_ = buffers_.returns();
        for (std::size_t turns = runtime_.starved.size(); turns > 0; --turns)
            activity(*runtime_.starved.pop_front());
    }

    void publish_memory() {
        auto& stats = *options_.stats;
        stats.buffer_bytes_in_use.set(buffers_.bytes_in_use());
        stats.buffer_bytes_high_water.set(buffers_.high_water_bytes());
        stats.buffer_bytes_free.set(buffers_.free_bytes());
        stats.buffer_budget_bytes.set(buffers_.budget_bytes());
        stats.buffer_denials.set(buffers_.denials());
        if (runtime_.now >= next_resident_) {
            stats.resident_bytes.set(resident_bytes());
            next_resident_ = runtime_.now + resident_interval;
        }
        if (runtime_.now >= next_trim_) {
            maybe_return_memory();
            next_trim_ = runtime_.now + trim_interval;
        }
    }

    // A worker's resident memory follows what it holds within about two
    // trim intervals (memory_return.hpp says when).
    void maybe_return_memory() {
        std::uint64_t accepted = 0;
        for (const auto& listener : listeners_)
            accepted += listener->stats->connections_accepted.get();
        const auto heap = base::heap_usage();
        if (!memory_return_.due(accepted, connections_.size(), heap.free_bytes, heap.in_use_bytes))
            return;
        buffers_.release_free();
        base::return_free_heap();
        options_.stats->heap_trims.add();
        memory_return_.returned(connections_.size(), base::heap_usage().free_bytes);
    }

    // After SIGTERM: accept nothing more, let established connections finish
    // until the drain deadline. A second signal ends the drain at once.
    void begin_drain() {
        const auto now = Clock::now();
        if (draining_) {
            drain_deadline_ = now;
            return;
        }
        draining_ = true;
        drain_deadline_ = now + std::chrono::milliseconds(options_.drain_timeout_ms);
        transport_->stop_listening();
        spdlog::info("worker {} draining {} connections for up to {} ms", options_.index,
                     connections_.size(), options_.drain_timeout_ms);
    }

    bool drained() const {
        return draining_ && (connections_.empty() || Clock::now() >= drain_deadline_);
    }

    // Reactor::Handler: the worker's control descriptors.
    void on_ready(unsigned tag, std::uint32_t) override {
        switch (tag) {
            case signals_tag:
                handle_signals();
                break;
            case reload_tag:
                finish_reload();
                break;
            case key_operations_tag:
                finish_key_operations();
                break;
        }
    }

    // TransportHost. The accept glue of every transport: limits, counting,
    // the Connection, and serving at once a client that already sent its
    // ClientHello instead of waiting for another turn of the loop.
    Connection* accept(ListenerRuntime& listener, std::unique_ptr<ByteStream> client,
                       const SocketAddress& peer) override {
        if (draining_) return nullptr;
        if (connections_.size() >= static_cast<std::size_t>(options_.max_connections)) {
            listener.stats->connections_refused.add();
            if (runtime_.log_limiter.allow(runtime_.now)) {
                spdlog::warn(
                    "connection refused listener={} client={} reason=max_connections limit={}",
                    listener.settings.name, peer.to_string(), options_.max_connections);
            }
            return nullptr;
        }
        listener.stats->connections_accepted.add();
        auto connection = std::make_unique<Connection>(runtime_, listener, std::move(client), peer);
        connection->slot = connections_.size();
        connections_.push_back(std::move(connection));
        tick_after_.push_back(Clock::time_point::min());
        Connection& accepted = *connections_.back();
        activity(accepted);
        return &accepted;
    }

    base::BufferPool& buffers() override { return buffers_; }

    void activity(Connection& connection) override {
        if (connection.finished()) return;  // closed earlier in this batch
        connection.pump();
        if (connection.finished()) finished_.push_back(&connection);
    }

    void handle_signals() {
        signalfd_siginfo info{};
        while (::read(signals_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) begin_drain();
            // The supervisor sends SIGHUP once a new configuration is validated
            // and published. SIGUSR1 and SIGUSR2 are the supervisor's.
            if (info.ssi_signo == SIGHUP && options_.load_reloaded && !draining_) begin_reload();
        }
    }

    std::shared_ptr<const crypto::ServerTlsContext> build_context(const ListenerSettings& settings,
                                                                  ListenerRuntime& listener) {
        crypto::ServerTlsOptions tls_options;
        tls_options.tickets = options_.poll_ticket_keys ? &ticket_keys_ : nullptr;
        tls_options.events = listener.events.get();
        tls_options.session_cache = options_.session_cache;
        tls_options.stateful_tickets = options_.stateful_tickets;
        tls_options.local_session_entries = options_.local_session_entries;
        tls_options.ocsp = ocsp_.get();
        tls_options.completions = completions_.get();
        return std::make_shared<const crypto::ServerTlsContext>(settings.tls, *keys_, tls_options);
    }

    // Key operations (HSM signatures) are back: resume the handshakes that wait for them.
    void finish_key_operations() {
        for (const auto& op : completions_->drain()) {
            const auto waiting = runtime_.awaiting_key.find(op.get());
            if (waiting == runtime_.awaiting_key.end()) continue;  // connection gone or timed out
            Connection* connection = waiting->second;
            connection->on_key_operation_done();
            if (connection->finished()) finished_.push_back(connection);
        }
    }

    void recheck_revocations() {
        for (auto& connection : connections_) {
            if (connection->finished()) continue;
            connection->recheck_revocation();
            if (connection->finished()) finished_.push_back(connection.get());
        }
    }

    void exchange_ocsp_revocations() {
        if (!ocsp_) return;
        // One walk over every connection per ocsp_live_check, a slice per
        // tick, so that no tick hashes every certificate at once.
        if (runtime_.now >= next_ocsp_walk_) {
            next_ocsp_walk_ = runtime_.now + options_.ocsp_live_check;
            const auto ticks = std::max<std::int64_t>(
                1, options_.ocsp_live_check / std::chrono::milliseconds(tick_interval_ms));
            ocsp_walk_left_ = connections_.size();
            ocsp_walk_slice_ = (ocsp_walk_left_ + static_cast<std::size_t>(ticks) - 1) /
                               static_cast<std::size_t>(ticks);
        }
        for (std::size_t i = 0; i < ocsp_walk_slice_ && ocsp_walk_left_ > 0;
             ++i, --ocsp_walk_left_) {
            if (ocsp_walk_ >= connections_.size()) ocsp_walk_ = 0;
            if (connections_.empty()) break;
            connections_[ocsp_walk_++]->refresh_ocsp(*ocsp_);
        }
        std::string why;
        if (const auto failed = ocsp_->collect_refreshes(why); failed > 0) {
            spdlog::warn(
                "OCSP refresh of live connections: {} lookups failed ({}); their "
                "connections stay up on the answers they had",
                failed, why);
        }
        const auto learned = ocsp_->take_learned_revocations();
        bool news = !learned.empty();
        if (news && options_.publish_revocations) options_.publish_revocations(learned);
        if (options_.poll_revocations) {
            for (const auto& digest : options_.poll_revocations())
                news = ocsp_->learn_revoked(digest) || news;
        }
        if (news) recheck_revocations();
    }

    void refresh_ticket_keys() {
        if (!options_.poll_ticket_keys) return;
        std::vector<crypto::TicketKey> keys;
        if (!options_.poll_ticket_keys(ticket_generation_, keys)) return;
        ticket_keys_.replace(std::move(keys));
        options_.stats->ticket_key_generation.set(ticket_generation_);
    }

    // New TLS contexts are built on a thread of their own so the event loop
    // keeps serving; the swap happens on the loop when the thread is done.
    void begin_reload() {
        if (reload_thread_.joinable()) {
            reload_pending_ = true;  // a newer generation waits for the running build
            return;
        }
        reload_result_ = {};
        reload_thread_ = std::thread([this] {
            try {
                auto reloaded = options_.load_reloaded();
                for (auto& listener : listeners_) {
                    const auto match = std::find_if(
                        reloaded.listeners.begin(), reloaded.listeners.end(),
                        [&](const auto& s) { return s.name == listener->settings.name; });
                    if (match == reloaded.listeners.end()) {
                        throw std::runtime_error("listener " + listener->settings.name +
                                                 " is missing from the new configuration");
                    }
                    reload_result_.contexts.push_back(build_context(*match, *listener));
                    reload_result_.settings.push_back(*match);
                }
                reload_result_.generation = reloaded.generation;
                reload_result_.log_level = reloaded.log_level;
                reload_result_.connection_lines_per_second = reloaded.connection_lines_per_second;
                reload_result_.connection_lines_burst = reloaded.connection_lines_burst;
            } catch (const std::exception& e) {
                reload_result_.error = e.what();
            }
            const std::uint64_t one = 1;
            [[maybe_unused]] const auto n = ::write(reload_done_.get(), &one, sizeof one);
        });
    }

    void finish_reload() {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto n = ::read(reload_done_.get(), &count, sizeof count);
        if (!reload_thread_.joinable()) return;
        reload_thread_.join();
        if (!reload_result_.error.empty()) {
            options_.stats->reload_failures.add();
            spdlog::error("worker {} reload failed, keeping the previous configuration: {}",
                          options_.index, reload_result_.error);
        } else {
            for (std::size_t i = 0; i < listeners_.size(); ++i) {
                auto& listener = *listeners_[i];
                auto& fresh = reload_result_.settings[i];
                listener.tls = std::move(reload_result_.contexts[i]);
                // Backend health survives a reload that leaves the backends alone.
                if (!same_upstream(listener.settings.upstream, fresh.upstream))
                    listener.backends = std::make_shared<BackendPool>(fresh.upstream);
                fresh.address = listener.settings.address;  // rebinding needs a restart
                fresh.backlog = listener.settings.backlog;
                listener.settings = std::move(fresh);
            }
            // A shorter idle_timeout_ms applies from the next tick.
            std::fill(tick_after_.begin(), tick_after_.end(), Clock::time_point::min());
            if (!reload_result_.log_level.empty())
                spdlog::set_level(spdlog::level::from_str(reload_result_.log_level));
            if (reload_result_.connection_lines_per_second > 0 &&
                reload_result_.connection_lines_burst > 0)
                runtime_.log_limiter.resize(reload_result_.connection_lines_per_second,
                                            reload_result_.connection_lines_burst);
            // Reopened in place (connections hold its address): logrotate can
            // move the file and reload, instead of copytruncate.
            access_log_ = AccessLog(options_.access_log);
            options_.stats->config_generation.set(reload_result_.generation);
            // Partners revoked by the new CRLs lose their live connections too.
            recheck_revocations();
            spdlog::info("worker {} serving configuration generation {}", options_.index,
                         reload_result_.generation);
        }
        reload_result_ = {};
        if (reload_pending_) {
            reload_pending_ = false;
            begin_reload();
        }
    }

    // Destroys finished connections after the event batch, so events later in
    // the same batch never see a freed connection.
    void reap_finished() {
        for (Connection* connection : finished_) {
            const std::size_t slot = connection->slot;
            std::swap(connections_[slot], connections_.back());
            connections_[slot]->slot = slot;
            connections_.pop_back();
            tick_after_[slot] = tick_after_.back();
            tick_after_.pop_back();
        }
        finished_.clear();
    }

    const WorkerOptions& options_;
    // Outlives every connection: their queues hold its blocks.
    base::BufferPool buffers_;
    // Declared before the listeners and connections: the TLS contexts hold
    // keys that call into the key source until they are destroyed. The key
    // source (and the signing threads behind it) goes before the queue its
    // operations complete into.
    std::unique_ptr<crypto::KeyCompletionQueue> completions_;
    // After completions_ (its lookups report there) and before the contexts
    // that point to it go.
    std::unique_ptr<crypto::OcspClient> ocsp_;
    std::unique_ptr<crypto::KeySource> keys_;
    WorkerRuntime runtime_;
    AccessLog access_log_;
    // Outlives the transport and every stream: it holds their handlers' addresses.
    Reactor reactor_;
    base::UniqueFd signals_;
    // Outlives the listeners and connections: their streams may belong to it.
    std::unique_ptr<Transport> transport_;
    std::vector<std::unique_ptr<ListenerRuntime>> listeners_;
    std::vector<std::unique_ptr<Connection>> connections_;
    std::vector<Connection*> finished_;  // reaped after each event batch
    std::uint64_t returns_at_resume_ = 0;
    Clock::time_point next_resident_;
    Clock::time_point next_trim_;
    MemoryReturn memory_return_;
    // Per slot of connections_: no tick before this time (Connection::on_tick).
    std::vector<Clock::time_point> tick_after_;
    // The OCSP refresh walk: when the next one starts, the next connection
    // it looks at, how many it has left and how many it takes per tick.
    Clock::time_point next_ocsp_walk_{};
    std::size_t ocsp_walk_ = 0;
    std::size_t ocsp_walk_left_ = 0;
    std::size_t ocsp_walk_slice_ = 0;
    crypto::TicketKeyring ticket_keys_;  // shared by every context of this worker
    std::uint64_t ticket_generation_ = 0;
    base::UniqueFd reload_done_;
    std::thread reload_thread_;
    struct ReloadResult {
        std::uint64_t generation = 0;
        std::vector<std::shared_ptr<const crypto::ServerTlsContext>> contexts;
        std::vector<ListenerSettings> settings;
        std::string log_level;
        int connection_lines_per_second = 0;
        int connection_lines_burst = 0;
        std::string error;
    } reload_result_;
    bool reload_pending_ = false;
    bool draining_ = false;
    Clock::time_point drain_deadline_;
};

void pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) {
        spdlog::warn("could not pin worker to cpu {}: {}", cpu, std::strerror(errno));
    }
}

}  // namespace

int run_worker(const WorkerOptions& options) {
    if (options.cpu >= 0) pin_to_cpu(options.cpu);
    std::unique_ptr<Worker> worker;
    try {
        worker = std::make_unique<Worker>(options);
    } catch (const std::exception& e) {
        spdlog::critical("worker {} cannot start: {}", options.index, e.what());
        return worker_exit_startup_failed;
    }
    try {
        return worker->run();
    } catch (const std::exception& e) {
        spdlog::critical("worker {} failed: {}", options.index, e.what());
        return 1;
    }
}

}  // namespace portcullis::dataplane
