// Open-loop scheduling and reporting for portcullis-bench; see open_loop.hpp.
#include "perf/open_loop.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace portcullis::perf {

ArrivalSchedule::ArrivalSchedule(Arrival arrival, double rate, int index, int count,
                                 std::uint64_t seed, int step)
    : arrival_(arrival), thread_rate_(rate / count), offset_s_(index / rate), random_([&] {
          std::seed_seq seq{seed, static_cast<std::uint64_t>(index),
                            static_cast<std::uint64_t>(step)};
          return std::mt19937_64(seq);
      }()) {}

std::chrono::nanoseconds ArrivalSchedule::next() {
    double at_s = 0;
    if (arrival_ == Arrival::uniform) {
        // From the index, not a running sum, so rounding never accumulates.
        at_s = offset_s_ + static_cast<double>(issued_) / thread_rate_;
    } else {
        at_s_ += std::exponential_distribution<double>(thread_rate_)(random_);
        at_s = at_s_;
    }
    ++issued_;
    return std::chrono::nanoseconds(std::llround(at_s * 1e9));
}

int TlsMix::pick(double u) const {
    double below = 0;
    for (const auto& [version, share] : shares) {
        below += share;
        if (u < below) return version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
    }
    return versions().back();
}

std::vector<int> TlsMix::versions() const {
    std::vector<int> out;
    for (const auto& [version, share] : shares)
        if (share > 0) out.push_back(version == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION);
    return out;
}

TlsMix parse_tls_mix(const std::string& text) {
    TlsMix mix;
    std::istringstream items(text);
    std::string item;
    double sum = 0;
    while (std::getline(items, item, ',')) {
        const auto equals = item.find('=');
        const std::string version = item.substr(0, equals);
        if (version != "1.2" && version != "1.3")
            throw std::invalid_argument("--tls-mix: version must be 1.2 or 1.3, got " + item);
        for (const auto& [seen, share] : mix.shares)
            if (seen == version) throw std::invalid_argument("--tls-mix: " + version + " twice");
        double share = 1;
        if (equals != std::string::npos) {
            std::size_t used = 0;
            try {
                share = std::stod(item.substr(equals + 1), &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used == 0 || used != item.size() - equals - 1 || !(share >= 0))
                throw std::invalid_argument("--tls-mix: not a share >= 0: " + item);
        }
        mix.shares.emplace_back(version, share);
        sum += share;
    }
    if (!(sum > 0)) throw std::invalid_argument("--tls-mix: the shares must add up to more than 0");
    for (auto& [version, share] : mix.shares) share /= sum;
    return mix;
}

std::vector<double> parse_sweep(const std::string& text) {
    double from = 0, to = 0, step = 0;
    char colon1 = 0, colon2 = 0;
    std::istringstream in(text);
    if (!(in >> from >> colon1 >> to >> colon2 >> step) || colon1 != ':' || colon2 != ':' ||
        !in.eof() || !(from > 0) || !(step > 0) || to < from)
        throw std::invalid_argument("--sweep must be FROM:TO:STEP with 0 < FROM <= TO, STEP > 0: " +
                                    text);
    std::vector<double> rates;
    // The tolerance keeps TO itself when STEP does not add up to it exactly in binary.
    for (std::size_t i = 0; from + static_cast<double>(i) * step <= to * (1 + 1e-9); ++i)
        rates.push_back(from + static_cast<double>(i) * step);
    return rates;
}

void StepStats::record_ok(std::chrono::nanoseconds latency, bool was_resumed) {
    const auto micros = static_cast<std::uint64_t>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
    this->latency.record(micros);
    (was_resumed ? resumed_latency : full_latency).record(micros);
    ++(was_resumed ? resumed : full);
    ++completed;
    last_end = std::chrono::steady_clock::now();
}

void StepStats::record_error(const std::string& category, const std::string& reason) {
    ++errors[category];
    ++error_details[reason];
    last_end = std::chrono::steady_clock::now();
}

void StepStats::merge(const StepStats& other) {
    latency.merge(other.latency);
    full_latency.merge(other.full_latency);
    resumed_latency.merge(other.resumed_latency);
    connections += other.connections;
    completed += other.completed;
    full += other.full;
    resumed += other.resumed;
    resume_offered += other.resume_offered;
    for (const auto& [name, count] : other.errors) errors[name] += count;
    for (const auto& [name, count] : other.error_details) error_details[name] += count;
    max_start_lag = std::max(max_start_lag, other.max_start_lag);
    last_end = std::max(last_end, other.last_end);
}

std::uint64_t StepReport::errors() const {
    std::uint64_t total = 0;
    for (const auto& [name, count] : stats.errors) total += count;
    return total;
}

double StepReport::error_ratio() const {
    return stats.connections
               ? static_cast<double>(errors()) / static_cast<double>(stats.connections)
               : 0.0;
}

double StepReport::achieved_rate() const {
    return duration_s > 0 ? static_cast<double>(stats.completed) / duration_s : 0.0;
}

bool StepReport::passed(const Bounds& bounds) const {
    return stats.completed > 0 && p_ms(0.99) <= bounds.p99_max_ms &&
           error_ratio() <= bounds.max_error_ratio;
}

std::optional<std::size_t> knee(const std::vector<StepReport>& steps, const Bounds& bounds) {
    std::vector<std::size_t> order(steps.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return steps[a].offered_rate < steps[b].offered_rate;
    });
    std::optional<std::size_t> found;
    for (const auto i : order) {
        if (!steps[i].passed(bounds)) break;
        found = i;
    }
    return found;
}

