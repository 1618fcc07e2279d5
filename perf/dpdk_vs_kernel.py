#!/usr/bin/env python3
"""DPDK transport against kernel transport: same binaries, same machine, same
run, the server on CPU 0 and the clients on CPU 1. Needs root (a veth pair
and a network namespace; DPDK's af_packet device drives the near end).

1. Plain TCP connection rate (connect / accept / 1-byte request / echo /
   close): portcullis-dpdk-probe serving its echo port on the userspace stack,
   and the same binary with --kernel serving it on the kernel's TCP.
2. Full mutual-TLS handshakes through the daemon (one worker, pinned to
   CPU 0) with transport = "kernel" and transport = "dpdk", the backend in
   the namespace.

Server CPU per connection or handshake is everything the server side costs
its core, and nothing the peer costs:
  - kernel: CPU 0's whole non-idle time (/proc/stat). The server process
    runs there, and receive steering (RPS) puts the kernel's receive work
    for the server's end there too, as a NIC interrupt on the server's core
    would. The process's own utime+stime is reported beside it.
  - DPDK: time spent in poll iterations that did work (a polling core is
    always at 100%, so process CPU time says nothing). This includes the
    af_packet sendto() per TX burst, which a real NIC replaces by a doorbell
    write; the af_packet receive copy (a NIC's DMA) runs on the client CPU.
  The namespace's receive work is steered to the client CPU in both runs.

  sudo perf/dpdk_vs_kernel.py --build build [--duration 8] [--repeat 3] [--json FILE]
"""
import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import veth_net
from perf_common import bench_client, bench_listener, cpu_seconds, running_portcullis, scrape_metric, wait_for
from veth_net import FAR, NEAR, NS, PEER_IP, SERVER_IP, sh, steer_receive

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = "0", "1"


def in_ns(command):
    return veth_net.in_ns(command, CLIENT_CPU)


def prepare_server_side(transport):
    """The kernel answers for the server address only in kernel runs: in DPDK
    runs it would answer ARP and send RSTs for the userspace stack's flows.

    Where the server side's receive work runs is what a real NIC decides:
    - kernel: its interrupt and the kernel's TCP receive run on the server's
      core, so they are steered to CPU 0 and counted there;
    - DPDK: the NIC writes frames into the rings by DMA, at no CPU cost. The
      af_packet copy that stands in for it stays on the client CPU."""
    sh(f"ip addr flush dev {NEAR}", check=False)
    if transport == "kernel":
        sh(f"ip addr add {SERVER_IP}/24 dev {NEAR}")
    steer_receive(NEAR, SERVER_CPU if transport == "kernel" else CLIENT_CPU)
    sh(f"ip netns exec {NS} ip neigh flush dev {FAR}", check=False)


def cpu0_busy_seconds():
    return veth_net.cpu_busy_seconds(SERVER_CPU)


def eal(prefix):
    return (f"--no-huge -m 256 --no-pci --no-shconf -l {SERVER_CPU} --log-level=error "
            f"--file-prefix {prefix} --vdev net_af_packet0,iface={NEAR}")


TCP_CLIENT = r"""
import multiprocessing, socket, sys, time
# Processes, not threads: with threads the GIL's 5 ms switch interval, not
# the server, sets the rate once replies come back in well under 5 ms.
host, duration, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def run(_):
    done = failed = 0
    end = time.time() + duration
    while time.time() < end:
        try:
            s = socket.create_connection((host, 7), timeout=5)
            s.sendall(b'x')
            if s.recv(1) == b'x':
                done += 1
            s.close()
        except OSError:
            failed += 1
    return done, failed
with multiprocessing.Pool(workers) as pool:
    results = pool.map(run, range(workers))
print(sum(r[0] for r in results), sum(r[1] for r in results))
"""


