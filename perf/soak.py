#!/usr/bin/env python3
"""Soak under faults: Portcullis (2 workers) under a steady mixed load while
faults are injected on a schedule; every failed connection must be explained
by a fault, every byte sent through a long-lived connection must come back
intact, and descriptors, shared memory, processes and resident memory must
return to their baseline.

Load (Python's ssl, real sockets, each class in its own threads):
  full       new TLS 1.3 session per connection, one HTTP request (listener edge)
  resumed    TLS 1.2 and 1.3 clients offering their last session (listener edge)
  hsm        full handshakes against a key in the (test) HSM (listener hsm)
  rejected   a revoked and an unknown-CA client: must be refused, always
  late       a partner revoked on the way (CRL update): served before it
             (late-before), refused after it (late-after)
  stream     long-lived connections through an echo backend, 16 KiB rounds,
             each round's bytes compared with what was sent (listener stream)

Faults, at fixed fractions of the run (repeated for runs over 4 minutes):
  reload     POST /reload every 5 s; every third one with a broken file (422)
  backend    one of edge's two backends killed, restarted 8 s later
  worker     SIGKILL of worker 0 (its connections die; it is restarted)
  hsm-errors each worker's next 6 signatures fail with CKR_FUNCTION_FAILED
             (test PKCS#11 module)
  hsm-outage the HSM token disappears for 5 s
  crl        the client CA's CRL re-issued revoking partner-late, then reload
  slowloris  150 connections that dribble a ClientHello byte per second

A failure is attributed to a fault as follows; anything else is unexplained
and fails the soak:
  worker     by ownership: the worker is stopped (SIGSTOP), the connections it
             holds are read from /proc (its socket descriptors matched to
             /proc/net/tcp by inode, giving each client's source port) along
             with those still in a listen queue (not yet accepted, so their
             owner cannot be seen), then it is killed; a failed connection is
             the kill's if its client port is one of those and it was open at
             that moment, or if it was open in the few ms between the
             snapshot and the worker's exit and the other worker did not hold
             it (it may have reached the stopped worker's queue then)
  hsm-errors the connection was open during the injection on listener hsm,
             and no more failures than signatures made to fail (6 per worker)
  others     the connection was open at some moment between the fault's start
             and 3 s after its end, on a listener the fault can touch

Shared memory: besides /dev/shm, the session cache's entries (sessions live
for 20 s here) must fall back to their idle level once the load ends, and the
per-worker counter slots must still be one per worker after the kill.

  perf/soak.py --build build [--duration 600] [--json FILE]
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from perf_common import children_of, wait_for

ROOT = Path(__file__).resolve().parent.parent
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "soak-pin-2718"
GRACE_S = 3.0
SESSION_LIFETIME_S = 20
HSM_FAILED_SIGNATURES = 6  # per worker process
EDGE, HSM, STREAM = 18443, 18444, 18445


def run(*argv, cwd=None, env=None):
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Backend:
    def __init__(self, binary, mode, port, log):
        self.argv = [str(binary), "--listen", f"127.0.0.1:{port}", "--mode", mode]
        self.port, self.log, self.proc = port, log, None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        if not wait_for(lambda: accepts(self.port), 10):
            raise RuntimeError(f"backend {self.argv} did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Record:
    """Every connection attempt: class, listener, start, end, ok, cause."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = []
        self.stream_rounds = 0
        self.stream_bytes = 0
        self.stream_corrupt = 0

    def add(self, kind, listener, start, ok, cause="", port=None):
        with self.lock:
            self.connections.append((kind, listener, start, time.time(), ok, cause, port))


def client_context(pki, cert, tls="1.3"):
    ctx = ssl.create_default_context(cafile=str(pki / "root-ca.cert.pem"))
    if cert:
        chain = pki / f"{cert}.chain.pem"
        ctx.load_cert_chain(str(chain if chain.exists() else pki / f"{cert}.cert.pem"),
                            str(pki / f"{cert}.key.pem"))
    version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def http_exchange(ctx, port, session=None):
    """One connection, one request. Returns (ok, cause, session, resumed,
    client port)."""
    local = [None]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            local[0] = raw.getsockname()[1]
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                resumed = s.session_reused
                if not data.startswith(b"HTTP/1.1 200"):
                    return False, "no HTTP answer" if not data else "bad answer", s.session, resumed, local[0]
                return True, "", s.session, resumed, local[0]
    except ssl.SSLError as e:
        return False, f"tls: {e.reason or e}", None, False, local[0]
    except (OSError, ValueError) as e:
        return False, type(e).__name__, None, False, local[0]


