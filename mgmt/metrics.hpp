// /metrics: every family is computed at scrape time by summing the workers'
// shared-memory slots, so the hot path never touches a shared atomic or a
// registry. docs/metrics.md lists the families and how to read them.
#pragma once

#include <string>
#include <vector>

#include "mgmt/config.hpp"
#include "mgmt/control_block.hpp"
#include "mgmt/shared_stats.hpp"
#include "mgmt/tls_inventory.hpp"

namespace portcullis::crypto {
class SharedSessionCache;
}

namespace portcullis::mgmt {

struct MetricsInput {
    const Config& config;
    const std::vector<ListenerInventory>& inventory;
    const SharedStats& stats;
    const ControlBlock& control;
    const crypto::SharedSessionCache* session_cache;  // null when off
};

// Prometheus text exposition format (version 0.0.4).
std::string render_metrics(const MetricsInput& input);

}  // namespace portcullis::mgmt
