// Decoded sessions one worker keeps in front of the shared session cache.
// The shared cache holds DER bytes, so every hit there decodes the session
// again, and with it the client's certificate (d2i_SSL_SESSION: ~0.29 M
// instructions, mostly the public-key decoder). A client that returns to the
// worker that made or last resumed its session finds it here instead, as the
// live SSL_SESSION (shared by reference, as OpenSSL's own internal cache
// shares them). Looked up by session ID: TLS 1.2 session IDs and stateful
// TLS 1.3 tickets (SSL_OP_NO_TICKET); a stateless ticket carries its session,
// though a TLS 1.2 one is presented again until renewed, so a second instance
// keeps what it decrypted to (ServerTlsContext::ticket_sessions).
//
// Bounded: a free slot is taken first; when none is left, the slots are
// reused in turn (a ring), so the entry evicted is the one stored longest ago
// in that slot, roughly the oldest stored. An entry dies at its session's
// time + timeout. Used by one thread only: each worker's contexts
// are used by that worker's loop thread (see server_tls_context.hpp). The
// owner re-checks trust on every hit (revocation and expiry of the client
// certificate), as for sessions from the shared cache.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

namespace portcullis::crypto {

enum class LocalSessionEvent { hit, miss, eviction };

class LocalSessionCache {
  public:
    // capacity > 0; the slots and the index are allocated here, once.
    explicit LocalSessionCache(std::size_t capacity);
    ~LocalSessionCache();
    LocalSessionCache(const LocalSessionCache&) = delete;
    LocalSessionCache& operator=(const LocalSessionCache&) = delete;

    // Keeps a reference to `session` under its ID (1..32 bytes; others are
    // ignored), replacing an entry with the same ID in its slot. Returns true
    // when a live entry was evicted to make room.
    bool store(SSL_SESSION* session, std::int64_t expires_at, std::int64_t now);

    // The live session stored under `id` (borrowed: up-ref it to keep it), or
    // null; an expired entry is dropped.
    SSL_SESSION* find(std::span<const std::uint8_t> id, std::int64_t now);

    void remove(std::span<const std::uint8_t> id);

    std::size_t size() const { return index_.size(); }
    std::size_t capacity() const { return slots_.size(); }

  private:
    struct Key {
        std::array<std::uint8_t, SSL_MAX_SSL_SESSION_ID_LENGTH> bytes{};
        std::uint8_t length = 0;
        bool operator==(const Key& other) const;
    };
    struct KeyHash {
        std::size_t operator()(const Key& key) const noexcept;
    };
    struct SessionFree {
        void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
    };
    struct Slot {
        Key key;
        std::unique_ptr<SSL_SESSION, SessionFree> session;  // null: free slot
        std::int64_t expires_at = 0;
    };

    static bool make_key(std::span<const std::uint8_t> id, Key& key);
    void clear_slot(std::size_t slot);  // and frees it

    std::vector<Slot> slots_;
    std::vector<std::size_t> free_;  // empty slots, taken before any entry is evicted
    std::size_t next_ = 0;           // the slot a store evicts when none is free
    std::unordered_map<Key, std::size_t, KeyHash> index_;
};

}  // namespace portcullis::crypto
