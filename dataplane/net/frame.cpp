#include "dataplane/net/frame.hpp"

#include <algorithm>
#include <cstring>

namespace portcullis::dataplane::net {
namespace {

std::uint16_t load16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
std::uint32_t load32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           p[3];
}
void store16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}
void store32(std::uint8_t* p, std::uint32_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}

constexpr std::uint8_t protocol_icmp = 1;
constexpr std::uint8_t protocol_tcp = 6;

std::uint32_t pseudo_header_sum(Ipv4Address source, Ipv4Address destination,
                                std::uint16_t tcp_length) {
    std::uint8_t pseudo[12];
    store32(pseudo, source);
    store32(pseudo + 4, destination);
    pseudo[8] = 0;
    pseudo[9] = protocol_tcp;
    store16(pseudo + 10, tcp_length);
    return checksum_add(0, pseudo);
}

bool parse_tcp_options(std::span<const std::uint8_t> options, tcp::TcpOptions& out) {
    std::size_t i = 0;
    while (i < options.size()) {
        const std::uint8_t kind = options[i];
        if (kind == 0) break;  // end of list
        if (kind == 1) {       // no-op
            ++i;
            continue;
        }
        if (i + 1 >= options.size()) return false;
        const std::uint8_t length = options[i + 1];
        if (length < 2 || i + length > options.size()) return false;
        const auto* value = options.data() + i + 2;
        switch (kind) {
            case 2:
                if (length != 4) return false;
                out.mss = load16(value);
                break;
            case 3:
                if (length != 3) return false;
                out.window_scale = static_cast<std::int8_t>(std::min<int>(value[0], 14));
                break;
            case 4:
                if (length != 2) return false;
                out.sack_permitted = true;
                break;
            case 8:
                if (length != 10) return false;
                out.timestamps = true;
                out.ts_value = load32(value);
                out.ts_echo = load32(value + 4);
                break;
            default:
                break;  // SACK blocks and others: skipped
        }
        i += length;
    }
    return true;
}

}  // namespace

const char* to_string(Drop reason) {
    switch (reason) {
        case Drop::none:
            return "none";
        case Drop::truncated:
            return "truncated";
        case Drop::not_ipv4_or_arp:
            return "not_ipv4_or_arp";
        case Drop::ip_options_or_bad_header:
            return "bad_ip_header";
        case Drop::fragment:
            return "fragment";
        case Drop::bad_ip_checksum:
            return "bad_ip_checksum";
        case Drop::bad_l4_checksum:
            return "bad_l4_checksum";
        case Drop::unsupported_protocol:
            return "unsupported_protocol";
        case Drop::malformed_tcp_options:
            return "malformed_tcp_options";
        case Drop::handoff_full:
            return "handoff_full";
        case Drop::count_:
            break;
    }
    return "?";
}

std::uint32_t checksum_add(std::uint32_t sum, std::span<const std::uint8_t> bytes) {
    std::size_t i = 0;
    for (; i + 1 < bytes.size(); i += 2) sum += load16(bytes.data() + i);
    if (i < bytes.size()) sum += std::uint32_t{bytes[i]} << 8;
    return sum;
}

std::uint16_t checksum_fold(std::uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(sum);
}

std::uint16_t checksum_finish(std::uint32_t sum) {
    return static_cast<std::uint16_t>(~checksum_fold(sum));
}

