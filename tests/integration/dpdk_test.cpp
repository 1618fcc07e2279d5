// The DPDK transport's network stack (portcullis-dpdk-probe: one port, one
// lcore) on one end of a veth pair, the Linux kernel's TCP/IP in a network
// namespace on the other: ARP and ping, TCP echo of a megabyte, a closed port
// answered with RST, loss plus reordering (injected by the stack's test hook,
// since this kernel has no netem) with every byte still delivered in order,
// and a SYN flood answered with cookies. The daemon on this transport is
// tested in dpdk_daemon_test.cpp. Needs root (namespaces, AF_PACKET); skips
// loudly without it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "tests/integration/harness.hpp"
#include "tests/integration/veth.hpp"

namespace portcullis::testing {
namespace {

using namespace std::chrono_literals;

class DpdkStack : public ::testing::Test {
  protected:
    void SetUp() override {
        if (const auto why = dpdk_veth_unavailable({"ip", "ethtool", "ping"}); !why.empty())
            GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
        probe_ = std::getenv("PORTCULLIS_DPDK_PROBE");
        veth_ = std::make_unique<VethPair>();
        if (!veth_->ok())
            GTEST_SKIP() << "SKIPPED LOUDLY: cannot create a veth pair in a namespace";
        dir_ = make_temp_dir();
    }
    void TearDown() override {
        probe_process_.reset();
        veth_.reset();
        if (!dir_.empty()) std::filesystem::remove_all(dir_);
    }

