// Connections in TIME_WAIT as compact entries, for the DPDK stack. A
// connection we closed first answers its peer for 2 MSL (RFC 9293 3.6), and
// for that it needs 40 bytes, not the kilobyte of a TcpConnection with its
// buffers, timers and table node. Linux keeps its TIME_WAIT sockets the
// same way.
//
// Contract:
// - insert(entry) adds the entry of entry.key (or replaces it); find() and
//   erase() by key. The key is the stack's flow key, never 0.
// - answer(key, segment, now): what a segment for the entry's 4-tuple gets
//   back in TIME-WAIT (RFC 9293 3.10.7.4): an ACK for the peer's FIN again
//   (our last ACK was lost; 2 MSL starts over), for data and for anything
//   outside the window; a challenge ACK for a SYN with ACK and for an
//   in-window RST that is not exact (RFC 5961); nothing for a bare ACK in
//   the window. An exact RST ends the entry. A SYN without ACK is the
//   caller's: it may take the 4-tuple for a new connection (erase, then
//   accept).
// - expire(now) removes the entries whose 2 MSL are over. Due entries are
//   kept in the order they came, so it costs O(1) while none is due; an
//   entry whose 2 MSL started over may end up to that much later.
// - Memory: pages of its own (base/page_array.hpp), never the heap. The
//   table halves as it empties and is unmapped when the last entry goes:
//   after a burst nothing of it stays resident, and it pins no heap page.
// One lcore owns it: no locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "base/page_array.hpp"
#include "dataplane/tcp/tcp_segment.hpp"

namespace portcullis::dataplane::tcp {

struct TimeWaitEntry {
    std::uint64_t key = 0;  // 0: a free slot
    std::uint64_t deadline_ms = 0;
    std::uint32_t snd_nxt = 0;
    std::uint32_t rcv_nxt = 0;
    std::uint32_t window_bytes = 0;  // the receive window we last offered
    std::uint32_t ts_recent = 0;
    std::uint32_t ts_offset = 0;     // TSval = the millisecond clock + 1 + this
    std::uint16_t window_field = 0;  // that window as on the wire (scaled)
    bool timestamps = false;
};

class TimeWaitTable {
  public:
    using Millis = std::uint64_t;

    explicit TimeWaitTable(std::uint32_t time_wait_ms = 60000) : time_wait_ms_(time_wait_ms) {}

    void insert(const TimeWaitEntry& entry);
    const TimeWaitEntry* find(std::uint64_t key) const;
    bool erase(std::uint64_t key);
    std::optional<TcpSegment> answer(std::uint64_t key, const TcpSegment& segment, Millis now);
    void expire(Millis now);

    std::size_t size() const { return size_; }
    std::size_t capacity() const { return slots_.size(); }
    std::size_t mapped_bytes() const { return slots_.bytes() + due_.bytes(); }

  private:
    struct Due {
        std::uint64_t key;
        Millis deadline_ms;
    };
    static constexpr std::size_t min_capacity = 256;
    std::size_t home(std::uint64_t key) const;
    std::size_t index_of(std::uint64_t key) const;  // capacity() if absent
    void place(const TimeWaitEntry& entry);
    void rehash(std::size_t capacity);
    void push_due(const Due& due);
    void pop_due();

    std::uint32_t time_wait_ms_;
    base::PageArray<TimeWaitEntry> slots_;  // open addressing, linear probing
    std::size_t size_ = 0;
    base::PageArray<Due> due_;  // a ring: oldest first
    std::size_t due_head_ = 0;
    std::size_t due_count_ = 0;
};

}  // namespace portcullis::dataplane::tcp
