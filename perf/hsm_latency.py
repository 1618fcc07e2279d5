#!/usr/bin/env python3
"""HSM benchmark: full-handshake throughput of ONE worker (pinned to CPU 0,
its PKCS#11 session threads with it) while the HSM answers in 0/1/2/5 ms,
for several session-pool sizes, and server CPU per full handshake with the
key in SoftHSM2 vs the same key from a PEM file. All in one run: compare the
ratios, not the absolute numbers, on a shared machine.

The HSM is perf's own SoftHSM2 token behind hsm/'s test PKCS#11 module
(latency added in C_Sign). The load generator runs on CPU 1.

  perf/hsm_latency.py --build build [--latencies 0,1,2,5] [--sessions 4,16,64]
                      [--duration 5] [--conns 64] [--json out.json]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from perf_common import bench_client, bench_listener, cpu_seconds, running_portcullis, wait_for

ROOT = Path(__file__).resolve().parent.parent
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "perf-pin-4711"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--latencies", default="0,1,2,5")
    ap.add_argument("--sessions", default="4,16,64")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved repetitions; the median is reported (shared machines are noisy)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    portcullis = build / "mgmt" / "portcullis"
    bench = build / "perf" / "portcullis-bench"
    backend = build / "tests" / "support" / "portcullis-test-backend"
    module = build / "hsm" / "libportcullis-test-pkcs11.so"
    for binary in (portcullis, bench, backend, module):
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")
    if not shutil.which("softhsm2-util") or not Path(SOFTHSM).exists():
        sys.exit("softhsm2 is not installed (scripts/lib/deps.sh installs it)")

    work = Path(tempfile.mkdtemp(prefix="portcullis-hsm-perf."))
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(work / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    (work / "tokens").mkdir()
    (work / "softhsm2.conf").write_text(f"directories.tokendir = {work}/tokens\nobjectstore.backend = file\n"
                                        "log.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(work / "softhsm2.conf"),
               PORTCULLIS_TEST_PKCS11_CONTROL=str(work / "control"))
    (work / "pin").write_text(PIN + "\n")
    (work / "pin").chmod(0o600)  # the daemon refuses a PIN file other users may open
    # The same key in the token and as PEM, so the two runs differ only in where it lives.
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "perf", "--pin", PIN,
                    "--so-pin", PIN], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["softhsm2-util", "--import", str(work / "pki" / "server-ec.key.pem"), "--token", "perf",
                    "--label", "server-ec", "--id", "01", "--pin", PIN], check=True, env=env,
                   stdout=subprocess.DEVNULL)

    port_file = work / "backend.port"
    backend_proc = subprocess.Popen([str(backend), "--listen", "127.0.0.1:0", "--ready-file", str(port_file),
                                     "--mode", "echo"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {"machine": {"cpus": os.cpu_count()}, "duration_s": args.duration, "conns": args.conns,
               "tls": "1.3", "worker_cpu": 0, "client_cpu": 1, "latency_runs": [], "cpu_runs": []}
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip())
        backend_port = port_file.read_text().strip()
        ctx = dict(portcullis=portcullis, bench=bench, work=work, env=env, backend_port=backend_port,
                   args=args)
        # Server CPU per handshake: PEM vs SoftHSM2 directly vs the test module at 0 ms.
        cpu_samples = {}
        for _ in range(args.repeat):
            for key_source in ("pem", "softhsm", "test-module"):
                cpu_samples.setdefault(key_source, []).append(run_one(ctx, key_source, sessions=4,
                                                                      latency_ms=0))
        for key_source, runs in cpu_samples.items():
            runs.sort(key=lambda r: r["server_cpu_us_per_handshake"])
            median = dict(runs[len(runs) // 2])
            median["samples_us_per_handshake"] = [r["server_cpu_us_per_handshake"] for r in runs]
            results["cpu_runs"].append(median)
        for sessions in [int(s) for s in args.sessions.split(",")]:
            samples = {}
            for _ in range(args.repeat):  # interleaved, so drift hits every latency alike
                for latency in [float(x) for x in args.latencies.split(",")]:
                    samples.setdefault(latency, []).append(run_one(ctx, "test-module", sessions, latency))
            for latency, runs in samples.items():
                runs.sort(key=lambda r: r["handshakes_per_s"])
                median = dict(runs[len(runs) // 2])
                median["samples_handshakes_per_s"] = [r["handshakes_per_s"] for r in runs]
                results["latency_runs"].append(median)
    finally:
        backend_proc.send_signal(signal.SIGTERM)
        backend_proc.wait()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    shutil.rmtree(work, ignore_errors=True)


def run_one(ctx, key_source, sessions, latency_ms):
    work, args = ctx["work"], ctx["args"]
    port = 20000 + (os.getpid() + sessions + int(latency_ms * 10)) % 20000
    (work / "control").write_text(f"latency_ms = {latency_ms}\n")
    if key_source == "pem":
        hsm, key = "", "pki/server-ec.key.pem"
    else:
        module = SOFTHSM if key_source == "softhsm" else ctx["bench"].parent.parent / "hsm" / \
            "libportcullis-test-pkcs11.so"
        hsm = (f'[hsm]\nmodule = "{module}"\ntoken = "perf"\npin_file = "pin"\nsessions = {sessions}\n'
               f'max_in_flight = 100000\n')
        key = "pkcs11:token=perf;object=server-ec;type=private"
    config = work / "portcullis.toml"
    config.write_text(f"""
