// TCP timestamp values (RFC 7323) that keep rising across connections and
// across restarts of the process: the millisecond clock (CLOCK_MONOTONIC,
// one for every process of a boot) plus an offset per pair of addresses
// under a per-boot key.
//
// Why: a peer that holds an old connection's 4-tuple in TIME_WAIT takes a
// new SYN on it only if its timestamp is newer (RFC 6191, Linux's
// tcp_timewait_state_process). Backends close first, so they hold those
// tuples, and our active opens reuse local ports. With timestamps that start
// again from 1 per connection, each such SYN was refused and waited out a
// full SYN timeout. The keyed offset keeps our uptime from peers, as
// Linux's does.
#pragma once

#include <array>
#include <cstdint>

namespace portcullis::dataplane::tcp {

class TimestampClock {
  public:
    using Key = std::array<std::uint8_t, 16>;
    // The boot's id (/proc/sys/kernel/random/boot_id), so that every process
    // of this boot agrees; random when it cannot be read (then timestamps
    // rise only within one process).
    static Key boot_key();

    explicit TimestampClock(const Key& key) : key_(key) {}
    std::uint32_t offset(std::uint32_t local_address, std::uint32_t peer_address) const;

  private:
    Key key_;
};

}  // namespace portcullis::dataplane::tcp
