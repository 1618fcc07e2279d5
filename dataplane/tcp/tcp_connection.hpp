// One TCP connection of the userspace stack (RFC 793/9293 states, RFC 7323
// window scaling and timestamps, RFC 6298 retransmission timer, RFC 6582
// NewReno, delayed ACKs, bounded out-of-order queue, TIME_WAIT). Pure state
// machine: segments in, segments out, time passed in as milliseconds. The
// DPDK lcore owns it for life; no locks, no syscalls. The send and receive
// buffers take blocks of the worker's pool only while they hold bytes
// (byte_ring.hpp); a segment beyond a hole is copied into the out-of-order
// queue (one allocation per held segment, at most max_out_of_order of them,
// counted in the pool's budget and dropped when it is spent), which only
// reordering or loss ever fills.
//
// Contract for the owner, per event:
//   input(segment, now) / send(bytes) / close() / on_timer(now), then for
//   each of output(): build the packet, copy_payload() into it; then
//   clear_output() before anything else touches the connection. Call
//   on_timer() again at next_timer(). Received bytes are read with receive().
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <vector>

#include "base/buffer_pool.hpp"
#include "dataplane/tcp/byte_ring.hpp"
#include "dataplane/tcp/tcp_segment.hpp"
#include "dataplane/tcp/time_wait_table.hpp"

namespace portcullis::dataplane::tcp {

enum class TcpState {
    closed,
    syn_sent,
    syn_received,
    established,
    fin_wait_1,
    fin_wait_2,
    close_wait,
    closing,
    last_ack,
    time_wait,
};

const char* to_string(TcpState state);

struct TcpConfig {
    std::uint16_t mss = 1460;       // advertised; what we send is min(ours, peer's)
    std::uint8_t window_scale = 7;  // ours, if the peer scales too
    bool timestamps = true;         // RFC 7323, if the peer offers them
    // TSval = the millisecond clock + this (see timestamp_clock.hpp).
    std::uint32_t timestamp_offset = 0;
    std::uint32_t receive_buffer = 256 * 1024;
    std::uint32_t send_buffer = 256 * 1024;
    // Where both buffers and the out-of-order segments take their memory
    // (and budget); null: the thread's unbounded pool (tests, tools).
    base::BufferPool* buffers = nullptr;
    std::uint32_t rto_initial_ms = 1000;  // RFC 6298 2.1
    std::uint32_t rto_min_ms = 200;       // Linux's floor; RFC 6298 suggests 1 s
    std::uint32_t rto_max_ms = 60000;
    int max_retransmissions = 8;  // then the connection is reset
    std::uint32_t delayed_ack_ms = 40;
    // Data segments ACKed at once at the start of a connection (Linux's
    // quickack): a handshake's flights are small, and a peer's Nagle would
    // otherwise hold its next segment for our delayed ACK.
    int quickack_segments = 16;
    std::uint32_t time_wait_ms = 60000;          // 2 MSL
    std::size_t max_out_of_order = 64;           // segments held beyond a hole
    std::uint32_t initial_window_segments = 10;  // RFC 6928
    // RFC 9293 3.8.4: after this long without a segment from the peer, probe
    // every interval; `keepalive_probes` unanswered ones reset. 0 = off.
    std::uint32_t keepalive_idle_ms = 0;
    std::uint32_t keepalive_interval_ms = 10000;
    int keepalive_probes = 6;
};

// A segment to transmit. Its payload stays in the connection's send buffer
// (no copy, no allocation): copy_payload() writes it into the packet buffer.
struct OutSegment {
    TcpSegment header;  // header.payload is empty; see payload_length
    std::size_t payload_length = 0;
};

class TcpConnection {
  public:
    using Millis = std::uint64_t;
    static constexpr Millis no_timer = std::numeric_limits<Millis>::max();

    // Passive open: `syn` arrived for a listening port; answers SYN-ACK.
    TcpConnection(const TcpConfig& config, const TcpSegment& syn, std::uint32_t iss, Millis now);
    // Active open: sends SYN.
    TcpConnection(const TcpConfig& config, std::uint32_t iss, Millis now);
    // Established by a SYN cookie (see syn_cookie.hpp): the handshake's final
    // ACK arrived with no state kept; no window scaling or timestamps. Feed
    // that ACK to input() next (it may carry data).
    struct CookieHandshake {
        std::uint32_t peer_iss = 0;
        std::uint32_t iss = 0;
        std::uint16_t mss = 536;
    };
    TcpConnection(const TcpConfig& config, const CookieHandshake& handshake);

    void input(const TcpSegment& segment, Millis now);
    void on_timer(Millis now);
    Millis next_timer() const;

    // Application side.
    std::size_t send(std::span<const std::uint8_t> bytes);  // returns bytes accepted
    std::size_t receive(std::span<std::uint8_t> out);
    std::size_t readable() const { return receive_buffer_.size(); }
    // What the window we advertise offers now (unscaled bytes).
    std::uint32_t receive_window_bytes() const { return receive_window(); }
    std::size_t writable() const { return send_buffer_.space(); }
    void close();  // no more data from us: FIN once the queue is sent
    // Sends what send()/close() queued, as far as the windows allow.
    void push(Millis now) { transmit(now); }
    void abort();  // RST now
    bool peer_closed() const {
        return peer_fin_;
    }  // FIN received (all data before it read or readable)
    bool reset() const { return reset_; }  // ended by RST (either side) or retransmission limit

