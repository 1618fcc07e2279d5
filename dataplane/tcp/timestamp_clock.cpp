#include "dataplane/tcp/timestamp_clock.hpp"

#include <sys/random.h>

#include <fstream>
#include <string>

#include "dataplane/tcp/siphash.hpp"

namespace portcullis::dataplane::tcp {

TimestampClock::Key TimestampClock::boot_key() {
    Key key{};
    std::ifstream file("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(file, id);
    std::size_t filled = 0;
    for (std::size_t i = 0; i + 1 < id.size() && filled < key.size();) {
        if (id[i] == '-') {
            ++i;
            continue;
        }
        try {
            key[filled++] = static_cast<std::uint8_t>(std::stoul(id.substr(i, 2), nullptr, 16));
        } catch (const std::exception&) {
            filled = 0;
            break;
        }
        i += 2;
    }
    if (filled == key.size()) return key;
    if (getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size())) key.fill(0);
    return key;
}

std::uint32_t TimestampClock::offset(std::uint32_t local_address,
                                     std::uint32_t peer_address) const {
    // A constant second word separates this use of the key from others.
    return static_cast<std::uint32_t>(
        siphash(key_, (std::uint64_t{local_address} << 32) | peer_address, 0x7473u));
}

}  // namespace portcullis::dataplane::tcp
