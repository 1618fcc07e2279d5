// The userspace TCP state machine fed segment by segment: what it emits for
// each input, in every state that matters to a server.
#include "dataplane/tcp/tcp_connection.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <numeric>

#include "base/byte_queue.hpp"
#include "dataplane/tcp/syn_cookie.hpp"
#include "dataplane/tcp/time_wait_table.hpp"

namespace portcullis::dataplane::tcp {
namespace {

constexpr std::uint32_t peer_iss = 1000;
constexpr std::uint32_t our_iss = 5000;

TcpSegment syn_from_peer() {
    TcpSegment syn;
    syn.seq = peer_iss;
    syn.flags = flag::syn;
    syn.window = 65535;
    syn.options.mss = 1460;
    syn.options.window_scale = 7;
    return syn;
}

// A connection accepted from a peer and driven to ESTABLISHED; `sent` is what
// it emitted last.
struct Harness {
    TcpConfig config;
    std::unique_ptr<TcpConnection> tcp;
    std::vector<OutSegment> sent;
    std::uint64_t now = 0;

    explicit Harness(TcpConfig c = {}, bool timestamps = false) : config(c) {
        config.timestamps = timestamps;
        auto syn = syn_from_peer();
        syn.options.timestamps = timestamps;
        syn.options.ts_value = 77;
        tcp = std::make_unique<TcpConnection>(config, syn, our_iss, now);
        drain();
    }
    void drain() {
        sent.assign(tcp->output().begin(), tcp->output().end());
        tcp->clear_output();
    }
    TcpSegment from_peer(std::uint32_t seq, std::uint8_t flags, std::uint32_t ack,
                         std::span<const std::uint8_t> payload = {}, std::uint16_t window = 1024) {
        TcpSegment s;
        s.seq = seq;
        s.ack = ack;
        s.flags = flags;
        s.window = window;  // scaled by 2^7: 128 KiB
        s.payload = payload;
        return s;
    }
    void input(const TcpSegment& s) {
        tcp->input(s, now);
        drain();
    }
    void advance(std::uint64_t ms) {
        now += ms;
        if (tcp->next_timer() <= now) tcp->on_timer(now);
        drain();
    }
    void establish() { input(from_peer(peer_iss + 1, flag::ack, our_iss + 1)); }
};

std::vector<std::uint8_t> bytes(std::size_t n, std::uint8_t first = 0) {
    std::vector<std::uint8_t> v(n);
    std::iota(v.begin(), v.end(), first);
    return v;
}

TEST(TcpHandshake, PassiveOpenAnswersSynAckWithNegotiatedOptions) {
    Harness h;
    ASSERT_EQ(h.sent.size(), 1u);
    const auto& synack = h.sent[0].header;
    EXPECT_EQ(synack.flags, flag::syn | flag::ack);
    EXPECT_EQ(synack.seq, our_iss);
    EXPECT_EQ(synack.ack, peer_iss + 1);
    EXPECT_EQ(synack.options.mss, 1460);
    EXPECT_EQ(synack.options.window_scale, 7);
    EXPECT_EQ(h.tcp->state(), TcpState::syn_received);
    h.establish();
    EXPECT_EQ(h.tcp->state(), TcpState::established);
    EXPECT_TRUE(h.sent.empty()) << "the final ACK of the handshake needs no answer";
}

TEST(TcpHandshake, NoWindowScaleOrTimestampsUnlessThePeerOffersThem) {
    TcpConfig config;
    auto syn = syn_from_peer();
    syn.options.window_scale = -1;
    syn.options.mss = 0;  // absent: 536
    TcpConnection tcp(config, syn, our_iss, 0);
    const auto synack = tcp.output()[0].header;
    EXPECT_EQ(synack.options.window_scale, -1);
    EXPECT_FALSE(synack.options.timestamps);
    EXPECT_EQ(tcp.effective_mss(), 536);
}

TEST(TcpHandshake, LostSynAckIsRetransmittedWithBackoff) {
    Harness h;
    h.advance(999);
    EXPECT_TRUE(h.sent.empty());
    h.advance(1);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.flags, flag::syn | flag::ack);
    EXPECT_EQ(h.tcp->rto_ms(), 2000u);
}

TEST(TcpHandshake, ActiveOpenCompletesOnSynAck) {
    TcpConfig config;
    TcpConnection tcp(config, our_iss, 0);
    ASSERT_EQ(tcp.output().size(), 1u);
    EXPECT_EQ(tcp.output()[0].header.flags, flag::syn);
    tcp.clear_output();
    auto synack = syn_from_peer();
    synack.flags = flag::syn | flag::ack;
    synack.ack = our_iss + 1;
    tcp.input(synack, 5);
    EXPECT_EQ(tcp.state(), TcpState::established);
    ASSERT_EQ(tcp.output().size(), 1u);
    EXPECT_EQ(tcp.output()[0].header.flags, flag::ack);
    EXPECT_EQ(tcp.output()[0].header.ack, peer_iss + 1);
}

TEST(TcpHandshake, RstAnsweringOurSynMeansRefused) {
    TcpConfig config;
    TcpConnection tcp(config, our_iss, 0);
    tcp.clear_output();
    TcpSegment rst;
    rst.flags = flag::rst | flag::ack;
    rst.ack = our_iss + 1;
    tcp.input(rst, 1);
    EXPECT_EQ(tcp.state(), TcpState::closed);
    EXPECT_TRUE(tcp.reset());
}

// Past the quickack segments at the start, ACKs wait for the delay.
TcpConfig without_quickack() {
    TcpConfig config;
    config.quickack_segments = 0;
    return config;
}

// A backend's TIME_WAIT of an earlier connection on the same ports answers
// our SYN with an ACK for the old one.
TEST(TcpHandshake, StaleAckToOurSynIsResetAndTheSynSentAgainAtOnce) {
    TcpConfig config;
    TcpConnection tcp(config, our_iss, 0);
    tcp.clear_output();
    TcpSegment stale;
    stale.flags = flag::ack;
    stale.seq = 777;
    stale.ack = 123456;  // the old connection's sequence space
    tcp.input(stale, 1);
    ASSERT_EQ(tcp.output().size(), 2u);
    EXPECT_EQ(tcp.output()[0].header.flags, flag::rst);
    EXPECT_EQ(tcp.output()[0].header.seq, 123456u) << "RFC 9293: the RST takes the ACK's number";
    EXPECT_EQ(tcp.output()[1].header.flags, flag::syn);
    EXPECT_EQ(tcp.output()[1].header.seq, our_iss);
    EXPECT_EQ(tcp.state(), TcpState::syn_sent);
    tcp.clear_output();
    tcp.input(stale, 2);
    ASSERT_EQ(tcp.output().size(), 1u) << "once only: after that the timer paces the SYN";
    EXPECT_EQ(tcp.output()[0].header.flags, flag::rst);
}

TEST(TcpTimestamps, TsvalIsTheClockPlusTheOffsetSoItRisesAcrossConnections) {
    TcpConfig config;
    config.timestamp_offset = 4'000'000'000u;  // wraps: comparisons are modulo 2^32
    TcpConnection first(config, our_iss, 1000);
    TcpConnection second(config, our_iss + 99, 1005);
    const auto first_tsval = first.output()[0].header.options.ts_value;
    const auto second_tsval = second.output()[0].header.options.ts_value;
    EXPECT_EQ(first_tsval, static_cast<std::uint32_t>(1001u + 4'000'000'000u));
    EXPECT_TRUE(seq_gt(second_tsval, first_tsval))
        << "a peer's TIME_WAIT takes the later SYN only with a newer timestamp";
}

TEST(TcpData, FirstSegmentsAreAckedAtOnce) {
    Harness h;
    h.establish();
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::psh, our_iss + 1, bytes(100)));
    ASSERT_EQ(h.sent.size(), 1u) << "quickack: a handshake flight is not held for 40 ms";
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 101);
}

