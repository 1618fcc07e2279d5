// Ethernet frames as the DPDK transport sees them: Ethernet II, ARP (IPv4 over
// Ethernet), IPv4 without options or fragments (anything else is dropped with
// a reason), ICMP echo, and TCP with its options parsed into tcp::TcpSegment.
// Checksums are verified on input and computed on output, unless the NIC
// does either (checksum offload). Pure functions on byte spans: no
// allocation, unit-tested and fuzzed without a NIC.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/tcp/tcp_segment.hpp"

namespace portcullis::dataplane::net {

using MacAddress = std::array<std::uint8_t, 6>;
using Ipv4Address = std::uint32_t;  // host byte order

inline constexpr MacAddress broadcast_mac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
inline constexpr std::size_t ethernet_header_bytes = 14;
inline constexpr std::size_t ipv4_header_bytes = 20;
inline constexpr std::size_t tcp_header_bytes = 20;
inline constexpr std::uint16_t ethertype_ipv4 = 0x0800;
inline constexpr std::uint16_t ethertype_arp = 0x0806;

// Why a frame was not used: the reasons the per-lcore drop counters carry.
enum class Drop {
    none,
    truncated,
    not_ipv4_or_arp,
    ip_options_or_bad_header,
    fragment,
    bad_ip_checksum,
    bad_l4_checksum,
    unsupported_protocol,
    malformed_tcp_options,
    handoff_full,  // the stack's: another worker's flow, and its handoff ring was full
    count_
};
inline constexpr std::size_t drop_reason_count = static_cast<std::size_t>(Drop::count_);
const char* to_string(Drop reason);

struct ArpMessage {
    std::uint16_t operation = 0;  // 1 request, 2 reply
    MacAddress sender_mac{};
    Ipv4Address sender_ip = 0;
    MacAddress target_mac{};
    Ipv4Address target_ip = 0;
};

struct Frame {
    enum class Kind { arp, icmp_echo_request, tcp, dropped };
    Kind kind = Kind::dropped;
    Drop drop = Drop::none;
    MacAddress source_mac{};
    MacAddress destination_mac{};
    // IPv4
    Ipv4Address source_ip = 0;
    Ipv4Address destination_ip = 0;
    std::uint8_t ttl = 0;
    // ARP
    ArpMessage arp;
    // ICMP echo: identifier, sequence and data follow the 8-byte header.
    std::span<const std::uint8_t> icmp;  // the whole ICMP message
    // TCP
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
    tcp::TcpSegment segment;  // payload points into the frame
};

// `checksums_verified`: the NIC checked the IPv4 and TCP checksums and found
// them good, so they are not summed again.
Frame parse_frame(std::span<const std::uint8_t> bytes, bool checksums_verified = false);

// Builders write into `out` and return the frame length (0 if it does not fit).
struct Route {
    MacAddress source_mac{};
    MacAddress destination_mac{};
    Ipv4Address source_ip = 0;
    Ipv4Address destination_ip = 0;
};

std::size_t build_arp(std::span<std::uint8_t> out, const ArpMessage& message,
                      const MacAddress& source_mac, const MacAddress& destination_mac);
std::size_t build_icmp_echo_reply(std::span<std::uint8_t> out, const Frame& request,
                                  const MacAddress& our_mac);
// Who fills in the IPv4 and TCP checksums of a frame we send.
enum class Checksums {
    computed,   // here, in software
    offloaded,  // the NIC: the IPv4 checksum is left 0 and the TCP checksum
                // field holds the pseudo-header sum, as DPDK's TX offload expects
};

// A whole TCP/IPv4 frame for `segment`, options and segment.payload included.
std::size_t build_tcp(std::span<std::uint8_t> out, const Route& route, std::uint16_t source_port,
                      std::uint16_t destination_port, const tcp::TcpSegment& segment,
                      Checksums checksums = Checksums::computed);

// RFC 1071 ones'-complement sum.
std::uint32_t checksum_add(std::uint32_t sum, std::span<const std::uint8_t> bytes);
std::uint16_t checksum_fold(std::uint32_t sum);    // to 16 bits
std::uint16_t checksum_finish(std::uint32_t sum);  // folded and complemented

}  // namespace portcullis::dataplane::net
