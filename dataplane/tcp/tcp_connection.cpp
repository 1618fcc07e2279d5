#include "dataplane/tcp/tcp_connection.hpp"

#include <algorithm>

namespace portcullis::dataplane::tcp {
namespace {

base::BufferPool& pool_of(const TcpConfig& config) {
    return config.buffers != nullptr ? *config.buffers : base::BufferPool::thread_default();
}

constexpr std::uint16_t default_peer_mss = 536;  // RFC 9293 3.7.1
constexpr std::uint32_t timestamp_option_bytes = 12;

}  // namespace

const char* to_string(TcpState state) {
    switch (state) {
        case TcpState::closed:
            return "CLOSED";
        case TcpState::syn_sent:
            return "SYN-SENT";
        case TcpState::syn_received:
            return "SYN-RECEIVED";
        case TcpState::established:
            return "ESTABLISHED";
        case TcpState::fin_wait_1:
            return "FIN-WAIT-1";
        case TcpState::fin_wait_2:
            return "FIN-WAIT-2";
        case TcpState::close_wait:
            return "CLOSE-WAIT";
        case TcpState::closing:
            return "CLOSING";
        case TcpState::last_ack:
            return "LAST-ACK";
        case TcpState::time_wait:
            return "TIME-WAIT";
    }
    return "?";
}

TcpConnection::TcpConnection(const TcpConfig& config, const TcpSegment& syn, std::uint32_t iss,
                             Millis now)
    : config_(config),
      state_(TcpState::syn_received),
      iss_(iss),
      snd_una_(iss),
      snd_nxt_(iss),
      snd_max_(iss),
      send_buffer_(pool_of(config), base::BufferPool::Use::transform, config.send_buffer),
      irs_(syn.seq),
      rcv_nxt_(syn.seq + 1),
      receive_buffer_(pool_of(config), base::BufferPool::Use::ingress, config.receive_buffer),
      rto_ms_(config.rto_initial_ms) {
    output_.reserve(16);
    negotiate(syn.options);
    snd_wnd_ = syn.window;  // SYN windows are never scaled
    snd_wl1_ = syn.seq;
    if (timestamps_) ts_recent_ = syn.options.ts_value;
    emit(flag::syn | flag::ack, iss_, 0, now);
}

TcpConnection::TcpConnection(const TcpConfig& config, std::uint32_t iss, Millis now)
    : config_(config),
      state_(TcpState::syn_sent),
      iss_(iss),
      snd_una_(iss),
      snd_nxt_(iss),
      snd_max_(iss),
      send_buffer_(pool_of(config), base::BufferPool::Use::transform, config.send_buffer),
      receive_buffer_(pool_of(config), base::BufferPool::Use::ingress, config.receive_buffer),
      rto_ms_(config.rto_initial_ms) {
    output_.reserve(16);
    send_mss_ = config.mss;
    cwnd_ = config.initial_window_segments * send_mss_;
    emit(flag::syn, iss_, 0, now);
}

TcpConnection::TcpConnection(const TcpConfig& config, const CookieHandshake& handshake)
    : config_(config),
      state_(TcpState::established),
      iss_(handshake.iss),
      snd_una_(handshake.iss + 1),
      snd_nxt_(handshake.iss + 1),
      snd_max_(handshake.iss + 1),
      send_buffer_(pool_of(config), base::BufferPool::Use::transform, config.send_buffer),
      irs_(handshake.peer_iss),
      rcv_nxt_(handshake.peer_iss + 1),
      receive_buffer_(pool_of(config), base::BufferPool::Use::ingress, config.receive_buffer),
      rto_ms_(config.rto_initial_ms) {
    output_.reserve(16);
    syn_acked_ = true;
    send_mss_ = handshake.mss;
    cwnd_ = config.initial_window_segments * send_mss_;
    snd_wl1_ = handshake.peer_iss;  // the ACK's window is taken as an update
}

void TcpConnection::negotiate(const TcpOptions& peer) {
    if (peer.window_scale >= 0) {
        snd_wscale_ = static_cast<std::uint8_t>(std::min<int>(peer.window_scale, 14));
        rcv_wscale_ = config_.window_scale;
    } else {
        snd_wscale_ = rcv_wscale_ = 0;  // both or neither (RFC 7323 2.2)
    }
    timestamps_ = config_.timestamps && peer.timestamps;
    const std::uint16_t peer_mss = peer.mss ? peer.mss : default_peer_mss;
    std::uint32_t mss = std::min(config_.mss, peer_mss);
    if (timestamps_) mss -= timestamp_option_bytes;
    send_mss_ = static_cast<std::uint16_t>(mss);
    cwnd_ = config_.initial_window_segments * send_mss_;
}

std::uint32_t TcpConnection::receive_window() const {
    return static_cast<std::uint32_t>(receive_buffer_.space());
}

// RFC 9293 3.10.7.4: the segment must overlap the receive window.
bool TcpConnection::acceptable(const TcpSegment& segment) const {
    const std::uint32_t window = receive_window();
    const std::uint32_t length = segment.length();
    if (length == 0) {
        return window == 0
                   ? segment.seq == rcv_nxt_
                   : seq_le(rcv_nxt_, segment.seq) && seq_lt(segment.seq, rcv_nxt_ + window);
    }
    if (window == 0) return false;
    const std::uint32_t last = segment.seq + length - 1;
    return (seq_le(rcv_nxt_, segment.seq) && seq_lt(segment.seq, rcv_nxt_ + window)) ||
           (seq_le(rcv_nxt_, last) && seq_lt(last, rcv_nxt_ + window));
}

void TcpConnection::input(const TcpSegment& segment, Millis now) {
    if (state_ == TcpState::closed) return;
    process_segment(segment, now);
    if (config_.keepalive_idle_ms != 0 && keepalive_deadline_ == no_timer &&
        (state_ == TcpState::established || state_ == TcpState::close_wait)) {
        keepalive_deadline_ = now + config_.keepalive_idle_ms;
    }
}

void TcpConnection::process_segment(const TcpSegment& segment, Millis now) {
    if (state_ == TcpState::syn_sent) {
        if (segment.has(flag::ack) &&
            (seq_le(segment.ack, iss_) || seq_gt(segment.ack, snd_nxt_))) {
            if (segment.has(flag::rst)) return;
            emit(flag::rst, segment.ack, 0, now);
            // Most often the peer's TIME_WAIT of an earlier connection on
            // these ports: the RST clears it, so the SYN goes again now
            // instead of after the retransmission timeout (once only).
            if (!syn_resent_after_reset_) {
                syn_resent_after_reset_ = true;
                retransmit_first(now);
            }
            return;
        }
        if (segment.has(flag::rst)) {
            if (segment.has(flag::ack)) go_closed(true);  // connection refused
            return;
        }
        if (!segment.has(flag::syn)) return;
        irs_ = segment.seq;
        rcv_nxt_ = segment.seq + 1;
        negotiate(segment.options);
        if (timestamps_) ts_recent_ = segment.options.ts_value;
        if (segment.has(flag::ack)) {
            snd_una_ = segment.ack;
            syn_acked_ = true;
            snd_wnd_ = segment.window;
            snd_wl1_ = segment.seq;
            snd_wl2_ = segment.ack;
            rto_deadline_ = no_timer;
            if (timing_) update_rtt(static_cast<std::uint32_t>(now - timed_at_));
            state_ = TcpState::established;
            heard_from_peer(now);
            emit_ack(now);
            transmit(now);
        } else {
            state_ = TcpState::syn_received;  // simultaneous open
            emit(flag::syn | flag::ack, iss_, 0, now);
        }
        return;
    }

    // RFC 7323 PAWS would go here; a timestamp older than ts_recent on an
    // otherwise acceptable segment is only recorded, not dropped.
    if (!acceptable(segment)) {
        if (!segment.has(flag::rst)) emit_ack(now);  // tells the peer where we are
        return;
    }
    heard_from_peer(now);  // only what fits the window: forged strays must not keep us alive

    if (segment.has(flag::rst)) {
        // RFC 5961 3.2: only an exact RST resets; others get a challenge ACK.
        if (segment.seq == rcv_nxt_) {
            go_closed(true);
        } else {
            emit_ack(now);
        }
        return;
    }

    if (segment.has(flag::syn)) {
        // A SYN in the window of a synchronized connection: challenge ACK (RFC 5961 4.2).
        emit_ack(now);
        return;
    }

    if (!segment.has(flag::ack)) return;
    if (timestamps_ && segment.options.timestamps && seq_le(segment.seq, rcv_nxt_))
        ts_recent_ = segment.options.ts_value;

    if (state_ == TcpState::syn_received) {
        if (seq_lt(segment.ack, snd_una_ + 1) || seq_gt(segment.ack, snd_nxt_)) {
            emit(flag::rst, segment.ack, 0, now);
            return;
        }
        state_ = TcpState::established;
    }
    process_ack(segment, now);
    if (state_ == TcpState::closed) return;
    if (!segment.payload.empty()) process_data(segment, now);
    if (segment.has(flag::fin) && segment.seq + segment.payload.size() == rcv_nxt_ && !peer_fin_) {
        process_fin(now);
    }
    transmit(now);
}

void TcpConnection::process_ack(const TcpSegment& segment, Millis now) {
    const std::uint32_t ack = segment.ack;
    if (seq_gt(ack, snd_max_)) {
        emit_ack(now);  // acks something never sent
        return;
    }
    if (seq_gt(ack, snd_nxt_)) snd_nxt_ = ack;  // an original outran a go-back-N retransmission
    const std::uint32_t window = static_cast<std::uint32_t>(segment.window) << snd_wscale_;
    const bool new_data_acked = seq_gt(ack, snd_una_);

    if (new_data_acked) {
        std::uint32_t acked = ack - snd_una_;
        if (!syn_acked_) {
            syn_acked_ = true;  // the SYN takes one sequence number, not a buffer byte
            --acked;
        }
        std::uint32_t data_acked = acked;
        if (fin_queued_ && seq_gt(ack, fin_seq_)) --data_acked;  // our FIN is acked too
        send_buffer_.drop(data_acked);
        snd_una_ = ack;
        retransmissions_in_row_ = 0;
        // RTT: from timestamps when both use them, else one timed segment (Karn).
        const auto echoed_age = static_cast<std::int32_t>(ts_value(now) - segment.options.ts_echo);
        if (timestamps_ && segment.options.timestamps && segment.options.ts_echo != 0 &&
            echoed_age >= 0) {  // an echo from the future is no sample
            update_rtt(static_cast<std::uint32_t>(echoed_age));
        } else if (timing_ && seq_gt(ack, timed_seq_)) {
            update_rtt(static_cast<std::uint32_t>(now - timed_at_));
            timing_ = false;
        }
        // NewReno (RFC 6582) and standard growth (RFC 5681).
        if (in_recovery_) {
            if (seq_ge(ack, recover_)) {
                in_recovery_ = false;
                cwnd_ = std::min(
                    ssthresh_, std::max<std::uint32_t>(snd_nxt_ - snd_una_, send_mss_) + send_mss_);
            } else {
                retransmit_first(now);  // partial ACK: the next hole
                cwnd_ = cwnd_ > acked ? cwnd_ - acked + send_mss_ : send_mss_;
            }
        } else if (cwnd_ < ssthresh_) {
            cwnd_ += std::min<std::uint32_t>(acked, send_mss_);
        } else {
            cwnd_ += std::max<std::uint32_t>(1, send_mss_ * send_mss_ / cwnd_);
        }
        duplicate_acks_ = 0;
        rto_deadline_ = snd_una_ == snd_nxt_ ? no_timer : now + rto_ms_;
    } else if (ack == snd_una_ && segment.payload.empty() && !segment.has(flag::fin) &&
               window == snd_wnd_ && snd_una_ != snd_nxt_) {
        // A duplicate ACK (RFC 5681 section 2).
        ++duplicate_acks_;
        if (duplicate_acks_ == 3 && !in_recovery_) {
            ssthresh_ = std::max<std::uint32_t>((snd_nxt_ - snd_una_) / 2, 2u * send_mss_);
            recover_ = snd_nxt_;
            in_recovery_ = true;
            ++stats_.fast_retransmissions;
            retransmit_first(now);
            cwnd_ = ssthresh_ + 3u * send_mss_;
        } else if (in_recovery_) {
            cwnd_ += send_mss_;  // each further dup ACK: a segment left the network
        }
    }

    // Window update (RFC 9293 3.10.7.4).
    if (seq_lt(snd_wl1_, segment.seq) || (snd_wl1_ == segment.seq && seq_le(snd_wl2_, ack))) {
        snd_wnd_ = window;
        snd_wl1_ = segment.seq;
        snd_wl2_ = ack;
    }

    if (fin_queued_ && seq_gt(snd_una_, fin_seq_)) {
        switch (state_) {
            case TcpState::fin_wait_1:
                state_ = TcpState::fin_wait_2;
                break;
            case TcpState::closing:
                enter_time_wait(now);
                break;
            case TcpState::last_ack:
                go_closed(false);
                break;
            default:
                break;
        }
    }
}

void TcpConnection::process_data(const TcpSegment& segment, Millis now) {
    if (state_ != TcpState::established && state_ != TcpState::fin_wait_1 &&
        state_ != TcpState::fin_wait_2)
        return;  // data after the peer's FIN is ignored
    auto payload = segment.payload;
    std::uint32_t seq = segment.seq;
    if (seq_lt(seq, rcv_nxt_)) {  // trim what we already have
        const std::uint32_t skip = rcv_nxt_ - seq;
        if (skip >= payload.size()) {
            emit_ack(now);
            return;
        }
        payload = payload.subspan(skip);
        seq = rcv_nxt_;
    }
    if (seq != rcv_nxt_) {
        // Out of order: keep it (bounded) and tell the peer at once.
        auto charge = out_of_order_.size() < config_.max_out_of_order
                          ? pool_of(config_).charge(payload.size(), base::BufferPool::Use::ingress)
                          : std::nullopt;
        if (charge) {
            out_of_order_.try_emplace(
                seq, HeldSegment{{payload.begin(), payload.end()}, std::move(*charge)});
        } else {
            ++stats_.out_of_order_dropped;
        }
        emit_ack(now);
        return;
    }
    const std::size_t taken = receive_buffer_.push(payload);
    rcv_nxt_ += static_cast<std::uint32_t>(taken);
    const bool filled_hole = !out_of_order_.empty();
    // Pull in whatever the new bytes made contiguous.
    for (auto it = out_of_order_.begin(); it != out_of_order_.end();) {
        if (seq_gt(it->first, rcv_nxt_)) break;
        const std::uint32_t skip = rcv_nxt_ - it->first;
        if (skip < it->second.bytes.size()) {
            const auto rest = std::span<const std::uint8_t>(it->second.bytes).subspan(skip);
            rcv_nxt_ += static_cast<std::uint32_t>(receive_buffer_.push(rest));
        }
        it = out_of_order_.erase(it);
    }
    // ACK every second full segment, at once after a hole, else after the delay.
    if (payload.size() >= send_mss_) ++unacked_full_segments_;
    const bool quickack = quickacks_left_ > 0;
    if (quickack) --quickacks_left_;
    if (quickack || filled_hole || unacked_full_segments_ >= 2 || taken < payload.size()) {
        emit_ack(now);
    } else if (delayed_ack_deadline_ == no_timer) {
        delayed_ack_deadline_ = now + config_.delayed_ack_ms;
    }
}

void TcpConnection::process_fin(Millis now) {
    peer_fin_ = true;
    rcv_nxt_ += 1;
    switch (state_) {
        case TcpState::established:
            state_ = TcpState::close_wait;
            break;
        case TcpState::fin_wait_1:
            // Our FIN not yet acked: simultaneous close.
            state_ = TcpState::closing;
            break;
        case TcpState::fin_wait_2:
            enter_time_wait(now);
            break;
        default:
            break;
    }
    emit_ack(now);
}

std::size_t TcpConnection::send(std::span<const std::uint8_t> bytes) {
    if (fin_queued_ || state_ == TcpState::closed || state_ == TcpState::time_wait) return 0;
    return send_buffer_.push(bytes);
}

std::size_t TcpConnection::receive(std::span<std::uint8_t> out) {
    const std::size_t n = receive_buffer_.pop(out);
    return n;
}

void TcpConnection::close() {
    if (fin_queued_) return;
    switch (state_) {
        case TcpState::syn_sent:
            go_closed(false);
            return;
        case TcpState::syn_received:
        case TcpState::established:
            state_ = TcpState::fin_wait_1;
            break;
        case TcpState::close_wait:
            state_ = TcpState::last_ack;
            break;
        default:
            return;
    }
    fin_queued_ = true;
    fin_seq_ = data_start() + static_cast<std::uint32_t>(send_buffer_.size());
}

void TcpConnection::abort() {
    if (state_ == TcpState::closed) return;
    if (state_ != TcpState::syn_sent && state_ != TcpState::time_wait)
        emit(flag::rst | flag::ack, snd_nxt_, 0, 0);
    go_closed(true);
}

// Sends what the windows allow: new data, then our FIN.
void TcpConnection::transmit(Millis now) {
    if (state_ == TcpState::syn_sent || state_ == TcpState::syn_received ||
        state_ == TcpState::closed || state_ == TcpState::time_wait)
        return;
    const std::uint32_t window = std::min(snd_wnd_, cwnd_);
    while (true) {
        const std::uint32_t in_flight = snd_nxt_ - snd_una_;
        const std::uint32_t sent_data = snd_nxt_ - data_start();
        const std::uint32_t buffered = static_cast<std::uint32_t>(send_buffer_.size());
        if (sent_data > buffered) break;  // only the FIN is beyond the data
        const std::uint32_t unsent = buffered - sent_data;
        if (unsent == 0) break;
        if (in_flight >= window) break;
        std::uint32_t length = std::min<std::uint32_t>({unsent, send_mss_, window - in_flight});
        // Nagle-free, but no silly-window segments while data is in flight.
        if (length < send_mss_ && length < unsent && in_flight > 0) break;
        const bool last = length == unsent && fin_queued_;
        emit(static_cast<std::uint8_t>(flag::ack | flag::psh | (last ? flag::fin : 0)), snd_nxt_,
             length, now);
        snd_nxt_ += length + (last ? 1 : 0);
        if (last) return;
    }
    if (fin_queued_ && !fin_sent() && snd_nxt_ == fin_seq_) {
        emit(flag::fin | flag::ack, snd_nxt_, 0, now);
        snd_nxt_ += 1;
    }
}

void TcpConnection::emit(std::uint8_t flags, std::uint32_t seq, std::size_t length, Millis now) {
    OutSegment out;
    out.header.seq = seq;
    out.header.flags = flags;
    if (flags & flag::ack) out.header.ack = rcv_nxt_;
    const bool syn = (flags & flag::syn) != 0;
    const std::uint32_t window =
        syn ? std::min<std::uint32_t>(receive_window(), 65535)
            : std::min<std::uint32_t>(receive_window() >> rcv_wscale_, 65535);
    out.header.window = static_cast<std::uint16_t>(window);
    if (syn) {
        out.header.options.mss = config_.mss;
        // Offer scaling and timestamps on our SYN; echo what was agreed on a SYN-ACK.
        const bool answering = (flags & flag::ack) != 0;
        if (!answering || rcv_wscale_ != 0 || snd_wscale_ != 0)
            out.header.options.window_scale = static_cast<std::int8_t>(config_.window_scale);
        if (answering && rcv_wscale_ == 0 && snd_wscale_ == 0) out.header.options.window_scale = -1;
        out.header.options.timestamps = answering ? timestamps_ : config_.timestamps;
    } else {
        out.header.options.timestamps = timestamps_;
    }
    if (out.header.options.timestamps) {
        out.header.options.ts_value = ts_value(now);
        out.header.options.ts_echo = (flags & flag::ack) ? ts_recent_ : 0;
    }
    // A segment that carries our ACK makes the pure ACKs still waiting in this
    // batch redundant: the echo after a request, the FIN after the peer's FIN
    // go out as one segment, as from a kernel. Duplicate ACKs that report a
    // hole stay: the peer's fast retransmit counts them.
    // A keepalive probe (below snd_una) is out of the peer's window, so the
    // peer ignores its ACK field: it neither replaces nor is replaced.
    const bool keepalive_probe = length == 0 && !(flags & flag::syn) && seq_lt(seq, snd_una_);
    if ((flags & flag::ack) && !keepalive_probe && out_of_order_.empty()) {
        std::erase_if(output_, [this](const OutSegment& queued) {
            return queued.header.flags == flag::ack && queued.payload_length == 0 &&
                   !seq_lt(queued.header.seq, snd_una_);
        });
    }
    out.payload_length = length;
    output_.push_back(out);
    if ((flags & flag::ack) && !keepalive_probe) {
        delayed_ack_deadline_ = no_timer;
        unacked_full_segments_ = 0;
    }
    const bool occupies = syn || (flags & flag::fin) || length > 0;
    if (occupies && seq_ge(seq, snd_nxt_)) {
        if (rto_deadline_ == no_timer) rto_deadline_ = now + rto_ms_;
        if (!timing_ && !timestamps_) {
            timing_ = true;
            timed_seq_ = seq;
            timed_at_ = now;
        }
    }
    if (syn) snd_nxt_ = iss_ + 1;
    const std::uint32_t end =
        seq + static_cast<std::uint32_t>(length) + (syn ? 1 : 0) + ((flags & flag::fin) ? 1 : 0);
    if (occupies && seq_gt(end, snd_max_)) snd_max_ = end;
}

void TcpConnection::copy_payload(const OutSegment& segment, std::span<std::uint8_t> out) const {
    const std::size_t offset = segment.header.seq - data_start();
    send_buffer_.peek(offset, out.first(std::min(out.size(), segment.payload_length)));
}

void TcpConnection::retransmit_first(Millis now) {
    ++stats_.retransmissions;
    timing_ = false;  // Karn: never time a retransmitted segment
    if (!syn_acked_) {
        emit(state_ == TcpState::syn_sent ? flag::syn
                                          : static_cast<std::uint8_t>(flag::syn | flag::ack),
             iss_, 0, now);
        return;
    }
    const bool fin_out = fin_queued_ && seq_gt(snd_max_, fin_seq_);
    const std::uint32_t sent_data = snd_max_ - snd_una_ - (fin_out ? 1 : 0);
    const std::uint32_t length = std::min<std::uint32_t>(sent_data, send_mss_);
    const bool fin = fin_out && length == sent_data;
    emit(static_cast<std::uint8_t>(flag::ack | (length ? flag::psh : 0) | (fin ? flag::fin : 0)),
         snd_una_, length, now);
}

void TcpConnection::update_rtt(std::uint32_t sample_ms) {
    // RFC 6298 2.2 / 2.3 (alpha 1/8, beta 1/4, K 4, G = 1 ms).
    if (!rtt_measured_) {
        srtt_ms_ = sample_ms;
        rttvar_ms_ = sample_ms / 2;
        rtt_measured_ = true;
    } else {
        const std::uint32_t delta =
            srtt_ms_ > sample_ms ? srtt_ms_ - sample_ms : sample_ms - srtt_ms_;
        rttvar_ms_ = (3 * rttvar_ms_ + delta) / 4;
        srtt_ms_ = (7 * srtt_ms_ + sample_ms) / 8;
    }
    rto_ms_ = std::clamp<std::uint32_t>(srtt_ms_ + std::max<std::uint32_t>(1, 4 * rttvar_ms_),
                                        config_.rto_min_ms, config_.rto_max_ms);
}

void TcpConnection::on_timer(Millis now) {
    if (state_ == TcpState::closed) return;
    if (time_wait_deadline_ != no_timer && now >= time_wait_deadline_) {
        go_closed(false);
        return;
    }
    if (rto_deadline_ != no_timer && now >= rto_deadline_) {
        if (++retransmissions_in_row_ > config_.max_retransmissions) {
            abort();
            return;
        }
        // RFC 6298 5.4-5.6 and RFC 5681 (3.1): back off, restart slow start.
        ssthresh_ = std::max<std::uint32_t>((snd_nxt_ - snd_una_) / 2, 2u * send_mss_);
        cwnd_ = send_mss_;
        in_recovery_ = false;
        duplicate_acks_ = 0;
        rto_ms_ = std::min(rto_ms_ * 2, config_.rto_max_ms);
        rto_deadline_ = no_timer;
        if (syn_acked_) {
            // Go back N: resend from the first unacknowledged byte as cwnd allows.
            ++stats_.retransmissions;
            timing_ = false;
            snd_nxt_ = snd_una_;
            transmit(now);
        } else {
            retransmit_first(now);
        }
        rto_deadline_ = now + rto_ms_;
    }
    if (delayed_ack_deadline_ != no_timer && now >= delayed_ack_deadline_) emit_ack(now);
    if (keepalive_deadline_ != no_timer && now >= keepalive_deadline_) keepalive(now);
}

void TcpConnection::keepalive(Millis now) {
    keepalive_deadline_ = no_timer;
    if (state_ != TcpState::established && state_ != TcpState::close_wait) return;
    if (now - last_heard_ < config_.keepalive_idle_ms) {  // heard from since: not idle
        keepalive_deadline_ = last_heard_ + config_.keepalive_idle_ms;
        return;
    }
    if (snd_una_ != snd_nxt_) {  // our data in flight: the retransmission timer judges the peer
        keepalive_deadline_ = now + config_.keepalive_idle_ms;
        return;
    }
    if (keepalive_probes_sent_ >= config_.keepalive_probes) {
        abort();
        return;
    }
    // One below what the peer expects: any live TCP answers it with an ACK.
    ++keepalive_probes_sent_;
    ++stats_.keepalive_probes;
    emit(flag::ack, snd_nxt_ - 1, 0, now);
    keepalive_deadline_ = now + config_.keepalive_interval_ms;
}

TcpConnection::Millis TcpConnection::next_timer() const {
    return std::min(
        {rto_deadline_, delayed_ack_deadline_, time_wait_deadline_, keepalive_deadline_});
}

void TcpConnection::enter_time_wait(Millis now) {
    state_ = TcpState::time_wait;
    rto_deadline_ = keepalive_deadline_ = no_timer;
    time_wait_deadline_ = now + config_.time_wait_ms;
}

TimeWaitEntry TcpConnection::time_wait_entry(std::uint64_t key) const {
    TimeWaitEntry entry;
    entry.key = key;
    entry.deadline_ms = time_wait_deadline_;
    entry.snd_nxt = snd_nxt_;
    entry.rcv_nxt = rcv_nxt_;
    entry.window_bytes = receive_window();
    entry.window_field =
        static_cast<std::uint16_t>(std::min<std::uint32_t>(receive_window() >> rcv_wscale_, 65535));
    entry.timestamps = timestamps_;
    entry.ts_recent = ts_recent_;
    entry.ts_offset = config_.timestamp_offset;
    return entry;
}

void TcpConnection::go_closed(bool by_reset) {
    state_ = TcpState::closed;
    reset_ = reset_ || by_reset;
    rto_deadline_ = delayed_ack_deadline_ = time_wait_deadline_ = keepalive_deadline_ = no_timer;
}

}  // namespace portcullis::dataplane::tcp