[workers]
count = 1
[admin]
address = ""
{hsm}
""" + bench_listener(f"127.0.0.1:{port}", f"127.0.0.1:{ctx['backend_port']}", key))
    with running_portcullis(ctx["portcullis"], config, work / "portcullis.log", ctx["env"]) as worker_pids:
        cmd = ["taskset", "-c", "1"] + bench_client(ctx["bench"], f"127.0.0.1:{port}", work / "pki") + [
            "--mode", "full", "--tls", "1.3", "--conns", str(args.conns), "--duration", str(args.duration),
            "--request", "ping\\n", "--response-bytes", "5", "--json", str(work / "bench.json")]
        before = cpu_seconds(worker_pids)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ctx["env"])
        after = cpu_seconds(worker_pids)
        summary = json.loads((work / "bench.json").read_text())
    handshakes = max(summary["handshakes"], 1)
    return {
        "key": key_source, "sessions": sessions if key_source != "pem" else 0, "hsm_latency_ms": latency_ms,
        "handshakes": summary["handshakes"], "handshakes_per_s": summary["handshakes_per_s"],
        "errors_total": summary.get("errors_total", 0), "latency_us": summary.get("latency_us", {}),
        "server_cpu_s": after - before,
        "server_cpu_us_per_handshake": (after - before) * 1e6 / handshakes,
    }


def print_table(results):
    print("\nServer CPU per full TLS 1.3 mTLS handshake, ECDSA P-256 key, 1 worker (all its threads):")
    print(f"{'key':<12} {'handshakes/s':>13} {'server us/hs':>13} {'vs PEM':>7}")
    pem = next(r for r in results["cpu_runs"] if r["key"] == "pem")
    for r in results["cpu_runs"]:
        ratio = r["server_cpu_us_per_handshake"] / max(pem["server_cpu_us_per_handshake"], 1e-9)
        print(f"{r['key']:<12} {r['handshakes_per_s']:>13.0f} {r['server_cpu_us_per_handshake']:>13.0f} "
              f"{ratio:>7.2f}")
    print("\nFull handshakes/s on one worker core vs HSM latency (test module over SoftHSM2):")
    print(f"{'sessions':>8} {'latency ms':>10} {'handshakes/s':>13} {'vs 0 ms':>8} {'p99 us':>8} {'errors':>7}")
    for sessions in sorted({r["sessions"] for r in results["latency_runs"]}):
        runs = [r for r in results["latency_runs"] if r["sessions"] == sessions]
        base = next((r for r in runs if r["hsm_latency_ms"] == 0), runs[0])
        for r in runs:
            ratio = r["handshakes_per_s"] / max(base["handshakes_per_s"], 1e-9)
            r["ratio_vs_0ms"] = ratio
            print(f"{sessions:>8} {r['hsm_latency_ms']:>10g} {r['handshakes_per_s']:>13.0f} {ratio:>8.2f} "
                  f"{r['latency_us'].get('p99', 0):>8.0f} {r['errors_total']:>7}")


if __name__ == "__main__":
    main()
