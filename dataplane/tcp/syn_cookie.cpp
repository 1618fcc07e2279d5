#include "dataplane/tcp/syn_cookie.hpp"

#include <cstring>

namespace portcullis::dataplane::tcp {
namespace {

// The MSS values a cookie can carry (3 bits), the common ones on Ethernet.
constexpr std::array<std::uint16_t, 8> mss_table = {536, 1200, 1300, 1360, 1400, 1440, 1448, 1460};
constexpr std::uint64_t slot_ms = 64'000;  // the time counter advances every 64 s
constexpr std::uint32_t max_age_slots = 2;

std::uint64_t rotl(std::uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

// SipHash-2-4 (Aumasson and Bernstein), written from the paper for the two
// 8-byte message words we hash.
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

}  // namespace

std::uint32_t SynCookies::hash(const FourTuple& t, std::uint32_t peer_seq,
                               std::uint32_t slot) const {
    const std::uint64_t m0 = (std::uint64_t{t.peer_address} << 32) | t.local_address;
    const std::uint64_t m1 = (std::uint64_t{t.peer_port} << 48) |
                             (std::uint64_t{t.local_port} << 32) |
                             (peer_seq ^ (slot * 0x9e3779b9u));
    return static_cast<std::uint32_t>(siphash(secret_, m0, m1));
}

// Layout: 5 bits of time slot | 3 bits of MSS index | 24 bits of hash.
std::uint32_t SynCookies::make(const FourTuple& tuple, std::uint32_t peer_seq,
                               std::uint16_t peer_mss, std::uint64_t now_ms) const {
    std::uint32_t index = 0;
    for (std::uint32_t i = 0; i < mss_table.size(); ++i)
        if (mss_table[i] <= peer_mss) index = i;
    const auto slot = static_cast<std::uint32_t>(now_ms / slot_ms);
    return ((slot & 0x1f) << 27) | (index << 24) | (hash(tuple, peer_seq, slot) & 0xffffff);
}

std::optional<std::uint16_t> SynCookies::check(const FourTuple& tuple, std::uint32_t seq,
                                               std::uint32_t ack, std::uint64_t now_ms) const {
    const std::uint32_t cookie = ack - 1;
    const std::uint32_t peer_seq = seq - 1;
    const auto now_slot = static_cast<std::uint32_t>(now_ms / slot_ms);
    for (std::uint32_t age = 0; age <= max_age_slots && age <= now_slot; ++age) {
        const std::uint32_t slot = now_slot - age;
        if ((cookie >> 27) != (slot & 0x1f)) continue;
        if ((cookie & 0xffffff) == (hash(tuple, peer_seq, slot) & 0xffffff))
            return mss_table[(cookie >> 24) & 0x7];
    }
    return std::nullopt;
}

}  // namespace portcullis::dataplane::tcp