// What one poll produces is one batch: the owner answers before the batch
// is sent, so the ACK rides on the answer instead of going out alone.
TEST(TcpData, AnAnswerInTheSameBatchCarriesTheAck) {
    Harness h;
    h.establish();
    h.tcp->input(h.from_peer(peer_iss + 1, flag::ack | flag::psh, our_iss + 1, bytes(1)), h.now);
    const auto answer = bytes(1);
    ASSERT_EQ(h.tcp->send(answer), 1u);
    h.tcp->push(h.now);
    h.drain();
    ASSERT_EQ(h.sent.size(), 1u) << "no separate pure ACK before the answer";
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 2);
    EXPECT_EQ(h.sent[0].payload_length, 1u);
}

TEST(TcpClose, OurFinInTheSameBatchCarriesTheAckOfTheirs) {
    Harness h;
    h.establish();
    h.tcp->input(h.from_peer(peer_iss + 1, flag::ack | flag::fin, our_iss + 1), h.now);
    h.tcp->close();
    h.tcp->push(h.now);
    h.drain();
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.flags, flag::fin | flag::ack);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 2);
    EXPECT_EQ(h.tcp->state(), TcpState::last_ack);
}

TEST(TcpData, DuplicateAcksForAHoleAreNotFoldedIntoData) {
    Harness h;
    h.establish();
    const auto data = bytes(100);
    h.tcp->input(h.from_peer(peer_iss + 101, flag::ack, our_iss + 1, data), h.now);
    h.tcp->input(h.from_peer(peer_iss + 201, flag::ack, our_iss + 1, data), h.now);
    ASSERT_EQ(h.tcp->send(bytes(10)), 10u);
    h.tcp->push(h.now);
    h.drain();
    ASSERT_EQ(h.sent.size(), 3u)
        << "two duplicate ACKs the peer's fast retransmit counts, then data";
    EXPECT_EQ(h.sent[0].payload_length, 0u);
    EXPECT_EQ(h.sent[1].payload_length, 0u);
    EXPECT_EQ(h.sent[1].header.ack, peer_iss + 1);
    EXPECT_EQ(h.sent[2].payload_length, 10u);
}