    std::span<const OutSegment> output() const { return output_; }
    void copy_payload(const OutSegment& segment, std::span<std::uint8_t> out) const;
    void clear_output() { output_.clear(); }  // keeps the capacity: no allocation per segment
    TcpState state() const { return state_; }
    // In TIME_WAIT: what the connection must remember to answer its peer
    // until the 2 MSL are over (time_wait_table.hpp), under `key`.
    TimeWaitEntry time_wait_entry(std::uint64_t key) const;

    struct Stats {
        std::uint64_t keepalive_probes = 0;
        std::uint64_t retransmissions = 0;
        std::uint64_t fast_retransmissions = 0;
        std::uint64_t out_of_order_dropped = 0;
    };
    const Stats& stats() const { return stats_; }
    std::uint32_t cwnd() const { return cwnd_; }
    std::uint32_t rto_ms() const { return rto_ms_; }
    std::uint16_t effective_mss() const { return send_mss_; }

  private:
    void process_segment(const TcpSegment& segment, Millis now);
    void negotiate(const TcpOptions& peer);
    void process_ack(const TcpSegment& segment, Millis now);
    void process_data(const TcpSegment& segment, Millis now);
    void process_fin(Millis now);
    bool acceptable(const TcpSegment& segment) const;
    void transmit(Millis now);
    void emit(std::uint8_t flags, std::uint32_t seq, std::size_t length, Millis now);
    void emit_ack(Millis now) { emit(flag::ack, snd_nxt_, 0, now); }
    void retransmit_first(Millis now);
    void update_rtt(std::uint32_t sample_ms);
    void enter_time_wait(Millis now);
    void keepalive(Millis now);
    // Any probes so far count as answered.
    void heard_from_peer(Millis now) {
        last_heard_ = now;
        keepalive_probes_sent_ = 0;
    }
    void go_closed(bool by_reset);
    std::uint32_t receive_window() const;
    std::uint32_t ts_value(Millis now) const {
        return static_cast<std::uint32_t>(now + 1) + config_.timestamp_offset;
    }
    std::uint32_t data_start() const { return syn_acked_ ? snd_una_ : iss_ + 1; }
    bool fin_sent() const { return fin_queued_ && seq_gt(snd_nxt_, fin_seq_); }

    TcpConfig config_;
    TcpState state_ = TcpState::closed;

    // Send side (RFC 793 names).
    std::uint32_t iss_ = 0;
    std::uint32_t snd_una_ = 0;
    std::uint32_t snd_nxt_ = 0;
    std::uint32_t snd_max_ = 0;  // highest sequence sent (snd_nxt_ goes back after a timeout)
    std::uint32_t snd_wnd_ = 0;  // bytes, unscaled
    std::uint32_t snd_wl1_ = 0, snd_wl2_ = 0;
    std::uint8_t snd_wscale_ = 0;  // applied to the peer's window field
    std::uint16_t send_mss_ = 536;
    ByteRing send_buffer_;  // bytes from snd_una (after SYN) on
    bool fin_queued_ = false;
    std::uint32_t fin_seq_ = 0;

    // Receive side.
    std::uint32_t irs_ = 0;
    std::uint32_t rcv_nxt_ = 0;
    std::uint8_t rcv_wscale_ = 0;  // applied by the peer to our window field
    ByteRing receive_buffer_;
    struct HeldSegment {
        std::vector<std::uint8_t> bytes;
        base::BufferPool::Charge charge;  // counted in the worker's budget
    };
    std::map<std::uint32_t, HeldSegment> out_of_order_;
    bool peer_fin_ = false;

    // Options in use.
    bool timestamps_ = false;
    std::uint32_t ts_recent_ = 0;

    // RFC 6298.
    bool rtt_measured_ = false;
    std::uint32_t srtt_ms_ = 0, rttvar_ms_ = 0, rto_ms_ = 1000;
    std::uint32_t timed_seq_ = 0;
    Millis timed_at_ = 0;
    bool timing_ = false;
    Millis rto_deadline_ = no_timer;
    int retransmissions_in_row_ = 0;
    bool syn_resent_after_reset_ = false;

    // NewReno.
    std::uint32_t cwnd_ = 0, ssthresh_ = 0xffffffff;
    int duplicate_acks_ = 0;
    bool in_recovery_ = false;
    std::uint32_t recover_ = 0;

    // ACK policy.
    Millis delayed_ack_deadline_ = no_timer;
    int unacked_full_segments_ = 0;
    int quickacks_left_ = config_.quickack_segments;

    Millis time_wait_deadline_ = no_timer;

    // Keepalive: the deadline is checked against last_heard_ when it fires,
    // so a segment only stores a time and never moves the timer.
    Millis last_heard_ = 0;
    Millis keepalive_deadline_ = no_timer;
    int keepalive_probes_sent_ = 0;
    bool reset_ = false;
    bool syn_acked_ = false;
    Stats stats_;
    std::vector<OutSegment> output_;
};

}  // namespace portcullis::dataplane::tcp
