#include "dataplane/upstream/backend_pool.hpp"

#include <algorithm>

namespace portcullis::dataplane {

BackendPool::BackendPool(const UpstreamSettings& settings) : settings_(settings) {
    for (const auto& address : settings.backends) backends_.push_back(Backend{address});
}

std::optional<std::size_t> BackendPool::pick(Clock::time_point now,
                                             const std::vector<std::size_t>& exclude) {
    const std::size_t n = backends_.size();
    std::optional<std::size_t> trial;
    for (std::size_t step = 0; step < n; ++step) {
        const std::size_t i = (next_ + step) % n;
        if (std::find(exclude.begin(), exclude.end(), i) != exclude.end()) continue;
        auto& backend = backends_[i];
        if (backend.up) {
            next_ = (i + 1) % n;
            return i;
        }
        if (!trial && now >= backend.retry_at) trial = i;
    }
    if (trial) {
        // One trial per retry period: later connections skip it until then.
        backends_[*trial].retry_at = now + std::chrono::milliseconds(settings_.retry_after_ms);
    }
    return trial;
}

void BackendPool::report_success(std::size_t index) {
    auto& backend = backends_[index];
    backend.up = true;
    backend.consecutive_failures = 0;
}

void BackendPool::report_failure(std::size_t index, Clock::time_point now) {
    auto& backend = backends_[index];
    ++backend.consecutive_failures;
    if (backend.consecutive_failures >= settings_.fail_threshold) {
        backend.up = false;
        backend.retry_at = now + std::chrono::milliseconds(settings_.retry_after_ms);
    }
}

std::size_t BackendPool::up_count() const {
    return static_cast<std::size_t>(
        std::count_if(backends_.begin(), backends_.end(), [](const Backend& b) { return b.up; }));
}

}  // namespace portcullis::dataplane
