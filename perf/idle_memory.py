#!/usr/bin/env python3
"""Memory per idle established mutual-TLS connection: Portcullis, nginx and
HAProxy side by side, each holding N connections that finished their
handshake and then send nothing.

The servers are perf/compare.py's: the same certificates, CRLs, verification,
groups, session cache and tickets, one worker each on --server-cpu, with
room for N connections and an idle timeout longer than the hold. Each client
connection gets its upstream connection: the backend is a sink (this script
with --sink) that accepts, reads and drops, on as many loopback addresses as
the ephemeral port range needs, and the run fails unless the sink holds N
connections while the clients do.

Per run (a fresh server each time): the baseline, then `portcullis-bench
--hold N` opens N connections from --source-addresses; once it prints
"holding N" the memory is sampled, again after --hold-seconds, then the
bench closes every connection and the memory is sampled --after seconds
later (5 and 60 by default), to show whether it goes back. Memory is the
whole process tree's (master, workers, Portcullis's admin process): the sum
of Rss and of Pss over /proc/PID/smaps_rollup. KiB per connection = (memory
at the end of the hold - baseline) / N. Rounds are interleaved (round r runs
every N on every server before round r+1), the servers' order turning each
round; the table shows medians.

Descriptors decide how large N can be: a server process holds two per
connection (client and upstream), the bench and the sink one each. The
limits are checked before anything runs, and the one that stops a larger N
is named.

Run it inside a network namespace of its own, so nothing else on loopback
meets its thousands of connections:

  unshare -n sh -c 'ip link set lo up && nice -n 10 python3 perf/idle_memory.py --build build'
      [--connections 1000,9000] [--rounds 2] [--servers portcullis,nginx,haproxy]
      [--hold-seconds 10] [--after 5,60] [--json perf/results-idle-memory.json]
  python3 perf/idle_memory.py --table-from perf/results-idle-memory.json
"""
import argparse
import datetime
import ipaddress
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
from perf_common import wait_for  # noqa: E402

