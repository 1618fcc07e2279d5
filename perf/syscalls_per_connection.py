#!/usr/bin/env python3
"""System calls per connection of one server worker on the kernel transport, by
name: Portcullis with one worker (and, when nginx and its stream module are
installed, nginx's worker beside it, configured as perf/compare.py does).

The worker's system calls are counted while portcullis-bench makes N
connections, each a full TLS 1.3 handshake (or a resumed one) and one HTTP
request answered by the test backend: by default with `perf stat` on the
syscall tracepoints (counters in the kernel; the worker runs at full speed),
or with `--tracer strace` (`strace -f -o FILE -p PID`, every call with its
arguments, but the worker stops at each one, which is slow enough to change
what the peers have sent by its next call: a FIN that would come after a
read comes before it). Each case runs twice, with --baseline and with
--handshakes connections, and the difference of the two counts divided by
the difference of the connection counts is what one connection costs:
start-up, attach and the first (full) handshake of a resumed run cancel out;
--rounds repeats it and the median of each count is shown. With --conns 1
(the default) the connections follow each other, so nothing is batched; what
is left is timing (whether the client's FIN arrives with its close_notify or
after it, say), which moves a count by up to one per connection between
runs. Counts, not times: they mean the same on a loaded machine.

Per name and, under it, what told the calls apart: the option of a
setsockopt/getsockopt, EAGAIN results, reads that returned 0 (end of
stream), epoll_wait calls that timed out (the 100 ms tick: time, not
connections), the epoll_ctl operation.

  perf/syscalls_per_connection.py --build build [--handshakes 200] [--baseline 50]
                                  [--tls 1.3] [--conns 1] [--rounds 3] [--servers portcullis,nginx]
                                  [--tracer perf|strace] [--json FILE] [--keep]
"""
import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

from perf_common import bench_client, bench_listener, children_of, running_portcullis, wait_for

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
MODES = ("full", "resume")