Frame parse_frame(std::span<const std::uint8_t> bytes, bool checksums_verified) {
    Frame frame;
    auto drop = [&](Drop why) {
        frame.kind = Frame::Kind::dropped;
        frame.drop = why;
        return frame;
    };
    if (bytes.size() < ethernet_header_bytes) return drop(Drop::truncated);
    std::copy_n(bytes.data(), 6, frame.destination_mac.begin());
    std::copy_n(bytes.data() + 6, 6, frame.source_mac.begin());
    const std::uint16_t ethertype = load16(bytes.data() + 12);
    const auto l3 = bytes.subspan(ethernet_header_bytes);

    if (ethertype == ethertype_arp) {
        // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
        if (l3.size() < 28) return drop(Drop::truncated);
        if (load16(l3.data()) != 1 || load16(l3.data() + 2) != ethertype_ipv4 || l3[4] != 6 ||
            l3[5] != 4)
            return drop(Drop::not_ipv4_or_arp);
        frame.kind = Frame::Kind::arp;
        frame.arp.operation = load16(l3.data() + 6);
        std::copy_n(l3.data() + 8, 6, frame.arp.sender_mac.begin());
        frame.arp.sender_ip = load32(l3.data() + 14);
        std::copy_n(l3.data() + 18, 6, frame.arp.target_mac.begin());
        frame.arp.target_ip = load32(l3.data() + 24);
        return frame;
    }
    if (ethertype != ethertype_ipv4) return drop(Drop::not_ipv4_or_arp);
    if (l3.size() < ipv4_header_bytes) return drop(Drop::truncated);
    const std::size_t header_length = std::size_t{l3[0] & 0x0fu} * 4;
    if ((l3[0] >> 4) != 4 || header_length != ipv4_header_bytes)
        return drop(Drop::ip_options_or_bad_header);
    const std::size_t total_length = load16(l3.data() + 2);
    if (total_length < header_length) return drop(Drop::ip_options_or_bad_header);
    if (total_length > l3.size()) return drop(Drop::truncated);
    const std::uint16_t fragment = load16(l3.data() + 6);
    if ((fragment & 0x3fff) != 0) return drop(Drop::fragment);  // MF set or offset non-zero
    if (!checksums_verified && checksum_finish(checksum_add(0, l3.first(header_length))) != 0)
        return drop(Drop::bad_ip_checksum);
    frame.ttl = l3[8];
    const std::uint8_t protocol = l3[9];
    frame.source_ip = load32(l3.data() + 12);
    frame.destination_ip = load32(l3.data() + 16);
    const auto l4 = l3.subspan(header_length, total_length - header_length);

    if (protocol == protocol_icmp) {
        if (l4.size() < 8) return drop(Drop::truncated);
        if (checksum_finish(checksum_add(0, l4)) != 0) return drop(Drop::bad_l4_checksum);
        if (l4[0] != 8 || l4[1] != 0) return drop(Drop::unsupported_protocol);  // echo request only
        frame.kind = Frame::Kind::icmp_echo_request;
        frame.icmp = l4;
        return frame;
    }
    if (protocol != protocol_tcp) return drop(Drop::unsupported_protocol);
    if (l4.size() < tcp_header_bytes) return drop(Drop::truncated);
    const std::size_t data_offset = static_cast<std::size_t>(l4[12] >> 4) * 4;
    if (data_offset < tcp_header_bytes || data_offset > l4.size())
        return drop(Drop::malformed_tcp_options);
    const std::uint32_t sum = pseudo_header_sum(frame.source_ip, frame.destination_ip,
                                                static_cast<std::uint16_t>(l4.size()));
    if (!checksums_verified && checksum_finish(checksum_add(sum, l4)) != 0)
        return drop(Drop::bad_l4_checksum);
    frame.source_port = load16(l4.data());
    frame.destination_port = load16(l4.data() + 2);
    auto& segment = frame.segment;
    segment.seq = load32(l4.data() + 4);
    segment.ack = load32(l4.data() + 8);
    segment.flags = static_cast<std::uint8_t>(l4[13] & 0x1f);
    segment.window = load16(l4.data() + 14);
    if (!parse_tcp_options(l4.subspan(tcp_header_bytes, data_offset - tcp_header_bytes),
                           segment.options))
        return drop(Drop::malformed_tcp_options);
    segment.payload = l4.subspan(data_offset);
    frame.kind = Frame::Kind::tcp;
    return frame;
}

namespace {

std::uint8_t* write_ethernet(std::span<std::uint8_t> out, const MacAddress& source,
                             const MacAddress& destination, std::uint16_t ethertype) {
    std::copy(destination.begin(), destination.end(), out.data());
    std::copy(source.begin(), source.end(), out.data() + 6);
    store16(out.data() + 12, ethertype);
    return out.data() + ethernet_header_bytes;
}

void write_ipv4(std::uint8_t* ip, std::uint16_t total_length, std::uint8_t protocol,
                Ipv4Address source, Ipv4Address destination,
                Checksums checksums = Checksums::computed) {
    ip[0] = 0x45;
    ip[1] = 0;
    store16(ip + 2, total_length);
    store16(ip + 4, 0);       // identification: DF set, never fragmented
    store16(ip + 6, 0x4000);  // DF
    ip[8] = 64;
    ip[9] = protocol;
    store16(ip + 10, 0);
    store32(ip + 12, source);
    store32(ip + 16, destination);
    if (checksums == Checksums::computed)
        store16(ip + 10, checksum_finish(checksum_add(0, {ip, ipv4_header_bytes})));
}

}  // namespace