TEST(TcpData, InOrderDataIsDeliveredAndAckedAfterTheDelay) {
    Harness h(without_quickack());
    h.establish();
    const auto data = bytes(100);
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::psh, our_iss + 1, data));
    EXPECT_TRUE(h.sent.empty()) << "one small segment: delayed ACK";
    std::vector<std::uint8_t> got(200);
    EXPECT_EQ(h.tcp->receive(got), 100u);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), got.begin()));
    h.advance(40);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 101);
}

TEST(TcpData, EverySecondFullSegmentIsAckedAtOnce) {
    Harness h(without_quickack());
    h.establish();
    const auto mss = h.tcp->effective_mss();
    const auto data = bytes(mss);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));
    EXPECT_TRUE(h.sent.empty());
    h.input(h.from_peer(peer_iss + 1 + mss, flag::ack, our_iss + 1, data));
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 1 + 2u * mss);
}

TEST(TcpData, OutOfOrderSegmentsAreQueuedAndDeliveredInOrder) {
    Harness h;
    h.establish();
    const auto first = bytes(10, 0);
    const auto second = bytes(10, 10);
    h.input(h.from_peer(peer_iss + 11, flag::ack, our_iss + 1, second));
    ASSERT_EQ(h.sent.size(), 1u) << "a hole: duplicate ACK at once";
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 1);
    EXPECT_EQ(h.tcp->readable(), 0u);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, first));
    ASSERT_EQ(h.sent.size(), 1u) << "the hole filled: ACK at once";
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 21);
    std::vector<std::uint8_t> got(20);
    ASSERT_EQ(h.tcp->receive(got), 20u);
    EXPECT_EQ(got, bytes(20));
}

TEST(TcpData, RetransmittedOldDataIsAnsweredWithAnAck) {
    Harness h;
    h.establish();
    const auto data = bytes(10);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 11);
    EXPECT_EQ(h.tcp->readable(), 10u) << "no duplicate bytes";
}

// The windows are 256 KiB each way, but only bytes held take memory: an
// idle connection holds no pool block.
TEST(TcpMemory, BuffersHoldPoolBlocksOnlyWhileTheyHoldBytes) {
    base::BufferPool pool;
    TcpConfig config;
    config.buffers = &pool;
    Harness h(config);
    h.establish();
    EXPECT_EQ(pool.bytes_in_use(), 0u);
    EXPECT_EQ(h.tcp->receive_window_bytes(), config.receive_buffer);

    const auto data = bytes(100);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));
    EXPECT_EQ(pool.bytes_in_use(), pool.block_bytes());
    std::vector<std::uint8_t> got(100);
    ASSERT_EQ(h.tcp->receive(got), 100u);
    EXPECT_EQ(pool.bytes_in_use(), 0u) << "a drained receive buffer kept its block";

    const auto answer = bytes(3000);
    ASSERT_EQ(h.tcp->send(answer), answer.size());
    EXPECT_EQ(pool.bytes_in_use(), pool.block_bytes());
    h.input(h.from_peer(peer_iss + 101, flag::ack, our_iss + 1));  // prompts transmit
    h.input(h.from_peer(peer_iss + 101, flag::ack, our_iss + 1 + 3000));
    EXPECT_EQ(pool.bytes_in_use(), 0u) << "acknowledged bytes kept their block";
}