def plain_tcp(build, work, transport, args):
    probe = build / "dataplane" / "portcullis-dpdk-probe"
    prepare_server_side(transport)
    log_path = work / f"probe-{transport}.log"
    log = open(log_path, "w")
    cmd = ["taskset", "-c", SERVER_CPU, str(probe), "--ip", SERVER_IP, "--echo-port", "7"]
    cmd += ["--kernel"] if transport == "kernel" else ["--eal", eal(f"pclbench{os.getpid()}")]
    server = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        if not wait_for(lambda: "ready" in log_path.read_text(), 20):
            raise RuntimeError(f"probe did not start: {log_path.read_text()}")
        sh(in_ns(f"ping -c 1 -W 2 {SERVER_IP}"), check=False)  # ARP both ways
        (work / "tcp_client.py").write_text(TCP_CLIENT)
        cpu0_before = cpu0_busy_seconds()
        out = subprocess.run(in_ns(f"python3 {work / 'tcp_client.py'} {SERVER_IP} {args.duration} "
                                   f"{args.tcp_clients}"), shell=True, capture_output=True, text=True)
        cpu0 = cpu0_busy_seconds() - cpu0_before
        connections, errors = (int(x) for x in out.stdout.split())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        log.close()
    text = log_path.read_text()
    cpu_ns = int(re.search(r"cpu_ns=(\d+)", text).group(1))
    busy = re.search(r"busy_ns=(\d+)", text)
    server_s = int(busy.group(1)) / 1e9 if busy else cpu0
    n = max(connections, 1)
    return {"transport": transport, "connections": connections, "errors": errors,
            "connections_per_s": connections / args.duration,
            "server_cpu_s": server_s, "server_cpu_us_per_connection": server_s * 1e6 / n,
            "process_cpu_us_per_connection": cpu_ns / 1e3 / n,
            "cpu0_busy_us_per_connection": cpu0 * 1e6 / n}