class Abort(Exception):
    """A run whose counts must not be reported."""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--handshakes", type=int, default=200, help="connections of the measured run")
    ap.add_argument("--baseline", type=int, default=50, help="connections of the run subtracted from it")
    ap.add_argument("--tls", default="1.3", choices=("1.2", "1.3"))
    ap.add_argument("--conns", type=int, default=1, help="concurrent connections of the load generator")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per case; the median of each count is shown")
    ap.add_argument("--servers", default="portcullis,nginx",
                    help="portcullis and/or nginx (nginx is skipped, loudly, when not installed)")
    ap.add_argument("--tracer", default="perf", choices=sorted(TRACERS),
                    help="perf: counters on the syscall tracepoints, the worker runs at full speed; "
                         "strace: every call with its arguments, the worker stopped at each")
    ap.add_argument("--json", default="")
    ap.add_argument("--keep", action="store_true", help="keep the traces, configurations and logs")
    args = ap.parse_args()
    if args.handshakes <= args.baseline:
        sys.exit("--handshakes must be larger than --baseline")

    build = Path(args.build).resolve()
    binaries = {"portcullis": build / "mgmt" / "portcullis", "bench": build / "perf" / "portcullis-bench",
                "backend": build / "tests" / "support" / "portcullis-test-backend"}
    for binary in binaries.values():
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")
    if not shutil.which(args.tracer):
        sys.exit(f"missing {args.tracer} (scripts/lib/deps.sh installs linux-perf and strace)")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in ("portcullis", "nginx"):
            sys.exit(f"--servers: unknown server {s!r} (portcullis, nginx)")
    if "nginx" in servers:
        why = nginx_missing()
        if why:
            print(f"!!! SKIPPED nginx: {why}", file=sys.stderr)
            servers.remove("nginx")

    work = Path(tempfile.mkdtemp(prefix="portcullis-syscalls."))
    results = {"tracer": args.tracer, "tls": args.tls, "conns": args.conns, "handshakes": args.handshakes, "baseline": args.baseline,
               "rounds": args.rounds,
               "request": REQUEST, "servers": {}}
    backend, backend_port = start_backend(binaries["backend"], work)
    try:
        for name in servers:
            measure = measure_portcullis if name == "portcullis" else measure_nginx
            results["servers"][name] = measure(binaries, work, backend_port, args)
    except Abort as e:
        print(f"\n!!! ABORTED: {e}\nlogs and traces kept in {work}", file=sys.stderr)
        sys.exit(1)
    finally:
        backend.send_signal(signal.SIGTERM)
        backend.wait()

    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    if args.keep:
        print(f"traces, configurations and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def nginx_missing():
    try:
        import compare  # perf/compare.py: its nginx configuration is the one compared everywhere
    except ImportError as e:
        return f"perf/compare.py not importable ({e})"
    if not shutil.which("nginx"):
        return "nginx is not installed (scripts/lib/deps.sh installs it)"
    if not compare.NGINX_STREAM_MODULE.exists():
        return f"{compare.NGINX_STREAM_MODULE} is missing (libnginx-mod-stream)"
    return ""


def start_backend(backend, work):
    port_file = work / "backend.port"
    proc = subprocess.Popen([str(backend), "--listen", "127.0.0.1:0", "--ready-file", str(port_file),
                             "--mode", "http"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(lambda: port_file.exists() and port_file.read_text().strip()):
        proc.kill()
        sys.exit("the test backend did not start")
    return proc, port_file.read_text().strip()


def measure_portcullis(binaries, work, backend_port, args):
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(work / "pki")], check=True,
                   stdout=subprocess.DEVNULL)
    port = 20000 + os.getpid() % 20000
    config = work / "portcullis.toml"
    config.write_text("""
[workers]
count = 1

[admin]
address = ""
""" + bench_listener(f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"))
    with running_portcullis(binaries["portcullis"], config, work / "portcullis.log") as children:
        if len(children) != 1:
            raise Abort(f"expected one worker process, found {children}")
        return measure_worker("portcullis", children[0], binaries["bench"], f"127.0.0.1:{port}", work / "pki",
                              work, args)


def measure_nginx(binaries, work, backend_port, args):
    import compare
    pki = compare.ensure_pki(work / "nginx-pki", 1)
    runner = types.SimpleNamespace(work=work, pki=pki, backend_port=backend_port,
                                   args=types.SimpleNamespace(server_cpu=0))
    nginx = compare.Nginx(runner)
    try:
        nginx.start(verbose=False)
    except compare.Abort as e:
        raise Abort(str(e))
    try:
        workers = [p for p in nginx.pids if p != nginx.proc.pid]
        if len(workers) != 1:
            raise Abort(f"expected one nginx worker, found {workers}")
        return measure_worker("nginx", workers[0], binaries["bench"], f"127.0.0.1:{nginx.port}", pki, work, args)
    finally:
        nginx.stop()


def measure_worker(server, pid, bench, target, pki, work, args):
    """Per-connection counts of `pid` for each mode: (measured - baseline) /
    difference, each round on its own, and the median of the rounds per key."""
    out = {"worker_pid": pid, "modes": {}}
    for mode in MODES:
        rounds = []
        for r in range(args.rounds):
            (small, small_conns), (large, large_conns) = [
                traced_run(server, pid, bench, target, pki, work, args, mode, n)
                for n in (args.baseline, args.handshakes)]
            span = large_conns - small_conns
            per = {k: round((large[k] - small[k]) / span, 3) for k in sorted(set(small) | set(large))}
            rounds.append({"connections": [small_conns, large_conns], "per_connection": per})
            print(f"   {server:10} {mode:6} round {r + 1}: {total(per):6.2f} syscalls per connection",
                  file=sys.stderr, flush=True)
        keys = sorted({k for r in rounds for k in r["per_connection"]})
        out["modes"][mode] = {
            "rounds": rounds,
            "per_connection": {k: statistics.median(r["per_connection"].get(k, 0.0) for r in rounds)
                               for k in keys}}
    return out


def total(per_connection):
    return sum(v for k, v in per_connection.items() if "|" not in k)


def traced_run(server, pid, bench, target, pki, work, args, mode, handshakes):
    tracer = TRACERS[args.tracer](pid, work / f"{server}-{mode}-{handshakes}")
    try:
        tracer.start()
        summary_file = work / "bench.json"
        summary_file.unlink(missing_ok=True)
        cmd = bench_client(bench, target, pki) + [
            "--mode", mode, "--tls", args.tls, "--conns", str(args.conns), "--handshakes", str(handshakes),
            "--timeout-ms", "30000", "--request", REQUEST, "--json", str(summary_file)]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # The worker finishes its side of the last connection after the client has gone.
        time.sleep(0.3)
    finally:
        counts = tracer.stop()
    if done.returncode != 0 or not summary_file.exists():
        raise Abort(f"portcullis-bench against {server} exited {done.returncode}: {done.stderr[-1000:]}")
    s = json.loads(summary_file.read_text())
    attempts = s["handshakes"] + s["errors_total"]
    if s["errors_total"] or s["handshakes"] < handshakes:
        raise Abort(f"{server} {mode}: {s['handshakes']} of {attempts} connections answered, errors {s['errors']}")
    if mode == "resume" and s["resumed"] < s["handshakes"] - args.conns:
        raise Abort(f"{server}: only {s['resumed']} of {s['handshakes']} handshakes resumed")
    if mode == "full" and s["resumed"]:
        raise Abort(f"{server}: {s['resumed']} handshakes resumed in a full-handshake run")
    return counts, attempts


class PerfTracer:
    """`perf stat` on the syscall tracepoints: counters in the kernel, the
    worker never stops (strace stops it at every call, which slows it enough
    to change what a peer has sent by the time of its next call). Details
    are the same tracepoints again with a filter."""
    DETAILS = [
        ("sys_exit_accept4", "ret == -11", "accept4|EAGAIN"),
        ("sys_exit_recvfrom", "ret == -11", "recvfrom|EAGAIN"),
        ("sys_exit_recvfrom", "ret == 0", "recvfrom|0 (end of stream)"),
        ("sys_exit_read", "ret == -11", "read|EAGAIN"),
        ("sys_exit_read", "ret == 0", "read|0 (end of stream)"),
        ("sys_exit_sendto", "ret == -11", "sendto|EAGAIN"),
        ("sys_exit_write", "ret == -11", "write|EAGAIN"),
        ("sys_exit_connect", "ret == -115", "connect|EINPROGRESS"),
        ("sys_exit_epoll_wait", "ret == 0", "epoll_wait|timed out"),
        ("sys_enter_epoll_ctl", "op == 1", "epoll_ctl|EPOLL_CTL_ADD"),
        ("sys_enter_epoll_ctl", "op == 2", "epoll_ctl|EPOLL_CTL_DEL"),
        ("sys_enter_epoll_ctl", "op == 3", "epoll_ctl|EPOLL_CTL_MOD"),
        ("sys_enter_setsockopt", "level == 6 && optname == 1", "setsockopt|TCP_NODELAY"),
        ("sys_enter_setsockopt", "level == 1 && optname == 9", "setsockopt|SO_KEEPALIVE"),
        ("sys_enter_setsockopt", "level == 6 && optname == 4", "setsockopt|TCP_KEEPIDLE"),
        ("sys_enter_setsockopt", "level == 6 && optname == 5", "setsockopt|TCP_KEEPINTVL"),
        ("sys_enter_setsockopt", "level == 6 && optname == 6", "setsockopt|TCP_KEEPCNT"),
        ("sys_enter_getsockopt", "level == 1 && optname == 4", "getsockopt|SO_ERROR"),
    ]

    def __init__(self, pid, stem):
        self.pid, self.stem = pid, stem

    @staticmethod
    def syscalls():
        out = subprocess.run(["perf", "list", "--raw-dump", "tracepoint"], capture_output=True, text=True)
        return sorted(e[len("syscalls:sys_enter_"):] for e in out.stdout.split()
                      if e.startswith("syscalls:sys_enter_"))

    def start(self):
        names = self.syscalls()
        if not names:
            raise Abort("perf lists no syscalls:sys_enter_* tracepoint (tracefs?); try --tracer strace")
        self.keys = names + [key for _, _, key in self.DETAILS]
        events = []
        for name in names:
            events += ["-e", f"syscalls:sys_enter_{name}"]
        for event, condition, _ in self.DETAILS:
            events += ["-e", f"syscalls:{event}", "--filter", condition]
        self.output = Path(f"{self.stem}.perf.csv")
        control, ack = Path(f"{self.stem}.ctl"), Path(f"{self.stem}.ack")
        for fifo in (control, ack):
            fifo.unlink(missing_ok=True)
            os.mkfifo(fifo)
        # Counting starts disabled and is switched on once perf is attached.
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-D", "-1", "--control", f"fifo:{control},{ack}", "-o", str(self.output),
             "-p", str(self.pid)] + events, stdout=subprocess.DEVNULL, stderr=open(f"{self.stem}.perf.log", "w"))
        self.control = os.open(control, os.O_WRONLY)
        self.ack = os.open(ack, os.O_RDONLY)
        self.command("enable")

    def command(self, what):
        os.write(self.control, (what + "\n").encode())
        ready, _, _ = select.select([self.ack], [], [], 20)
        answer = os.read(self.ack, 64) if ready else b""
        if b"ack" not in answer:
            raise Abort(f"perf stat did not acknowledge {what!r} ({answer!r}): "
                        f"{Path(f'{self.stem}.perf.log').read_text()[-2000:]}")

    def stop(self):
        self.command("disable")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        os.close(self.control)
        os.close(self.ack)
        values = [line.split(",")[0] for line in self.output.read_text().splitlines()
                  if line and not line.startswith("#")]
        if len(values) != len(self.keys):
            raise Abort(f"perf stat printed {len(values)} counts for {len(self.keys)} events: {self.output}")
        counts = Counter()
        for key, value in zip(self.keys, values):
            if not value.isdigit():
                raise Abort(f"perf stat could not count {key}: {value} ({self.output})")
            if int(value):
                counts[key] = int(value)
        return counts


class StraceTracer:
    """`strace -f -o FILE`: every call with its arguments, at the price of
    stopping the worker at each one."""

    def __init__(self, pid, stem):
        self.pid, self.trace = pid, Path(f"{stem}.strace")

    def start(self):
        self.proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(self.trace), "-p", str(self.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not wait_for(lambda: traced_by(self.pid) == self.proc.pid, 10):
            raise Abort(f"strace did not attach to worker {self.pid}: {self.proc.stderr.read()}")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=20)
        return count_trace(self.trace.read_text())


TRACERS = {"perf": PerfTracer, "strace": StraceTracer}


def traced_by(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


LINE = re.compile(r"^(\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?|0x[0-9a-f]+)(?:\s+(E[A-Z0-9]+))?")
RESUMED = re.compile(r"^<\.\.\. \w+ resumed>(.*)$")


def count_trace(text):
    """Counter of 'name' and 'name|detail' keys: a name's total, and the
    details that tell its calls apart (never added into the total)."""
    counts = Counter()
    pending = {}
    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        tid, rest = m.groups()
        if rest.startswith(("---", "+++")):
            continue
        if rest.endswith("<unfinished ...>"):
            pending[tid] = rest[: -len("<unfinished ...>")]
            continue
        resumed = RESUMED.match(rest)
        if resumed:
            rest = pending.pop(tid, "") + resumed.group(1)
        call = CALL.match(rest)
        if not call:
            continue
        name, argv, result, errno_name = call.groups()
        counts[name] += 1
        for detail in details(name, argv, result, errno_name):
            counts[f"{name}|{detail}"] += 1
    return counts


def details(name, argv, result, errno_name):
    if errno_name:
        yield errno_name
    if name in ("setsockopt", "getsockopt"):
        parts = [p.strip() for p in argv.split(",")]
        if len(parts) >= 3:
            yield parts[2]
    elif name == "epoll_ctl":
        parts = [p.strip() for p in argv.split(",")]
        if len(parts) >= 2:
            yield parts[1]
    elif name in ("epoll_wait", "epoll_pwait", "epoll_pwait2") and result == "0":
        yield "timed out"
    elif name in ("read", "recvfrom", "recvmsg", "readv") and result == "0":
        yield "0 (end of stream)"


def table(results):
    columns = [(server, mode) for server in results["servers"] for mode in MODES]
    names = sorted({k for server in results["servers"].values() for m in server["modes"].values()
                    for k in m["per_connection"]},
                   key=lambda k: (k.split("|")[0], "|" in k, k))

    def value(server, mode, key):
        return results["servers"][server]["modes"][mode]["per_connection"].get(key, 0.0)

    head = " | ".join(f"{s} {'resumed' if m == 'resume' else 'full'}" for s, m in columns)
    lines = [f"\nsyscalls per connection ({results['tracer']}), TLS {results['tls']}, one request each,"
             f" --conns {results['conns']}"
             f" ((N={results['handshakes']}) - (N={results['baseline']})) / {results['handshakes'] - results['baseline']},"
             f" median of {results['rounds']} rounds per count (medians need not add up to the total exactly)",
             "", f"| syscall | {head} |", "| --- |" + " ---: |" * len(columns)]
    for key in names:
        vals = [value(s, m, key) for s, m in columns]
        if all(abs(v) < 0.005 for v in vals):
            continue
        label = f"`{key}`" if "|" not in key else f"&nbsp;&nbsp;{key.split('|', 1)[1]}"
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    totals, spreads = [], []
    for s, m in columns:
        per_round = [total(r["per_connection"]) for r in results["servers"][s]["modes"][m]["rounds"]]
        totals.append(f"**{statistics.median(per_round):.2f}**")
        spreads.append(f"{min(per_round):.1f}-{max(per_round):.1f}")
    lines.append("| **total** (median of the rounds' totals) | " + " | ".join(totals) + " |")
    lines.append("| total, range of the rounds | " + " | ".join(spreads) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