def request_loop(stop, record, kind, listener, port, ctx, expect_ok=True, resume=False, pause=0.02,
                 switch=None):
    session = None
    resumed_count = 0
    while not stop.is_set():
        start = time.time()
        ok, cause, new_session, resumed, local = http_exchange(ctx, port, session if resume else None)
        resumed_count += resumed
        if resume and ok:
            session = new_session
        expected = expect_ok if switch is None else switch(start)
        name = kind if switch is None else f"{kind}-{'before' if expected else 'after'}"
        if expected:
            record.add(name, listener, start, ok, cause, local)
        else:
            # Must be refused; being served is a policy failure no fault explains.
            record.add(name, listener, start, not ok, "served although it must be refused" if ok else "", local)
        time.sleep(pause)
    with record.lock:
        record.__dict__.setdefault("resumed_by_kind", {})
        record.resumed_by_kind[kind] = record.resumed_by_kind.get(kind, 0) + resumed_count


def stream_loop(stop, record, ctx, port):
    rng = random.Random(os.getpid() ^ threading.get_ident())
    while not stop.is_set():
        start = time.time()
        local = None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                local = raw.getsockname()[1]
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    # Minutes-long connections, so that faults meet them open.
                    for _ in range(rng.randint(300, 3000)):
                        if stop.is_set():
                            break
                        chunk = rng.randbytes(16384)
                        s.sendall(chunk)
                        got = bytearray()
                        while len(got) < len(chunk):
                            part = s.recv(len(chunk) - len(got))
                            if not part:
                                raise ConnectionError("closed mid-round")
                            got += part
                        with record.lock:
                            record.stream_rounds += 1
                            record.stream_bytes += len(chunk)
                            if hashlib.sha256(got).digest() != hashlib.sha256(chunk).digest():
                                record.stream_corrupt += 1
                        time.sleep(0.01)
            record.add("stream", "stream", start, True, port=local)
        except ssl.SSLError as e:
            record.add("stream", "stream", start, False, f"tls: {e.reason or e}", local)
            time.sleep(0.2)
        except (OSError, ValueError) as e:
            record.add("stream", "stream", start, False, type(e).__name__, local)
            time.sleep(0.2)


def slowloris(port, count, seconds, result):
    """Connections that send a TLS record header and then one byte a second;
    the handshake timeout must close them."""
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"\x16\x03\x01\x02\x00")
            s.setblocking(False)
            socks.append(s)
        except OSError:
            pass
    closed_by_server = 0
    deadline = time.time() + seconds
    while socks and time.time() < deadline:
        time.sleep(1)
        for s in list(socks):
            try:
                s.send(b"\x01")
                if s.recv(1) == b"":
                    raise ConnectionError
            except BlockingIOError:
                continue
            except OSError:
                closed_by_server += 1
                socks.remove(s)
                s.close()
    for s in socks:
        s.close()
    result.update(opened=count, closed_by_server=closed_by_server, still_open_at_end=len(socks))


class Daemon:
    def __init__(self, binary, config, log, env):
        self.binary, self.config, self.log_path, self.env = binary, config, log, env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config)], stdout=open(self.log_path, "w"),
                                     stderr=subprocess.STDOUT, env=self.env)
        if not wait_for(lambda: "portcullis ready" in self.log_path.read_text(), 30):
            raise RuntimeError("portcullis did not start:\n" + self.log_path.read_text()[-3000:])

    def children(self):
        return sorted(children_of(self.proc.pid))


def process_resources(pids):
    fds = rss = 0
    for pid in pids:
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return {"processes": len(pids), "fds": fds, "rss_bytes": rss}


