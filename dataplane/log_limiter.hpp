// Token bucket for per-connection log lines: a flood of bad clients costs a
// bounded number of lines per second, and the lines dropped are counted so the
// next line that gets through can say how many were suppressed.
#pragma once

#include <chrono>
#include <cstdint>

namespace portcullis::dataplane {

// The bucket's size when the configuration says nothing (log.connection_lines_*).
inline constexpr int kDefaultLogLinesPerSecond = 20;
inline constexpr int kDefaultLogLinesBurst = 50;

class LogLimiter {
  public:
    using Clock = std::chrono::steady_clock;

    LogLimiter(double lines_per_second = kDefaultLogLinesPerSecond,
               double burst = kDefaultLogLinesBurst)
        : rate_(lines_per_second), burst_(burst), tokens_(burst) {}

    // True when a line may be written now.
    bool allow(Clock::time_point now) {
        // A loop's batch time can be older than the last call's.
        const double elapsed =
            now > last_ ? std::chrono::duration<double>(now - last_).count() : 0.0;
        if (now > last_) last_ = now;
        tokens_ = tokens_ + elapsed * rate_ > burst_ ? burst_ : tokens_ + elapsed * rate_;
        if (tokens_ >= 1.0) {
            tokens_ -= 1.0;
            return true;
        }
        ++suppressed_;
        return false;
    }

    // A reload's new size. A bucket of another size starts full; the same
    // size keeps its tokens; the lines already refused are still reported by
    // the next line written.
    void resize(double lines_per_second, double burst) {
        if (lines_per_second == rate_ && burst == burst_) return;
        rate_ = lines_per_second;
        burst_ = burst;
        tokens_ = burst;
    }

    // Lines refused since the last call.
    std::uint64_t take_suppressed() {
        const std::uint64_t n = suppressed_;
        suppressed_ = 0;
        return n;
    }

  private:
    double rate_;
    double burst_;
    double tokens_;
    Clock::time_point last_ = Clock::now();
    std::uint64_t suppressed_ = 0;
};

}  // namespace portcullis::dataplane