// A spent budget: an in-order segment is not taken (our ACK says so at once,
// and the peer's retransmission lands once blocks are back); an out-of-order
// one is dropped instead of held. Nothing past the budget is ever held.
TEST(TcpMemory, ASpentBudgetTakesNothingMoreAndThePeerRetransmits) {
    base::BufferPool pool(base::BufferPoolLimits{.budget_bytes = 8 * 17 * 1024});
    TcpConfig config;
    config.buffers = &pool;
    Harness h(config);
    h.establish();
    auto hog = std::make_unique<base::ByteQueue>(pool, base::BufferPool::Use::ingress,
                                                 std::size_t{1} << 20);
    const auto filler = bytes(std::size_t{1} << 20);
    hog->append(filler);
    const auto held = pool.bytes_in_use();

    const auto data = bytes(100);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));
    EXPECT_EQ(h.tcp->readable(), 0u);
    ASSERT_EQ(h.sent.size(), 1u) << "nothing taken: the ACK goes at once";
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 1);
    h.input(h.from_peer(peer_iss + 201, flag::ack, our_iss + 1, data));
    EXPECT_EQ(h.tcp->stats().out_of_order_dropped, 1u);
    EXPECT_EQ(pool.bytes_in_use(), held);

    hog.reset();
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, data));  // the retransmission
    EXPECT_EQ(h.tcp->readable(), 100u);
}

// Out-of-order segments are memory the connection holds: they count in the
// budget until the hole is filled.
TEST(TcpMemory, OutOfOrderSegmentsCountInTheBudgetUntilDelivered) {
    base::BufferPool pool;
    TcpConfig config;
    config.buffers = &pool;
    Harness h(config);
    h.establish();
    h.input(h.from_peer(peer_iss + 11, flag::ack, our_iss + 1, bytes(10, 10)));
    EXPECT_EQ(pool.bytes_in_use(), 10u);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, bytes(10, 0)));
    EXPECT_EQ(pool.bytes_in_use(), pool.block_bytes()) << "the held segment's charge stayed";
    std::vector<std::uint8_t> got(20);
    ASSERT_EQ(h.tcp->receive(got), 20u);
    EXPECT_EQ(got, bytes(20));
    EXPECT_EQ(pool.bytes_in_use(), 0u);
}

TEST(TcpSend, DataIsSegmentedByMssAndRetransmittedAfterTimeout) {
    Harness h;
    h.establish();
    const auto mss = h.tcp->effective_mss();
    const auto data = bytes(static_cast<std::size_t>(mss) + 100);
    ASSERT_EQ(h.tcp->send(data), data.size());
    h.tcp->on_timer(h.now);                                      // nothing due
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));  // prompts transmit
    ASSERT_EQ(h.sent.size(), 2u);
    EXPECT_EQ(h.sent[0].header.seq, our_iss + 1);
    EXPECT_EQ(h.sent[0].payload_length, mss);
    EXPECT_EQ(h.sent[1].header.seq, our_iss + 1 + mss);
    EXPECT_EQ(h.sent[1].payload_length, 100u);
    const auto rto = h.tcp->rto_ms();
    h.advance(rto);
    ASSERT_GE(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.seq, our_iss + 1) << "the first unacknowledged byte again";
    EXPECT_EQ(h.tcp->rto_ms(), 2 * rto);
    EXPECT_EQ(h.tcp->stats().retransmissions, 1u);
    // The peer acknowledges everything: nothing left in flight, no timer.
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1 + mss + 100));
    EXPECT_EQ(h.tcp->next_timer(), TcpConnection::no_timer);
}

