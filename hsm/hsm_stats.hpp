// Counters of one worker process's HSM signing service, in the worker's
// shared-memory stats slot. Several session threads update them, so these are
// real atomic adds (one per signature, never per packet).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/counter.hpp"

namespace portcullis::hsm {

using base::SharedCounter;

inline constexpr std::size_t max_hsm_keys = 16;
// Sign latency buckets, seconds (a network HSM answers in 1-5 ms).
inline constexpr std::array<double, 12> sign_duration_buckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0};

// The return values an operator acts on get their own slot; the rest are "other".
inline constexpr std::array<unsigned long, 10> tracked_ckr_codes = {
    0x00000003UL /*CKR_SLOT_ID_INVALID*/,        0x00000005UL /*CKR_GENERAL_ERROR*/,
    0x00000030UL /*CKR_DEVICE_ERROR*/,           0x00000031UL /*CKR_DEVICE_MEMORY*/,
    0x00000032UL /*CKR_DEVICE_REMOVED*/,         0x000000B0UL /*CKR_SESSION_CLOSED*/,
    0x000000B3UL /*CKR_SESSION_HANDLE_INVALID*/, 0x000000E0UL /*CKR_TOKEN_NOT_PRESENT*/,
    0x00000101UL /*CKR_USER_NOT_LOGGED_IN*/,     0x00000082UL /*CKR_OBJECT_HANDLE_INVALID*/};

enum class SignResult : std::size_t {
    ok = 0,
    error = 1,
    timeout = 2,
    queue_full = 3,
    cancelled = 4
};
inline constexpr std::size_t sign_result_count = 5;
inline constexpr std::array<const char*, sign_result_count> sign_result_names = {
    "ok", "error", "timeout", "queue_full", "cancelled"};

struct HsmKeyStats {
    std::array<SharedCounter, sign_result_count> signs;  // by SignResult
    std::array<SharedCounter, sign_duration_buckets.size() + 1> duration_counts;
    SharedCounter duration_sum_ns;
    SharedCounter in_flight;  // queued + running, gauge
};

inline constexpr std::size_t max_key_name = 240;

// How many key names are complete: the writer stores it (release) after the
// name, a reader loads it (acquire) before reading names.
class PublishedCount {
  public:
    void publish(std::uint64_t n) { value_.store(n, std::memory_order_release); }
    std::uint64_t get() const { return value_.load(std::memory_order_acquire); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

struct HsmStats {
    std::array<HsmKeyStats, max_hsm_keys> keys;  // by key index (order of first use in config)
    // The key's canonical URI, written before key_count grows past its index,
    // so a reader that loads key_count first sees whole names.
    std::array<std::array<char, max_key_name>, max_hsm_keys> key_names{};
    PublishedCount key_count;
    std::array<SharedCounter, tracked_ckr_codes.size() + 1>
        errors;                     // by tracked code, last = other
    SharedCounter queued;           // waiting for a session thread, gauge
    SharedCounter sessions_open;    // gauge
    SharedCounter failovers;        // switches to the standby token
    SharedCounter failbacks;        // returns to the primary token
    SharedCounter relogins;         // sessions reopened / logged in again after an error
    SharedCounter primary_healthy;  // gauge 0/1 (1 with no HSM configured)
};

}  // namespace portcullis::hsm