std::size_t build_arp(std::span<std::uint8_t> out, const ArpMessage& message,
                      const MacAddress& source_mac, const MacAddress& destination_mac) {
    constexpr std::size_t length = ethernet_header_bytes + 28;
    if (out.size() < length) return 0;
    auto* arp = write_ethernet(out, source_mac, destination_mac, ethertype_arp);
    store16(arp, 1);
    store16(arp + 2, ethertype_ipv4);
    arp[4] = 6;
    arp[5] = 4;
    store16(arp + 6, message.operation);
    std::copy(message.sender_mac.begin(), message.sender_mac.end(), arp + 8);
    store32(arp + 14, message.sender_ip);
    std::copy(message.target_mac.begin(), message.target_mac.end(), arp + 18);
    store32(arp + 24, message.target_ip);
    return length;
}

std::size_t build_icmp_echo_reply(std::span<std::uint8_t> out, const Frame& request,
                                  const MacAddress& our_mac) {
    const std::size_t length = ethernet_header_bytes + ipv4_header_bytes + request.icmp.size();
    if (out.size() < length) return 0;
    auto* ip = write_ethernet(out, our_mac, request.source_mac, ethertype_ipv4);
    write_ipv4(ip, static_cast<std::uint16_t>(ipv4_header_bytes + request.icmp.size()),
               protocol_icmp, request.destination_ip, request.source_ip);
    auto* icmp = ip + ipv4_header_bytes;
    std::memcpy(icmp, request.icmp.data(), request.icmp.size());
    icmp[0] = 0;  // echo reply
    store16(icmp + 2, 0);
    store16(icmp + 2, checksum_finish(checksum_add(0, {icmp, request.icmp.size()})));
    return length;
}

std::size_t build_tcp(std::span<std::uint8_t> out, const Route& route, std::uint16_t source_port,
                      std::uint16_t destination_port, const tcp::TcpSegment& segment,
                      Checksums checksums) {
    std::uint8_t options[40];
    std::size_t option_bytes = 0;
    const auto& o = segment.options;
    if (o.mss) {
        options[option_bytes++] = 2;
        options[option_bytes++] = 4;
        store16(options + option_bytes, o.mss);
        option_bytes += 2;
    }
    if (o.window_scale >= 0) {
        options[option_bytes++] = 1;  // no-op keeps the next option aligned
        options[option_bytes++] = 3;
        options[option_bytes++] = 3;
        options[option_bytes++] = static_cast<std::uint8_t>(o.window_scale);
    }
    if (o.sack_permitted) {
        options[option_bytes++] = 1;
        options[option_bytes++] = 1;
        options[option_bytes++] = 4;
        options[option_bytes++] = 2;
    }
    if (o.timestamps) {
        options[option_bytes++] = 1;
        options[option_bytes++] = 1;
        options[option_bytes++] = 8;
        options[option_bytes++] = 10;
        store32(options + option_bytes, o.ts_value);
        store32(options + option_bytes + 4, o.ts_echo);
        option_bytes += 8;
    }
    const std::size_t tcp_length = tcp_header_bytes + option_bytes + segment.payload.size();
    const std::size_t length = ethernet_header_bytes + ipv4_header_bytes + tcp_length;
    if (out.size() < length) return 0;
    auto* ip = write_ethernet(out, route.source_mac, route.destination_mac, ethertype_ipv4);
    write_ipv4(ip, static_cast<std::uint16_t>(ipv4_header_bytes + tcp_length), protocol_tcp,
               route.source_ip, route.destination_ip, checksums);
    auto* tcp = ip + ipv4_header_bytes;
    store16(tcp, source_port);
    store16(tcp + 2, destination_port);
    store32(tcp + 4, segment.seq);
    store32(tcp + 8, segment.ack);
    tcp[12] = static_cast<std::uint8_t>(((tcp_header_bytes + option_bytes) / 4) << 4);
    tcp[13] = segment.flags;
    store16(tcp + 14, segment.window);
    store16(tcp + 16, 0);
    store16(tcp + 18, 0);
    std::memcpy(tcp + tcp_header_bytes, options, option_bytes);
    if (!segment.payload.empty())
        std::memcpy(tcp + tcp_header_bytes + option_bytes, segment.payload.data(),
                    segment.payload.size());
    const std::uint32_t sum = pseudo_header_sum(route.source_ip, route.destination_ip,
                                                static_cast<std::uint16_t>(tcp_length));
    store16(tcp + 16, checksums == Checksums::computed
                          ? checksum_finish(checksum_add(sum, {tcp, tcp_length}))
                          : checksum_fold(sum));
    return length;
}

}  // namespace portcullis::dataplane::net
