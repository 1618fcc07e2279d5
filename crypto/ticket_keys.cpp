#include "crypto/ticket_keys.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

namespace portcullis::crypto {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string trim(const std::string& text) {
    const auto first = text.find_first_not_of(" \t\r");
    if (first == std::string::npos) return {};
    const auto last = text.find_last_not_of(" \t\r");
    return text.substr(first, last - first + 1);
}

}  // namespace

TicketKey TicketKey::from_bytes(std::span<const std::uint8_t, ticket_key_bytes> bytes) {
    TicketKey key;
    std::copy_n(bytes.begin(), 16, key.name.begin());
    std::copy_n(bytes.begin() + 16, 32, key.hmac_key.begin());
    std::copy_n(bytes.begin() + 48, 32, key.aes_key.begin());
    return key;
}

TicketKey TicketKey::random() {
    std::array<std::uint8_t, ticket_key_bytes> bytes{};
    if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
        throw std::system_error(errno, std::generic_category(), "getrandom ticket key");
    return from_bytes(bytes);
}

std::array<std::uint8_t, ticket_key_bytes> TicketKey::bytes() const {
    std::array<std::uint8_t, ticket_key_bytes> out{};
    std::copy(name.begin(), name.end(), out.begin());
    std::copy(hmac_key.begin(), hmac_key.end(), out.begin() + 16);
    std::copy(aes_key.begin(), aes_key.end(), out.begin() + 48);
    return out;
}

std::vector<TicketKey> read_ticket_key_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw TicketKeyError("ticket key file " + path + ": cannot open");
    std::vector<TicketKey> keys;
    std::string line;
    int line_number = 0;
    while (std::getline(in, line)) {
        ++line_number;
        line = trim(line);
        if (line.empty() || line.front() == '#') continue;
        const auto where = "ticket key file " + path + " line " + std::to_string(line_number);
        if (line.size() != 2 * ticket_key_bytes) {
            throw TicketKeyError(where + ": expected " + std::to_string(2 * ticket_key_bytes) +
                                 " hex digits, found " + std::to_string(line.size()) +
                                 " characters");
        }
        std::array<std::uint8_t, ticket_key_bytes> bytes{};
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            const int high = hex_value(line[2 * i]);
            const int low = hex_value(line[2 * i + 1]);
            if (high < 0 || low < 0) throw TicketKeyError(where + ": not a hex digit");
            bytes[i] = static_cast<std::uint8_t>(high * 16 + low);
        }
        keys.push_back(TicketKey::from_bytes(bytes));
    }
    if (keys.empty()) throw TicketKeyError("ticket key file " + path + ": no key in file");
    return keys;
}

const TicketKey* TicketKeyring::find(std::span<const std::uint8_t, 16> name, Match& match) const {
    for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (std::equal(name.begin(), name.end(), keys_[i].name.begin())) {
            match = i == 0 ? Match::current : Match::previous;
            return &keys_[i];
        }
    }
    match = Match::unknown;
    return nullptr;
}

}  // namespace portcullis::crypto
