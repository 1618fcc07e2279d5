// portcullis-timer-wheel-cost: what the DPDK stack's timer wheel costs per
// millisecond of poll loop while many idle connections wait on it.
//
// N timers, each embedded in an object the size of a flow (so walking them
// misses the cache as the stack's flows do), are armed like keepalive
// timers: at a random point of the next `--period-ms`, and again one period
// later each time they fire. The wheel is then advanced a millisecond at a
// time for `--seconds`, as a poll loop does, and the time per advance is
// printed (and written as JSON with --json). Building it against another
// revision's dataplane/timer_wheel.hpp compares the two. It exits 1 if a
// timer fired at any other millisecond than its deadline, or not once per
// period.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <vector>

#include "dataplane/timer_wheel.hpp"

namespace {

using portcullis::dataplane::TimerWheel;

// About the size of the stack's flow with its TcpConnection.
struct Flow : TimerWheel::Timer {
    std::uint64_t first_due = 0, due = 0;
    std::array<unsigned char, 984> state{};
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Time per millisecond advance of the DPDK stack's timer wheel"};
    std::size_t timers = 200000;
    std::uint64_t period_ms = 60000;
    double seconds = 20;
    std::string json;
    app.add_option("--timers", timers, "timers waiting (idle flows)");
    app.add_option("--period-ms", period_ms, "each timer fires once per period (keepalive)");
    app.add_option("--seconds", seconds, "wheel time to advance, in seconds");
    app.add_option("--json", json, "also write the result here");
    CLI11_PARSE(app, argc, argv);

    // Armed in random order, so a slot's list jumps across all of them.
    std::vector<Flow> flows(timers);
    std::mt19937_64 random(1);
    std::vector<std::size_t> order(timers);
    for (std::size_t i = 0; i < timers; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), random);

    TimerWheel wheel;
    std::uint64_t now = 1;
    wheel.advance(now, [](TimerWheel::Timer&) {});
    for (std::size_t i : order) {
        flows[i].first_due = flows[i].due = now + 1 + random() % period_ms;
        wheel.schedule(flows[i], flows[i].due);
    }

    std::uint64_t fired = 0, late = 0;
    const auto steps = static_cast<std::uint64_t>(seconds * 1000);
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t step = 0; step < steps; ++step) {
        ++now;
        wheel.advance(now, [&](TimerWheel::Timer& timer) {
            auto& flow = static_cast<Flow&>(timer);
            ++fired;
            if (flow.due != now) ++late;  // advanced a millisecond at a time: exact
            flow.due = now + period_ms;
            wheel.schedule(flow, flow.due);
        });
    }
    const double elapsed_ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();

    // Every timer due within the run fired, each once per period.
    std::uint64_t expected = 0;
    for (const Flow& flow : flows)
        if (flow.first_due <= now) expected += (now - flow.first_due) / period_ms + 1;
    const double ns_per_ms = elapsed_ns / static_cast<double>(steps);
    std::printf(
        "timers %zu, %zu bytes each, period %llu ms: %.0f ns per 1 ms advance "
        "(%.2f%% of a core), %llu fired in %.0f s of wheel time\n",
        timers, sizeof(Flow), static_cast<unsigned long long>(period_ms), ns_per_ms,
        ns_per_ms / 1e4, static_cast<unsigned long long>(fired), seconds);
    if (!json.empty()) {
        std::ofstream out(json);
        out << "{\"timers\": " << timers << ", \"object_bytes\": " << sizeof(Flow)
            << ", \"period_ms\": " << period_ms << ", \"seconds\": " << seconds
            << ", \"fired\": " << fired << ", \"ns_per_ms_advance\": " << ns_per_ms << "}\n";
    }
    if (late != 0 || fired != expected) {
        std::fprintf(stderr, "wrong: %llu fired (%llu due), %llu not at their deadline\n",
                     static_cast<unsigned long long>(fired),
                     static_cast<unsigned long long>(expected),
                     static_cast<unsigned long long>(late));
        return 1;
    }
    return 0;
}