TEST(TcpSend, ThreeDuplicateAcksTriggerFastRetransmit) {
    Harness h;
    h.establish();
    const auto mss = h.tcp->effective_mss();
    ASSERT_EQ(h.tcp->send(bytes(5u * mss)), 5u * mss);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));
    ASSERT_EQ(h.sent.size(), 5u);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1 + mss));  // first acked
    for (int i = 0; i < 2; ++i) {
        h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1 + mss));
        EXPECT_TRUE(h.sent.empty());
    }
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1 + mss));  // third duplicate
    ASSERT_GE(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.seq, our_iss + 1 + mss);
    EXPECT_EQ(h.tcp->stats().fast_retransmissions, 1u);
}

TEST(TcpSend, PeerWindowLimitsWhatIsSent) {
    Harness h;
    h.establish();
    ASSERT_EQ(h.tcp->send(bytes(3000)), 3000u);
    // Window 8 << 7 = 1024 bytes.
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1, {}, 8));
    std::size_t sent = 0;
    for (const auto& s : h.sent) sent += s.payload_length;
    EXPECT_EQ(sent, 1024u);
    // Acked and the window reopened: the rest goes.
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1 + 1024, {}, 1024));
    sent = 0;
    for (const auto& s : h.sent) sent += s.payload_length;
    EXPECT_EQ(sent, 3000u - 1024u);
}

TEST(TcpSend, PayloadComesFromTheSendBufferWithoutCopies) {
    Harness h;
    h.establish();
    const auto data = bytes(50, 7);
    h.tcp->send(data);
    h.tcp->input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1), h.now);
    ASSERT_EQ(h.tcp->output().size(), 1u);
    std::vector<std::uint8_t> wire(50);
    h.tcp->copy_payload(h.tcp->output()[0], wire);
    EXPECT_EQ(wire, data);
}

TEST(TcpClose, PassiveCloseGoesThroughCloseWaitAndLastAck) {
    Harness h;
    h.establish();
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::fin, our_iss + 1));
    EXPECT_EQ(h.tcp->state(), TcpState::close_wait);
    EXPECT_TRUE(h.tcp->peer_closed());
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 2);
    h.tcp->close();
    h.input(h.from_peer(peer_iss + 2, flag::ack, our_iss + 1));
    EXPECT_EQ(h.tcp->state(), TcpState::last_ack);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_TRUE(h.sent[0].header.has(flag::fin));
    h.input(h.from_peer(peer_iss + 2, flag::ack, our_iss + 2));
    EXPECT_EQ(h.tcp->state(), TcpState::closed);
    EXPECT_FALSE(h.tcp->reset());
}

TEST(TcpClose, ActiveCloseEndsInTimeWaitThenClosed) {
    TcpConfig config;
    config.time_wait_ms = 1000;
    Harness h(config);
    h.establish();
    h.tcp->send(bytes(10));
    h.tcp->close();
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_TRUE(h.sent[0].header.has(flag::fin)) << "FIN rides on the last data";
    EXPECT_EQ(h.tcp->state(), TcpState::fin_wait_1);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 12));
    EXPECT_EQ(h.tcp->state(), TcpState::fin_wait_2);
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::fin, our_iss + 12));
    EXPECT_EQ(h.tcp->state(), TcpState::time_wait);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 2);
    h.advance(999);
    EXPECT_EQ(h.tcp->state(), TcpState::time_wait);
    h.advance(1);
    EXPECT_EQ(h.tcp->state(), TcpState::closed);
}

