// SipHash-2-4 (Aumasson and Bernstein) of two 8-byte words under a 16-byte
// key: the keyed hash behind SYN cookies and timestamp offsets, which must
// not be predictable from outside.
#pragma once

#include <array>
#include <cstdint>

namespace portcullis::dataplane::tcp {

std::uint64_t siphash(const std::array<std::uint8_t, 16>& key, std::uint64_t m0, std::uint64_t m1);

}  // namespace portcullis::dataplane::tcp
