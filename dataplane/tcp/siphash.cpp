#include "dataplane/tcp/siphash.hpp"

#include <cstring>

namespace portcullis::dataplane::tcp {
namespace {

std::uint64_t rotl(std::uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

}  // namespace

// Written from the paper for a message of exactly two words.
std::uint64_t siphash(const std::array<std::uint8_t, 16>& key, std::uint64_t m0, std::uint64_t m1) {
    std::uint64_t k0, k1;
    std::memcpy(&k0, key.data(), 8);
    std::memcpy(&k1, key.data() + 8, 8);
    std::uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    std::uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    auto round = [&] {
        v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
        v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
        v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
        v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
    };
    for (const std::uint64_t m : {m0, m1, std::uint64_t{16} << 56}) {
        v3 ^= m;
        round();
        round();
        v0 ^= m;
    }
    v2 ^= 0xff;
    for (int i = 0; i < 4; ++i) round();
    return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace portcullis::dataplane::tcp
