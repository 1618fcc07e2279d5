// A TCP segment as the state machine sees it: header fields and options
// already parsed (or still to be encoded), payload as a view. The wire format
// lives in the transport; the state machine only ever deals in these values,
// which is what lets the unit tests feed segments and read back the ones it
// emits.
#pragma once

#include <cstdint>
#include <span>

namespace portcullis::dataplane::tcp {

namespace flag {
inline constexpr std::uint8_t fin = 0x01;
inline constexpr std::uint8_t syn = 0x02;
inline constexpr std::uint8_t rst = 0x04;
inline constexpr std::uint8_t psh = 0x08;
inline constexpr std::uint8_t ack = 0x10;
}  // namespace flag

struct TcpOptions {
    std::uint16_t mss = 0;          // 0 = absent
    std::int8_t window_scale = -1;  // -1 = absent
    bool sack_permitted = false;
    bool timestamps = false;
    std::uint32_t ts_value = 0;
    std::uint32_t ts_echo = 0;
};

struct TcpSegment {
    std::uint32_t seq = 0;
    std::uint32_t ack = 0;
    std::uint8_t flags = 0;
    std::uint16_t window = 0;  // as on the wire (scaled except in SYNs)
    TcpOptions options;
    std::span<const std::uint8_t> payload;

    bool has(std::uint8_t f) const { return (flags & f) != 0; }
    // Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    std::uint32_t length() const {
        return static_cast<std::uint32_t>(payload.size()) + (has(flag::syn) ? 1 : 0) +
               (has(flag::fin) ? 1 : 0);
    }
};

// Modular sequence-number comparisons (RFC 793 section 3.3).
constexpr bool seq_lt(std::uint32_t a, std::uint32_t b) {
    return static_cast<std::int32_t>(a - b) < 0;
}
constexpr bool seq_le(std::uint32_t a, std::uint32_t b) {
    return static_cast<std::int32_t>(a - b) <= 0;
}
constexpr bool seq_gt(std::uint32_t a, std::uint32_t b) {
    return seq_lt(b, a);
}
constexpr bool seq_ge(std::uint32_t a, std::uint32_t b) {
    return seq_le(b, a);
}

}  // namespace portcullis::dataplane::tcp
