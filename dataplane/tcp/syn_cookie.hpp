// SYN cookies (RFC 4987 section 3.6): when a core's SYN backlog is full, the
// SYN-ACK's initial sequence number encodes what the connection needs (the
// peer's MSS, a coarse time) under a keyed hash of the 4-tuple, so no state is
// kept until the ACK proves the peer received it. Window scaling and
// timestamps are not encoded: a cookie connection runs without them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

namespace portcullis::dataplane::tcp {

struct FourTuple {
    std::uint32_t peer_address = 0;
    std::uint16_t peer_port = 0;
    std::uint32_t local_address = 0;
    std::uint16_t local_port = 0;
};

class SynCookies {
  public:
    // `secret`: 16 random bytes per core (rte_rand, getrandom), never sent.
    explicit SynCookies(const std::array<std::uint8_t, 16>& secret) : secret_(secret) {}

    // The ISS for a SYN-ACK answering `peer_seq` from `tuple` at `now_ms`.
    std::uint32_t make(const FourTuple& tuple, std::uint32_t peer_seq, std::uint16_t peer_mss,
                       std::uint64_t now_ms) const;
    // For the ACK that completes the handshake (`ack` = our ISS + 1, `seq` =
    // the peer's ISS + 1): the MSS to use, or nullopt if it is no cookie of
    // ours or older than two minutes.
    std::optional<std::uint16_t> check(const FourTuple& tuple, std::uint32_t seq, std::uint32_t ack,
                                       std::uint64_t now_ms) const;

  private:
    std::uint32_t hash(const FourTuple& tuple, std::uint32_t peer_seq, std::uint32_t slot) const;
    std::array<std::uint8_t, 16> secret_;
};

}  // namespace portcullis::dataplane::tcp