def tcp_table():
    """(inode, state, local port, remote port) of every IPv4/IPv6 TCP socket."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            rows.append((int(f[9]), f[3], int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)))
    return rows


def connections_of(pid, ports):
    """Client source ports of the connections `pid` holds on `ports`, and of
    those waiting in a listen queue on them (ESTABLISHED or SYN_RECV, not yet
    accepted: inode 0, so which worker's queue cannot be seen). Call with the
    process stopped."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    held, queued = set(), set()
    for inode, state, local, remote in tcp_table():
        if local not in ports or remote == 0:
            continue
        if inode in inodes:
            held.add(remote)
        elif inode == 0 and state in ("01", "03"):
            queued.add(remote)
    return held, queued


def exited(pid):
    """Gone or a zombie: its descriptors are closed."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def shm_entries():
    try:
        return len(os.listdir("/dev/shm"))
    except OSError:
        return 0


def orphans(config):
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if str(config) in cmdline and ppid == 1:
            found.append(int(entry.name))
    return found


def admin_post(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def metric_lines(port, prefix):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    return [line for line in body.splitlines() if line.startswith(prefix) and not line.startswith("#")]


def metric_sum(port, prefix):
    lines = metric_lines(port, prefix)
    return None if lines is None else sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def shared_slots(port):
    """The session cache's entries and the worker labels of the per-worker
    counter slots, from /metrics."""
    workers = set()
    for line in metric_lines(port, "portcullis_worker_busy_seconds_total{") or []:
        workers.add(line.split('worker="', 1)[1].split('"', 1)[0])
    return {"session_cache_entries": metric_sum(port, "portcullis_session_cache_entries"),
            "worker_slots": len(workers)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--json", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    build = Path(args.build).resolve()
    binaries = {"portcullis": build / "mgmt" / "portcullis",
                "backend": build / "tests" / "support" / "portcullis-test-backend",
                "module": build / "hsm" / "libportcullis-test-pkcs11.so"}
    for b in binaries.values():
        if not b.exists():
            sys.exit(f"missing {b}: build first")
    if not shutil.which("softhsm2-util") or not Path(SOFTHSM).exists():
        print("SKIPPED LOUDLY: softhsm2 is not installed (scripts/lib/deps.sh installs it)")
        sys.exit(77)

    work = Path(tempfile.mkdtemp(prefix="portcullis-soak."))
    pki = work / "pki"
    run(str(ROOT / "scripts" / "make-demo-pki.sh"), str(pki))
    make_late_partner(pki)
    env = setup_hsm(work)
    backends = [Backend(binaries["backend"], "http", port, work / f"backend-{port}.log") for port in (19101, 19102)]
    echo = Backend(binaries["backend"], "echo", 19103, work / "backend-echo.log")
    admin = 19100
    config = work / "portcullis.toml"
    good_config = config_text(pki, binaries["module"], admin, [b.port for b in backends], echo.port)
    config.write_text(good_config)
    daemon = Daemon(binaries["portcullis"], config, work / "portcullis.log", env)
    shm_before_start = shm_entries()
    record = Record()
    stop = threading.Event()
    faults = []  # (name, start, end, listeners it may touch, attribution detail or None)
    problems = []
    report = {"duration_s": args.duration, "workers": 2}
    try:
        for b in backends + [echo]:
            b.start()
        daemon.start()
        time.sleep(1)
        baseline = process_resources([daemon.proc.pid] + daemon.children())
        baseline["shm_entries"] = shm_entries()
        baseline.update(shared_slots(admin))
        report["baseline"] = baseline

        crl_updated_at = [float("inf")]
        threads = []

        def start_thread(target, *a, **kw):
            t = threading.Thread(target=target, args=a, kwargs=kw, daemon=True)
            t.start()
            threads.append(t)

        for tls in ("1.3", "1.2"):
            start_thread(request_loop, stop, record, "full", "edge", EDGE, client_context(pki, "partner-a", tls))
            start_thread(request_loop, stop, record, "resumed", "edge", EDGE, client_context(pki, "partner-a", tls),
                         resume=True)
        start_thread(request_loop, stop, record, "hsm", "hsm", HSM, client_context(pki, "partner-a"))
        for bad in ("partner-revoked", "rogue-client"):
            start_thread(request_loop, stop, record, "rejected", "edge", EDGE, client_context(pki, bad),
                         expect_ok=False, pause=0.2)
        # Served until the CRL update is in force; refused after it (allowing its window).
        start_thread(request_loop, stop, record, "late", "edge", EDGE, client_context(pki, "partner-late"),
                     switch=lambda t: t < crl_updated_at[0], pause=0.1)
        for _ in range(3):
            start_thread(stream_loop, stop, record, client_context(pki, "partner-a"), STREAM)

        begin = time.time()
        schedule = fault_schedule(args.duration)
        next_reload, reloads = begin + 5, 0
        slow = {}
        for at, name in schedule:
            while time.time() < begin + at:
                if time.time() >= next_reload:
                    reloads += 1
                    broken = reloads % 3 == 0
                    t0 = time.time()
                    if broken:
                        config.write_text(good_config + "\n[[listener]\nbroken = \n")
                    status = admin_post(admin, "/reload")
                    if broken:
                        config.write_text(good_config)
                    faults.append(("reload-broken" if broken else "reload", t0, time.time(), set(), None))
                    if status != (422 if broken else 200):
                        problems.append(f"reload {reloads} ({'broken' if broken else 'good'} file) answered {status}")
                    next_reload = time.time() + 5
                time.sleep(0.05)
            t0 = time.time()
            if name == "backend":
                backends[0].kill()
                time.sleep(8)
                backends[0].start()
                faults.append(("backend", t0, time.time(), {"edge"}, None))
            elif name == "worker":
                victim = worker_zero(daemon)
                owned = {"held": set(), "queued": set(), "at": time.time()}
                if victim:
                    os.kill(victim, signal.SIGSTOP)
                    held, queued = connections_of(victim, {EDGE, HSM, STREAM})
                    survivors = set()
                    for pid in daemon.children():
                        if pid != victim:
                            survivors |= connections_of(pid, {EDGE, HSM, STREAM})[0]
                    owned.update(held=held, queued=queued, survivors=survivors, at=time.time())
                    os.kill(victim, signal.SIGKILL)
                    # Its listen sockets close as it exits, not at kill().
                    deadline = time.time() + 5
                    while not exited(victim) and time.time() < deadline:
                        time.sleep(0.001)
                    owned["killed_at"] = time.time()
                    wait_for(lambda: len(daemon.children()) == baseline["processes"] - 1 and
                             "worker 0 ready again" in daemon.log_path.read_text(), 20)
                    report.setdefault("worker_kills", []).append(
                        {"held": len(held), "queued": len(queued)})
                else:
                    problems.append("worker 0 not found to kill")
                faults.append(("worker-kill", t0, time.time(), {"edge", "hsm", "stream"}, owned))
            elif name == "hsm-errors":
                # An operation-level error: it fails the signature, not the
                # token (a token-level one takes the token out for
                # retry_interval_ms; hsm-outage covers that). Per process.
                (work / "control").write_text(f"fail_next = {HSM_FAILED_SIGNATURES}\nerror = CKR_FUNCTION_FAILED\n")
                time.sleep(3)
                (work / "control").write_text("")
                faults.append(("hsm-errors", t0, time.time(), {"hsm"},
                               {"budget": HSM_FAILED_SIGNATURES * report["workers"]}))
            elif name == "hsm-outage":
                (work / "control").write_text("down_tokens = soak\n")
                time.sleep(5)
                (work / "control").write_text("")
                # The pool reconnects after its retry interval.
                time.sleep(2)
                faults.append(("hsm-outage", t0, time.time(), {"hsm"}, None))
            elif name == "crl":
                revoke_late_partner(pki)
                status = admin_post(admin, "/reload")
                if status != 200:
                    problems.append(f"reload after the CRL update answered {status}")
                crl_updated_at[0] = time.time()
                faults.append(("crl-update", t0, time.time(), {"edge"}, None))
            elif name == "slowloris":
                slowloris(EDGE, 150, 8, slow)
                faults.append(("slowloris", t0, time.time(), set(), None))
        while time.time() < begin + args.duration:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        report["slowloris"] = slow
        report["reloads"] = reloads
        time.sleep(6)  # connections finish, the restarted worker settles
        after = process_resources([daemon.proc.pid] + daemon.children())
        after["shm_entries"] = shm_entries()
        # Sessions made under load live SESSION_LIFETIME_S, then the
        # supervisor's sweep (every 5 s) frees their slots.
        wait_for(lambda: shared_slots(admin)["session_cache_entries"] == baseline["session_cache_entries"],
                 SESSION_LIFETIME_S + 15)
        after.update(shared_slots(admin))
        report["after_load"] = after
        report["hsm_signature_failures_metric"] = metric_sum(admin, "portcullis_hsm_signatures_total{")
        check_resources(baseline, after, problems)
    finally:
        stop.set()
        if daemon.proc:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                problems.append("portcullis did not stop within 40 s of SIGTERM")
                daemon.proc.kill()
        for b in backends + [echo]:
            if b.proc and b.proc.poll() is None:
                b.kill()
    time.sleep(1)
    left = orphans(config)
    if left:
        problems.append(f"processes outlived the supervisor: {left}")
    if shm_entries() != shm_before_start:
        problems.append(f"/dev/shm entries {shm_before_start} before start, {shm_entries()} after stop")
    summarize(record, faults, problems, report)
    report["problems"] = problems
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    if problems:
        print(f"logs kept in {work}", file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if problems else 0)


def fault_schedule(duration):
    """(seconds from start, fault): every fault once per 4-minute cycle,
    spread over each cycle; one cycle squeezed into shorter runs."""
    order = ["backend", "worker", "hsm-errors", "hsm-outage", "crl", "slowloris"]
    cycle = min(duration, 240.0)
    schedule = []
    start = 0.0
    while start + cycle <= duration + 1e-9:
        for i, name in enumerate(order):
            if name == "crl" and start > 0:
                continue  # partner-late is revoked once
            schedule.append((start + cycle * (i + 1) / (len(order) + 1), name))
        start += cycle
    return schedule


def worker_zero(daemon):
    """Worker 0's pid: the child whose CPU affinity is CPU 0 only (worker i
    is pinned to CPU i mod ncpu; the admin process is not pinned)."""
    for pid in daemon.children():
        try:
            if os.sched_getaffinity(pid) == {0}:
                return pid
        except OSError:
            continue
    return None


def check_resources(baseline, after, problems):
    if after["processes"] != baseline["processes"]:
        problems.append(f"processes: {baseline['processes']} at the baseline, {after['processes']} after the load")
    if after["fds"] != baseline["fds"]:
        problems.append(f"open descriptors: {baseline['fds']} at the baseline, {after['fds']} after the load")
    if after["shm_entries"] != baseline["shm_entries"]:
        problems.append(f"/dev/shm entries: {baseline['shm_entries']} at the baseline, {after['shm_entries']} after")
    for key in ("session_cache_entries", "worker_slots"):
        if after.get(key) != baseline.get(key):
            problems.append(f"shared memory {key}: {baseline.get(key)} at the baseline, {after.get(key)} "
                            f"after the load (and {SESSION_LIFETIME_S + 15} s for sessions to expire)")
    # Caches fill under load (sessions, verified chains); a leak grows without bound.
    limit = baseline["rss_bytes"] * 1.5 + 32 * 1024 * 1024
    if after["rss_bytes"] > limit:
        problems.append(f"resident memory {after['rss_bytes'] >> 20} MiB after the load, baseline "
                        f"{baseline['rss_bytes'] >> 20} MiB (limit {int(limit) >> 20} MiB)")


def summarize(record, faults, problems, report):
    by_kind = {}
    unexplained = []
    charged = {}  # (fault index, rule) -> failures attributed to it

    def rule_explaining(fault, listener, start, end, port):
        """The rule by which `fault` explains this failure, or None."""
        name, fb, fe, touches, detail = fault
        if listener not in touches:
            return None
        if name == "worker-kill":
            # Open when the worker was stopped, and one of its connections
            # (or queued where it could have been); or open between the
            # snapshot and its exit (a few ms) and not one the other workers
            # held: its SYN may have reached the stopped worker's queue
            # after the snapshot (the client's clock started earlier).
            if start <= detail["at"] and end >= detail["at"] and port in detail["held"] | detail["queued"]:
                return "ownership"
            if (start <= detail.get("killed_at", detail["at"]) and end >= detail["at"] and
                    port not in detail.get("survivors", set())):
                return "gap"
            return None
        return "window" if start <= fe + GRACE_S and end >= fb else None

    for kind, listener, start, end, ok, cause, port in record.connections:
        entry = by_kind.setdefault(kind, {"attempted": 0, "succeeded": 0, "failed": {}})
        entry["attempted"] += 1
        if ok:
            entry["succeeded"] += 1
            continue
        index, rule = next(((i, r) for i, fault in enumerate(faults)
                            if (r := rule_explaining(fault, listener, start, end, port))), (None, None))
        blame = None if index is None else faults[index][0]
        if index is not None:
            charged[index, rule] = charged.get((index, rule), 0) + 1
        key = f"{blame or 'UNEXPLAINED'}: {cause}"
        entry["failed"][key] = entry["failed"].get(key, 0) + 1
        if blame is None:
            unexplained.append((kind, cause, round(start, 1)))
    report["connections"] = by_kind
    total = {}
    for (i, _), n in charged.items():
        total[i] = total.get(i, 0) + n
    report["faults"] = [(name, round(fe - fb, 1), total.get(i, 0))
                        for i, (name, fb, fe, _, _) in enumerate(faults)]
    kills = [(i, d) for i, (name, _, _, _, d) in enumerate(faults) if name == "worker-kill"]
    for snapshot, (i, d) in zip(report.get("worker_kills", []), kills):
        snapshot.update(failed_owned=charged.get((i, "ownership"), 0), failed_in_the_gap=charged.get((i, "gap"), 0),
                        gap_ms=round((d.get("killed_at", d["at"]) - d["at"]) * 1000, 1))
        print(f"worker kill: held {snapshot['held']}, queued {snapshot['queued']}; failures attributed by "
              f"ownership {snapshot['failed_owned']}, in the {snapshot['gap_ms']} ms before its exit "
              f"{snapshot['failed_in_the_gap']}")
    for i, (name, _, _, _, detail) in enumerate(faults):
        budget = (detail or {}).get("budget")
        if budget is not None and total.get(i, 0) > budget:
            problems.append(f"{name}: {total[i]} failures attributed, more than the {budget} it can cause")
    report["stream"] = {"rounds": record.stream_rounds, "bytes": record.stream_bytes,
                        "corrupt_rounds": record.stream_corrupt}
    report["resumed_handshakes"] = getattr(record, "resumed_by_kind", {})
    print(f"\nsoak of {report['duration_s']:g} s, {report['workers']} workers, {report.get('reloads', 0)} reloads")
    print(f"{'class':<10} {'attempted':>10} {'succeeded':>10}  failed by cause")
    for kind, e in sorted(by_kind.items()):
        causes = ", ".join(f"{k} x{v}" for k, v in sorted(e["failed"].items())) or "-"
        print(f"{kind:<10} {e['attempted']:>10} {e['succeeded']:>10}  {causes}")
    print(f"stream: {record.stream_rounds} echo rounds, {record.stream_bytes / 1e6:.1f} MB, "
          f"{record.stream_corrupt} corrupt")
    counts = {}
    for name, _, _ in report["faults"]:
        counts[name] = counts.get(name, 0) + 1
    print("faults: " + ", ".join(f"{name} x{n}" for name, n in counts.items()))
    if "slowloris" in report:
        print(f"slowloris: {report['slowloris']}")
    for key in ("baseline", "after_load"):
        if key in report:
            print(f"{key}: {report[key]}")
    if unexplained:
        problems.append(f"{len(unexplained)} failures no fault explains, e.g. {unexplained[:5]}")
    if record.stream_corrupt:
        problems.append(f"{record.stream_corrupt} stream rounds came back different")
    resumed = report["resumed_handshakes"].get("resumed", 0)
    print(f"resumed class: {resumed} of {by_kind.get('resumed', {}).get('succeeded', 0)} handshakes resumed")
    for kind in ("full", "resumed", "hsm", "rejected", "late-before", "late-after", "stream"):
        if by_kind.get(kind, {}).get("succeeded", 0) == 0:
            problems.append(f"no {kind} connection succeeded: the load did not run")
    for p in problems:
        print(f"!!! {p}", file=sys.stderr)
    print("soak: " + ("FAILED" if problems else "passed: every failure explained, nothing lost"))


def config_text(pki, module, admin, backend_ports, echo_port):
    tls = f"""  [listener.tls]
  client_auth = "require"
  trust_bundle = "{pki}/root-ca.cert.pem"
  crl_files = ["{pki}/client-ca.crl.pem"]