SERVERS = ("portcullis", "nginx", "haproxy")
LABELS = {"portcullis": "Portcullis", "nginx": "nginx", "haproxy": "HAProxy"}
# Beyond N, each process needs descriptors for its listeners, logs, the
# admin listener, shared memory and the like.
FD_MARGIN = 64


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(compare.ROOT / "build"))
    ap.add_argument("--connections", default="1000,9000", help="comma-separated N to hold")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--hold-seconds", type=float, default=10.0,
                    help="seconds between the first and the second sample while held")
    ap.add_argument("--after", default="5,60", help="seconds after the close to sample again")
    ap.add_argument("--conns", type=int, default=32, help="handshakes in flight while opening")
    ap.add_argument("--open-rate", type=float, default=0, help="connections opened per second at most (0: no limit)")
    ap.add_argument("--source-addresses", default="127.0.0.2-127.0.0.20",
                    help="loopback addresses the bench binds its connections to, in turn")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--work", default="/tmp/portcullis-idle-memory", help="PKI, configurations, logs")
    ap.add_argument("--json", default="", help="write every run's samples and the medians here")
    ap.add_argument("--table-from", default="", metavar="JSON",
                    help="print the table of an earlier run's JSON again (medians recomputed), run nothing")
    ap.add_argument("--sink", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        return sink(args.sink.split(","), Path(args.ready_file))
    if args.table_from:
        results = json.loads(Path(args.table_from).read_text())
        s = results["settings"]
        results["medians"] = medians(results["runs"], s["connections"], s["servers"], s["after_s"])
        print(table(results, s["connections"], s["servers"], s["after_s"]))
        return

    raise_descriptor_limit()
    counts = [int(n) for n in args.connections.split(",") if n.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    after = [float(a) for a in args.after.split(",") if a.strip()]
    for s in servers:
        if s not in SERVERS:
            sys.exit(f"--servers: unknown server {s!r} ({', '.join(SERVERS)})")
    if not counts or min(counts) < 1:
        sys.exit("--connections: at least one N, each at least 1")
    build = Path(args.build).resolve()
    binaries = {"portcullis": build / "mgmt" / "portcullis", "bench": build / "perf" / "portcullis-bench"}
    for binary in binaries.values():
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")
    for tool in ["taskset", "openssl"] + [s for s in servers if s != "portcullis"]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: perf/compare.sh installs nginx, libnginx-mod-stream and haproxy")

    sources = address_range(args.source_addresses)
    ports = port_range_size()
    too_many = [n for n in counts if limits(n, len(sources), ports)]
    if too_many:
        sys.exit("cannot hold N={} here: {}. The largest N that fits: {}.".format(
            ", ".join(map(str, too_many)), "; ".join(limits(max(too_many), len(sources), ports)),
            largest_n(len(sources), ports)))
    # Each backend address gives the servers' upstream connections another
    # ephemeral port range (the sink listens on each).
    backends = [f"127.0.1.{i + 1}" for i in range(-(-max(counts) * 10 // (ports * 9)))]

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pki = compare.ensure_pki(work / "pki", 3)
    run_dir = Path(tempfile.mkdtemp(prefix="run.", dir=work))
    runner = Runner(args, binaries, run_dir, pki, backends)
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": compare.machine(),
        "versions": compare.versions(binaries["portcullis"], servers),
        "commit": subprocess.run(["git", "-C", str(compare.ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "settings": {"connections": counts, "rounds": args.rounds, "servers": servers,
                     "hold_seconds": args.hold_seconds, "after_s": after, "conns": args.conns,
                     "open_rate": args.open_rate, "source_addresses": len(sources),
                     "backend_addresses": len(backends), "ephemeral_ports": ports,
                     "server_cpu": args.server_cpu, "client_cpu": args.client_cpu,
                     "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                     "largest_n_here": largest_n(len(sources), ports)},
        "runs": [], "medians": {}, "failures": [],
    }
    print(f"== {args.rounds} rounds x {len(counts)} N x {len(servers)} servers; bench and sink on CPU "
          f"{args.client_cpu}, servers on CPU {args.server_cpu}; {len(sources)} source addresses, "
          f"{len(backends)} backend addresses")
    try:
        runner.start_sink()
        for r in range(args.rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for n in counts:
                for name in order:
                    run = runner.measure(name, n, r, after)
                    results["runs"].append(run)
                    print(f"   round {r + 1} N={n:<6} {LABELS[name]:10} {run_line(run)}", flush=True)
                    if "failed" in run:
                        results["failures"].append(f"{name} N={n} round {r + 1}: {run['failed']}")
    finally:
        runner.stop_sink()
    results["medians"] = medians(results["runs"], counts, servers, after)
    print()
    print(table(results, counts, servers, after))
    for failure in results["failures"]:
        print(f"!!! FAILED: {failure}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    if not results["failures"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        print(f"configurations and logs kept in {run_dir}", file=sys.stderr)
    sys.exit(1 if results["failures"] else 0)


# --- limits ------------------------------------------------------------------

def raise_descriptor_limit():
    """Soft RLIMIT_NOFILE up to the hard limit, for this script, the sink
    and the servers it starts (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def address_range(text):
    first, _, last = text.partition("-")
    a, b = ipaddress.IPv4Address(first), ipaddress.IPv4Address(last or first)
    return [str(ipaddress.IPv4Address(i)) for i in range(int(a), int(b) + 1)]


def port_range_size():
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(high) - int(low) + 1


def limits(n, sources, ports):
    """What keeps this machine from holding n connections, each reason naming
    its limit; empty when n fits."""
    problems = []
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if 2 * n + FD_MARGIN > hard:
        problems.append(f"a server process needs {2 * n + FD_MARGIN} descriptors (client and upstream "
                        f"connection each), RLIMIT_NOFILE's hard limit is {hard} and raising it needs "
                        f"CAP_SYS_RESOURCE")
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    if 2 * n + FD_MARGIN > nr_open:
        problems.append(f"fs.nr_open is {nr_open}")
    if n > sources * ports * 9 // 10:
        problems.append(f"{sources} source addresses x {ports} ephemeral ports (ip_local_port_range) are too "
                        f"few: widen --source-addresses")
    return problems


def largest_n(sources, ports):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    return max(0, min((min(hard, nr_open) - FD_MARGIN) // 2, sources * ports * 9 // 10))


# --- the backend sink ----------------------------------------------------------

def sink(addresses, ready_file):
    """Accepts on every address (one port, the same on each), reads and drops
    what arrives, closes on end of stream; writes the number of connections it
    holds to ready_file + '.count' whenever it changes."""
    raise_descriptor_limit()
    selector = selectors.DefaultSelector()
    port = 0
    for address in addresses:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        port = listener.getsockname()[1]
        listener.listen(4096)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "listener")
    count_file = Path(str(ready_file) + ".count")
    held = 0
    written = None
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    ready_file.write_text(f"{port}\n")
    while not stop:
        for key, _ in selector.select(timeout=0.2):
            if key.data == "listener":
                while True:
                    try:
                        conn, _ = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ, "conn")
                    held += 1
                continue
            try:
                data = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                key.fileobj.close()
                held -= 1
        if held != written:
            tmp = count_file.with_suffix(".tmp")
            tmp.write_text(f"{held}\n")
            tmp.replace(count_file)
            written = held


# --- measuring -------------------------------------------------------------------

def memory(pids):
    """Rss and Pss (bytes) of each process, from /proc/PID/smaps_rollup."""
    out = {}
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        fields = {}
        for line in rollup.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":"):
                fields[parts[0][:-1]] = int(parts[1]) * 1024
        out[str(pid)] = {"comm": comm, "rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0)}
    return out


def totals(sample):
    return {"rss": sum(p["rss"] for p in sample.values()), "pss": sum(p["pss"] for p in sample.values())}


class PortcullisWithAdmin(compare.Portcullis):
    """compare.py's Portcullis with its admin listener on, so the bench's
    progress lines show the daemon's own memory metric."""
    expected_processes = 3  # supervisor, one worker, the admin process

    def admin_address(self):
        self.admin_port = compare.free_port()
        return f"127.0.0.1:{self.admin_port}"


SERVER_CLASSES = {"portcullis": PortcullisWithAdmin, "nginx": compare.Nginx, "haproxy": compare.Haproxy}


class Runner:
    """What compare.py's server classes read from their runner, and the runs."""

    def __init__(self, args, binaries, work, pki, backends):
        self.args, self.binaries, self.work, self.pki = args, binaries, work, pki
        self.server_host = "127.0.0.1"
        self.backend_ips = backends
        self.backend_port = 0
        self.sink_proc = None

    def chain_cache_entries(self):
        return 100

    def backend_addresses(self):
        return [f"{ip}:{self.backend_port}" for ip in self.backend_ips]

    def start_sink(self):
        ready = self.work / "sink.port"
        self.sink_count = Path(str(ready) + ".count")
        self.sink_proc = subprocess.Popen(
            ["taskset", "-c", str(self.args.client_cpu), sys.executable, str(Path(__file__).resolve()),
             "--sink", ",".join(self.backend_ips), "--ready-file", str(ready)])
        if not wait_for(lambda: ready.exists() and ready.read_text().strip(), 10):
            raise SystemExit("the backend sink did not start")
        self.backend_port = int(ready.read_text())

    def sink_connections(self):
        try:
            return int(self.sink_count.read_text())
        except (OSError, ValueError):
            return 0

    def stop_sink(self):
        if self.sink_proc and self.sink_proc.poll() is None:
            self.sink_proc.send_signal(signal.SIGTERM)
            self.sink_proc.wait(timeout=10)

    def measure(self, name, n, round_index, after):
        server = SERVER_CLASSES[name](self)
        server.max_connections = n + FD_MARGIN
        server.idle_timeout_s = int(self.args.hold_seconds + 600)
        run = {"round": round_index + 1, "server": name, "connections": n}
        try:
            server.start(verbose=False)
        except compare.Abort as e:
            run["failed"] = str(e)
            return run
        try:
            return self.hold(server, n, after, run)
        finally:
            server.stop()

    def sample(self, server, label, run):
        pids = compare.process_tree(server.proc.pid)
        per_process = memory(pids)
        run["samples"][label] = {"t_s": round(time.monotonic() - run["_t0"], 2), **totals(per_process),
                                 "processes": per_process, "sink_connections": self.sink_connections()}

    def hold(self, server, n, after, run):
        run["_t0"] = time.monotonic()
        run["samples"] = {}
        time.sleep(1)  # the server's start-up settles
        self.sample(server, "baseline", run)
        out = self.work / "hold.json"
        out.unlink(missing_ok=True)
        pki = self.pki
        argv = ["taskset", "-c", str(self.args.client_cpu), str(self.binaries["bench"]),
                "--target", f"{server.host}:{server.port}", "--sni", "localhost",
                "--ca", str(pki / "root-ca.cert.pem"), "--cert", str(pki / "partner-a.chain.pem"),
                "--key", str(pki / "partner-a.key.pem"), "--hold", str(n), "--conns", str(self.args.conns),
                "--open-rate", str(self.args.open_rate), "--source-addresses", self.args.source_addresses,
                "--timeout-ms", "30000", "--progress", "--json", str(out)]
        if getattr(server, "admin_port", 0):
            argv += ["--metrics-url", f"http://127.0.0.1:{server.admin_port}/metrics"]
        bench = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines, holding, opening_done = [], threading.Event(), threading.Event()

        def read_stderr():
            for line in bench.stderr:
                lines.append(line.rstrip("\n"))
                if line.strip() == f"holding {n}":
                    holding.set()
                elif line.startswith("opening done:"):
                    opening_done.set()
            opening_done.set()  # the bench exited

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        started = time.monotonic()
        while not holding.is_set() and not opening_done.is_set():
            holding.wait(0.5)
        if holding.is_set():
            run["open_s"] = round(time.monotonic() - started, 2)
            # The sink accepts the last upstream connections just after the last handshake.
            wait_for(lambda: self.sink_connections() >= n, 10)
            self.sample(server, "held", run)
            time.sleep(self.args.hold_seconds)
            self.sample(server, "held_end", run)
        if bench.poll() is None:
            bench.send_signal(signal.SIGINT)
        try:
            bench.wait(timeout=120)
        except subprocess.TimeoutExpired:
            bench.kill()
            bench.wait()
        reader.join(timeout=5)
        closed = time.monotonic()
        run["bench_progress_tail"] = lines[-5:]
        if out.exists():
            summary = json.loads(out.read_text())
            run["bench"] = {k: summary.get(k) for k in (
                "held", "opened", "hold_seconds", "hold_failures", "hold_failure_reasons", "errors",
                "errors_total", "open_rate_achieved", "server_memory_bytes", "client_cpu_s", "client_max_rss_bytes",
                "latency_us")}
        for seconds in after:
            time.sleep(max(0.0, closed + seconds - time.monotonic()))
            self.sample(server, f"after_{seconds:g}s", run)
        del run["_t0"]
        problems = []
        bench_summary = run.get("bench", {})
        if not holding.is_set():
            problems.append(f"not all {n} connections were established: {lines[-3:]}")
        if bench_summary.get("held") != n or bench_summary.get("hold_failures"):
            problems.append(f"bench held {bench_summary.get('held')} of {n}, hold failures "
                            f"{bench_summary.get('hold_failure_reasons')}, open errors {bench_summary.get('errors')}")
        for label in ("held", "held_end"):
            if label in run["samples"] and run["samples"][label]["sink_connections"] < n:
                problems.append(f"the backend held {run['samples'][label]['sink_connections']} upstream "
                                f"connections at '{label}', not {n}")
        if server.proc.poll() is not None:
            problems.append(f"{server.name} exited: {server.log.read_text()[-1000:]}")
        if problems:
            run["failed"] = "; ".join(problems)
            return run
        base = run["samples"]["baseline"]
        end = run["samples"]["held_end"]
        run["kib_per_connection"] = {k: (end[k] - base[k]) / n / 1024 for k in ("rss", "pss")}
        run["kib_per_connection_at_open"] = {
            k: (run["samples"]["held"][k] - base[k]) / n / 1024 for k in ("rss", "pss")}
        run["after_over_baseline"] = {
            f"{s:g}s": {k: run["samples"][f"after_{s:g}s"][k] / base[k] for k in ("rss", "pss")} for s in after}
        # The process that grew most while held: the worker.
        grown = max(base["processes"], key=lambda pid: end["processes"].get(pid, {"rss": 0})["rss"]
                    - base["processes"][pid]["rss"])
        run["worker"] = {"pid": int(grown), "comm": base["processes"][grown]["comm"],
                         "baseline_rss": base["processes"][grown]["rss"],
                         "held_rss": end["processes"].get(grown, {}).get("rss"),
                         "after_over_baseline_rss": {
                             f"{s:g}s": run["samples"][f"after_{s:g}s"]["processes"].get(grown, {}).get("rss", 0)
                             / base["processes"][grown]["rss"] for s in after}}
        return run


def run_line(run):
    if "failed" in run:
        return f"FAILED: {run['failed']}"
    k = run["kib_per_connection"]
    ratios = "  ".join(f"+{s}: {v['rss']:.2f}x" for s, v in run["after_over_baseline"].items())
    return (f"{k['rss']:6.1f} KiB RSS {k['pss']:6.1f} KiB PSS per connection  baseline "
            f"{run['samples']['baseline']['rss'] / 1048576:.1f} MiB  opened in {run['open_s']:.1f} s  "
            f"after close (RSS/baseline) {ratios}")


def medians(runs, counts, servers, after):
    out = {}
    for n in counts:
        out[str(n)] = {}
        for server in servers:
            good = [r for r in runs if r["connections"] == n and r["server"] == server and "failed" not in r]
            if not good:
                out[str(n)][server] = None
                continue
            out[str(n)][server] = {
                "kib_per_connection": {k: statistics.median(r["kib_per_connection"][k] for r in good)
                                       for k in ("rss", "pss")},
                "after_over_baseline": {f"{s:g}s": {k: statistics.median(r["after_over_baseline"][f"{s:g}s"][k]
                                                                         for r in good) for k in ("rss", "pss")}
                                        for s in after},
                "worker_after_over_baseline_rss": {
                    f"{s:g}s": statistics.median(r["worker"]["after_over_baseline_rss"][f"{s:g}s"] for r in good)
                    for s in after},
                "growth_bytes": {k: statistics.median(r["samples"]["held_end"][k] - r["samples"]["baseline"][k]
                                                      for r in good) for k in ("rss", "pss")},
                "baseline_rss": statistics.median(r["samples"]["baseline"]["rss"] for r in good),
                "rounds_rss": [round(r["kib_per_connection"]["rss"], 1) for r in good],
            }
    # Between the smallest and the largest N, what one more connection
    # costs: the costs paid once (the first connection's allocations, pages
    # of a session cache touched for the first time) cancel.
    low, high = min(counts), max(counts)
    out["marginal"] = {}
    if high > low:
        for server in servers:
            a, b = out[str(low)][server], out[str(high)][server]
            if a and b:
                out["marginal"][server] = {
                    k: (b["growth_bytes"][k] - a["growth_bytes"][k]) / (high - low) / 1024 for k in ("rss", "pss")}
    return out


def table(results, counts, servers, after):
    med = results["medians"]
    head = ["N", "server", "KiB/conn RSS", "KiB/conn PSS", "baseline RSS MiB"]
    head += [f"RSS +{s:g} s / baseline" for s in after]
    head += [f"worker RSS +{s:g} s / baseline" for s in after]
    lines = ["| " + " | ".join(head) + " |", "| ---: | --- |" + " ---: |" * (len(head) - 2)]
    for n in counts:
        for server in servers:
            m = med[str(n)][server]
            if not m:
                lines.append(f"| {n} | {LABELS[server]} |" + " FAILED |" * (len(head) - 2))
                continue
            row = [str(n), LABELS[server], f"{m['kib_per_connection']['rss']:.1f}",
                   f"{m['kib_per_connection']['pss']:.1f}", f"{m['baseline_rss'] / 1048576:.1f}"]
            row += [f"{m['after_over_baseline'][f'{s:g}s']['rss']:.2f}" for s in after]
            row += [f"{m['worker_after_over_baseline_rss'][f'{s:g}s']:.2f}" for s in after]
            lines.append("| " + " | ".join(row) + " |")
    if med.get("marginal"):
        lines.append("")
        lines.append(f"One more connection, between N={min(counts)} and N={max(counts)} (KiB RSS / PSS): " + ", ".join(
            f"{LABELS[k]} {v['rss']:.1f} / {v['pss']:.1f}" for k, v in med["marginal"].items()))
    s = results["settings"]
    lines.append("")
    lines.append(f"KiB/conn: growth of the server's whole process tree (sum of Rss / Pss from smaps_rollup) "
                 f"from before the load to the end of a {s['hold_seconds']:g} s hold, over N idle established "
                 f"mTLS connections (TLS 1.3, full handshakes, each with its upstream connection). "
                 f"+x s / baseline: memory x seconds after the clients closed, over the baseline (worker: the "
                 f"process that grew most). Medians of {s['rounds']} interleaved rounds, a fresh server each run. "
                 f"Largest N this machine allows: {s['largest_n_here']} (RLIMIT_NOFILE hard limit "
                 f"{s['descriptor_limit']}, two descriptors per connection in one server process).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
