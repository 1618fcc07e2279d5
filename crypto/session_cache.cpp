#include "crypto/session_cache.hpp"

#include <openssl/ssl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <type_traits>

#include "crypto/openssl_handles.hpp"

namespace portcullis::crypto {

namespace detail {

// Everything below lives in the shared mapping: offsets only, no pointers,
// because each process computes addresses from its own view.
struct alignas(64) CacheShard {  // own cache lines: shards do not false-share
    pthread_mutex_t mutex{};
    std::uint32_t first = 0;     // this shard's entries and data slots in the global arrays
    std::uint32_t capacity = 0;  // entries [0, used) are live, [used, capacity) hold free slots
    std::uint32_t used = 0;
    std::uint64_t sequence = 0;  // store order: oldest first among equal expiries
    std::uint64_t bytes = 0;
    std::uint64_t hits = 0, misses = 0, stores = 0, evictions = 0, expired = 0, too_large = 0;
};

struct CacheEntry {
    std::int64_t expires_at = 0;
    std::uint64_t sequence = 0;
    std::uint64_t hash = 0;
    std::uint32_t slot = 0;  // data slot (global index); moves with the entry
    std::uint32_t der_len = 0;
    std::uint8_t id_len = 0;
    std::array<std::uint8_t, 32> id{};
};

}  // namespace detail

using detail::CacheEntry;
using detail::CacheShard;

namespace {

constexpr std::size_t max_id_bytes = 32;  // SSL_MAX_SSL_SESSION_ID_LENGTH

static_assert(std::is_trivially_copyable_v<CacheEntry>);
static_assert(max_id_bytes == SSL_MAX_SSL_SESSION_ID_LENGTH);

std::uint64_t fnv1a(std::span<const std::uint8_t> bytes) {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    for (const std::uint8_t b : bytes) {
        hash ^= b;
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

bool valid_id(std::span<const std::uint8_t> id) {
    return !id.empty() && id.size() <= max_id_bytes;
}

std::size_t round_up(std::size_t n, std::size_t to) {
    return (n + to - 1) / to * to;
}

// a * b, or throws: the mapping size comes from configuration.
std::size_t checked_mul(std::size_t a, std::size_t b) {
    std::size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        throw std::invalid_argument("session cache: limits overflow the address space");
    return r;
}

class MutexAttr {
  public:
    MutexAttr() { check(pthread_mutexattr_init(&attr_), "pthread_mutexattr_init"); }
    ~MutexAttr() { pthread_mutexattr_destroy(&attr_); }
    MutexAttr(const MutexAttr&) = delete;
    MutexAttr& operator=(const MutexAttr&) = delete;
    pthread_mutexattr_t* get() { return &attr_; }

    static void check(int rc, const char* what) {
        if (rc != 0) throw std::system_error(rc, std::generic_category(), what);
    }

  private:
    pthread_mutexattr_t attr_;
};

}  // namespace

void SharedSessionCache::Unmap::operator()(std::uint8_t* p) const noexcept {
    // No pthread_mutex_destroy: other processes may still use the mutexes, and
    // a process-shared mutex holds no kernel resource on Linux.
    ::munmap(p, bytes);
}

// One shard with its lock held (RAII). A lock whose owner died is taken over:
// the owner may have been half-way through an update, so the shard's index is
// dropped (losing cached sessions is always safe) before marking it consistent.
struct SharedSessionCache::Locked {
    Locked(const SharedSessionCache& cache, std::size_t index)
        : cache(cache),
          shard(cache.shards_[index]),
          entries(cache.entries_ + shard.first),
          held(false) {
        int rc = pthread_mutex_lock(&shard.mutex);
        if (rc == EOWNERDEAD) {
            reset();
            rc = pthread_mutex_consistent(&shard.mutex);
            if (rc != 0) pthread_mutex_unlock(&shard.mutex);
        }
        // Anything else (ENOTRECOVERABLE) leaves the shard unusable: every
        // operation on it then misses rather than wedging the worker.
        held = rc == 0;
    }
    ~Locked() {
        if (held) pthread_mutex_unlock(&shard.mutex);
    }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;

    void reset() {
        shard.used = 0;
        shard.bytes = 0;
        for (std::uint32_t i = 0; i < shard.capacity; ++i) entries[i].slot = shard.first + i;
    }

    std::uint32_t find(std::span<const std::uint8_t> id, std::uint64_t hash) const {
        for (std::uint32_t i = 0; i < shard.used; ++i) {
            const CacheEntry& e = entries[i];
            if (e.hash == hash && e.id_len == id.size() &&
                std::memcmp(e.id.data(), id.data(), id.size()) == 0)
                return i;
        }
        return not_found;
    }

    // Keeps live entries dense: the last one fills the hole, and the freed
    // slot number stays behind at position `used` for the next insert.
    void remove_at(std::uint32_t i) {
        shard.bytes -= entries[i].der_len;
        std::swap(entries[i], entries[shard.used - 1]);
        --shard.used;
    }

    std::uint8_t* data(const CacheEntry& e) const {
        return cache.data_ + std::size_t{e.slot} * cache.limits_.max_entry_bytes;
    }

    static constexpr std::uint32_t not_found = std::numeric_limits<std::uint32_t>::max();

    const SharedSessionCache& cache;
    CacheShard& shard;
    CacheEntry* entries;  // this shard's first entry
    bool held;
};

SharedSessionCache::SharedSessionCache(const SessionCacheLimits& limits) : limits_(limits) {
    const std::size_t shards = limits.shards;
    if (shards == 0 || (shards & (shards - 1)) != 0)
        throw std::invalid_argument("session cache: shards must be a power of two");
    if (limits.max_entries < shards)
        throw std::invalid_argument("session cache: max_entries must be at least shards");
    if (limits.max_entry_bytes == 0)
        throw std::invalid_argument("session cache: max_entry_bytes must be positive");
    // Entry indexes, slot numbers and DER lengths are 32-bit in the mapping.
    constexpr std::size_t u32 = std::numeric_limits<std::uint32_t>::max();
    if (limits.max_entries > u32 || limits.max_entry_bytes > u32)
        throw std::invalid_argument("session cache: limits too large");

    const std::size_t shard_bytes = round_up(checked_mul(shards, sizeof(CacheShard)), 64);
    const std::size_t entry_bytes =
        round_up(checked_mul(limits.max_entries, sizeof(CacheEntry)), 64);
    const std::size_t data_bytes = checked_mul(limits.max_entries, limits.max_entry_bytes);
    if (data_bytes > std::numeric_limits<std::size_t>::max() - shard_bytes - entry_bytes)
        throw std::invalid_argument("session cache: limits overflow the address space");
    const std::size_t total = shard_bytes + entry_bytes + data_bytes;

    // Anonymous and shared: children forked after this see the same pages.
    void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "session cache: mmap");
    mapping_ = std::unique_ptr<std::uint8_t, Unmap>(static_cast<std::uint8_t*>(base), Unmap{total});
    std::uint8_t* const bytes = mapping_.get();
    shards_ = reinterpret_cast<CacheShard*>(bytes);
    entries_ = reinterpret_cast<CacheEntry*>(bytes + shard_bytes);
    data_ = bytes + shard_bytes + entry_bytes;

    MutexAttr attr;
    MutexAttr::check(pthread_mutexattr_setpshared(attr.get(), PTHREAD_PROCESS_SHARED),
                     "pthread_mutexattr_setpshared");
    // Robust: a worker killed while holding a shard lock must not wedge the others.
    MutexAttr::check(pthread_mutexattr_setrobust(attr.get(), PTHREAD_MUTEX_ROBUST),
                     "pthread_mutexattr_setrobust");

    // The remainder of max_entries / shards goes to the first shards, so the
    // total capacity is exactly max_entries.
    const std::size_t base_capacity = limits.max_entries / shards;
    const std::size_t remainder = limits.max_entries % shards;
    std::size_t first = 0;
    for (std::size_t i = 0; i < shards; ++i) {
        CacheShard* shard = std::construct_at(shards_ + i);
        shard->first = static_cast<std::uint32_t>(first);
        shard->capacity = static_cast<std::uint32_t>(base_capacity + (i < remainder ? 1 : 0));
        for (std::uint32_t e = 0; e < shard->capacity; ++e)
            std::construct_at(entries_ + first + e)->slot = static_cast<std::uint32_t>(first + e);
        first += shard->capacity;
        MutexAttr::check(pthread_mutex_init(&shard->mutex, attr.get()), "pthread_mutex_init");
    }
}

SharedSessionCache::~SharedSessionCache() = default;

bool SharedSessionCache::store(std::span<const std::uint8_t> id, std::span<const std::uint8_t> der,
                               std::int64_t expires_at, std::int64_t now) {
    if (!valid_id(id) || der.empty() || expires_at <= now) return false;
    const std::uint64_t hash = fnv1a(id);
    Locked locked(*this, hash & (limits_.shards - 1));
    if (!locked.held) return false;
    CacheShard& shard = locked.shard;
    if (der.size() > limits_.max_entry_bytes) {
        ++shard.too_large;
        return false;
    }

    std::uint32_t i = locked.find(id, hash);
    if (i != Locked::not_found) {
        shard.bytes -= locked.entries[i].der_len;  // replaced in place, same slot
    } else if (shard.used < shard.capacity) {
        i = shard.used++;  // its slot field already names a free slot
    } else {
        // Full: the entry that expires first goes (the oldest among equals),
        // which is an already-dead one whenever there is any.
        i = 0;
        for (std::uint32_t k = 1; k < shard.used; ++k) {
            const CacheEntry& a = locked.entries[k];
            const CacheEntry& b = locked.entries[i];
            if (a.expires_at < b.expires_at ||
                (a.expires_at == b.expires_at && a.sequence < b.sequence))
                i = k;
        }
        ++(locked.entries[i].expires_at <= now ? shard.expired : shard.evictions);
        shard.bytes -= locked.entries[i].der_len;
    }

    CacheEntry& e = locked.entries[i];
    e.expires_at = expires_at;
    e.sequence = ++shard.sequence;
    e.hash = hash;
    e.der_len = static_cast<std::uint32_t>(der.size());
    e.id_len = static_cast<std::uint8_t>(id.size());
    std::memcpy(e.id.data(), id.data(), id.size());
    std::memcpy(locked.data(e), der.data(), der.size());
    shard.bytes += der.size();
    ++shard.stores;
    return true;
}

bool SharedSessionCache::lookup(std::span<const std::uint8_t> id, std::int64_t now,
                                std::vector<std::uint8_t>& out) {
    const std::uint64_t hash = fnv1a(id);
    Locked locked(*this, hash & (limits_.shards - 1));
    if (!locked.held) return false;
    CacheShard& shard = locked.shard;
    const std::uint32_t i = valid_id(id) ? locked.find(id, hash) : Locked::not_found;
    if (i == Locked::not_found) {
        ++shard.misses;
        return false;
    }
    const CacheEntry& e = locked.entries[i];
    if (e.expires_at <= now) {
        locked.remove_at(i);
        ++shard.expired;
        ++shard.misses;
        return false;
    }
    const std::uint8_t* data = locked.data(e);
    out.assign(data, data + e.der_len);
    ++shard.hits;
    return true;
}

bool SharedSessionCache::contains(std::span<const std::uint8_t> id, std::int64_t now) const {
    if (!valid_id(id)) return false;
    const std::uint64_t hash = fnv1a(id);
    Locked locked(*this, hash & (limits_.shards - 1));
    if (!locked.held) return false;
    const std::uint32_t i = locked.find(id, hash);
    return i != Locked::not_found && locked.entries[i].expires_at > now;
}

void SharedSessionCache::remove(std::span<const std::uint8_t> id) {
    if (!valid_id(id)) return;
    const std::uint64_t hash = fnv1a(id);
    Locked locked(*this, hash & (limits_.shards - 1));
    if (!locked.held) return;
    const std::uint32_t i = locked.find(id, hash);
    if (i != Locked::not_found) locked.remove_at(i);
}

std::size_t SharedSessionCache::purge_expired(std::int64_t now) {
    std::size_t purged = 0;
    for (std::size_t s = 0; s < limits_.shards; ++s) {
        Locked locked(*this, s);
        if (!locked.held) continue;
        for (std::uint32_t i = 0; i < locked.shard.used;) {
            if (locked.entries[i].expires_at > now) {
                ++i;
                continue;
            }
            locked.remove_at(i);  // the last entry moves into i: look at i again
            ++locked.shard.expired;
            ++purged;
        }
    }
    return purged;
}

SessionCacheCounters SharedSessionCache::counters() const {
    SessionCacheCounters sum;
    for (std::size_t s = 0; s < limits_.shards; ++s) {
        Locked locked(*this, s);
        if (!locked.held) continue;
        const CacheShard& shard = locked.shard;
        sum.hits += shard.hits;
        sum.misses += shard.misses;
        sum.stores += shard.stores;
        sum.evictions += shard.evictions;
        sum.expired += shard.expired;
        sum.too_large += shard.too_large;
        sum.entries += shard.used;
        sum.bytes += shard.bytes;
    }
    return sum;
}

namespace {

// The cache pointer rides in an SSL_CTX ex_data slot registered once per
// process (not a static pointer), so independent caches can coexist.
int cache_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

SharedSessionCache* cache_of(const SSL_CTX* ctx) {
    return ctx ? static_cast<SharedSessionCache*>(SSL_CTX_get_ex_data(ctx, cache_index()))
               : nullptr;
}

std::span<const std::uint8_t> id_of(const SSL_SESSION* session) {
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &length);
    return {id, length};
}

struct OpenSslFree {
    void operator()(unsigned char* p) const noexcept { OPENSSL_free(p); }
};

}  // namespace

bool looked_up_by_id(const SSL_SESSION* session, std::uint64_t options) {
    return SSL_SESSION_get_protocol_version(session) != TLS1_3_VERSION ||
           (options & SSL_OP_NO_TICKET) != 0;
}

// Returns 0: the cache keeps a DER copy, not OpenSSL's reference.
int store_new_session(SSL* ssl, SSL_SESSION* session) {
    SharedSessionCache* cache = cache_of(SSL_get_SSL_CTX(ssl));
    if (!cache || !looked_up_by_id(session, SSL_get_options(ssl))) return 0;
    unsigned char* raw = nullptr;
    const int length = i2d_SSL_SESSION(session, &raw);
    const std::unique_ptr<unsigned char, OpenSslFree> der(raw);
    if (length <= 0) return 0;
    const std::int64_t expires_at =
        std::int64_t{SSL_SESSION_get_time_ex(session)} + SSL_SESSION_get_timeout(session);
    cache->store(id_of(session), {der.get(), static_cast<std::size_t>(length)}, expires_at,
                 std::time(nullptr));
    return 0;
}

SSL_SESSION* get_cached_session(SSL* ssl, const unsigned char* id, int id_length, int* copy) {
    *copy = 0;  // the session returned is a fresh one: OpenSSL owns it
    SharedSessionCache* cache = cache_of(SSL_get_SSL_CTX(ssl));
    if (!cache || id_length <= 0) return nullptr;
    // Per thread and reused, so a warm worker does not allocate per lookup.
    thread_local std::vector<std::uint8_t> der;
    try {
        if (!cache->lookup({id, static_cast<std::size_t>(id_length)}, std::time(nullptr), der))
            return nullptr;
    } catch (const std::bad_alloc&) {
        return nullptr;  // never throw through OpenSSL's C frames
    }
    const unsigned char* p = der.data();
    return d2i_SSL_SESSION(nullptr, &p, static_cast<long>(der.size()));
}

void remove_cached_session(SSL_CTX* ctx, SSL_SESSION* session) {
    SharedSessionCache* cache = cache_of(ctx);
    if (cache && looked_up_by_id(session, SSL_CTX_get_options(ctx))) cache->remove(id_of(session));
}

void attach_session_cache(SSL_CTX* ctx, SharedSessionCache& cache) {
    if (cache_index() < 0 || SSL_CTX_set_ex_data(ctx, cache_index(), &cache) != 1)
        throw std::runtime_error("session cache: SSL_CTX_set_ex_data: " + drain_openssl_errors());
    // NO_INTERNAL: no per-process copy, so every worker sees one set of sessions.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, store_new_session);
    SSL_CTX_sess_set_get_cb(ctx, get_cached_session);
    SSL_CTX_sess_set_remove_cb(ctx, remove_cached_session);
}

}  // namespace portcullis::crypto
