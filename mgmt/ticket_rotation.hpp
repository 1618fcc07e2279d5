// The supervisor's session-ticket keys: generated from the kernel (never
// OpenSSL: the supervisor holds no OpenSSL state across fork) or read from
// resumption.ticket_key_file, published to the workers through the
// ControlBlock, and rotated every ticket_rotation_s. Generated keys: a new
// current key, the previous one still decrypts for one more period. A key
// file: re-read, so appliances sharing it stay in step.
//
// It only decides and publishes; the supervisor's loop calls rotate() once
// next_rotation() has passed. Supervisor thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "crypto/ticket_keys.hpp"
#include "mgmt/config.hpp"
#include "mgmt/control_block.hpp"

namespace portcullis::mgmt {

class TicketKeyRotation {
  public:
    using Clock = std::chrono::steady_clock;

    // Publishes the first keys; throws when the key file cannot be read.
    TicketKeyRotation(ControlBlock& control, const ResumptionSettings& settings);

    Clock::time_point next_rotation() const { return next_rotation_; }
    void rotate();

    // An accepted reload's settings. `file_keys` are the keys the reload
    // already read from the new settings' file (empty when there is none).
    void reload(const ResumptionSettings& fresh, std::vector<crypto::TicketKey> file_keys);

  private:
    void schedule();
    void install_file_keys(std::vector<crypto::TicketKey> keys);
    void publish_generated(bool new_current);

    ControlBlock& control_;
    ResumptionSettings settings_;
    std::vector<crypto::TicketKey> keys_;  // current first
    std::int64_t created_ = 0;             // of the current key, Unix seconds
    Clock::time_point next_rotation_;
};

}  // namespace portcullis::mgmt