namespace {

std::string number(double value) {
    char text[64];
    std::snprintf(text, sizeof text, "%.3f", value);
    return text;
}

const char* arrival_name(Arrival arrival) {
    return arrival == Arrival::poisson ? "poisson" : "uniform";
}

// A latency quantile in ms, or null when no connection of that kind succeeded.
std::string quantile_or_null(const LatencyHistogram& histogram, double q) {
    if (histogram.total() == 0) return "null";
    return number(static_cast<double>(histogram.quantile(q)) / 1000);
}

std::string quote(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

std::string counts_json(const std::map<std::string, std::uint64_t>& counts,
                        const std::vector<std::string>& always) {
    auto all = counts;
    for (const auto& name : always) all.try_emplace(name, 0);
    std::string out = "{";
    for (const auto& [name, count] : all)
        out += (out.size() > 1 ? "," : "") + quote(name) + ":" + std::to_string(count);
    return out + "}";
}

std::string step_json(const StepReport& step, const Bounds& bounds) {
    const auto& s = step.stats;
    std::ostringstream out;
    out << "{\"offered_rate\":" << number(step.offered_rate)
        << ",\"achieved_rate\":" << number(step.achieved_rate())
        << ",\"connections\":" << s.connections << ",\"completed\":" << s.completed
        << ",\"errors\":" << step.errors()
        << ",\"error_ratio\":" << std::to_string(step.error_ratio())
        << ",\"errors_by_reason\":" << counts_json(s.errors, error_categories())
        << ",\"errors_detail\":" << counts_json(s.error_details, {}) << ",\"full\":" << s.full
        << ",\"resumed\":" << s.resumed << ",\"resume_offered\":" << s.resume_offered
        << ",\"p50_ms\":" << number(step.p_ms(0.5)) << ",\"p90_ms\":" << number(step.p_ms(0.9))
        << ",\"p99_ms\":" << number(step.p_ms(0.99)) << ",\"p999_ms\":" << number(step.p_ms(0.999))
        << ",\"max_ms\":" << number(static_cast<double>(s.latency.max()) / 1000)
        << ",\"full_p99_ms\":" << quantile_or_null(s.full_latency, 0.99)
        << ",\"resumed_p99_ms\":" << quantile_or_null(s.resumed_latency, 0.99)
        << ",\"duration_s\":" << number(step.duration_s)
        << ",\"client_cpu_s\":" << number(step.client_cpu_s) << ",\"max_start_lag_ms\":"
        << number(std::chrono::duration<double, std::milli>(s.max_start_lag).count())
        << ",\"passed\":" << (step.passed(bounds) ? "true" : "false") << "}";
    return out.str();
}

}  // namespace

std::string open_loop_json(const RunSettings& settings, const std::vector<StepReport>& steps) {
    std::ostringstream out;
    out << "{\"tool\":\"portcullis-bench\",\"mode\":\"open-loop\",\"target\":"
        << quote(settings.target) << ",\"arrivals\":\"" << arrival_name(settings.arrival)
        << "\",\"resume_fraction\":" << number(settings.resume_fraction) << ",\"tls_mix\":{";
    for (std::size_t i = 0; i < settings.tls_mix.shares.size(); ++i)
        out << (i ? "," : "") << quote(settings.tls_mix.shares[i].first) << ":"
            << number(settings.tls_mix.shares[i].second);
    out << "},\"identities\":" << settings.identities
        << ",\"p99_max_ms\":" << number(settings.bounds.p99_max_ms)
        << ",\"max_error_ratio\":" << number(settings.bounds.max_error_ratio)
        << ",\"step_duration_s\":" << number(settings.step_duration_s)
        << ",\"threads\":" << settings.threads << ",\"max_in_flight\":" << settings.max_in_flight
        << ",\"seed\":" << settings.seed << ",\"timeout_ms\":" << settings.timeout_ms
        << ",\"primed_sessions\":" << settings.primed_sessions
        << ",\"client_cpu_s\":" << number(settings.client_cpu_s) << ",\"steps\":[";
    for (std::size_t i = 0; i < steps.size(); ++i)
        out << (i ? "," : "") << step_json(steps[i], settings.bounds);
    out << "],\"knee\":";
    if (const auto at = knee(steps, settings.bounds)) {
        out << "{\"rate\":" << number(steps[*at].offered_rate)
            << ",\"achieved_rate\":" << number(steps[*at].achieved_rate())
            << ",\"p99_ms\":" << number(steps[*at].p_ms(0.99)) << "}";
    } else {
        out << "null";
    }
    out << "}";
    return out.str();
}

std::string open_loop_csv(const std::vector<StepReport>& steps, const Bounds& bounds) {
    std::ostringstream out;
    out << "offered_rate,achieved_rate,connections,completed,errors,error_ratio,full,resumed,"
           "p50_ms,p90_ms,p99_ms,p999_ms,max_ms,full_p99_ms,resumed_p99_ms,passed";
    for (const auto& name : error_categories()) out << ",errors_" << name;
    out << "\n";
    const auto blank_null = [](std::string text) { return text == "null" ? std::string() : text; };
    for (const auto& step : steps) {
        const auto& s = step.stats;
        out << number(step.offered_rate) << "," << number(step.achieved_rate()) << ","
            << s.connections << "," << s.completed << "," << step.errors() << ","
            << std::to_string(step.error_ratio()) << "," << s.full << "," << s.resumed << ","
            << number(step.p_ms(0.5)) << "," << number(step.p_ms(0.9)) << ","
            << number(step.p_ms(0.99)) << "," << number(step.p_ms(0.999)) << ","
            << number(static_cast<double>(s.latency.max()) / 1000) << ","
            << blank_null(quantile_or_null(s.full_latency, 0.99)) << ","
            << blank_null(quantile_or_null(s.resumed_latency, 0.99)) << ","
            << (step.passed(bounds) ? "true" : "false");
        for (const auto& name : error_categories()) {
            const auto found = s.errors.find(name);
            out << "," << (found == s.errors.end() ? 0 : found->second);
        }
        out << "\n";
    }
    return out.str();
}

std::string progress_line(std::size_t number_, std::size_t count, const StepReport& step,
                          const Bounds& bounds) {
    char text[256];
    std::snprintf(text, sizeof text,
                  "step %zu/%zu  offered %.1f/s  achieved %.1f/s  p50 %.2f ms  p99 %.2f ms  "
                  "errors %llu/%llu (%.2f%%)  %s",
                  number_, count, step.offered_rate, step.achieved_rate(), step.p_ms(0.5),
                  step.p_ms(0.99), static_cast<unsigned long long>(step.errors()),
                  static_cast<unsigned long long>(step.stats.connections), 100 * step.error_ratio(),
                  step.passed(bounds) ? "pass" : "FAIL");
    return text;
}

}  // namespace portcullis::perf
