// TLS 1.2 session-ID cache shared by every worker process. Workers are forked
// processes (see docs/architecture.md), so the cache is one anonymous
// MAP_SHARED mapping made by the supervisor before fork; each child inherits
// it. It is split into shards, each with its own process-shared robust mutex,
// so handshakes on different workers rarely contend and a worker killed while
// holding a lock cannot wedge the others (the next locker takes the lock over
// and empties that shard, whose index may be torn). Bounded (fixed entry and byte
// slots, nothing grows) and expiring (an entry dies at its session's
// time + timeout).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace portcullis::crypto {

namespace detail {
struct CacheShard;  // shard header and entry index, laid out in the shared mapping
struct CacheEntry;
}  // namespace detail

struct SessionCacheLimits {
    std::size_t max_entries = 20480;     // total over all shards
    std::size_t max_entry_bytes = 4096;  // DER-encoded SSL_SESSION larger than this is not cached
                                         // (counted as too_large)
    std::size_t shards = 16;             // power of two
};

struct SessionCacheCounters {  // summed over shards at read time
    std::uint64_t hits = 0, misses = 0, stores = 0, evictions = 0, expired = 0, too_large = 0;
    std::uint64_t entries = 0, bytes = 0;  // current
};

class SharedSessionCache {
  public:
    // One anonymous MAP_SHARED mapping (entries * max_entry_bytes + index),
    // made before fork; all forked children use it. Throws
    // std::invalid_argument for bad limits, std::system_error if mmap or the
    // mutex setup fails.
    explicit SharedSessionCache(const SessionCacheLimits& limits);
    ~SharedSessionCache();  // munmap (this process's view only)
    SharedSessionCache(const SharedSessionCache&) = delete;
    SharedSessionCache& operator=(const SharedSessionCache&) = delete;

    // Session id (1..32 bytes) -> DER bytes, expiring at expires_at (unix
    // seconds). Replaces an entry with the same id. When the shard is full,
    // evicts the entry that expires first (the oldest among equals) and counts
    // an eviction (or `expired` if that entry was already dead). Returns false
    // (nothing stored) for a bad id, empty DER, expires_at <= now, or DER over
    // max_entry_bytes (counted as too_large).
    bool store(std::span<const std::uint8_t> id, std::span<const std::uint8_t> der,
               std::int64_t expires_at, std::int64_t now);

    // Copies the DER into `out` (resized) and returns true on a live hit; an
    // expired entry is removed and counted as expired + miss.
    bool lookup(std::span<const std::uint8_t> id, std::int64_t now, std::vector<std::uint8_t>& out);

    void remove(std::span<const std::uint8_t> id);

    // Whether a live entry for `id` is there, without copying it or counting
    // a lookup: a worker's own decoded copy of a session is used only while
    // the shared entry lives, so a session any worker removed (a fatal
    // alert, an unclean close) ends on every worker.
    bool contains(std::span<const std::uint8_t> id, std::int64_t now) const;

    // Frees the slots of every entry dead at `now` (counted as expired) and
    // returns how many. Lookups remove dead entries they meet and stores
    // evict them first, but a session nobody returns for would otherwise hold
    // its slot, and the entries gauge, until the shard filled.
    std::size_t purge_expired(std::int64_t now);

    SessionCacheCounters counters() const;
    const SessionCacheLimits& limits() const { return limits_; }

  private:
    struct Unmap {
        std::size_t bytes;
        void operator()(std::uint8_t* p) const noexcept;
    };
    struct Locked;  // a shard's view while its lock is held

    SessionCacheLimits limits_;
    std::unique_ptr<std::uint8_t, Unmap> mapping_;
    detail::CacheShard* shards_ = nullptr;
    detail::CacheEntry* entries_ = nullptr;  // max_entries, grouped by shard
    std::uint8_t* data_ = nullptr;           // max_entries slots of max_entry_bytes
};

// Makes `ctx` use `cache` for server-side session IDs (SSL_SESS_CACHE_SERVER |
// SSL_SESS_CACHE_NO_INTERNAL: OpenSSL keeps no per-process copy, so every
// worker sees the same sessions). A TLS 1.3 session is stored only when the
// SSL has SSL_OP_NO_TICKET (a stateful ticket is a session ID); a stateless
// ticket carries its session itself. The cache pointer is kept in an SSL_CTX
// ex_data slot (not a process-wide static) so several caches can coexist in
// one process; the callbacks read it from SSL_get_SSL_CTX(ssl), so attach the
// cache to every SSL_CTX a connection can be switched to by SNI as well.
// `cache` must outlive `ctx`. Throws std::runtime_error if the ex_data slot
// cannot be set.
void attach_session_cache(SSL_CTX* ctx, SharedSessionCache& cache);

// The callbacks attach_session_cache installs, for owners that wrap them
// (SSL_CTX_sess_set_get_cb, _new_cb and _remove_cb signatures). The new-session
// callback stores a DER copy and returns 0 (it keeps no reference).
SSL_SESSION* get_cached_session(SSL* ssl, const unsigned char* id, int id_length, int* copy);
int store_new_session(SSL* ssl, SSL_SESSION* session);
void remove_cached_session(SSL_CTX* ctx, SSL_SESSION* session);

// Whether a session can ever be asked for by ID. OpenSSL reports every new
// session, TLS 1.3 ones included, but a TLS 1.3 stateless ticket carries its
// whole session and the ID OpenSSL gives it is never sent back; only a
// stateful TLS 1.3 ticket (`options` with SSL_OP_NO_TICKET) is the ID of a
// cached session.
bool looked_up_by_id(const SSL_SESSION* session, std::uint64_t options);

}  // namespace portcullis::crypto
