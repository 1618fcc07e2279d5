// Backends of one listener, as seen by one worker: round robin over the ones
// that are up; a backend is marked down after `fail_threshold` consecutive
// connect failures and offered one trial connection every `retry_after_ms`.
// Owned by one worker (no locks): workers learn a backend's state on their own.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

#include "dataplane/listener_settings.hpp"

namespace portcullis::dataplane {

class BackendPool {
  public:
    using Clock = std::chrono::steady_clock;

    explicit BackendPool(const UpstreamSettings& settings);

    // Index of the backend the next connection should try, skipping `exclude`
    // (backends that connection already failed on); nullopt when none is usable.
    std::optional<std::size_t> pick(Clock::time_point now,
                                    const std::vector<std::size_t>& exclude = {});

    void report_success(std::size_t index);
    void report_failure(std::size_t index, Clock::time_point now);

    const SocketAddress& address(std::size_t index) const { return backends_[index].address; }
    std::size_t size() const { return backends_.size(); }
    bool is_up(std::size_t index) const { return backends_[index].up; }
    std::size_t up_count() const;
    const UpstreamSettings& settings() const { return settings_; }

  private:
    struct Backend {
        SocketAddress address;
        bool up = true;
        int consecutive_failures = 0;
        Clock::time_point retry_at{};
    };

    UpstreamSettings settings_;
    std::vector<Backend> backends_;
    std::size_t next_ = 0;
};

}  // namespace portcullis::dataplane
