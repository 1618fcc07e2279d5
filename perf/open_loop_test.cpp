// perf/open_loop.hpp without sockets: the arrival schedules' spacing and
// shares, the --sweep and --tls-mix parsers and what they refuse, which
// steps pass and where the knee is, and the JSON and CSV of a run.
#include "perf/open_loop.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

namespace portcullis::perf {
namespace {

using std::chrono::nanoseconds;

double seconds(nanoseconds at) {
    return std::chrono::duration<double>(at).count();
}

TEST(ArrivalSchedule, UniformThreadsInterleaveIntoOneEvenStream) {
    // Two threads at 10/s together: one arrival every 0.1 s, alternating.
    ArrivalSchedule first(Arrival::uniform, 10, 0, 2, 1, 0);
    ArrivalSchedule second(Arrival::uniform, 10, 1, 2, 1, 0);
    std::vector<double> all;
    for (int i = 0; i < 50; ++i) {
        all.push_back(seconds(first.next()));
        all.push_back(seconds(second.next()));
    }
    std::sort(all.begin(), all.end());
    for (std::size_t i = 0; i < all.size(); ++i)
        EXPECT_NEAR(all[i], 0.1 * static_cast<double>(i), 1e-9) << i;
}

TEST(ArrivalSchedule, PoissonGapsAverageTheRateAndRepeatForASeed) {
    ArrivalSchedule schedule(Arrival::poisson, 200, 0, 1, 7, 3);
    ArrivalSchedule again(Arrival::poisson, 200, 0, 1, 7, 3);
    ArrivalSchedule other_step(Arrival::poisson, 200, 0, 1, 7, 4);
    nanoseconds last{0};
    int differs = 0;
    const int count = 20000;
    for (int i = 0; i < count; ++i) {
        const auto at = schedule.next();
        EXPECT_GE(at, last);
        last = at;
        EXPECT_EQ(at, again.next());
        differs += at != other_step.next();
    }
    // The mean of 20000 exponential gaps is within 3% of 1/rate far beyond
    // three standard deviations (0.7% each); the seed makes it one draw.
    EXPECT_NEAR(seconds(last) / count, 1.0 / 200, 0.03 / 200);
    EXPECT_GT(differs, count / 2);
}

TEST(ParseSweep, GivesEveryRateFromToInclusive) {
    EXPECT_EQ(parse_sweep("10:30:10"), (std::vector<double>{10, 20, 30}));
    EXPECT_EQ(parse_sweep("100:350:100"), (std::vector<double>{100, 200, 300}));
    EXPECT_EQ(parse_sweep("5:5:1"), (std::vector<double>{5}));
    // 0.1 * 3 is 0.30000000000000004: the last step is kept.
    EXPECT_EQ(parse_sweep("0.1:0.3:0.1").size(), 3U);
    for (const char* bad : {"", "10", "10:20", "10:20:0", "0:20:5", "30:10:5", "10:20:5:", "a:b:c",
                            "10;20;5", "-5:10:5"})
        EXPECT_THROW(parse_sweep(bad), std::invalid_argument) << bad;
}

TEST(ParseTlsMix, NormalisesTheSharesAndPicksByThem) {
    const auto mix = parse_tls_mix("1.3=0.7,1.2=0.3");
    ASSERT_EQ(mix.shares.size(), 2U);
    EXPECT_EQ(mix.shares[0].first, "1.3");
    EXPECT_DOUBLE_EQ(mix.shares[0].second, 0.7);
    EXPECT_EQ(mix.pick(0.0), TLS1_3_VERSION);
    EXPECT_EQ(mix.pick(0.69), TLS1_3_VERSION);
    EXPECT_EQ(mix.pick(0.71), TLS1_2_VERSION);
    EXPECT_EQ(mix.pick(0.999999), TLS1_2_VERSION);
    EXPECT_EQ(mix.versions(), (std::vector<int>{TLS1_3_VERSION, TLS1_2_VERSION}));

    const auto weights = parse_tls_mix("1.2=3,1.3=1");
    EXPECT_DOUBLE_EQ(weights.shares[0].second, 0.75);
    const auto single = parse_tls_mix("1.2");  // --tls's value, share 1
    EXPECT_EQ(single.versions(), (std::vector<int>{TLS1_2_VERSION}));
    EXPECT_EQ(single.pick(0.5), TLS1_2_VERSION);
    EXPECT_EQ(parse_tls_mix("1.3=1,1.2=0").versions(), (std::vector<int>{TLS1_3_VERSION}));

    for (const char* bad :
         {"", "1.1=1", "1.3=1,1.3=1", "1.3=-1", "1.3=x", "1.3=0.5x", "1.3=0", "1.3=", "1.3=nan"})
        EXPECT_THROW(parse_tls_mix(bad), std::invalid_argument) << bad;
}

// A step at `rate` whose `ok` connections took `ms` each and `errors` failed.
StepReport step_at(double rate, int ok, double ms, int errors = 0) {
    StepReport step;
    step.offered_rate = rate;
    step.duration_s = 1;
    for (int i = 0; i < ok; ++i)
        step.stats.record_ok(std::chrono::microseconds(static_cast<long>(ms * 1000)), i % 2 == 1);
    for (int i = 0; i < errors; ++i) step.stats.record_error("overload", "overload");
    step.stats.connections = static_cast<std::uint64_t>(ok + errors);
    return step;
}

TEST(Knee, IsTheHighestRateUpToWhichEveryStepPassed) {
    const Bounds bounds{50, 0.01};
    // 40/s passes again, but 30/s failed first: the knee stays at 20/s.
    const std::vector<StepReport> steps = {step_at(30, 100, 80), step_at(10, 100, 5),
                                           step_at(40, 100, 5), step_at(20, 100, 40)};
    const auto at = knee(steps, bounds);
    ASSERT_TRUE(at);
    EXPECT_EQ(steps[*at].offered_rate, 20);

    EXPECT_FALSE(knee({step_at(10, 100, 60), step_at(20, 100, 5)}, bounds));
    EXPECT_FALSE(knee({}, bounds));
    // Errors: 1 in 100 is within 0.01, 2 in 100 is not; nothing completed never passes.
    EXPECT_TRUE(step_at(10, 99, 5, 1).passed(bounds));
    EXPECT_FALSE(step_at(10, 98, 5, 2).passed(bounds));
    EXPECT_FALSE(step_at(10, 0, 0, 0).passed(bounds));
    EXPECT_EQ(*knee({step_at(10, 99, 5, 1), step_at(20, 98, 5, 2)}, bounds), 0U);
}

TEST(StepStats, MergeSumsCountsAndKeepsTheLatest) {
    StepStats a, b;
    a.connections = 3;
    a.record_ok(std::chrono::milliseconds(2), false);
    a.record_error("timeout", "connect_timeout");
    b.connections = 2;
    b.record_ok(std::chrono::milliseconds(9), true);
    b.record_error("timeout", "timeout");
    b.max_start_lag = std::chrono::milliseconds(4);
    a.merge(b);
    EXPECT_EQ(a.connections, 5U);
    EXPECT_EQ(a.completed, 2U);
    EXPECT_EQ(a.full, 1U);
    EXPECT_EQ(a.resumed, 1U);
    EXPECT_EQ(a.errors["timeout"], 2U);
    EXPECT_EQ(a.error_details["connect_timeout"], 1U);
    EXPECT_EQ(a.latency.total(), 2U);
    EXPECT_EQ(a.resumed_latency.total(), 1U);
    EXPECT_EQ(a.max_start_lag, std::chrono::milliseconds(4));
    EXPECT_EQ(a.last_end, std::max(a.last_end, b.last_end));
}

TEST(Reports, JsonAndCsvHaveEveryStepAndTheKnee) {
    RunSettings settings;
    settings.target = "127.0.0.1:8443";
    settings.arrival = Arrival::uniform;
    settings.tls_mix = parse_tls_mix("1.3=0.7,1.2=0.3");
    settings.bounds = Bounds{50, 0.01};
    const std::vector<StepReport> steps = {step_at(10, 100, 5), step_at(20, 100, 80, 3)};
    const auto json = nlohmann::json::parse(open_loop_json(settings, steps));
    EXPECT_EQ(json["arrivals"], "uniform");
    EXPECT_EQ(json["tls_mix"]["1.2"], 0.3);
    ASSERT_EQ(json["steps"].size(), 2U);
    for (const char* field : {"offered_rate", "achieved_rate", "p50_ms", "p90_ms", "p99_ms",
                              "max_ms", "errors", "full", "resumed"})
        EXPECT_TRUE(json["steps"][1].contains(field)) << field;
    EXPECT_EQ(json["steps"][1]["errors"], 3);
    EXPECT_EQ(json["steps"][1]["errors_by_reason"]["overload"], 3);
    EXPECT_EQ(json["steps"][1]["errors_by_reason"]["connect"], 0);
    EXPECT_EQ(json["steps"][0]["achieved_rate"], 100.0);
    EXPECT_EQ(json["steps"][0]["full"], 50);
    EXPECT_EQ(json["steps"][0]["resumed"], 50);
    EXPECT_EQ(json["knee"]["rate"], 10.0);
    EXPECT_EQ(json["knee"]["p99_ms"], json["steps"][0]["p99_ms"]);

    const auto failed = nlohmann::json::parse(open_loop_json(settings, {step_at(10, 100, 80)}));
    EXPECT_TRUE(failed["knee"].is_null());
    EXPECT_TRUE(failed["steps"][0]["passed"] == false);

    std::istringstream csv(open_loop_csv(steps, settings.bounds));
    std::string header, row;
    ASSERT_TRUE(std::getline(csv, header));
    EXPECT_EQ(header.rfind("offered_rate,achieved_rate,", 0), 0U);
    std::vector<std::string> rows;
    while (std::getline(csv, row)) rows.push_back(row);
    ASSERT_EQ(rows.size(), 2U);
    for (const auto& r : rows)
        EXPECT_EQ(std::count(r.begin(), r.end(), ','),
                  std::count(header.begin(), header.end(), ','));
    EXPECT_EQ(rows[0].rfind("10.000,100.000,100,100,0,", 0), 0U) << rows[0];
    EXPECT_NE(rows[1].find(",false,"), std::string::npos) << rows[1];
}

}  // namespace
}  // namespace portcullis::perf