// The compact entry a connection in TIME_WAIT leaves behind answers the
// peer's FIN again exactly as the connection itself does.
TEST(TcpClose, TimeWaitEntryAnswersTheFinAgainAsTheConnectionDoes) {
    TcpConfig config;
    config.time_wait_ms = 1000;
    config.timestamp_offset = 4242;
    Harness h(config, true);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));
    h.tcp->close();
    h.tcp->push(h.now);
    h.drain();
    auto ack_of_fin = h.from_peer(peer_iss + 1, flag::ack, our_iss + 2);
    ack_of_fin.options.timestamps = true;
    ack_of_fin.options.ts_value = 90;
    h.input(ack_of_fin);
    auto fin = h.from_peer(peer_iss + 1, flag::ack | flag::fin, our_iss + 2);
    fin.options.timestamps = true;
    fin.options.ts_value = 91;
    h.input(fin);
    ASSERT_EQ(h.tcp->state(), TcpState::time_wait);

    TimeWaitTable table(config.time_wait_ms);
    const std::uint64_t key = 0x0a000002c0000050ull;
    table.insert(h.tcp->time_wait_entry(key));
    ASSERT_NE(table.find(key), nullptr);
    EXPECT_EQ(table.find(key)->deadline_ms, h.now + 1000);

    h.now += 300;
    fin.options.ts_value = 95;  // the same FIN, sent again
    const auto from_table = table.answer(key, fin, h.now);
    h.input(fin);
    ASSERT_EQ(h.sent.size(), 1u);
    ASSERT_TRUE(from_table.has_value());
    const auto& from_connection = h.sent[0].header;
    EXPECT_EQ(from_table->flags, from_connection.flags);
    EXPECT_EQ(from_table->seq, from_connection.seq);
    EXPECT_EQ(from_table->ack, from_connection.ack);
    EXPECT_EQ(from_table->window, from_connection.window);
    EXPECT_TRUE(from_table->options.timestamps);
    EXPECT_EQ(from_table->options.ts_value, from_connection.options.ts_value);
    EXPECT_EQ(from_table->options.ts_echo, from_connection.options.ts_echo);
    EXPECT_EQ(from_table->ack, peer_iss + 2);
}

TEST(TcpClose, SimultaneousCloseGoesThroughClosing) {
    Harness h;
    h.establish();
    h.tcp->close();
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));  // our FIN goes out
    ASSERT_EQ(h.sent.size(), 1u);
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::fin, our_iss + 1));  // theirs, ours unacked
    EXPECT_EQ(h.tcp->state(), TcpState::closing);
    h.input(h.from_peer(peer_iss + 2, flag::ack, our_iss + 2));
    EXPECT_EQ(h.tcp->state(), TcpState::time_wait);
}

TEST(TcpReset, OnlyAnExactRstResetsOthersGetAChallengeAck) {
    Harness h;
    h.establish();
    h.input(h.from_peer(peer_iss + 100, flag::rst, 0));
    EXPECT_EQ(h.tcp->state(), TcpState::established);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.flags, flag::ack);
    h.input(h.from_peer(peer_iss + 1, flag::rst, 0));
    EXPECT_EQ(h.tcp->state(), TcpState::closed);
    EXPECT_TRUE(h.tcp->reset());
}

TEST(TcpReset, OutOfWindowSegmentsAreAnsweredNotAccepted) {
    Harness h;
    h.establish();
    h.input(h.from_peer(peer_iss + 1'000'000, flag::ack, our_iss + 1, bytes(10)));
    EXPECT_EQ(h.tcp->readable(), 0u);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.ack, peer_iss + 1);
}

TEST(TcpReset, RetransmissionLimitAbortsWithRst) {
    TcpConfig config;
    config.max_retransmissions = 2;
    Harness h(config);
    h.establish();
    h.tcp->send(bytes(10));
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));
    for (int i = 0; i < 3 && h.tcp->state() != TcpState::closed; ++i)
        h.advance(h.tcp->next_timer() - h.now);
    EXPECT_EQ(h.tcp->state(), TcpState::closed);
    EXPECT_TRUE(h.tcp->reset());
    ASSERT_FALSE(h.sent.empty());
    EXPECT_TRUE(h.sent.back().header.has(flag::rst));
}

TcpConfig with_keepalive() {
    TcpConfig config;
    config.keepalive_idle_ms = 1000;
    config.keepalive_interval_ms = 100;
    config.keepalive_probes = 3;
    return config;
}

TEST(TcpKeepalive, AnIdleConnectionIsProbedAndAnAnswerKeepsItOpen) {
    Harness h(with_keepalive());
    h.establish();
    h.advance(999);
    EXPECT_TRUE(h.sent.empty());
    h.advance(1);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.flags, flag::ack);
    EXPECT_EQ(h.sent[0].header.seq, our_iss) << "one below snd_nxt: the peer must answer";
    EXPECT_EQ(h.sent[0].payload_length, 0u);
    EXPECT_EQ(h.tcp->stats().keepalive_probes, 1u);
    h.advance(50);
    h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));  // the peer's answer
    h.advance(100);
    EXPECT_TRUE(h.sent.empty()) << "answered: no second probe";
    h.advance(899);  // t = 2049
    EXPECT_TRUE(h.sent.empty());
    h.advance(1);
    ASSERT_EQ(h.sent.size(), 1u) << "idle again a full period after the answer (t = 1050)";
    EXPECT_EQ(h.tcp->state(), TcpState::established);
}

