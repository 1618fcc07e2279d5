#include "crypto/local_session_cache.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace portcullis::crypto {

bool LocalSessionCache::Key::operator==(const Key& other) const {
    return length == other.length && std::memcmp(bytes.data(), other.bytes.data(), length) == 0;
}

std::size_t LocalSessionCache::KeyHash::operator()(const Key& key) const noexcept {
    // Session IDs are random bytes: the first eight are as good a hash as any.
    std::uint64_t h = 0;
    std::memcpy(&h, key.bytes.data(), sizeof h);
    return static_cast<std::size_t>(h ^ key.length);
}

LocalSessionCache::LocalSessionCache(std::size_t capacity) : slots_(capacity) {
    if (capacity == 0) throw std::invalid_argument("local session cache: capacity must be > 0");
    index_.reserve(capacity);
    free_.reserve(capacity);
    // Taken from the back: slot 0 first, so a cache that never removes fills in ring order.
    for (std::size_t slot = capacity; slot-- > 0;) free_.push_back(slot);
}

LocalSessionCache::~LocalSessionCache() = default;

bool LocalSessionCache::make_key(std::span<const std::uint8_t> id, Key& key) {
    if (id.empty() || id.size() > key.bytes.size()) return false;
    std::copy(id.begin(), id.end(), key.bytes.begin());
    key.length = static_cast<std::uint8_t>(id.size());
    return true;
}

void LocalSessionCache::clear_slot(std::size_t slot) {
    index_.erase(slots_[slot].key);
    slots_[slot].session.reset();
    slots_[slot].expires_at = 0;
    free_.push_back(slot);
}

bool LocalSessionCache::store(SSL_SESSION* session, std::int64_t expires_at, std::int64_t now) {
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &length);
    Key key;
    if (expires_at <= now || !make_key({id, length}, key)) return false;
    if (SSL_SESSION_up_ref(session) != 1) return false;
    if (const auto found = index_.find(key); found != index_.end()) {
        Slot& same = slots_[found->second];
        same.session.reset(session);
        same.expires_at = expires_at;
        return false;
    }
    std::size_t slot;
    bool evicted = false;
    if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
    } else {
        slot = next_;
        next_ = (next_ + 1) % slots_.size();
        evicted = slots_[slot].expires_at > now;
        index_.erase(slots_[slot].key);
    }
    slots_[slot].key = key;
    slots_[slot].session.reset(session);
    slots_[slot].expires_at = expires_at;
    index_.emplace(key, slot);
    return evicted;
}

SSL_SESSION* LocalSessionCache::find(std::span<const std::uint8_t> id, std::int64_t now) {
    Key key;
    if (!make_key(id, key)) return nullptr;
    const auto found = index_.find(key);
    if (found == index_.end()) return nullptr;
    const std::size_t slot = found->second;
    if (slots_[slot].expires_at <= now) {
        clear_slot(slot);
        return nullptr;
    }
    return slots_[slot].session.get();
}

void LocalSessionCache::remove(std::span<const std::uint8_t> id) {
    Key key;
    if (!make_key(id, key)) return;
    if (const auto found = index_.find(key); found != index_.end()) clear_slot(found->second);
}

}  // namespace portcullis::crypto
