"""The link the perf scripts put between a server and its clients when the
loopback device will not do (the DPDK transport needs a port to poll): a
veth pair, its near end in this namespace for the server, its far end in
the namespace NS for the load generator and the backend.

Where receive work runs is set per end (RPS), as a NIC's interrupt would
set it: the far end's on the client CPU; the near end's on the server CPU
for a kernel server (its TCP receive is the server's cost) and on the
client CPU for DPDK (a NIC's DMA costs the server's core nothing).
Needs root."""
import json
import os
import subprocess
from pathlib import Path

NS, NEAR, FAR = "pcl-bench", "pclbd0", "pclbp0"
# The kernel's address on the near end, the peer's, and one the kernel does
# not hold (with forwarding off it drops what is sent there) for a DPDK
# server polling the near end while kernel servers keep theirs.
SERVER_IP, PEER_IP, DPDK_IP = "10.77.9.1", "10.77.9.2", "10.77.9.3"


def sh(command, check=True):
    return subprocess.run(command, shell=True, check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def in_ns(command, cpu):
    return f"ip netns exec {NS} taskset -c {cpu} {command}"


def ns_argv(argv, cpu):
    return ["ip", "netns", "exec", NS, "taskset", "-c", str(cpu)] + list(argv)


def setup(client_cpu):
    teardown()
    sh(f"ip netns add {NS}")
    sh(f"ip link add {NEAR} type veth peer name {FAR}")
    sh(f"ip link set {FAR} netns {NS}")
    sh(f"ip link set {NEAR} up")
    sh(f"ip netns exec {NS} ip addr add {PEER_IP}/24 dev {FAR}")
    sh(f"ip netns exec {NS} ip link set {FAR} up")
    sh(f"ip netns exec {NS} ip link set lo up")
    sh(f"sysctl -qw net.ipv4.conf.{NEAR}.forwarding=0", check=False)
    sh(f"ethtool -K {NEAR} tx off tso off gso off gro off", check=False)
    sh(f"ip netns exec {NS} ethtool -K {FAR} tx off tso off gso off gro off", check=False)
    # The clients close first, so their TIME_WAIT sockets would eat the
    # ephemeral ports and every later run would pay a slow connect().
    sh(f"ip netns exec {NS} sysctl -qw net.ipv4.ip_local_port_range='1024 65000'")
    sh(f"ip netns exec {NS} sysctl -qw net.ipv4.tcp_tw_reuse=1")
    # Without this, veth runs the peer's receive work inside whoever sent
    # the frame: inside the DPDK worker's af_packet sendto() (half of the
    # server CPU was the namespace's TCP receiving our segments) or the
    # kernel server's write().
    steer_receive(FAR, client_cpu, netns=NS)


def teardown():
    sh(f"ip link del {NEAR}", check=False)
    sh(f"ip netns del {NS}", check=False)


def steer_receive(device, cpu, netns=None):
    """RPS: frames arriving on `device` are processed on `cpu`."""
    command = f"echo {1 << int(cpu):x} > /sys/class/net/{device}/queues/rx-0/rps_cpus"
    sh(f"ip netns exec {netns} sh -c '{command}'" if netns else command)


def cpu_busy_seconds(cpu):
    """Non-idle time of one CPU (/proc/stat): user, system, interrupts,
    softirq, steal."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{cpu} line in /proc/stat")


# The af_packet device's ring, in frames each way (DPDK's default is 512).
# A NIC's receive ring is 1024-4096 descriptors; with 512, the FINs of
# 100 000 clients closing at once overflowed it, and the kernel clients'
# retransmissions came in waves that overflowed it again.
AF_PACKET_FRAMES = 4096


def dpdk_config_section(address):
    """The [dataplane] tables of a Portcullis serving the near end through
    DPDK's af_packet device, without hugepages, at `address` (IPv4)."""
    eal_args = ["--no-huge", "-m", "256", "--no-shconf", "--log-level", "error"]
    return f"""
[dataplane]
transport = "dpdk"
[dataplane.dpdk]
eal_args = {json.dumps(eal_args)}
device = "net_af_packet0,iface={NEAR},framecnt={AF_PACKET_FRAMES}"
address = "{address}/24"
"""