// With the interval as long as the idle time, each answer arrives a full
// idle period before the next check: the answer itself must reset the count.
TEST(TcpKeepalive, AnsweredProbesNeverResetEvenWithALongInterval) {
    auto config = with_keepalive();
    config.keepalive_interval_ms = config.keepalive_idle_ms;
    Harness h(config);
    h.establish();
    for (int round = 0; round < 5; ++round) {
        h.advance(1000);
        ASSERT_EQ(h.sent.size(), 1u) << "round " << round;
        EXPECT_EQ(h.sent[0].header.seq, our_iss);
        h.input(h.from_peer(peer_iss + 1, flag::ack, our_iss + 1));  // answered at once
    }
    EXPECT_EQ(h.tcp->state(), TcpState::established);
    EXPECT_FALSE(h.tcp->reset());
}

TEST(TcpKeepalive, UnansweredProbesResetTheConnection) {
    Harness h(with_keepalive());
    h.establish();
    h.advance(1000);
    for (int probe = 2; probe <= 3; ++probe) {
        h.advance(100);
        ASSERT_EQ(h.sent.size(), 1u);
        EXPECT_EQ(h.sent[0].header.flags, flag::ack);
    }
    EXPECT_EQ(h.tcp->stats().keepalive_probes, 3u);
    h.advance(100);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_TRUE(h.sent[0].header.flags & flag::rst);
    EXPECT_EQ(h.tcp->state(), TcpState::closed);
    EXPECT_TRUE(h.tcp->reset());
}