    void start(const std::vector<std::string>& extra = {}) {
        const std::string prefix = "pcltest" + std::to_string(::getpid());
        std::vector<std::string> argv = {
            probe_,
            "--eal",
            "--no-huge -m 256 --no-pci --no-shconf -l 0 --log-level=error --file-prefix " + prefix +
                " --vdev net_af_packet0,iface=" + veth_->dpdk_interface(),
            "--ip",
            "10.77.0.1",
            "--echo-port",
            "7"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        probe_process_ = std::make_unique<ChildProcess>(argv, dir_ / "probe.log");
        ASSERT_TRUE(probe_process_->wait_for_log("portcullis-dpdk-probe ready", 20s))
            << probe_process_->log();
    }

    // Sends `bytes` random bytes to the echo port from the namespace and
    // checks they all come back, in order.
    bool echo(int bytes, std::string& report) {
        const auto script = dir_ / "echo.py";
        write_file(script,
                   "import os, socket, sys\n"
                   "data = os.urandom(int(sys.argv[1]))\n"
                   "s = socket.create_connection(('10.77.0.1', 7), timeout=30)\n"
                   "s.sendall(data)\n"
                   "s.shutdown(socket.SHUT_WR)\n"
                   "got = bytearray()\n"
                   "while True:\n"
                   "    chunk = s.recv(65536)\n"
                   "    if not chunk: break\n"
                   "    got += chunk\n"
                   "print('echoed', len(got), 'of', len(data))\n"
                   "sys.exit(0 if bytes(got) == data else 1)\n");
        const auto out = dir_ / "echo.out";
        const int rc =
            std::system((veth_->in_ns("python3 " + script.string() + " " + std::to_string(bytes)) +
                         " >" + out.string() + " 2>&1")
                            .c_str());
        report = read_file(out);
        return rc == 0;
    }

    // The probe's MAC, from its "ready" line.
    std::string probe_mac() const {
        const auto log = probe_process_->log();
        const auto at = log.find("mac=");
        return at == std::string::npos ? std::string() : log.substr(at + 4, 17);
    }

    std::string probe_;
    std::unique_ptr<VethPair> veth_;
    std::unique_ptr<ChildProcess> probe_process_;
    std::filesystem::path dir_;
};

TEST_F(DpdkStack, AnswersArpAndPing) {
    start();
    EXPECT_TRUE(succeeds(veth_->in_ns("ping -c 3 -W 2 10.77.0.1"))) << probe_process_->log();
}

TEST_F(DpdkStack, EchoesAMegabyteOverItsTcpToTheKernelsTcp) {
    start();
    std::string report;
    EXPECT_TRUE(echo(1'000'000, report)) << report << probe_process_->log();
}

TEST_F(DpdkStack, ClosedPortIsRefusedWithRst) {
    start();
    const auto script = dir_ / "refused.py";
    write_file(script,
               "import socket, sys\n"
               "try:\n"
               "    socket.create_connection(('10.77.0.1', 9), timeout=5)\n"
               "except ConnectionRefusedError:\n"
               "    sys.exit(0)\n"
               "sys.exit(1)\n");
    EXPECT_TRUE(succeeds(veth_->in_ns("python3 " + script.string())));
}

TEST_F(DpdkStack, LossAndReorderingStillDeliverEveryByteInOrder) {
    start({"--drop", "0.03", "--reorder", "0.1"});
    std::string report;
    EXPECT_TRUE(echo(300'000, report)) << report;
    probe_process_->stop();
    const auto log = probe_process_->log();
    EXPECT_EQ(log.find("injected_drops=0 "), std::string::npos) << "no loss was injected:\n" << log;
    EXPECT_EQ(log.find("injected_reorders=0 "), std::string::npos) << log;
}

TEST_F(DpdkStack, SynFloodGetsCookiesWhileLegitimateClientsConnect) {
    // A bounded flood of SYNs from an address that never answers fills the
    // 16-entry backlog; from then on SYN-ACKs carry cookies and no state, and
    // a real client's handshake completes through a cookie.
    start({"--syn-backlog", "16"});
    const auto flood = dir_ / "flood.py";
    write_file(
        flood,
        "import random, socket, struct\n"
        "def csum(b):\n"
        "    if len(b) % 2: b += b'\\0'\n"
        "    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n"
        "    while s >> 16: s = (s & 0xffff) + (s >> 16)\n"
        "    return ~s & 0xffff\n"
        "src, dst = socket.inet_aton('10.77.0.99'), socket.inet_aton('10.77.0.1')\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
        "for i in range(500):\n"
        "    sport = random.randint(1024, 65000)\n"
        "    tcp = struct.pack('!HHIIBBHHH', sport, 7, random.getrandbits(32), 0, 5 << 4, 2, "
        "64240, 0, 0)\n"
        "    c = csum(src + dst + struct.pack('!BBH', 0, 6, len(tcp)) + tcp)\n"
        "    tcp = tcp[:16] + struct.pack('!H', c) + tcp[18:]\n"
        "    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), i, 0, 64, 6, 0, src, dst)\n"
        "    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]\n"
        "    s.sendto(ip + tcp, ('10.77.0.1', 0))\n");
    ASSERT_TRUE(succeeds(veth_->in_ns("ip neigh replace 10.77.0.1 lladdr " + probe_mac() + " dev " +
                                      veth_->peer_interface())));
    ASSERT_TRUE(succeeds(veth_->in_ns("python3 " + flood.string())));
    std::string report;
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(echo(20'000, report)) << report;
    probe_process_->stop();
    const auto log = probe_process_->log();
    EXPECT_EQ(log.find("syn_cookies_sent=0 "), std::string::npos) << log;
    EXPECT_EQ(log.find("syn_cookies_validated=0 "), std::string::npos) << log;
}

TEST_F(DpdkStack, StopsCleanlyAndLeavesNothingInRunDpdk) {
    start();
    EXPECT_EQ(probe_process_->stop(), 0);
    EXPECT_NE(probe_process_->log().find("mbufs_in_use=0"), std::string::npos)
        << probe_process_->log();
    const std::string prefix = "pcltest" + std::to_string(::getpid());
    EXPECT_FALSE(std::filesystem::exists("/var/run/dpdk/" + prefix));
}

}  // namespace
}  // namespace portcullis::testing
