// Frames built by the DPDK path's codec parse back to the same values; broken
// frames are dropped with the right reason.
#include "dataplane/net/frame.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace portcullis::dataplane::net {
namespace {

const MacAddress ours = {0x02, 0, 0, 0, 0, 1};
const MacAddress theirs = {0x02, 0, 0, 0, 0, 2};
constexpr Ipv4Address our_ip = 0x0a000001;    // 10.0.0.1
constexpr Ipv4Address their_ip = 0x0a000002;  // 10.0.0.2

TEST(Checksum, Rfc1071Example) {
    const std::uint8_t bytes[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    EXPECT_EQ(checksum_finish(checksum_add(0, bytes)), static_cast<std::uint16_t>(~0xddf2));
}

std::vector<std::uint8_t> tcp_frame(const tcp::TcpSegment& segment) {
    std::vector<std::uint8_t> frame(1600);
    const Route route{theirs, ours, their_ip, our_ip};
    frame.resize(build_tcp(frame, route, 40000, 443, segment));
    return frame;
}

TEST(Frame, TcpRoundTripWithOptionsAndPayload) {
    const std::vector<std::uint8_t> payload = {'h', 'e', 'l', 'l', 'o'};
    tcp::TcpSegment segment;
    segment.seq = 0x11223344;
    segment.ack = 0x55667788;
    segment.flags = tcp::flag::syn | tcp::flag::ack;
    segment.window = 64240;
    segment.options.mss = 1460;
    segment.options.window_scale = 7;
    segment.options.sack_permitted = true;
    segment.options.timestamps = true;
    segment.options.ts_value = 123456;
    segment.options.ts_echo = 654321;
    segment.payload = payload;
    const auto bytes = tcp_frame(segment);
    ASSERT_FALSE(bytes.empty());
    const auto frame = parse_frame(bytes);
    ASSERT_EQ(frame.kind, Frame::Kind::tcp) << to_string(frame.drop);
    EXPECT_EQ(frame.source_mac, theirs);
    EXPECT_EQ(frame.destination_mac, ours);
    EXPECT_EQ(frame.source_ip, their_ip);
    EXPECT_EQ(frame.destination_ip, our_ip);
    EXPECT_EQ(frame.source_port, 40000);
    EXPECT_EQ(frame.destination_port, 443);
    const auto& s = frame.segment;
    EXPECT_EQ(s.seq, segment.seq);
    EXPECT_EQ(s.ack, segment.ack);
    EXPECT_EQ(s.flags, segment.flags);
    EXPECT_EQ(s.window, segment.window);
    EXPECT_EQ(s.options.mss, 1460);
    EXPECT_EQ(s.options.window_scale, 7);
    EXPECT_TRUE(s.options.sack_permitted);
    EXPECT_TRUE(s.options.timestamps);
    EXPECT_EQ(s.options.ts_value, 123456u);
    EXPECT_EQ(s.options.ts_echo, 654321u);
    EXPECT_EQ(std::vector<std::uint8_t>(s.payload.begin(), s.payload.end()), payload);
}

// With checksum offload the NIC sums the IPv4 header, and the TCP segment
// whose checksum field holds the pseudo-header sum: doing that here must give
// the frame with both checksums computed, byte for byte.
TEST(Frame, OffloadedChecksumsAreWhatTheNicCompletes) {
    tcp::TcpSegment segment;
    segment.seq = 7;
    segment.ack = 9;
    segment.flags = tcp::flag::ack | tcp::flag::psh;
    segment.window = 501;
    segment.options.timestamps = true;
    segment.options.ts_value = 42;
    const std::vector<std::uint8_t> payload(333, 0xa5);  // odd length
    segment.payload = payload;
    const Route route{theirs, ours, their_ip, our_ip};
    std::vector<std::uint8_t> offloaded(1600);
    offloaded.resize(build_tcp(offloaded, route, 40000, 443, segment, Checksums::offloaded));
    const auto computed = tcp_frame(segment);
    ASSERT_EQ(offloaded.size(), computed.size());
    EXPECT_NE(offloaded, computed);

    auto* ip = offloaded.data() + ethernet_header_bytes;
    EXPECT_EQ(ip[10] | ip[11], 0) << "the IPv4 checksum is left to the NIC";
    const std::uint16_t ip_sum = checksum_finish(checksum_add(0, {ip, ipv4_header_bytes}));
    ip[10] = static_cast<std::uint8_t>(ip_sum >> 8);
    ip[11] = static_cast<std::uint8_t>(ip_sum);
    auto* tcp = ip + ipv4_header_bytes;
    const std::size_t tcp_length = offloaded.size() - ethernet_header_bytes - ipv4_header_bytes;
    const std::uint16_t tcp_sum = checksum_finish(checksum_add(0, {tcp, tcp_length}));
    tcp[16] = static_cast<std::uint8_t>(tcp_sum >> 8);
    tcp[17] = static_cast<std::uint8_t>(tcp_sum);
    EXPECT_EQ(offloaded, computed);
}

TEST(Frame, ChecksumsTheNicVerifiedAreNotSummedAgain) {
    tcp::TcpSegment segment;
    segment.flags = tcp::flag::ack;
    auto bytes = tcp_frame(segment);
    bytes[ethernet_header_bytes + 10] ^= 0xff;  // a checksum the NIC would have caught
    EXPECT_EQ(parse_frame(bytes).drop, Drop::bad_ip_checksum);
    const auto trusted = parse_frame(bytes, true);
    EXPECT_EQ(trusted.kind, Frame::Kind::tcp) << to_string(trusted.drop);
    EXPECT_EQ(trusted.destination_port, 443);
}

TEST(Frame, CorruptionIsCaughtByTheChecksums) {
    tcp::TcpSegment segment;
    segment.flags = tcp::flag::ack;
    const std::vector<std::uint8_t> payload(100, 0x5a);
    segment.payload = payload;
    auto bytes = tcp_frame(segment);
    auto l4 = bytes;
    l4.back() ^= 0x01;
    EXPECT_EQ(parse_frame(l4).drop, Drop::bad_l4_checksum);
    auto l3 = bytes;
    l3[ethernet_header_bytes + 8] ^= 0x01;  // TTL
    EXPECT_EQ(parse_frame(l3).drop, Drop::bad_ip_checksum);
}

TEST(Frame, WhatTheDataplaneDoesNotHandleIsDroppedWithAReason) {
    tcp::TcpSegment segment;
    auto bytes = tcp_frame(segment);
    EXPECT_EQ(parse_frame(std::span(bytes).first(10)).drop, Drop::truncated);
    EXPECT_EQ(parse_frame(std::span(bytes).first(40)).drop, Drop::truncated);
    auto fragment = bytes;
    fragment[ethernet_header_bytes + 6] = 0x20;  // more fragments
    EXPECT_EQ(parse_frame(fragment).drop, Drop::fragment);
    auto ipv6 = bytes;
    ipv6[12] = 0x86;
    ipv6[13] = 0xdd;
    EXPECT_EQ(parse_frame(ipv6).drop, Drop::not_ipv4_or_arp);
    auto options = bytes;
    options[ethernet_header_bytes] = 0x46;  // IHL 6
    EXPECT_EQ(parse_frame(options).drop, Drop::ip_options_or_bad_header);
}

TEST(Frame, ArpRoundTrip) {
    std::vector<std::uint8_t> bytes(64);
    ArpMessage request{1, theirs, their_ip, {}, our_ip};
    bytes.resize(build_arp(bytes, request, theirs, broadcast_mac));
    const auto frame = parse_frame(bytes);
    ASSERT_EQ(frame.kind, Frame::Kind::arp);
    EXPECT_EQ(frame.destination_mac, broadcast_mac);
    EXPECT_EQ(frame.arp.operation, 1);
    EXPECT_EQ(frame.arp.sender_mac, theirs);
    EXPECT_EQ(frame.arp.sender_ip, their_ip);
    EXPECT_EQ(frame.arp.target_ip, our_ip);
}

TEST(Frame, IcmpEchoRequestGetsAValidReply) {
    // An echo request as ping sends it: id 0x1234, sequence 1, 16 bytes of data.
    std::vector<std::uint8_t> icmp = {8, 0, 0, 0, 0x12, 0x34, 0, 1};
    for (int i = 0; i < 16; ++i) icmp.push_back(static_cast<std::uint8_t>(i));
    const auto sum = checksum_finish(checksum_add(0, icmp));
    icmp[2] = static_cast<std::uint8_t>(sum >> 8);
    icmp[3] = static_cast<std::uint8_t>(sum);
    std::vector<std::uint8_t> request(ethernet_header_bytes + ipv4_header_bytes);
    std::copy(ours.begin(), ours.end(), request.begin());
    std::copy(theirs.begin(), theirs.end(), request.begin() + 6);
    request[12] = 0x08;
    std::uint8_t* ip = request.data() + ethernet_header_bytes;
    ip[0] = 0x45;
    const auto total = static_cast<std::uint16_t>(ipv4_header_bytes + icmp.size());
    ip[2] = static_cast<std::uint8_t>(total >> 8);
    ip[3] = static_cast<std::uint8_t>(total);
    ip[8] = 64;
    ip[9] = 1;
    ip[12] = 10, ip[15] = 2;  // from 10.0.0.2
    ip[16] = 10, ip[19] = 1;  // to 10.0.0.1
    const auto ip_sum = checksum_finish(checksum_add(0, {ip, ipv4_header_bytes}));
    ip[10] = static_cast<std::uint8_t>(ip_sum >> 8);
    ip[11] = static_cast<std::uint8_t>(ip_sum);
    request.insert(request.end(), icmp.begin(), icmp.end());

    const auto parsed = parse_frame(request);
    ASSERT_EQ(parsed.kind, Frame::Kind::icmp_echo_request) << to_string(parsed.drop);
    std::vector<std::uint8_t> reply(256);
    reply.resize(build_icmp_echo_reply(reply, parsed, ours));
    ASSERT_EQ(reply.size(), request.size());
    const std::span<const std::uint8_t> reply_icmp =
        std::span(reply).subspan(ethernet_header_bytes + ipv4_header_bytes);
    EXPECT_EQ(reply_icmp[0], 0) << "echo reply";
    EXPECT_EQ(checksum_finish(checksum_add(0, reply_icmp)), 0);
    EXPECT_TRUE(std::equal(reply_icmp.begin() + 4, reply_icmp.end(), icmp.begin() + 4))
        << "identifier, sequence and data echoed";
    EXPECT_EQ(parse_frame(reply).drop, Drop::unsupported_protocol) << "a reply is not a request";
}

}  // namespace
}  // namespace portcullis::dataplane::net