TEST(TcpKeepalive, SegmentsOutsideTheWindowDoNotCountAsHeard) {
    Harness h(with_keepalive());
    h.establish();
    h.advance(500);
    h.input(h.from_peer(peer_iss + 900'000, flag::ack, our_iss + 1, bytes(10)));  // a stray
    ASSERT_EQ(h.sent.size(), 1u) << "answered with an ACK saying where we are";
    h.advance(500);
    ASSERT_EQ(h.sent.size(), 1u) << "still probed at 1000 ms: a forged stray keeps nothing alive";
    EXPECT_EQ(h.sent[0].header.seq, our_iss);
}

TEST(TcpKeepalive, TrafficFromThePeerDefersTheProbeAndZeroIdleTurnsItOff) {
    Harness h(with_keepalive());
    h.establish();
    h.advance(500);
    h.input(h.from_peer(peer_iss + 1, flag::ack | flag::psh, our_iss + 1, bytes(10)));
    h.advance(500);
    EXPECT_TRUE(h.sent.empty()) << "heard from 500 ms ago: not idle";
    h.advance(500);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.seq, our_iss);

    Harness off;  // keepalive_idle_ms = 0
    off.establish();
    EXPECT_EQ(off.tcp->next_timer(), TcpConnection::no_timer);
}

TEST(TcpRtt, TimestampsGiveAnRttEstimateAndEchoTsRecent) {
    Harness h({}, true);
    ASSERT_TRUE(h.sent[0].header.options.timestamps);
    EXPECT_EQ(h.sent[0].header.options.ts_echo, 77u);
    auto ack = h.from_peer(peer_iss + 1, flag::ack, our_iss + 1);
    ack.options.timestamps = true;
    ack.options.ts_value = 78;
    ack.options.ts_echo = h.sent[0].header.options.ts_value;
    h.now = 30;
    h.input(ack);
    EXPECT_EQ(h.tcp->state(), TcpState::established);
    h.tcp->send(bytes(10));
    auto poke = ack;
    poke.options.ts_echo = 0;
    h.input(poke);
    ASSERT_EQ(h.sent.size(), 1u);
    EXPECT_EQ(h.sent[0].header.options.ts_echo, 78u);
    // The ACK of the data echoes our timestamp 20 ms later: RTO = max(min, srtt + 4 rttvar).
    auto data_ack = h.from_peer(peer_iss + 1, flag::ack, our_iss + 11);
    data_ack.options.timestamps = true;
    data_ack.options.ts_value = 79;
    data_ack.options.ts_echo = h.sent[0].header.options.ts_value;
    h.now = 50;
    h.input(data_ack);
    EXPECT_EQ(h.tcp->rto_ms(), 200u) << "20 ms samples: the 200 ms floor";
}

TEST(TcpRtt, AnEchoFromTheFutureIsNoSample) {
    TcpConfig config;
    config.rto_min_ms = 1;  // so the estimate shows through
    Harness h(config, true);
    auto ack = h.from_peer(peer_iss + 1, flag::ack, our_iss + 1);
    ack.options.timestamps = true;
    ack.options.ts_value = 78;
    ack.options.ts_echo = h.sent[0].header.options.ts_value;
    h.now = 30;
    h.input(ack);
    ASSERT_EQ(h.tcp->rto_ms(), 90u) << "30 ms sample: srtt 30 + 4 x rttvar 15";
    h.tcp->send(bytes(10));
    h.tcp->push(h.now);
    h.drain();
    ASSERT_EQ(h.sent.size(), 1u);
    auto data_ack = h.from_peer(peer_iss + 1, flag::ack, our_iss + 11);
    data_ack.options.timestamps = true;
    data_ack.options.ts_value = 79;
    data_ack.options.ts_echo = h.sent[0].header.options.ts_value + 100'000;  // never sent
    h.now = 40;
    h.input(data_ack);
    EXPECT_EQ(h.tcp->rto_ms(), 90u) << "a negative age taken as huge would pin the RTO at 60 s";
}

TEST(SynCookie, RoundTripCarriesTheMssAndNothingElseValidates) {
    const SynCookies cookies({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
    const FourTuple tuple{0x0a000002, 40000, 0x0a000001, 443};
    const std::uint64_t now = 1'000'000;
    const std::uint32_t iss = cookies.make(tuple, peer_iss, 1460, now);
    ASSERT_EQ(cookies.check(tuple, peer_iss + 1, iss + 1, now), std::optional<std::uint16_t>(1460));
    EXPECT_EQ(cookies.check(tuple, peer_iss + 1, iss + 1, now + 100'000), 1460)
        << "still valid in the next time slot";
    EXPECT_FALSE(cookies.check(tuple, peer_iss + 1, iss + 1, now + 300'000)) << "too old";
    EXPECT_FALSE(cookies.check(tuple, peer_iss + 1, iss + 2, now)) << "tampered";
    EXPECT_FALSE(cookies.check(tuple, peer_iss + 2, iss + 1, now)) << "another peer sequence";
    FourTuple other = tuple;
    other.peer_port = 40001;
    EXPECT_FALSE(cookies.check(other, peer_iss + 1, iss + 1, now)) << "another 4-tuple";
    const SynCookies other_secret({16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1});
    EXPECT_FALSE(other_secret.check(tuple, peer_iss + 1, iss + 1, now)) << "another core's secret";
    // The MSS is rounded down to what the cookie can carry.
    EXPECT_EQ(cookies.check(tuple, peer_iss + 1, cookies.make(tuple, peer_iss, 1000, now) + 1, now),
              536);
}

TEST(SynCookie, ConnectionFromACookieCarriesData) {
    TcpConfig config;
    TcpConnection tcp(config, TcpConnection::CookieHandshake{peer_iss, our_iss, 1400});
    EXPECT_EQ(tcp.state(), TcpState::established);
    EXPECT_EQ(tcp.effective_mss(), 1400);
    const auto data = bytes(10);
    TcpSegment ack;
    ack.seq = peer_iss + 1;
    ack.ack = our_iss + 1;
    ack.flags = flag::ack | flag::psh;
    ack.window = 512;  // unscaled: no window scaling with cookies
    ack.payload = data;
    tcp.input(ack, 1);
    EXPECT_EQ(tcp.readable(), 10u);
    tcp.clear_output();
    ASSERT_EQ(tcp.send(bytes(600)), 600u);
    tcp.push(2);
    std::size_t sent = 0;
    for (const auto& s : tcp.output()) {
        sent += s.payload_length;
        EXPECT_FALSE(s.header.options.timestamps);
    }
    EXPECT_EQ(sent, 512u) << "the peer's unscaled window limits it";
}

}  // namespace
}  // namespace portcullis::dataplane::tcp
