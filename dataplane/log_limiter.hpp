// Token bucket for per-connection log lines: a flood of bad clients costs a
// bounded number of lines per second, and the lines dropped are counted so the
// next line that gets through can say how many were suppressed.
#pragma once

#include <chrono>
#include <cstdint>

namespace portcullis::dataplane {

class LogLimiter {
  public:
    using Clock = std::chrono::steady_clock;

    LogLimiter(double lines_per_second, double burst)
        : rate_(lines_per_second), burst_(burst), tokens_(burst) {}

    // True when a line may be written now.
    bool allow(Clock::time_point now) {
        const double elapsed = std::chrono::duration<double>(now - last_).count();
        last_ = now;
        tokens_ = tokens_ + elapsed * rate_ > burst_ ? burst_ : tokens_ + elapsed * rate_;
        if (tokens_ >= 1.0) {
            tokens_ -= 1.0;
            return true;
        }
        ++suppressed_;
        return false;
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
