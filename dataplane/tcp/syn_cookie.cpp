#include "dataplane/tcp/syn_cookie.hpp"

#include "dataplane/tcp/siphash.hpp"

namespace portcullis::dataplane::tcp {
namespace {

// The MSS values a cookie can carry (3 bits), the common ones on Ethernet.
constexpr std::array<std::uint16_t, 8> mss_table = {536, 1200, 1300, 1360, 1400, 1440, 1448, 1460};
constexpr std::uint64_t slot_ms = 64'000;  // the time counter advances every 64 s
constexpr std::uint32_t max_age_slots = 2;

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
