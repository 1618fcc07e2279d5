// A veth pair whose far end sits in a fresh network namespace with the Linux
// kernel's TCP/IP at 10.77.0.2/24; the near end is for a DPDK af_packet
// virtual device. Offloads are off on both ends, or the kernel hands DPDK
// frames whose checksums were never computed.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

namespace portcullis::testing {

// Quietly: setup commands whose output no test reads.
inline bool succeeds(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// Why a test over veth with DPDK cannot run here, or "" when it can: a build
// without DPDK (no probe), no root, or one of `tools` missing.
inline std::string dpdk_veth_unavailable(std::initializer_list<std::string> tools) {
    const char* probe = std::getenv("PORTCULLIS_DPDK_PROBE");
    if (probe == nullptr || *probe == '\0' || !std::filesystem::exists(probe))
        return "built without libdpdk-dev (scripts/test.sh installs it)";
    if (::geteuid() != 0) return "needs root for network namespaces and AF_PACKET";
    std::string needed;
    bool missing = false;
    for (const auto& tool : tools) {
        needed += (needed.empty() ? "" : ", ") + tool;
        missing |= !succeeds("command -v " + tool);
    }
    return missing ? "needs " + needed : "";
}

// 2 MB hugepages for DPDK's primary and secondary processes, which share
// hugepage memory; the reservation is given back when the test ends.
class Hugepages {
  public:
    explicit Hugepages(long pages) {
        const long free_pages = read_count("free_hugepages");
        original_ = read_count("nr_hugepages");
        if (free_pages < pages) write_count(original_ + pages - free_pages);
        if (!succeeds("grep -q ' hugetlbfs ' /proc/mounts"))
            succeeds("mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages");
        if (read_count("free_hugepages") < pages)
            why_ = "cannot reserve " + std::to_string(pages) + " 2 MB hugepages";
        else if (!succeeds("grep -q ' hugetlbfs ' /proc/mounts"))
            why_ = "cannot mount hugetlbfs";
    }
    ~Hugepages() {
        if (read_count("nr_hugepages") != original_) write_count(original_);
    }
    // Why they are not there, or "".
    const std::string& unavailable() const { return why_; }

  private:
    static std::string path(const std::string& name) {
        return "/sys/kernel/mm/hugepages/hugepages-2048kB/" + name;
    }
    static long read_count(const std::string& name) {
        std::ifstream in(path(name));
        long value = -1;
        in >> value;
        return value;
    }
    static void write_count(long value) { std::ofstream(path("nr_hugepages")) << value << "\n"; }

    long original_ = 0;
    std::string why_;
};

// A namespace with the kernel peer at 10.77.0.2 and the veth end DPDK drives.
class VethPair {
  public:
    VethPair() {
        // Unique per test: a namespace's devices may outlive "netns del" briefly.
        static int instance = 0;
        const auto id = std::to_string(::getpid() % 10000) + "x" + std::to_string(instance++);
        ns_ = "pcl-ns-" + id;
        ours_ = "pcld" + id;
        peer_ = "pclp" + id;
        ok_ = succeeds("ip netns add " + ns_) &&
              succeeds("ip link add " + ours_ + " type veth peer name " + peer_) &&
              succeeds("ip link set " + peer_ + " netns " + ns_) &&
              succeeds("ip link set " + ours_ + " up") &&
              succeeds(in_ns("ip addr add 10.77.0.2/24 dev " + peer_)) &&
              succeeds(in_ns("ip link set " + peer_ + " up")) &&
              succeeds(in_ns("ip link set lo up"));
        // Checksum offloads off on both ends, or the kernel hands DPDK frames
        // whose checksums were never computed.
        succeeds("ethtool -K " + ours_ + " tx off tso off gso off gro off");
        succeeds(in_ns("ethtool -K " + peer_ + " tx off tso off gso off gro off"));
    }
    ~VethPair() {
        succeeds("ip link del " + ours_);  // removes both ends at once
        succeeds("ip netns del " + ns_);
    }
    bool ok() const { return ok_; }
    const std::string& namespace_name() const { return ns_; }
    const std::string& peer_interface() const { return peer_; }
    const std::string& dpdk_interface() const { return ours_; }
    std::string in_ns(const std::string& command) const {
        return "ip netns exec " + ns_ + " " + command;
    }

  private:
    std::string ns_, ours_, peer_;
    bool ok_ = false;
};

}  // namespace portcullis::testing
