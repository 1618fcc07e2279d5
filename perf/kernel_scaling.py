#!/usr/bin/env python3
"""Kernel-transport benchmark: handshake throughput and server CPU per
handshake for 1..N workers, full and resumed, plus the in-process crypto
baseline, all in one run (ratios, not absolute numbers, are what to compare
on a shared machine).

Server CPU per handshake is measured from /proc: utime+stime of the
Portcullis worker processes over the load window, divided by handshakes. The
load generator runs on the same machine, so on a 2-core box absolute
throughput is limited by the client; CPU per handshake is not.

  perf/kernel_scaling.py --build build [--workers 1,2] [--duration 5] [--json out.json]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from perf_common import bench_client, bench_listener, cpu_seconds, running_portcullis, wait_for

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--tls", default="1.3")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    portcullis = build / "mgmt" / "portcullis"
    bench = build / "perf" / "portcullis-bench"
    backend = build / "tests" / "support" / "portcullis-test-backend"
    cost = build / "perf" / "portcullis-tls-core-cost"
    for binary in (portcullis, bench, backend):
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")

    work = Path(tempfile.mkdtemp(prefix="portcullis-perf."))
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(work / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    pki = work / "pki"
    results = {"machine": {"cpus": os.cpu_count()}, "tls": args.tls, "duration_s": args.duration,
               "conns": args.conns, "runs": []}

    if cost.exists():
        out = subprocess.run([str(cost), "--json", str(work / "cost.json")], capture_output=True, text=True)
        if out.returncode == 0 and (work / "cost.json").exists():
            results["crypto_baseline"] = json.loads((work / "cost.json").read_text())

    port_file = work / "backend.port"
    backend_proc = subprocess.Popen([str(backend), "--listen", "127.0.0.1:0", "--ready-file", str(port_file),
                                     "--mode", "http"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip())
        backend_port = port_file.read_text().strip()
        for workers in [int(w) for w in args.workers.split(",")]:
            for mode in ("full", "resume"):
                results["runs"].append(run_one(portcullis, bench, pki, work, backend_port, workers, mode, args))
    finally:
        backend_proc.send_signal(signal.SIGTERM)
        backend_proc.wait()

    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")


def run_one(portcullis, bench, pki, work, backend_port, workers, mode, args):
    config = work / f"portcullis-{workers}.toml"
    port = 20000 + os.getpid() % 20000
    config.write_text(f"""
[workers]
count = {workers}
""" + bench_listener(f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"))
    with running_portcullis(portcullis, config, work / f"portcullis-{workers}-{mode}.log") as worker_pids:
        request = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
        cmd = bench_client(bench, f"127.0.0.1:{port}", pki) + [
            "--mode", mode, "--tls", args.tls, "--conns", str(args.conns),
            "--threads", str(args.client_threads), "--duration", str(args.duration),
            "--request", request, "--json", str(work / "bench.json")]
        before = cpu_seconds(worker_pids)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        after = cpu_seconds(worker_pids)
        summary = json.loads((work / "bench.json").read_text())
    handshakes = max(summary["handshakes"], 1)
    return {
        "workers": workers, "mode": mode,
        "handshakes": summary["handshakes"],
        "handshakes_per_s": summary["handshakes_per_s"],
        "resumed_fraction": summary.get("resumed_fraction", 0.0),
        "errors_total": summary.get("errors_total", 0),
        "latency_us": summary.get("latency_us", {}),
        "server_cpu_s": after - before,
        "server_cpu_us_per_handshake": (after - before) * 1e6 / handshakes,
        "client_cpu_s": summary.get("client_cpu_s"),
    }


def print_table(results):
    base = results.get("crypto_baseline")
    if base:
        print("in-process crypto baseline (no sockets): " + json.dumps(base))
    print(f"\n| workers | mode | handshakes/s | p50 µs | p99 µs | server CPU µs/handshake | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results["runs"]:
        lat = r["latency_us"]
        print(f"| {r['workers']} | {r['mode']} | {r['handshakes_per_s']:.0f} | {lat.get('p50', 0):.0f} | "
              f"{lat.get('p99', 0):.0f} | {r['server_cpu_us_per_handshake']:.0f} | {r['errors_total']} |")


if __name__ == "__main__":
    main()
