#!/usr/bin/env python3
"""One capacity report of this machine: Portcullis (the benchmark listener of
perf_common.py: mutual TLS, the demo PKI, CRL checking, one backend) under an
open-loop sweep of portcullis-bench, /metrics scraped every second all the
while, then portcullis-capacity over those scrapes and the sweep's JSON.

After the sweep come two short closed-loop phases, full handshakes only and
resumed ones only: a sweep keeps one mix, and the CPU split of full and
resumed handshakes needs intervals of different mixes to be measured rather
than assumed (portcullis-capacity says which it did).

  perf/capacity_report.py --build build [--out DIR] [--sweep 50:1000:50] [--step-duration 5]
      [--resume-fraction 0.5] [--workers 1] [--calibrate 5] [--client-cpu N]
      [capacity options: --mix full=0.3
      --target-rate 50000 --redundancy 1 --hsm-max-sign-rate N --format markdown|html]

Prints the report's path last. perf/capacity-report.sh builds what it needs
and runs this on the project's platform.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from perf_common import bench_client, bench_listener, running_portcullis, wait_for

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_sweep(bench):
    proc = subprocess.run([str(bench), "--help"], capture_output=True, text=True)
    return "--sweep" in proc.stdout + proc.stderr


class Recorder:
    """Scrapes the admin listener once a second in a thread, keeping the text."""

    def __init__(self, url):
        self.url, self.scrapes, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            started = time.time()
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
                self.scrapes.append({"time": started, "text": text})
            except OSError as e:
                print(f"capacity-report: scrape failed: {e}", file=sys.stderr)
            self.stop.wait(max(0.0, 1.0 - (time.time() - started)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--out", default="")
    ap.add_argument("--sweep", default="50:1000:50", help="portcullis-bench --sweep FROM:TO:STEP (handshakes/s)")
    ap.add_argument("--step-duration", type=float, default=5)
    ap.add_argument("--resume-fraction", type=float, default=0.5)
    ap.add_argument("--max-in-flight", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--calibrate", type=float, default=5,
                    help="seconds of full-only and of resumed-only load after the sweep (0: none)")
    ap.add_argument("--client-cpu", type=int, default=None,
                    help="CPU for portcullis-bench and the backend (default: the last CPU when "
                         "there are more CPUs than workers, which take CPUs 0.. in turn; -1: unpinned)")
    args, capacity_args = ap.parse_known_args()
    if args.client_cpu is None:
        cpus = os.cpu_count() or 1
        args.client_cpu = cpus - 1 if cpus > args.workers else -1
    # The workers pin themselves to CPUs 0..workers-1: a load generator on one
    # of them would take the CPU the report measures.
    pin = ["taskset", "-c", str(args.client_cpu)] if args.client_cpu >= 0 else []
    build = Path(args.build).resolve()
    portcullis = build / "mgmt" / "portcullis"
    bench = build / "perf" / "portcullis-bench"
    backend_bin = build / "tests" / "support" / "portcullis-test-backend"
    capacity = build / "perf" / "portcullis-capacity"
    for binary in (portcullis, bench, backend_bin, capacity):
        if not binary.exists():
            sys.exit(f"capacity-report: missing {binary}: build first (meson compile -C {build})")
    if not has_sweep(bench):
        sys.exit("capacity-report: this portcullis-bench has no --sweep (the open-loop load of issue #18); "
                 "merge the open-loop branch first. No report made.")
    out = Path(args.out or build / f"capacity-report-{time.strftime('%Y%m%dT%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="portcullis-capacity-report."))
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(work / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    pki = work / "pki"
    port_file = work / "backend.port"
    backend = subprocess.Popen(pin + [str(backend_bin), "--listen", "127.0.0.1:0", "--ready-file", str(port_file),
                                "--mode", "http"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: port_file.exists() and port_file.read_text().strip()):
            sys.exit("capacity-report: the test backend did not start")
        port, admin = free_port(), free_port()
        config = work / "portcullis.toml"
        config.write_text(f"""
[workers]
count = {args.workers}

[admin]
address = "127.0.0.1:{admin}"
""" + bench_listener(f"127.0.0.1:{port}", f"127.0.0.1:{port_file.read_text().strip()}"))
        client = pin + bench_client(bench, f"127.0.0.1:{port}", pki) + ["--request", REQUEST]
        metrics_url = f"http://127.0.0.1:{admin}/metrics"
        with running_portcullis(portcullis, config, work / "portcullis.log", env=None):
            with Recorder(metrics_url) as recorder:
                time.sleep(1.5)  # a first scrape before the load
                sweep = subprocess.run(client + ["--sweep", args.sweep, "--step-duration", str(args.step_duration),
                                                 "--resume-fraction", str(args.resume_fraction),
                                                 "--max-in-flight", str(args.max_in_flight),
                                                 "--json", str(out / "sweep.json")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if sweep.returncode != 0 or not (out / "sweep.json").exists():
                    sys.exit(f"capacity-report: portcullis-bench --sweep failed ({sweep.returncode}):\n"
                             f"{sweep.stderr[-2000:]}")
                if args.calibrate > 0:
                    for mode in ("full", "resume"):
                        time.sleep(1.5)
                        subprocess.run(client + ["--mode", mode, "--conns", "4", "--duration", str(args.calibrate)],
                                       check=True, stdout=subprocess.DEVNULL)
                time.sleep(1.5)
        (out / "scrapes.json").write_text(json.dumps(recorder.scrapes))
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    report = subprocess.run([sys.executable, str(capacity), "--metrics-file", str(out / "scrapes.json"),
                             "--sweep", str(out / "sweep.json"), "--out", str(out)] + capacity_args,
                            stdout=subprocess.PIPE, text=True)
    if report.returncode != 0:
        sys.exit(report.returncode)
    print(report.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
