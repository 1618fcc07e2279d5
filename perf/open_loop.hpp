// Open-loop load for portcullis-bench (issue #18): when connections arrive,
// what a step counts, which steps pass, where the knee is, and the JSON and
// CSV a run writes. No sockets here: bench.cpp drives the connections
// through its slot state machine and hands each outcome to a StepStats; this
// file decides nothing about TLS.
//
// Contracts:
// - ArrivalSchedule gives one client thread's share of a step's arrivals as
//   offsets from the step's start, increasing; the shares of `count` threads
//   together form one stream at `rate` (Poisson: independent streams at
//   rate/count, whose sum is Poisson at rate; uniform: each thread every
//   count/rate seconds, thread i shifted by i/rate).
// - A connection's latency is its completion time minus its intended start
//   (its arrival), so time the generator or the server made it wait counts.
//   An arrival that finds --max-in-flight connections outstanding is not
//   started late: it is counted in its step as an "overload" error.
// - StepStats is plain data owned by one thread; merge() sums them after the
//   step, on the main thread.
// - knee(): the highest offered rate R such that the step at R and every
//   step of a lower offered rate passed; nothing when the lowest failed.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "perf/latency_histogram.hpp"

namespace portcullis::perf {

enum class Arrival { poisson, uniform };

class ArrivalSchedule {
  public:
    ArrivalSchedule(Arrival arrival, double rate, int index, int count, std::uint64_t seed,
                    int step);
    // The next arrival's offset from the step's start.
    std::chrono::nanoseconds next();

  private:
    Arrival arrival_;
    double thread_rate_;  // arrivals per second of this thread's share
    double offset_s_;     // uniform: this thread's shift
    std::uint64_t issued_ = 0;
    double at_s_ = 0;  // poisson: the last arrival
    std::mt19937_64 random_;
};

// --tls-mix "1.3=0.8,1.2=0.2": weights normalised to sum 1, in the order given.
struct TlsMix {
    std::vector<std::pair<std::string, double>> shares;  // "1.3" -> 0.8
    // The TLS version (TLS1_2_VERSION / TLS1_3_VERSION) for a draw u in [0, 1).
    int pick(double u) const;
    std::vector<int> versions() const;  // those with a share above 0
};
// Throws std::invalid_argument naming what is wrong.
TlsMix parse_tls_mix(const std::string& text);
// --sweep FROM:TO:STEP: FROM, FROM+STEP, ... up to TO, all above 0.
std::vector<double> parse_sweep(const std::string& text);

// Error categories every step reports, zeros included.
inline const std::vector<std::string>& error_categories() {
    static const std::vector<std::string> names = {"connect", "handshake", "response",
                                                   "timeout", "overload",  "other"};
    return names;
}

struct StepStats {
    LatencyHistogram latency;  // µs, successful connections only
    LatencyHistogram full_latency;
    LatencyHistogram resumed_latency;
    std::uint64_t connections = 0;  // arrivals, overloads included
    std::uint64_t completed = 0;    // answered (or handshaken, without --request)
    std::uint64_t full = 0;
    std::uint64_t resumed = 0;                           // SSL_session_reused
    std::uint64_t resume_offered = 0;                    // connections that offered a saved session
    std::map<std::string, std::uint64_t> errors;         // by category
    std::map<std::string, std::uint64_t> error_details;  // by the generator's reason
    std::chrono::nanoseconds max_start_lag{0};           // actual start after the intended
    std::chrono::steady_clock::time_point last_end{};    // the last outcome of the step

    void record_ok(std::chrono::nanoseconds latency, bool was_resumed);
    void record_error(const std::string& category, const std::string& reason);
    void merge(const StepStats& other);
};

struct Bounds {
    double p99_max_ms = 100;
    double max_error_ratio = 0.01;
};

struct StepReport {
    double offered_rate = 0;
    double duration_s = 0;  // the step's start to its last outcome (drain included)
    // The generator's own CPU seconds (all its threads) over the step: a
    // knee can be the load generator's limit rather than the server's.
    double client_cpu_s = 0;
    StepStats stats;

    std::uint64_t errors() const;
    double error_ratio() const;
    double achieved_rate() const;  // completed / duration_s
    double p_ms(double q) const { return static_cast<double>(stats.latency.quantile(q)) / 1000; }
    bool passed(const Bounds& bounds) const;
};

std::optional<std::size_t> knee(const std::vector<StepReport>& steps, const Bounds& bounds);

// What the JSON says about the run besides its steps.
struct RunSettings {
    std::string target;
    Arrival arrival = Arrival::poisson;
    double resume_fraction = 0;
    TlsMix tls_mix;
    std::size_t identities = 0;
    Bounds bounds;
    double step_duration_s = 10;
    int threads = 1;
    std::uint64_t max_in_flight = 0;
    std::uint64_t seed = 0;
    int timeout_ms = 0;
    std::uint64_t primed_sessions = 0;
    double client_cpu_s = 0;
};

std::string open_loop_json(const RunSettings& settings, const std::vector<StepReport>& steps);
std::string open_loop_csv(const std::vector<StepReport>& steps, const Bounds& bounds);
// One line for stderr: offered, achieved, p50/p99, errors, pass or fail.
std::string progress_line(std::size_t number, std::size_t count, const StepReport& step,
                          const Bounds& bounds);

}  // namespace portcullis::perf
