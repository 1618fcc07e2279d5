#!/usr/bin/env python3
"""Kernel-transport benchmark: handshake throughput and server CPU per
handshake for 1..N workers, full and resumed, plus the in-process crypto
baseline, all in one run (ratios, not absolute numbers, are what to compare
on a shared machine).

Server CPU per handshake is measured from /proc: utime+stime of the
Portcullis worker processes over the load window, divided by handshakes. The
load generator runs on the same machine, so on a 2-core box absolute
throughput is limited by the client; CPU per handshake is not.

Rounds are interleaved (each round runs every worker count and mode, the
order turning from round to round) and the scaling figure is the ratio of N
workers' CPU per handshake to one worker's within each round, median over
rounds: this VM's speed drifts between rounds by more than the 5% it checks.

  perf/kernel_scaling.py --build build [--workers 1,2] [--duration 5] [--rounds 3] [--json out.json]
"""
import argparse
import json
import os
import signal
import statistics
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
    ap.add_argument("--rounds", type=int, default=3)
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
               "conns": args.conns, "rounds": args.rounds, "runs": []}

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
        counts = [int(w) for w in args.workers.split(",")]
        for r in range(args.rounds):
            order = counts[r % len(counts):] + counts[:r % len(counts)]
            for mode in ("full", "resume"):
                for workers in order:
                    run = run_one(portcullis, bench, pki, work, backend_port, workers, mode, args)
                    run["round"] = r + 1
                    results["runs"].append(run)
                    print(f"   round {r + 1} {workers} worker(s) {mode:6} "
                          f"{run['server_cpu_us_per_handshake']:7.0f} µs/handshake", flush=True)
        results["scaling"] = scaling(results["runs"], counts)
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


def scaling(runs, counts):
    """Per mode and worker count: median CPU per handshake, and the per-round
    ratio to one worker's (the first count's) with its median."""
    out = {}
    base = counts[0]
    for mode in ("full", "resume"):
        out[mode] = {}
        for workers in counts:
            mine = {r["round"]: r["server_cpu_us_per_handshake"] for r in runs
                    if r["mode"] == mode and r["workers"] == workers}
            ref = {r["round"]: r["server_cpu_us_per_handshake"] for r in runs
                   if r["mode"] == mode and r["workers"] == base}
            ratios = [mine[k] / ref[k] for k in sorted(mine) if k in ref and ref[k] > 0]
            out[mode][str(workers)] = {
                "median_us": statistics.median(mine.values()),
                "rounds_us": [round(v) for v in mine.values()],
                "ratio_to_base": statistics.median(ratios) if ratios else None,
                "ratio_rounds": [round(x, 3) for x in ratios],
            }
    return out


def print_table(results):
    base = results.get("crypto_baseline")
    if base:
        print("in-process crypto baseline (no sockets): " + json.dumps(base))
    print(f"\n| round | workers | mode | handshakes/s | p50 µs | p99 µs | server CPU µs/handshake | errors |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results["runs"]:
        lat = r["latency_us"]
        print(f"| {r.get('round', 1)} | {r['workers']} | {r['mode']} | {r['handshakes_per_s']:.0f} | {lat.get('p50', 0):.0f} | "
              f"{lat.get('p99', 0):.0f} | {r['server_cpu_us_per_handshake']:.0f} | {r['errors_total']} |")
    if "scaling" in results:
        print("\n| mode | workers | server CPU µs/handshake, median (rounds) | vs the first count, median of per-round ratios (rounds) |")
        print("| --- | ---: | ---: | ---: |")
        for mode, by_count in results["scaling"].items():
            for workers, v in by_count.items():
                ratio = f"{v['ratio_to_base']:.2f} ({', '.join(f'{x:.2f}' for x in v['ratio_rounds'])})"
                print(f"| {mode} | {workers} | {v['median_us']:.0f} ({', '.join(map(str, v['rounds_us']))}) | {ratio} |")
        print("\ntarget: CPU per handshake at N workers within 5% of one worker's (ratio <= 1.05)")


if __name__ == "__main__":
    main()