"""
    def listener(name, port, key, backends, extra=""):
        return f"""
[[listener]]
name = "{name}"
address = "127.0.0.1:{port}"
handshake_timeout_ms = 3000
{tls}    [[listener.tls.certificate]]
    chain = "{pki}/server-ec.chain.pem"
    key = "{key}"
  [listener.upstream]
  backends = [{", ".join(f'"127.0.0.1:{p}"' for p in backends)}]
  fail_threshold = 1
  retry_after_ms = 1000
{extra}"""
    return f"""[workers]
count = 2
[resumption]
session_lifetime_s = {SESSION_LIFETIME_S}
[admin]
address = "127.0.0.1:{admin}"
[log]
level = "info"
access_log = "access.log"
[hsm]
module = "{module}"
token = "soak"
pin_file = "pin"
sessions = 2
retry_interval_ms = 500
""" + listener("edge", EDGE, f"{pki}/server-ec.key.pem", backend_ports) + \
        listener("hsm", HSM, "pkcs11:token=soak;object=server-ec;type=private", backend_ports[1:]) + \
        listener("stream", STREAM, f"{pki}/server-ec.key.pem", [echo_port])


def setup_hsm(work):
    (work / "tokens").mkdir()
    (work / "softhsm2.conf").write_text(f"directories.tokendir = {work}/tokens\nobjectstore.backend = file\n"
                                        "log.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(work / "softhsm2.conf"),
               PORTCULLIS_TEST_PKCS11_CONTROL=str(work / "control"))
    (work / "control").write_text("")
    (work / "pin").write_text(PIN + "\n")
    (work / "pin").chmod(0o600)
    run("softhsm2-util", "--init-token", "--free", "--label", "soak", "--pin", PIN, "--so-pin", PIN, env=env)
    run("softhsm2-util", "--import", str(work / "pki" / "server-ec.key.pem"), "--token", "soak",
        "--label", "server-ec", "--id", "01", "--pin", PIN, env=env)
    return env


CLIENT_EXT = """[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


def make_late_partner(pki):
    """partner-late: a good client of the demo client CA, revoked during the run."""
    (pki / "client.ext").write_text(CLIENT_EXT)
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
        "partner-late.key.pem", cwd=pki)
    run("openssl", "req", "-new", "-key", "partner-late.key.pem", "-subj", "/C=GB/O=Partner Bank/CN=partner-late",
        "-out", "partner-late.csr", cwd=pki)
    run("openssl", "x509", "-req", "-in", "partner-late.csr", "-CA", "client-ca.cert.pem", "-CAkey",
        "client-ca.key.pem", "-CAcreateserial", "-days", "30", "-sha256", "-extfile", "client.ext",
        "-extensions", "client", "-out", "partner-late.cert.pem", cwd=pki)
    (pki / "partner-late.chain.pem").write_text((pki / "partner-late.cert.pem").read_text() +
                                                (pki / "client-ca.cert.pem").read_text())