def mtls(build, work, pki, transport, args):
    portcullis = build / "mgmt" / "portcullis"
    bench = build / "perf" / "portcullis-bench"
    prepare_server_side(transport)
    admin = 19000 + os.getpid() % 1000
    dpdk = ""
    if transport == "dpdk":
        dpdk = veth_net.dpdk_config_section(SERVER_IP)
    config = work / f"portcullis-{transport}.toml"
    config.write_text(f"""
[workers]
count = 1
[admin]
address = "127.0.0.1:{admin}"
{dpdk}
""" + bench_listener(f"{SERVER_IP}:8443", f"{PEER_IP}:9000"))
    with running_portcullis(portcullis, config, work / f"portcullis-{transport}.log") as workers:
        sh(in_ns(f"ping -c 1 -W 2 {SERVER_IP}"), check=False)
        request = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
        busy_name = 'portcullis_worker_busy_seconds_total{worker="0"}'
        busy_before, cpu_before = scrape_metric(admin, busy_name), cpu_seconds(workers)
        cpu0_before = cpu0_busy_seconds()
        cmd = bench_client(bench, f"{SERVER_IP}:8443", pki) + [
            "--mode", "full", "--tls", "1.3", "--conns", str(args.conns),
            "--duration", str(args.duration), "--request", request, "--json", str(work / "bench.json")]
        subprocess.run(in_ns(shlex.join(cmd)), shell=True, check=True, stdout=subprocess.DEVNULL)
        busy = scrape_metric(admin, busy_name) - busy_before
        retransmissions = scrape_metric(admin, 'portcullis_dpdk_tcp_retransmissions_total{worker="0"}')
        resets = scrape_metric(admin, 'portcullis_dpdk_tcp_resets_sent_total{worker="0"}')
        cpu = cpu_seconds(workers) - cpu_before
        cpu0 = cpu0_busy_seconds() - cpu0_before
        summary = json.loads((work / "bench.json").read_text())
    n = max(summary["handshakes"], 1)
    server_s = busy if transport == "dpdk" else cpu0
    return {"transport": transport, "handshakes": summary["handshakes"],
            "handshakes_per_s": summary["handshakes_per_s"],
            "errors_total": summary.get("errors_total", 0),
            "latency_us": summary.get("latency_us", {}),
            "server_cpu_s": server_s, "server_cpu_us_per_handshake": server_s * 1e6 / n,
            "worker_busy_us_per_handshake": busy * 1e6 / n,
            "process_cpu_us_per_handshake": cpu * 1e6 / n,
            "cpu0_busy_us_per_handshake": cpu0 * 1e6 / n,
            "dpdk_tcp_retransmissions": retransmissions, "dpdk_tcp_resets_sent": resets}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--conns", type=int, default=8, help="concurrent mTLS connections")
    ap.add_argument("--tcp-clients", type=int, default=4, help="plain TCP client processes")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds, kernel and DPDK alternating; ratios are the median round's")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: a veth pair, a network namespace and AF_PACKET")
    build = Path(args.build).resolve()
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # CPU 0 is the server's alone
    for binary in ("dataplane/portcullis-dpdk-probe", "mgmt/portcullis", "perf/portcullis-bench",
                   "tests/support/portcullis-test-backend"):
        if not (build / binary).exists():
            sys.exit(f"missing {build / binary}: build first (with libdpdk-dev installed)")
    work = Path(tempfile.mkdtemp(prefix="portcullis-dpdk-bench."))
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(work / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    results = {"machine": {"cpus": os.cpu_count()}, "duration_s": args.duration,
               "plain_tcp": [], "mtls_full": []}
    veth_net.setup(CLIENT_CPU)
    backend = subprocess.Popen(in_ns(f"{build / 'tests/support/portcullis-test-backend'} "
                                     f"--listen {PEER_IP}:9000 --mode http"), shell=True,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    rounds = []
    try:
        for round_index in range(args.repeat):
            tcp = {t: plain_tcp(build, work, t, args) for t in ("kernel", "dpdk")}
            tls = {t: mtls(build, work, work / "pki", t, args) for t in ("kernel", "dpdk")}
            for r in (*tcp.values(), *tls.values()):
                r["round"] = round_index
            results["plain_tcp"] += tcp.values()
            results["mtls_full"] += tls.values()
            rounds.append({
                "plain_tcp_cpu_dpdk_over_kernel": tcp["dpdk"]["server_cpu_us_per_connection"] /
                max(tcp["kernel"]["server_cpu_us_per_connection"], 1e-9),
                "mtls_cpu_dpdk_over_kernel": tls["dpdk"]["server_cpu_us_per_handshake"] /
                max(tls["kernel"]["server_cpu_us_per_handshake"], 1e-9),
            })
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait()
        veth_net.teardown()
    results["rounds"] = rounds
    results["ratios"] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print("\n| plain TCP | round | connections/s | server CPU µs/conn | CPU 0 busy µs/conn | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results["plain_tcp"]:
        print(f"| {r['transport']} | {r['round']} | {r['connections_per_s']:.0f} | "
              f"{r['server_cpu_us_per_connection']:.1f} | {r['cpu0_busy_us_per_connection']:.1f} | "
              f"{r['errors']} |")
    print("\n| mTLS full (TLS 1.3) | round | handshakes/s | p50 µs | server CPU µs/handshake | "
          "worker busy µs/handshake | CPU 0 busy µs/handshake | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["mtls_full"]:
        print(f"| {r['transport']} | {r['round']} | {r['handshakes_per_s']:.0f} | "
              f"{r['latency_us'].get('p50', 0):.0f} | {r['server_cpu_us_per_handshake']:.0f} | "
              f"{r['worker_busy_us_per_handshake']:.0f} | {r['cpu0_busy_us_per_handshake']:.0f} | "
              f"{r['errors_total']} |")
    for index, r in enumerate(rounds):
        print(f"round {index}: plain TCP {r['plain_tcp_cpu_dpdk_over_kernel']:.2f}, "
              f"mTLS {r['mtls_cpu_dpdk_over_kernel']:.2f}")
    print(f"\nmedian ratios dpdk/kernel: plain TCP {results['ratios']['plain_tcp_cpu_dpdk_over_kernel']:.2f} "
          f"(target <= 0.5), mTLS {results['ratios']['mtls_cpu_dpdk_over_kernel']:.2f} "
          f"(target <= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
