// libFuzzer target for the DPDK path's packet input: arbitrary bytes go
// through the frame codec, and every TCP segment it accepts is fed to a TCP
// connection (built from a fixed SYN), so both the parser and the state
// machine see hostile input under ASan/UBSan.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dataplane/net/frame.hpp"
#include "dataplane/tcp/tcp_connection.hpp"

using namespace portcullis::dataplane;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    tcp::TcpConfig config;
    config.receive_buffer = 8192;
    config.send_buffer = 8192;
    tcp::TcpSegment syn;
    syn.seq = 1000;
    syn.flags = tcp::flag::syn;
    syn.window = 1024;
    syn.options.mss = 1460;
    syn.options.window_scale = 7;
    syn.options.timestamps = true;
    tcp::TcpConnection connection(config, syn, 5000, 0);
    std::uint64_t now = 0;
    std::vector<std::uint8_t> sink(8192);
    // The input may hold several frames: a 2-byte length before each.
    std::size_t at = 0;
    while (at + 2 <= size) {
        const std::size_t length = (std::size_t{data[at]} << 8 | data[at + 1]) % 2048;
        at += 2;
        const std::size_t take = std::min(length, size - at);
        const auto frame = net::parse_frame({data + at, take});
        at += take;
        now += 7;
        if (frame.kind == net::Frame::Kind::tcp) {
            connection.input(frame.segment, now);
            connection.receive(sink);
            connection.send({sink.data(), 100});
            connection.push(now);
        }
        if (connection.next_timer() <= now) connection.on_timer(now);
        for (const auto& out : connection.output()) {
            std::vector<std::uint8_t> payload(out.payload_length);
            connection.copy_payload(out, payload);
        }
        connection.clear_output();
    }
    return 0;
}