def revoke_late_partner(pki):
    """The client CA's next CRL, listing partner-late as well (make-demo-pki.sh
    left its `openssl ca` index next to it)."""
    cert = pki / "partner-late.cert.pem"
    out = lambda *a: subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", *a], capture_output=True,
                                    text=True, check=True).stdout.strip()
    serial = out("-serial").split("=", 1)[1]
    subject = out("-subject", "-nameopt", "compat").split("=", 1)[1].strip()
    end = subprocess.run(["date", "-u", "-d", out("-enddate").split("=", 1)[1], "+%y%m%d%H%M%SZ"],
                         capture_output=True, text=True, check=True).stdout.strip()
    now = time.strftime("%y%m%d%H%M%SZ", time.gmtime())
    with open(pki / "client-ca.index", "a") as index:
        index.write(f"R\t{end}\t{now}\t{serial}\tunknown\t{subject}\n")
    (pki / "crl.cnf").write_text("[ca]\ndefault_ca = client_ca\n[client_ca]\ndatabase = client-ca.index\n"
                                 "crlnumber = client-ca.crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n")
    run("openssl", "ca", "-config", "crl.cnf", "-gencrl", "-keyfile", "client-ca.key.pem", "-cert",
        "client-ca.cert.pem", "-out", "client-ca.crl.next.pem", cwd=pki)
    os.replace(pki / "client-ca.crl.next.pem", pki / "client-ca.crl.pem")


if __name__ == "__main__":
    main()
