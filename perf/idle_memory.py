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

Descriptors are counted per process: a server process holds two per
connection (client and upstream), a bench or sink process one. Where N does
not fit one process under RLIMIT_NOFILE's hard limit, the run spreads it:
Portcullis and nginx get as many workers as their connections need (nginx
with `reuseport`, as Portcullis's listeners always are), the bench runs as
several processes and each backend address gets a sink process of its own.
HAProxy is one process whatever its threads (and has had no nbproc since
2.5), so it runs as several independent processes with the same
configuration, as HAProxy's documentation suggests for many cores: each
binds the same address with SO_REUSEPORT (HAProxy's default on Linux), and
the kernel spreads the connections over them as it does over Portcullis's
and nginx's workers. What is left (source ports, memory) is checked before
anything runs, and the limit that stops a larger N is named.

With --rate-seconds S, each run also measures the server's new-handshake
rate (`portcullis-bench --conns 16`, full handshakes, S seconds) three
times: before the baseline, while the N connections are held (after the
last held sample) and after the last sample past the close. The held rate
over the mean of the other two is the "rate held" column: what N idle
connections cost the handshakes still arriving.

With --network veth (root) the bench and the sink run in a network
namespace behind a veth pair (perf/veth_net.py, as compare.py does it), and
portcullis-dpdk, the DPDK transport polling the near end with its own
userspace TCP, can join the servers. Its connections, client and upstream,
hold no kernel descriptor, so one worker holds any N.

Run it inside a network namespace of its own, so nothing else on loopback
meets its thousands of connections:

  unshare -n sh -c 'ip link set lo up && nice -n 10 python3 perf/idle_memory.py --build build'
      [--connections 1000,9000] [--rounds 2] [--servers portcullis,nginx,haproxy]
      [--hold-seconds 10] [--after 5,60] [--rate-seconds 0] [--network loopback|veth]
      [--json perf/results-idle-memory.json]
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
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
import veth_net  # noqa: E402
from perf_common import wait_for  # noqa: E402

SERVERS = ("portcullis", "nginx", "haproxy")
VETH_SERVERS = SERVERS + ("portcullis-dpdk",)
LABELS = {"portcullis": "Portcullis", "nginx": "nginx", "haproxy": "HAProxy", "portcullis-dpdk": "Portcullis DPDK"}
# --network veth: the addresses the far end holds for the bench and the sink.
VETH_SOURCES = "10.77.9.100-10.77.9.118"
VETH_BACKEND_BASE = 40
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
    ap.add_argument("--source-addresses", default="",
                    help="addresses the bench binds its connections to, in turn (default 127.0.0.2-127.0.0.20, "
                         f"with --network veth {VETH_SOURCES})")
    ap.add_argument("--network", choices=("loopback", "veth"), default="loopback",
                    help="veth (root): bench and sink in a namespace behind a veth pair; portcullis-dpdk can run")
    ap.add_argument("--workers", default="auto",
                    help="Portcullis and nginx worker processes: a number, or auto (one, or as many as N "
                         "connections need under the descriptor limit)")
    ap.add_argument("--rate-seconds", type=float, default=0.0,
                    help="measure the new-handshake rate for this long before, while and after holding (0: off)")
    ap.add_argument("--buffer-budget-mib", type=int, default=0,
                    help="Portcullis's workers.buffer_budget_bytes in MiB (0: its default, 64)")
    ap.add_argument("--keepalive-idle-s", type=int, default=None,
                    help="Portcullis's [dataplane.keepalive] idle_s (0: no keepalive; default: the daemon's, 60)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--work", default="/tmp/portcullis-idle-memory", help="PKI, configurations, logs")
    ap.add_argument("--json", default="", help="write every run's samples and the medians here")
    ap.add_argument("--table-from", default="", metavar="JSON",
                    help="print the table of an earlier run's JSON again (medians recomputed), run nothing")
    ap.add_argument("--sink", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--sink-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        return sink(args.sink.split(","), Path(args.ready_file), args.sink_port)
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
    known = VETH_SERVERS if args.network == "veth" else SERVERS
    for s in servers:
        if s not in known:
            sys.exit(f"--servers: unknown server {s!r} ({', '.join(known)}"
                     + ("; portcullis-dpdk needs --network veth)" if args.network != "veth" else ")"))
    if args.network == "veth" and os.geteuid() != 0:
        sys.exit("--network veth needs root: a veth pair, a network namespace and AF_PACKET")
    veth = args.network == "veth"
    if not args.source_addresses:
        args.source_addresses = VETH_SOURCES if veth else "127.0.0.2-127.0.0.20"
    if not counts or min(counts) < 1:
        sys.exit("--connections: at least one N, each at least 1")
    build = Path(args.build).resolve()
    binaries = {"portcullis": build / "mgmt" / "portcullis", "bench": build / "perf" / "portcullis-bench"}
    for binary in binaries.values():
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")
    for tool in ["taskset", "openssl"] + [s for s in servers if not s.startswith("portcullis")]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: perf/compare.sh installs nginx, libnginx-mod-stream and haproxy")

    if args.workers != "auto" and not (args.workers.isdigit() and int(args.workers) >= 1):
        sys.exit("--workers: a number of at least 1, or auto")
    sources = address_range(args.source_addresses)
    ports = port_range_size()
    # veth_net.setup widens the namespace's range for the bench.
    source_ports = VETH_SOURCE_PORTS if veth else ports
    too_many = [n for n in counts if limits(n, len(sources), source_ports)]
    if too_many:
        sys.exit("cannot hold N={} here: {}. The largest N that fits: {}.".format(
            ", ".join(map(str, too_many)), "; ".join(limits(max(too_many), len(sources), source_ports)),
            largest_n(len(sources), source_ports)))
    # Each backend address gives the servers' upstream connections another
    # ephemeral port range, and has a sink process of its own: the servers
    # spread their upstream connections over the backends in turn. connect()
    # tries the ports of one parity first: once one destination holds more
    # than that half, every new upstream connection scans all of it (at
    # 16,700 per backend, 73% of the server's CPU in __inet_hash_connect),
    # so each backend gets at most a quarter of the range.
    n_backends = max(-(-max(counts) // (ports // UPSTREAM_SHARE_OF_PORTS)),
                     -(-max(counts) // per_process_descriptors()))
    if veth:
        backends = [f"10.77.9.{VETH_BACKEND_BASE + i}" for i in range(n_backends)]
    else:
        backends = [f"127.0.1.{i + 1}" for i in range(n_backends)]
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
                     "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "network": args.network,
                     "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                     "workers": {str(n): workers_for(n, args.workers) for n in counts},
                     "bench_processes": {str(n): processes_for(n) for n in counts},
                     "rate_seconds": args.rate_seconds, "keepalive_idle_s": args.keepalive_idle_s,
                     "largest_n_one_process": connections_per_server_process(),
                     "largest_n_here": largest_n(len(sources), ports)},
        "runs": [], "medians": {}, "failures": [], "skipped": [],
    }
    print(f"== {args.rounds} rounds x {len(counts)} N x {len(servers)} servers; bench and sink on CPU "
          f"{args.client_cpu}, servers on CPU {args.server_cpu}; {len(sources)} source addresses, "
          f"{len(backends)} backend addresses, each with a sink process; workers per N: "
          + ", ".join(f"{n}: {workers_for(n, args.workers)}" for n in counts))
    try:
        if veth:
            # Nothing of ours but the server runs on its CPU.
            os.sched_setaffinity(0, {args.client_cpu})
            veth_net.setup(args.client_cpu)
            veth_net.sh(f"ip addr add {veth_net.SERVER_IP}/24 dev {veth_net.NEAR}")
            for ip in sources + backends:
                veth_net.sh(f"ip netns exec {veth_net.NS} ip addr add {ip}/24 dev {veth_net.FAR}")
        runner.start_sink()
        for r in range(args.rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for n in counts:
                for name in order:
                    run = runner.measure(name, n, r, after)
                    results["runs"].append(run)
                    print(f"   round {r + 1} N={n:<6} {LABELS[name]:10} {run_line(run)}", flush=True)
                    if "skipped" in run:
                        results["skipped"].append(f"{name} N={n} round {r + 1}: {run['skipped']}")
                    elif "failed" in run:
                        results["failures"].append(f"{name} N={n} round {r + 1}: {run['failed']}")
    finally:
        runner.stop_sink()
        if veth:
            veth_net.teardown()
    results["medians"] = medians(results["runs"], counts, servers, after)
    print()
    print(table(results, counts, servers, after))
    for skipped in results["skipped"]:
        print(f"!!! SKIPPED: {skipped}", file=sys.stderr)
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


# At most 1/this of the ephemeral port range per backend address.
UPSTREAM_SHARE_OF_PORTS = 4

# net.ipv4.ip_local_port_range in veth_net's namespace.
VETH_SOURCE_PORTS = 65000 - 1024 + 1


def port_range_size():
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(high) - int(low) + 1


def per_process_descriptors():
    """Descriptors one process may hold for connections."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    return min(hard, nr_open) - FD_MARGIN


def connections_per_server_process():
    """Connections one server process can hold: two descriptors each."""
    return per_process_descriptors() // 2


# SO_REUSEPORT hashes connections over the workers' listeners: room for a
# worker holding this much more than its share.
SPREAD_SLACK = 1.15


def workers_for(n, requested):
    if requested != "auto":
        return int(requested)
    one = connections_per_server_process()
    return 1 if n <= one else -(-int(n * SPREAD_SLACK) // one)


def connections_per_worker(n, workers):
    """Each worker's max_connections: all N with one worker, else as many
    as its descriptors allow (the hash does not split N evenly)."""
    return n + FD_MARGIN if workers == 1 else connections_per_server_process()


def processes_for(n):
    """Bench processes holding n connections, one descriptor each."""
    return -(-n // per_process_descriptors())


def split(n, parts):
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def limits(n, sources, ports):
    """What keeps this machine from holding n connections, each reason naming
    its limit; empty when n fits."""
    problems = []
    if n > sources * ports * 9 // 10:
        problems.append(f"{sources} source addresses x {ports} ephemeral ports (ip_local_port_range) are too "
                        f"few: widen --source-addresses")
    need = n * MEMORY_PER_CONNECTION
    available = mem_available()
    if need > available:
        problems.append(f"{n} connections need about {need >> 20} MiB (server, bench and kernel, "
                        f"{MEMORY_PER_CONNECTION >> 10} KiB each) and MemAvailable is {available >> 20} MiB")
    return problems


# Server (~45 KiB), bench (~40 KiB) and the kernel's four sockets of an idle
# loopback connection and its upstream.
MEMORY_PER_CONNECTION = 110 * 1024


def mem_available():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def largest_n(sources, ports):
    return max(0, min(sources * ports * 9 // 10, mem_available() // MEMORY_PER_CONNECTION))


# --- the backend sink ----------------------------------------------------------

def sink(addresses, ready_file, port):
    """Accepts on every address (one port, the same on each; 0: any free
    one), reads and drops what arrives, closes on end of stream; writes the
    number of connections it holds to ready_file + '.count' whenever it
    changes."""
    raise_descriptor_limit()
    selector = selectors.DefaultSelector()
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

def backlog_drops():
    """Packets the kernel dropped because a CPU's input backlog was full
    (/proc/net/softnet_stat, second column, summed over CPUs): on loopback
    every segment passes that queue, and net.core.netdev_max_backlog
    (1000 by default) is what a burst of keepalive probes of tens of
    thousands of connections, or of their answers, overflows."""
    try:
        return sum(int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines())
    except (OSError, IndexError, ValueError):
        return 0


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


def rss_by_mapping(pid, top=6):
    """Where a process's resident memory is, from /proc/PID/smaps: Rss by
    mapping ([heap], anonymous, or the file mapped), the largest `top`."""
    by = {}
    name = None
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and ":" in head[3]:
                name = head[5].strip() if len(head) == 6 else "[anonymous]"
            elif line.startswith("Rss:") and name is not None:
                by[name] = by.get(name, 0) + int(line.split()[1]) * 1024
    except OSError:
        return {}
    return dict(sorted(by.items(), key=lambda kv: -kv[1])[:top])


METRICS_SAMPLED = ("portcullis_heap_trims_total", "portcullis_buffer_bytes_free",
                   "portcullis_buffer_bytes_in_use", "portcullis_dpdk_tcp_connections",
                   "portcullis_dpdk_tcp_time_wait", "portcullis_dpdk_mbufs_in_use", "portcullis_connections_active",
                   "portcullis_buffer_denials_total")


def server_metrics(port):
    """The memory-related samples of Portcullis's /metrics, summed over labels."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        family = line.split("{", 1)[0].split(" ", 1)[0]
        if family in METRICS_SAMPLED:
            out[family] = out.get(family, 0.0) + float(line.rsplit(" ", 1)[1])
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


class HaproxyProcesses(compare.Haproxy):
    """compare.py's HAProxy as `workers` processes of one configuration,
    sharing its listening address by SO_REUSEPORT, under one shell that
    ends them all on SIGTERM: the tree is the shell and the processes."""
    expected_processes = 2  # with `workers` processes the tree is workers + 1, the shell included

    def write_config(self, verbose):
        # HAProxy asks for 2 x maxconn descriptors and a few more, and will
        # not start below that; compare.py adds 64 to maxconn.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.max_connections = min(self.max_connections, (hard - 256) // 2 - 64)
        argv = super().write_config(verbose)
        command = " ".join(argv)
        return ["sh", "-c", f'pids=""; for i in $(seq {self.workers}); do {command} & pids="$pids $!"; done; '
                            f'trap \'kill $pids; wait\' TERM; wait']

    def start(self, verbose):
        super().start(verbose)
        if len(self.pids) != self.workers + 1:
            self.stop()
            raise compare.Abort(f"haproxy: {len(self.pids) - 1} of {self.workers} processes running:\n"
                                f"{self.log.read_text()[-3000:]}")


SERVER_CLASSES = {"portcullis": PortcullisWithAdmin, "nginx": compare.Nginx, "haproxy": HaproxyProcesses,
                  "portcullis-dpdk": compare.PortcullisDpdk}


class Runner:
    """What compare.py's server classes read from their runner, and the runs."""

    def __init__(self, args, binaries, work, pki, backends):
        self.args, self.binaries, self.work, self.pki = args, binaries, work, pki
        self.veth = args.network == "veth"
        self.server_host = veth_net.SERVER_IP if self.veth else "127.0.0.1"
        self.backend_ips = backends
        self.backend_port = 0
        self.sinks = []

    def chain_cache_entries(self):
        return 100

    def backend_addresses(self):
        return [f"{ip}:{self.backend_port}" for ip in self.backend_ips]

    def client_argv(self, argv):
        """A client-side command: on the client CPU, in the namespace with --network veth."""
        if self.veth:
            return veth_net.ns_argv(argv, self.args.client_cpu)
        return ["taskset", "-c", str(self.args.client_cpu)] + argv

    def start_sink(self):
        """One sink process per backend address, all on one port."""
        self.sinks = []
        for i, ip in enumerate(self.backend_ips):
            ready = self.work / f"sink{i}.port"
            argv = [sys.executable, str(Path(__file__).resolve()), "--sink", ip, "--ready-file", str(ready)]
            if self.backend_port:
                argv += ["--sink-port", str(self.backend_port)]
            proc = subprocess.Popen(self.client_argv(argv))
            self.sinks.append((proc, Path(str(ready) + ".count")))
            if not wait_for(lambda: proc.poll() is not None or (ready.exists() and ready.read_text().strip()), 10) \
                    or proc.poll() is not None:
                raise SystemExit(f"the backend sink on {ip} did not start")
            self.backend_port = int(ready.read_text())

    def sink_connections(self):
        total = 0
        for _, count in self.sinks:
            try:
                total += int(count.read_text())
            except (OSError, ValueError):
                pass
        return total

    def stop_sink(self):
        for proc, _ in getattr(self, "sinks", []):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in getattr(self, "sinks", []):
            proc.wait(timeout=10)

    def measure(self, name, n, round_index, after):
        run = {"round": round_index + 1, "server": name, "connections": n}
        server = SERVER_CLASSES[name](self)
        # DPDK's connections hold no descriptor: one worker holds any N.
        one_process = name == "portcullis-dpdk"
        server.workers = 1 if one_process else workers_for(n, self.args.workers)
        server.max_connections = connections_per_worker(n, server.workers)
        if name == "portcullis-dpdk":
            # No descriptor per connection; room for the rate measurement's
            # connections that are still closing while the next ones open.
            server.max_connections = n + 1024
        server.idle_timeout_s = int(self.args.hold_seconds + 600)
        if self.args.keepalive_idle_s is not None and name.startswith("portcullis"):
            server.keepalive_idle_s = self.args.keepalive_idle_s
        if self.args.buffer_budget_mib and name.startswith("portcullis"):
            server.buffer_budget_bytes = self.args.buffer_budget_mib << 20
        run["workers"] = server.workers
        if self.veth:
            # A kernel server's receive work is its own cost; DPDK's stand-in
            # for a NIC's DMA (the af_packet copy) is not (as compare.py).
            veth_net.steer_receive(veth_net.NEAR,
                                   self.args.client_cpu if name == "portcullis-dpdk" else self.args.server_cpu)
        try:
            server.start(verbose=False)
        except compare.Abort as e:
            run["failed"] = str(e)
            return run
        if self.veth:
            subprocess.run(self.client_argv(["ping", "-c", "1", "-W", "2", server.host]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # ARP both ways
        try:
            return self.hold(server, n, after, run)
        finally:
            server.stop()

    def handshake_rate(self, server, label, run):
        """New full handshakes per second, and the server tree's CPU per
        handshake, with --conns 16 for --rate-seconds."""
        out = self.work / "rate.json"
        out.unlink(missing_ok=True)
        pki = self.pki
        pids = compare.process_tree(server.proc.pid)
        before = compare.tree_cpu_seconds(pids)
        bench = subprocess.run(
            self.client_argv([
                str(self.binaries["bench"]), "--target", f"{server.host}:{server.port}", "--sni", "localhost",
                "--ca", str(pki / "root-ca.cert.pem"), "--cert", str(pki / "partner-a.chain.pem"),
                "--key", str(pki / "partner-a.key.pem"), "--conns", "16", "--warmup", "16",
                "--duration", f"{self.args.rate_seconds:g}", "--json", str(out)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cpu = compare.tree_cpu_seconds(pids) - before
        if bench.returncode != 0 or not out.exists():
            run.setdefault("rate_problems", []).append(f"{label}: bench exited {bench.returncode}: "
                                                       f"{bench.stderr[-300:]}")
            return
        s = json.loads(out.read_text())
        run.setdefault("rate", {})[label] = {
            "handshakes_per_s": s["handshakes_per_s"], "errors_total": s["errors_total"],
            "server_cpu_us_per_handshake": cpu * 1e6 / s["handshakes"] if s["handshakes"] else None}

    def sample(self, server, label, run):
        pids = compare.process_tree(server.proc.pid)
        per_process = memory(pids)
        run["samples"][label] = {"t_s": round(time.monotonic() - run["_t0"], 2), **totals(per_process),
                                 "processes": per_process, "sink_connections": self.sink_connections()}
        # What holds the memory: the largest process's mappings, and the
        # daemon's own view (heap returns, pool, TCP table) where it has one.
        largest = max(per_process, key=lambda pid: per_process[pid]["rss"], default=None)
        if largest is not None:
            run["samples"][label]["largest_rss_by_mapping"] = rss_by_mapping(largest)
        if getattr(server, "admin_port", 0):
            run["samples"][label]["metrics"] = server_metrics(server.admin_port)

    def hold(self, server, n, after, run):
        drops_before = backlog_drops()
        self.hold_counted(server, n, after, run)
        run["backlog_drops"] = backlog_drops() - drops_before
        if "failed" in run and run["backlog_drops"]:
            run["failed"] += (f"; the kernel dropped {run['backlog_drops']} packets at a full input backlog "
                              f"(keepalive probes and their answers among them): raise "
                              f"net.core.netdev_max_backlog outside this namespace")
        return run

    def hold_counted(self, server, n, after, run):
        run["_t0"] = time.monotonic()
        run["samples"] = {}
        time.sleep(1)  # the server's start-up settles
        if self.args.rate_seconds:
            self.handshake_rate(server, "before", run)
            time.sleep(2)
        self.sample(server, "baseline", run)
        pki = self.pki
        shares = split(n, processes_for(n))
        benches = []
        for i, share in enumerate(shares):
            out = self.work / f"hold{i}.json"
            out.unlink(missing_ok=True)
            argv = [str(self.binaries["bench"]),
                    "--target", f"{server.host}:{server.port}", "--sni", "localhost",
                    "--ca", str(pki / "root-ca.cert.pem"), "--cert", str(pki / "partner-a.chain.pem"),
                    "--key", str(pki / "partner-a.key.pem"), "--hold", str(share),
                    "--conns", str(max(1, self.args.conns // len(shares))),
                    "--open-rate", str(self.args.open_rate / len(shares)),
                    "--source-addresses", self.args.source_addresses,
                    "--timeout-ms", "30000", "--progress", "--json", str(out)]
            # In veth_net's namespace the admin listener (127.0.0.1 here) is out of reach.
            if i == 0 and getattr(server, "admin_port", 0) and not self.veth:
                argv += ["--metrics-url", f"http://127.0.0.1:{server.admin_port}/metrics"]
            benches.append(HeldBench(self.client_argv(argv), share, out))
        started = time.monotonic()
        while not all(b.holding.is_set() for b in benches) and not any(b.done.is_set() for b in benches):
            time.sleep(0.5)
        holding = all(b.holding.is_set() for b in benches)
        if holding:
            run["open_s"] = round(time.monotonic() - started, 2)
            # The sink accepts the last upstream connections just after the last handshake.
            wait_for(lambda: self.sink_connections() >= n, 10)
            self.sample(server, "held", run)
            cpu_before = compare.tree_cpu_seconds(compare.process_tree(server.proc.pid))
            busy_before = [veth_net.cpu_busy_seconds(c) for c in (self.args.server_cpu, self.args.client_cpu)]
            idle_start = time.monotonic()
            time.sleep(self.args.hold_seconds)
            self.sample(server, "held_end", run)
            # What N connections doing nothing cost: the server's own CPU, and
            # each CPU's whole busy time (the kernel's keepalive work is there).
            elapsed = time.monotonic() - idle_start
            run["idle_cpu"] = {
                "server_tree_fraction": (compare.tree_cpu_seconds(compare.process_tree(server.proc.pid))
                                         - cpu_before) / elapsed,
                "server_cpu_busy_fraction": (veth_net.cpu_busy_seconds(self.args.server_cpu) - busy_before[0])
                / elapsed,
                "client_cpu_busy_fraction": (veth_net.cpu_busy_seconds(self.args.client_cpu) - busy_before[1])
                / elapsed}
            if self.args.rate_seconds:
                self.handshake_rate(server, "held", run)
                run["sink_connections_after_rate"] = self.sink_connections()
        # Every process closes its share at once, as one client would.
        for b in benches:
            b.interrupt()
        for b in benches:
            b.stop()
        closed = time.monotonic()
        run["bench_processes"] = len(benches)
        run["bench_progress_tail"] = benches[0].lines[-5:]
        run["bench"] = merge_bench_summaries([b.summary() for b in benches])
        for seconds in after:
            time.sleep(max(0.0, closed + seconds - time.monotonic()))
            self.sample(server, f"after_{seconds:g}s", run)
        if self.args.rate_seconds:
            self.handshake_rate(server, "after", run)
        del run["_t0"]
        problems = list(run.pop("rate_problems", []))
        bench_summary = run.get("bench", {})
        if not holding:
            problems.append(f"not all {n} connections were established: "
                            + " | ".join(f"{b.share}: {b.lines[-2:]}" for b in benches if not b.holding.is_set()))
        if bench_summary.get("held") != n or bench_summary.get("hold_failures"):
            problems.append(f"bench held {bench_summary.get('held')} of {n}, hold failures "
                            f"{bench_summary.get('hold_failure_reasons')}, open errors {bench_summary.get('errors')}")
        for label in ("held", "held_end"):
            if label in run["samples"] and run["samples"][label]["sink_connections"] < n:
                problems.append(f"the backend held {run['samples'][label]['sink_connections']} upstream "
                                f"connections at '{label}', not {n}")
        if run.get("sink_connections_after_rate", n) < n:
            problems.append(f"the backend held {run['sink_connections_after_rate']} upstream connections after "
                            f"the rate measurement, not {n}: a held connection ended")
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
        rate = run.get("rate", {})
        if {"before", "held", "after"} <= rate.keys():
            idle = (rate["before"]["handshakes_per_s"] + rate["after"]["handshakes_per_s"]) / 2
            run["rate_held_over_idle"] = rate["held"]["handshakes_per_s"] / idle if idle else None
        return run


class HeldBench:
    """One portcullis-bench --hold process; its stderr read by a thread that
    notes "holding N" and the end of opening."""

    def __init__(self, argv, share, out):
        self.share, self.out, self.lines = share, out, []
        self.holding, self.done = threading.Event(), threading.Event()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == f"holding {self.share}":
                self.holding.set()
            elif line.startswith("opening done:"):
                self.done.set()
        self.done.set()  # the bench exited

    def interrupt(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self):
        self.interrupt()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)

    def summary(self):
        if not self.out.exists():
            return {}
        summary = json.loads(self.out.read_text())
        return {k: summary.get(k) for k in (
            "held", "opened", "hold_seconds", "hold_failures", "hold_failure_reasons", "errors",
            "errors_total", "open_rate_achieved", "server_memory_bytes", "client_cpu_s", "client_max_rss_bytes",
            "latency_us")}


def merge_bench_summaries(summaries):
    """The bench processes' JSON as one: counts summed, reasons merged, the
    first process's server memory and latency (it alone reads /metrics)."""
    if not summaries or any(not s for s in summaries):
        return {}
    merged = dict(summaries[0])
    for key in ("held", "opened", "hold_failures", "errors_total", "open_rate_achieved", "client_cpu_s",
                "client_max_rss_bytes"):
        merged[key] = sum(s.get(key) or 0 for s in summaries)
    merged["hold_seconds"] = min(s.get("hold_seconds") or 0 for s in summaries)
    for key in ("hold_failure_reasons", "errors"):
        merged[key] = {}
        for s in summaries:
            for reason, count in (s.get(key) or {}).items():
                merged[key][reason] = merged[key].get(reason, 0) + count
    return merged


def run_line(run):
    if "skipped" in run:
        return f"SKIPPED: {run['skipped']}"
    if "failed" in run:
        return f"FAILED: {run['failed']}"
    k = run["kib_per_connection"]
    ratios = "  ".join(f"+{s}: {v['rss']:.2f}x" for s, v in run["after_over_baseline"].items())
    rate = ""
    if run.get("rate_held_over_idle"):
        r = run["rate"]
        rate = (f"  new handshakes/s before {r['before']['handshakes_per_s']:.0f}, held "
                f"{r['held']['handshakes_per_s']:.0f}, after {r['after']['handshakes_per_s']:.0f}: "
                f"held/idle {run['rate_held_over_idle']:.2f}")
    return (f"{k['rss']:6.1f} KiB RSS {k['pss']:6.1f} KiB PSS per connection  baseline "
            f"{run['samples']['baseline']['rss'] / 1048576:.1f} MiB  {run['workers']} worker(s)  opened in "
            f"{run['open_s']:.1f} s  after close (RSS/baseline) {ratios}{rate}  while held: server "
            f"{run['idle_cpu']['server_tree_fraction']:.1%} of a core, CPU {run['idle_cpu']['server_cpu_busy_fraction']:.0%}"
            f"/{run['idle_cpu']['client_cpu_busy_fraction']:.0%} busy  input backlog drops "
            f"{run.get('backlog_drops', 0)}")


def medians(runs, counts, servers, after):
    out = {}
    for n in counts:
        out[str(n)] = {}
        for server in servers:
            mine = [r for r in runs if r["connections"] == n and r["server"] == server]
            good = [r for r in mine if "failed" not in r and "skipped" not in r]
            if not good:
                skipped = [r["skipped"] for r in mine if "skipped" in r]
                out[str(n)][server] = {"skipped": skipped[0]} if skipped and len(skipped) == len(mine) else None
                continue
            rates = [r["rate_held_over_idle"] for r in good if r.get("rate_held_over_idle")]
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
                "workers": good[0].get("workers", 1),
                "rate_held_over_idle": statistics.median(rates) if rates else None,
                "rate_held": statistics.median(r["rate"]["held"]["handshakes_per_s"] for r in good
                                               if r.get("rate_held_over_idle")) if rates else None,
            }
    # Between the smallest and the largest N, what one more connection
    # costs: the costs paid once (the first connection's allocations, pages
    # of a session cache touched for the first time) cancel.
    low, high = min(counts), max(counts)
    out["marginal"] = {}
    if high > low:
        for server in servers:
            a, b = out[str(low)][server], out[str(high)][server]
            if a and b and "skipped" not in a and "skipped" not in b:
                out["marginal"][server] = {
                    k: (b["growth_bytes"][k] - a["growth_bytes"][k]) / (high - low) / 1024 for k in ("rss", "pss")}
    return out


def table(results, counts, servers, after):
    med = results["medians"]
    rate = bool(results["settings"].get("rate_seconds"))
    head = ["N", "server", "workers", "KiB/conn RSS", "KiB/conn PSS", "baseline RSS MiB"]
    head += [f"RSS +{s:g} s / baseline" for s in after]
    head += [f"worker RSS +{s:g} s / baseline" for s in after]
    head += ["new hs/s held", "held / idle rate"] if rate else []
    lines = ["| " + " | ".join(head) + " |", "| ---: | --- |" + " ---: |" * (len(head) - 2)]
    for n in counts:
        for server in servers:
            m = med[str(n)][server]
            if not m or "skipped" in m:
                what = " not run (one process) |" if m else " FAILED |"
                lines.append(f"| {n} | {LABELS[server]} |" + what * (len(head) - 2))
                continue
            row = [str(n), LABELS[server], str(m.get("workers", 1)), f"{m['kib_per_connection']['rss']:.1f}",
                   f"{m['kib_per_connection']['pss']:.1f}", f"{m['baseline_rss'] / 1048576:.1f}"]
            row += [f"{m['after_over_baseline'][f'{s:g}s']['rss']:.2f}" for s in after]
            row += [f"{m['worker_after_over_baseline_rss'][f'{s:g}s']:.2f}" for s in after]
            if rate:
                row += ([f"{m['rate_held']:.0f}", f"{m['rate_held_over_idle']:.2f}"] if m.get("rate_held_over_idle")
                        else ["-", "-"])
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
                 f"One server process holds at most {s.get('largest_n_one_process', '?')} (RLIMIT_NOFILE hard limit "
                 f"{s['descriptor_limit']}, two descriptors per connection); beyond that Portcullis and nginx run "
                 f"more workers and HAProxy more processes sharing its port (workers column)."
                 + (f" New hs/s held: full handshakes per second (--conns 16, {s['rate_seconds']:g} s) while N are "
                    f"held; held / idle: that over the mean of the same measured before and after the hold."
                    if rate else ""))
    for skipped in results.get("skipped", [])[:1]:
        lines.append("")
        lines.append(f"Not run: {skipped}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
