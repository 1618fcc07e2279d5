// Session-ticket encryption keys. A worker holds a keyring: the first key
// encrypts new tickets, every key decrypts (the previous period's key keeps
// returning clients resuming across a rotation). Keys come either from the
// supervisor's in-memory rotation or from a key file shared by appliances.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace portcullis::crypto {

inline constexpr std::size_t ticket_key_bytes = 80;  // name 16 | HMAC-SHA256 32 | AES-256 32

struct TicketKey {
    std::array<std::uint8_t, 16> name{};
    std::array<std::uint8_t, 32> hmac_key{};
    std::array<std::uint8_t, 32> aes_key{};

    static TicketKey from_bytes(std::span<const std::uint8_t, ticket_key_bytes> bytes);
    static TicketKey random();  // from the kernel (getrandom), never OpenSSL's DRBG before fork
    std::array<std::uint8_t, ticket_key_bytes> bytes() const;
};

struct TicketKeyError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Key file format: one key per line as 160 hex digits (80 bytes), newest
// first; blank lines and lines starting with '#' are ignored. The first key
// encrypts. Errors name the file and line.
std::vector<TicketKey> read_ticket_key_file(const std::string& path);

class TicketKeyring {
  public:
    enum class Match { current, previous, unknown };

    void replace(std::vector<TicketKey> keys) { keys_ = std::move(keys); }
    bool empty() const { return keys_.empty(); }
    std::size_t size() const { return keys_.size(); }
    const TicketKey& current() const { return keys_.front(); }
    // The key that encrypted a ticket named `name`, and how old it is.
    const TicketKey* find(std::span<const std::uint8_t, 16> name, Match& match) const;

  private:
    std::vector<TicketKey> keys_;
};

}  // namespace portcullis::crypto
