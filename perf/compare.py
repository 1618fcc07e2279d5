#!/usr/bin/env python3
"""Portcullis, nginx and HAProxy side by side: the same mutual-TLS listener
in each, the same backend behind it, the same load, one table.

Each server gets the same ECDSA P-256 server certificate, the same client
trust anchor, CRLs of every CA in the client chain, verification depth,
groups, TLS 1.2 ciphers, session cache and tickets, and proxies TCP to the
same test backend; each runs one worker (Portcullis `workers.count = 1`,
nginx `worker_processes 1`, HAProxy `nbthread 1`) on CPU 0, while the load
generator and the backend run on CPU 1. Before measuring, every server is
probed: the accepted partner and a few of the many partners get their
request answered; a revoked leaf, a leaf under a revoked intermediate, an
unknown CA and no certificate are refused, with TLS 1.2 and 1.3; and the
negotiated protocol, cipher and group are the same for all three.

Server CPU per handshake = utime+stime of the server's whole process tree
(nginx: master and worker; Portcullis: supervisor and worker; reaped
children through cutime+cstime) over the measured window, divided by the
handshakes that got their backend answer. Rounds are interleaved (round r
runs every case on every server before round r+1) and medians are reported.

Cases: WORKLOAD/TLS/MODE with WORKLOAD returning (one client certificate)
or many (a distinct certificate per connection, --partners leaves under the
demo intermediate), TLS 1.3 or 1.2, MODE full or resumed.

Servers: portcullis (the default configuration: stateless TLS 1.3 tickets,
which any appliance sharing the ticket key file resumes), portcullis-stateful
(resumption.ticket_mode = "stateful": tickets are session IDs, resumed on this
appliance only), portcullis-dpdk (the default configuration on the DPDK
transport; --network veth only), nginx, haproxy.

--network veth (root) puts the load generator and the backend in a network
namespace behind a veth pair (perf/veth_net.py), so that a DPDK worker can
serve the same clients through the af_packet device. There the server CPU of
a kernel server is CPU 0's whole busy time (/proc/stat), which includes the
kernel's receive work for the server's end (steered to CPU 0, as a NIC's
interrupt would be); the DPDK worker polls all the time, so it runs only for
its own measurements and its cost is its busy poll iterations
(portcullis_worker_busy_seconds_total). Numbers of the two networks are not
comparable with each other; ratios within one run are.

  perf/compare.py --build build [--duration 5] [--rounds 3] [--conns 16]
                  [--network loopback|veth]
                  [--servers portcullis,portcullis-stateful,nginx,haproxy]
                  [--cases 'returning/*,*/1.3/full']
                  [--json FILE] [--work DIR]
"""
import argparse
import concurrent.futures
import datetime
import fnmatch
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import veth_net
from perf_common import children_of, scrape_metric, wait_for

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
# The same on every server: Portcullis's defaults, written out for the others.
GROUPS = "X25519MLKEM768:X25519:P-256:P-384"
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305")
VERIFY_DEPTH = 2
SESSION_CACHE_ENTRIES = 20480
SESSION_LIFETIME_S = 7200
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
SERVER_LABELS = {"portcullis": "Portcullis", "portcullis-stateful": "P stateful", "portcullis-dpdk": "P DPDK",
                 "nginx": "nginx", "haproxy": "HAProxy"}
# Portcullis as configured by default, with resumption.ticket_mode =
# "stateful", and on the DPDK transport (--network veth only).
PORTCULLIS_VARIANTS = ("portcullis", "portcullis-stateful", "portcullis-dpdk")
RATIO_LABELS = {"portcullis": "P", "portcullis-stateful": "P stateful", "portcullis-dpdk": "P DPDK"}
DEFAULT_SERVERS = {"loopback": "portcullis,portcullis-stateful,nginx,haproxy",
                   "veth": "portcullis,portcullis-dpdk,nginx,haproxy"}
WORKLOADS = ("returning", "many")
TLS_VERSIONS = ("1.3", "1.2")
MODES = ("full", "resumed")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Abort(Exception):
    """A condition under which no number of this run may be reported."""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per case and server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16, help="concurrent connections of the load generator")
    ap.add_argument("--servers", default="",
                    help=f"default {DEFAULT_SERVERS['loopback']} (veth: {DEFAULT_SERVERS['veth']})")
    ap.add_argument("--network", choices=("loopback", "veth"), default="loopback",
                    help="loopback: everything on 127.0.0.1. veth: the load generator and the backend in a "
                         "network namespace behind a veth pair (root), which the DPDK transport can serve too")
    ap.add_argument("--cases", default="*", help="comma-separated names or globs, e.g. 'returning/*,many/1.3/full'")
    ap.add_argument("--partners", type=int, default=1000, help="client certificates of the many-partners workload")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--work", default="/tmp/portcullis-compare",
                    help="work directory; the PKI is kept there for the next run")
    ap.add_argument("--json", default="", help="write every round's values and the medians here")
    ap.add_argument("--table-from", default="", metavar="JSON",
                    help="print the table of an earlier run's JSON again (medians recomputed), run nothing")
    args = ap.parse_args()
    if args.table_from:
        results = json.loads(Path(args.table_from).read_text())
        results["medians"] = medians(results["runs"], results["cases"], results["servers"])
        print(table(results, results["cases"], results["servers"]))
        return

    servers = [s.strip() for s in (args.servers or DEFAULT_SERVERS[args.network]).split(",") if s.strip()]
    for s in servers:
        if s not in SERVER_LABELS:
            sys.exit(f"--servers: unknown server {s!r} ({', '.join(SERVER_LABELS)})")
    if "portcullis-dpdk" in servers and args.network != "veth":
        sys.exit("--servers portcullis-dpdk needs --network veth (a port for DPDK to poll)")
    if args.network == "veth" and os.geteuid() != 0:
        sys.exit("--network veth needs root: a veth pair, a network namespace and AF_PACKET")
    all_cases = [f"{w}/{t}/{m}" for w in WORKLOADS for t in TLS_VERSIONS for m in MODES]
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()]
    cases = [c for c in all_cases if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    if not cases:
        sys.exit(f"--cases {args.cases!r} matches none of: {', '.join(all_cases)}")
    if args.server_cpu == args.client_cpu or max(args.server_cpu, args.client_cpu) >= os.cpu_count():
        sys.exit(f"--server-cpu and --client-cpu must be two different CPUs of the {os.cpu_count()} here")

    build = Path(args.build).resolve()
    binaries = {"portcullis": build / "mgmt" / "portcullis", "bench": build / "perf" / "portcullis-bench",
                "backend": build / "tests" / "support" / "portcullis-test-backend"}
    for binary in binaries.values():
        if not binary.exists():
            sys.exit(f"missing {binary}: build first (meson compile -C {build})")
    for tool in ["taskset", "openssl"] + [s for s in servers if s not in PORTCULLIS_VARIANTS]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: perf/compare.sh installs nginx, libnginx-mod-stream and haproxy")
    if "nginx" in servers and not NGINX_STREAM_MODULE.exists():
        sys.exit(f"missing {NGINX_STREAM_MODULE}: install libnginx-mod-stream")

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pki = ensure_pki(work / "pki", args.partners)
    # Configurations, logs and results of this run; removed when it succeeds.
    run_dir = Path(tempfile.mkdtemp(prefix="run.", dir=work))
    if args.network == "veth":
        # The server CPU's busy time is what is measured: nothing of ours runs there but the server.
        os.sched_setaffinity(0, {args.client_cpu})
        veth_net.setup(args.client_cpu)
        veth_net.sh(f"ip addr add {veth_net.SERVER_IP}/24 dev {veth_net.NEAR}")
    runner = Runner(args, binaries, run_dir, pki, servers, cases)
    try:
        ok = runner.run()
    except Abort as e:
        print(f"\n!!! ABORTED: {e}", file=sys.stderr)
        runner.results["aborted"] = str(e)
        ok = False
    finally:
        runner.stop_everything()
        if args.network == "veth":
            veth_net.teardown()
    if ok:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        print(f"configurations and logs kept in {run_dir}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(runner.results, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    sys.exit(0 if ok else 1)


# --- PKI -------------------------------------------------------------------

CLIENT_EXT = """[req]
distinguished_name = req_dn
[req_dn]
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl(*argv, cwd):
    subprocess.run(["openssl", *argv], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def pki_is_fresh(pki, partners):
    stamp = pki / "compare-pki.json"
    if not stamp.exists():
        return False
    try:
        if json.loads(stamp.read_text()).get("partners") != partners:
            return False
    except ValueError:
        return False
    # A day of validity left on the certificates and on every CRL.
    for cert in ("partner-a.cert.pem", "server-ec.cert.pem", "partners/p0000.cert.pem"):
        if subprocess.run(["openssl", "x509", "-in", str(pki / cert), "-noout", "-checkend", "86400"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            return False
    for crl in ("client-ca.crl.pem", "root-ca.crl.pem", "revoked-ca.crl.pem"):
        out = subprocess.run(["openssl", "crl", "-in", str(pki / crl), "-noout", "-nextupdate"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return False
        next_update = datetime.datetime.strptime(out.stdout.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        if next_update - now < datetime.timedelta(days=1):
            return False
    return True


def ensure_pki(pki, partners):
    """The demo PKI plus what the comparison needs: an intermediate revoked on
    the root's CRL with a leaf under it (so a server that checks only the
    leaf's CRL is caught), `partners` client leaves under the demo
    intermediate, the CRLs in one file, HAProxy's certificate+key file.
    Kept between runs while certificates and CRLs have a day left."""
    if pki_is_fresh(pki, partners):
        print(f"== PKI in {pki} (kept from an earlier run: {partners} partner certificates)")
        return pki
    print(f"== PKI in {pki}: demo PKI, a revoked intermediate, {partners} partner certificates (once)")
    started = time.time()
    shutil.rmtree(pki, ignore_errors=True)
    subprocess.run([str(ROOT / "scripts" / "make-demo-pki.sh"), str(pki)], check=True, stdout=subprocess.DEVNULL)
    (pki / "compare-ext.cnf").write_text(CLIENT_EXT)

    def issue(name, subject, issuer, section, days):
        # Key, request and certificate in one openssl process (`req -x509 -CA`).
        openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key.pem", "-subj", subject, "-CA", f"{issuer}.cert.pem",
                "-CAkey", f"{issuer}.key.pem", "-set_serial", "0x" + os.urandom(16).hex(), "-days", str(days),
                "-sha256", "-config", "compare-ext.cnf", "-extensions", section, "-out", f"{name}.cert.pem", cwd=pki)

    issue("revoked-ca", "/C=GB/O=Portcullis Demo/CN=Portcullis Demo Revoked Client CA", "root-ca", "ca", 1825)
    issue("partner-under-revoked-ca", "/C=GB/O=Partner Bank/CN=partner-under-revoked-ca", "revoked-ca",
          "client", 365)
    (pki / "partner-under-revoked-ca.chain.pem").write_text(
        (pki / "partner-under-revoked-ca.cert.pem").read_text() + (pki / "revoked-ca.cert.pem").read_text())
    make_crl(pki, "root-ca", revoked=["revoked-ca.cert.pem"])
    # revoked-ca's own CRL (empty): with it, the only reason left to refuse
    # partner-under-revoked-ca is the root's CRL.
    make_crl(pki, "revoked-ca", revoked=[])

    (pki / "partners").mkdir()
    intermediate = (pki / "client-ca.cert.pem").read_text()

    def partner(i):
        name = f"partners/p{i:04d}"
        issue(name, f"/C=GB/O=Partner Bank/CN=partner-{i:04d}", "client-ca", "client", 365)
        (pki / f"{name}.chain.pem").write_text((pki / f"{name}.cert.pem").read_text() + intermediate)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(partner, range(partners)))
    (pki / "partners.list").write_text("".join(
        f"{pki / f'partners/p{i:04d}.chain.pem'} {pki / f'partners/p{i:04d}.key.pem'}\n" for i in range(partners)))
    (pki / "partners-probe.list").write_text("".join(
        f"{pki / f'partners/p{i:04d}.chain.pem'} {pki / f'partners/p{i:04d}.key.pem'}\n"
        for i in range(min(3, partners))))
    (pki / "all-crls.pem").write_text("".join(
        (pki / f).read_text() for f in ("client-ca.crl.pem", "root-ca.crl.pem", "revoked-ca.crl.pem")))
    (pki / "server-ec.haproxy.pem").write_text(
        (pki / "server-ec.chain.pem").read_text() + (pki / "server-ec.key.pem").read_text())
    os.chmod(pki / "server-ec.haproxy.pem", 0o600)
    (pki / "compare-pki.json").write_text(json.dumps({"partners": partners}) + "\n")
    print(f"   made in {time.time() - started:.0f} s")
    return pki


def make_crl(pki, ca, revoked):
    """A fresh CRL of `ca` (30 days) listing the certificates in `revoked`,
    through `openssl ca` with an index file made from the certificates."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%y%m%d%H%M%SZ")
    lines = []
    for cert in revoked:
        def field(flag):
            return subprocess.run(["openssl", "x509", "-in", str(pki / cert), "-noout", flag, "-nameopt", "compat"],
                                  check=True, capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        end = datetime.datetime.strptime(field("-enddate"), "%b %d %H:%M:%S %Y %Z").strftime("%y%m%d%H%M%SZ")
        lines.append(f"R\t{end}\t{now}\t{field('-serial')}\tunknown\t{field('-subject')}\n")
    (pki / f"{ca}.index").write_text("".join(lines))
    (pki / f"{ca}.crlnumber").write_text("02\n" if ca == "root-ca" else "01\n")
    (pki / f"{ca}-crl.cnf").write_text(f"""[ca]
default_ca = this_ca
[this_ca]
database = {ca}.index
crlnumber = {ca}.crlnumber
default_md = sha256
default_crl_days = 30
""")
    openssl("ca", "-config", f"{ca}-crl.cnf", "-gencrl", "-keyfile", f"{ca}.key.pem", "-cert", f"{ca}.cert.pem",
            "-out", f"{ca}.crl.pem", cwd=pki)
    (pki / f"{ca}-crl.cnf").unlink()
    os.chmod(pki / f"{ca}.crl.pem", 0o644)


# --- servers ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts_tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def process_tree(pid):
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children_of(p))
    return sorted(tree)


def tree_cpu_seconds(pids):
    """utime+stime of every process (all threads), plus cutime+cstime: the
    time of children they have reaped, which no live process shows any more."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            raise Abort(f"server process {pid} vanished during a measurement")
        total += sum(int(f) for f in fields[11:15])
    return total / CLK_TCK


class Server:
    """One server under test, started by `start(verbose)` pinned to a CPU; its
    configuration is written by the subclass."""
    name = ""
    per_run = False  # started for each of its measurements and stopped after
    # perf/idle_memory.py holds thousands of idle connections: room for that
    # many and an idle timeout longer than the hold. None keeps this
    # comparison's own settings.
    max_connections = None
    idle_timeout_s = None
    buffer_budget_bytes = None  # workers.buffer_budget_bytes; None: the daemon's default
    # Portcullis's [dataplane.keepalive] idle_s (0: no keepalive); None: the daemon's default.
    keepalive_idle_s = None
    # Worker processes; max_connections is per worker. perf/idle_memory.py
    # takes more than one where one process's descriptor limit is too small.
    workers = 1

    def __init__(self, runner):
        self.runner = runner
        self.dir = runner.work / self.name
        self.dir.mkdir(exist_ok=True)
        self.port = 0
        self.host = runner.server_host
        self.proc = None
        self.log_file = None
        self.log = self.dir / "server.log"

    def start(self, verbose):
        self.port = free_port()
        self.log = self.dir / ("probes.log" if verbose else "server.log")
        argv = self.write_config(verbose)
        self.log_file = open(self.log, "w")
        self.proc = subprocess.Popen(["taskset", "-c", str(self.runner.args.server_cpu)] + argv, cwd=self.dir,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or self.ready(), 20)
        if self.proc.poll() is not None or not self.ready():
            raise Abort(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
        # Let every child of a master come up before its tree is read.
        wait_for(lambda: len(process_tree(self.proc.pid)) >= self.expected_processes + self.workers - 1, 5)
        self.pids = process_tree(self.proc.pid)

    def ready(self):
        return accepts_tcp(self.host, self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log_file:
            self.log_file.close()
            self.log_file = None

    def log_size(self):
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset):
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


class Portcullis(Server):
    name = "portcullis"
    expected_processes = 2  # supervisor, one worker (no admin listener)
    ticket_mode = "stateless"

    def write_config(self, verbose):
        pki = self.runner.pki
        config = self.dir / "portcullis.toml"
        config.write_text(f"""
[workers]
count = {self.workers}{f"{chr(10)}max_connections = {self.max_connections}" if self.max_connections else ""}{f"{chr(10)}buffer_budget_bytes = {self.buffer_budget_bytes}" if self.buffer_budget_bytes else ""}

[admin]
address = "{self.admin_address()}"
{self.dataplane_section()}{self.keepalive_section()}
[log]
level = "info"

[resumption]
session_cache_entries = {SESSION_CACHE_ENTRIES}
session_lifetime_s = {SESSION_LIFETIME_S}
ticket_mode = "{self.ticket_mode}"

[[listener]]
name = "compare"
address = "{self.host}:{self.port}"{f"{chr(10)}idle_timeout_ms = {self.idle_timeout_s * 1000}" if self.idle_timeout_s else ""}
  [listener.tls]
  client_auth = "require"
  trust_bundle = "{pki}/root-ca.cert.pem"
  crl_files = ["{pki}/client-ca.crl.pem", "{pki}/root-ca.crl.pem", "{pki}/revoked-ca.crl.pem"]
  crl_scope = "chain"
  verify_depth = {VERIFY_DEPTH}
  verified_chain_cache_entries = {self.runner.chain_cache_entries()}
  groups = "{GROUPS}"
  ciphers = "{TLS12_CIPHERS}"
    [[listener.tls.certificate]]
    chain = "{pki}/server-ec.chain.pem"
    key = "{pki}/server-ec.key.pem"
  [listener.upstream]
  backends = [{", ".join(f'"{b}"' for b in self.runner.backend_addresses())}]
""")
        return [str(self.runner.binaries["portcullis"]), "--config", str(config)]

    def admin_address(self):
        return ""

    def keepalive_section(self):
        if self.keepalive_idle_s is None:
            return ""
        return f"\n[dataplane.keepalive]\nidle_s = {self.keepalive_idle_s}\n"

    def dataplane_section(self):
        return ""

    def ready(self):
        return "portcullis ready" in self.log.read_text()


class Nginx(Server):
    name = "nginx"
    expected_processes = 2  # master, one worker

    def write_config(self, verbose):
        pki = self.runner.pki
        # info logs every refused client certificate with its reason (for the
        # probes), and every connection too, so the measured runs log errors only.
        level = "info" if verbose else "error"
        config = self.dir / "nginx.conf"
        config.write_text(f"""
load_module {NGINX_STREAM_MODULE};
user root;
daemon off;
master_process on;
worker_processes {self.workers};
pid {self.dir}/nginx.pid;
error_log {self.log} {level};
events {{ worker_connections {2 * self.max_connections + 64 if self.max_connections else 4096}; }}
stream {{
  access_log off;
  upstream backend {{ {" ".join(f"server {b};" for b in self.runner.backend_addresses())} }}
  server {{
    listen {self.host}:{self.port} ssl{" reuseport" if self.workers > 1 else ""};
    ssl_certificate {pki}/server-ec.chain.pem;
    ssl_certificate_key {pki}/server-ec.key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve {GROUPS};
    ssl_ciphers {TLS12_CIPHERS};
    ssl_prefer_server_ciphers on;
    ssl_verify_client on;
    ssl_client_certificate {pki}/root-ca.cert.pem;
    ssl_verify_depth {VERIFY_DEPTH};
    ssl_crl {pki}/all-crls.pem;
    ssl_session_cache shared:compare:5m;
    ssl_session_tickets on;
    ssl_session_timeout {SESSION_LIFETIME_S}s;
    proxy_pass backend;{f"{chr(10)}    proxy_timeout {self.idle_timeout_s}s;" if self.idle_timeout_s else ""}
  }}
}}
""")
        return ["nginx", "-p", str(self.dir), "-c", str(config), "-e", str(self.log)]


class Haproxy(Server):
    name = "haproxy"
    expected_processes = 1  # -db: no master process

    def write_config(self, verbose):
        pki = self.runner.pki
        config = self.dir / "haproxy.cfg"
        config.write_text(f"""
global
  nbthread 1
  maxconn {self.max_connections + 64 if self.max_connections else 4096}
  tune.ssl.cachesize {SESSION_CACHE_ENTRIES}
  tune.ssl.lifetime {SESSION_LIFETIME_S}

defaults
  mode tcp
  timeout connect 5s
  timeout client {self.idle_timeout_s or 30}s
  timeout server {self.idle_timeout_s or 30}s

frontend compare
  bind {self.host}:{self.port} ssl crt {pki}/server-ec.haproxy.pem ca-file {pki}/root-ca.cert.pem crl-file {pki}/all-crls.pem verify required curves {GROUPS} ciphers {TLS12_CIPHERS} ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3
  default_backend backend

backend backend
{"".join(f"  server backend{i or ''} {b}{chr(10)}" for i, b in enumerate(self.runner.backend_addresses()))}""")
        return ["haproxy", "-db", "-f", str(config)]


class PortcullisStateful(Portcullis):
    """TLS 1.3 tickets that are session IDs into the shared cache: no session
    encoded into a ticket or decoded from one, but resumable on this appliance
    only; TLS 1.2 gets no tickets and resumes by session ID (in the other
    columns the bench's TLS 1.2 client, like OpenSSL's by default, offers and
    resumes a ticket)."""
    name = "portcullis-stateful"
    ticket_mode = "stateful"


class PortcullisDpdk(Portcullis):
    """The default configuration on the DPDK transport: the worker polls the
    veth pair's near end through DPDK's af_packet device with Portcullis's
    userspace TCP. A polling core is always busy, so it runs only for its
    own measurements, and its CPU per handshake is the worker's busy time
    (poll iterations that did work), read from the admin listener."""
    name = "portcullis-dpdk"
    expected_processes = 3  # supervisor, one worker, the admin process
    per_run = True

    def __init__(self, runner):
        super().__init__(runner)
        self.host = veth_net.DPDK_IP
        self.admin_port = 0

    def admin_address(self):
        self.admin_port = free_port()
        return f"127.0.0.1:{self.admin_port}"

    def dataplane_section(self):
        return veth_net.dpdk_config_section(self.host)

    def metric(self, name):
        return scrape_metric(self.admin_port, f'{name}{{worker="0"}}')


SERVER_CLASSES = {"portcullis": Portcullis, "portcullis-stateful": PortcullisStateful,
                  "portcullis-dpdk": PortcullisDpdk, "nginx": Nginx, "haproxy": Haproxy}


# --- the run ---------------------------------------------------------------

PROBES = [
    # name, client credentials, accepted?
    ("partner", ("cert", "partner-a.chain.pem", "partner-a.key.pem"), True),
    ("many-partners", ("identities", "partners-probe.list"), True),
    ("revoked-leaf", ("cert", "partner-revoked.chain.pem", "partner-revoked.key.pem"), False),
    ("revoked-intermediate", ("cert", "partner-under-revoked-ca.chain.pem", "partner-under-revoked-ca.key.pem"),
     False),
    ("unknown-ca", ("cert", "rogue-client.cert.pem", "rogue-client.key.pem"), False),
    ("no-certificate", None, False),
]


class Runner:
    def __init__(self, args, binaries, work, pki, servers, cases):
        self.args, self.binaries, self.work, self.pki = args, binaries, work, pki
        self.server_names, self.cases = servers, cases
        self.servers = {}
        self.backend = None
        self.backend_port = 0
        self.veth = args.network == "veth"
        self.server_host = veth_net.SERVER_IP if self.veth else "127.0.0.1"
        self.backend_host = veth_net.PEER_IP if self.veth else "127.0.0.1"
        self.results = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "versions": versions(binaries["portcullis"], servers),
            "settings": {
                "duration_s": args.duration, "rounds": args.rounds, "conns": args.conns,
                "partners": args.partners, "server_cpu": args.server_cpu, "client_cpu": args.client_cpu,
                "network": args.network,
                "groups": GROUPS, "tls12_ciphers": TLS12_CIPHERS, "verify_depth": VERIFY_DEPTH,
                "session_cache_entries": SESSION_CACHE_ENTRIES, "session_lifetime_s": SESSION_LIFETIME_S,
                "request": REQUEST,
            },
            "servers": servers, "cases": cases,
            "handshake_parameters": {}, "probes": {}, "runs": [], "medians": {}, "failures": [],
        }

    def run(self):
        self.start_backend()
        print("== probes: every server accepts the partners and refuses revoked, unknown and missing certificates")
        for name in self.server_names:
            server = SERVER_CLASSES[name](self)
            self.servers[name] = server
            self.start(server, verbose=True)
            try:
                self.probe(server)
            finally:
                server.stop()
        self.check_same_parameters()
        for server in self.servers.values():
            if server.per_run:
                print(f"   {server.name}: {server.host}, started for each of its runs on CPU {self.args.server_cpu}")
                continue
            server.start(verbose=False)
            print(f"   {server.name}: {server.host}:{server.port}, processes {server.pids} on CPU {self.args.server_cpu}")
        total = self.args.rounds * len(self.cases) * len(self.server_names)
        print(f"== {self.args.rounds} rounds x {len(self.cases)} cases x {len(self.server_names)} servers = {total} "
              f"runs of {self.args.duration:g} s (load generator and backend on CPU {self.args.client_cpu})")
        for r in range(self.args.rounds):
            # The order of the servers turns each round, so none is always first.
            order = self.server_names[r % len(self.server_names):] + self.server_names[:r % len(self.server_names)]
            for case in self.cases:
                for name in order:
                    run = self.measure(self.servers[name], case, r)
                    self.results["runs"].append(run)
                    print(f"   round {r + 1} {case:20} {SERVER_LABELS[name]:10} {run_line(run)}", flush=True)
        self.results["medians"] = medians(self.results["runs"], self.cases, self.server_names)
        print()
        print(table(self.results, self.cases, self.server_names))
        for failure in self.results["failures"]:
            print(f"!!! FAILED: {failure}", file=sys.stderr)
        return not self.results["failures"]

    def client_argv(self, argv):
        """A client-side command: on the client CPU, in the namespace with --network veth."""
        if self.veth:
            return veth_net.ns_argv(argv, self.args.client_cpu)
        return ["taskset", "-c", str(self.args.client_cpu)] + argv

    def start(self, server, verbose):
        if self.veth:
            # A kernel server's receive work is its own cost; DPDK's stand-in
            # for a NIC's DMA (the af_packet copy) is not.
            veth_net.steer_receive(veth_net.NEAR, self.args.client_cpu if server.per_run else self.args.server_cpu)
        server.start(verbose)
        if self.veth:
            subprocess.run(self.client_argv(["ping", "-c", "1", "-W", "2", server.host]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # ARP both ways

    def start_backend(self):
        port_file = self.work / "backend.port"
        port_file.unlink(missing_ok=True)
        self.backend = subprocess.Popen(
            self.client_argv([str(self.binaries["backend"]), "--listen", f"{self.backend_host}:0",
                              "--ready-file", str(port_file), "--mode", "http"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: port_file.exists() and port_file.read_text().strip()):
            raise Abort("the test backend did not start")
        self.backend_port = int(port_file.read_text().strip())

    def backend_addresses(self):
        return [f"{self.backend_host}:{self.backend_port}"]

    def stop_everything(self):
        for server in self.servers.values():
            server.stop()
        if self.backend:
            self.backend.send_signal(signal.SIGTERM)
            self.backend.wait()

    def chain_cache_entries(self):
        # Fewer entries than partners: the many-partners cycle then misses
        # every time (no cache flatters it, as nginx and HAProxy cache no
        # verification), while the returning partner's one chain stays cached.
        return max(1, min(100, self.args.partners // 2))

    def bench(self, server, tls, mode, credentials, extra):
        argv = [str(self.binaries["bench"]), "--target", f"{server.host}:{server.port}", "--sni", "localhost",
                "--ca", str(self.pki / "root-ca.cert.pem"), "--quiet", "--tls", tls,
                "--mode", "resume" if mode == "resumed" else "full", "--request", REQUEST]
        if credentials and credentials[0] == "cert":
            argv += ["--cert", str(self.pki / credentials[1]), "--key", str(self.pki / credentials[2])]
        elif credentials:
            argv += ["--identities", str(self.pki / credentials[1])]
        return self.client_argv(argv + extra)

    def probe(self, server):
        results = self.results["probes"][server.name] = {}
        for tls in TLS_VERSIONS:
            for name, credentials, accepted in PROBES:
                log_offset = server.log_size()
                out_file = self.work / "probe.json"
                out_file.unlink(missing_ok=True)
                attempts = 6
                argv = self.bench(server, tls, "full", credentials,
                                  ["--conns", "1", "--handshakes", str(attempts), "--timeout-ms", "3000",
                                   "--json", str(out_file)])
                out = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
                if not out_file.exists():
                    raise Abort(f"{server.name}: probe {name} (TLS {tls}) produced no result: {out.stderr}")
                summary = json.loads(out_file.read_text())
                time.sleep(0.1)  # the server writes its log line after the client has gone
                server_log = server.log_since(log_offset).lower()
                errors = summary["errors"]
                # --handshakes stops the generator soon after that many attempts, not exactly at it.
                ok = (summary["handshakes"] >= attempts and summary["errors_total"] == 0) if accepted else \
                    (summary["handshakes"] == 0 and summary["errors_total"] >= attempts)
                result = {"expected": "accepted" if accepted else "refused",
                          "handshakes": summary["handshakes"], "errors": errors}
                if ok and name.startswith("revoked"):
                    # Refused *because* revoked: the alert the client saw, or the server's log.
                    if any("revoked" in reason for reason in errors):
                        result["revocation_seen_in"] = "alert"
                    elif "revoked" in server_log:
                        result["revocation_seen_in"] = "server log"
                    else:
                        ok = False
                result["ok"] = ok
                results[f"{tls}/{name}"] = result
                if not ok:
                    raise Abort(f"{server.name} {'refused' if accepted else 'accepted'} probe {name} with TLS {tls}"
                                f" ({summary['handshakes']} answered, errors {errors}); the"
                                f" servers are not configured alike, no number would compare like with like."
                                f" Server log: {server.log}")
            self.results["handshake_parameters"].setdefault(server.name, {})[tls] = self.parameters(server, tls)
        print(f"   {server.name:10} ok: " + ", ".join(
            f"{k} {'accepted' if v['expected'] == 'accepted' else 'refused'}" for k, v in results.items()
            if k.startswith("1.3/")) + " (TLS 1.3 and 1.2)")

    def parameters(self, server, tls):
        """What `openssl s_client` negotiates with the server: protocol, cipher,
        key exchange group, server signature, verification of the server."""
        pki = self.pki
        out = subprocess.run(self.client_argv(
            ["openssl", "s_client", "-connect", f"{server.host}:{server.port}", "-servername", "localhost",
             "-CAfile", str(pki / "root-ca.cert.pem"), "-cert", str(pki / "partner-a.cert.pem"),
             "-cert_chain", str(pki / "client-ca.cert.pem"), "-key", str(pki / "partner-a.key.pem"),
             "-tls1_3" if tls == "1.3" else "-tls1_2"]),
            input="GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", capture_output=True,
            text=True, timeout=20)
        found = {}
        for line in (out.stdout + out.stderr).splitlines():
            line = line.strip()
            if line.startswith("New, ") and ", Cipher is " in line:
                found["protocol"], found["cipher"] = line[5:].split(", Cipher is ", 1)
            elif line.startswith(("Negotiated TLS1.3 group:", "Peer Temp Key:")):
                found["key_exchange"] = line.split(":", 1)[1].strip()
            elif line.startswith("Peer signature type:"):
                found["server_signature"] = line.split(":", 1)[1].strip()
            elif line.startswith("Verify return code:"):
                found["server_verified"] = line.split(":", 1)[1].strip()
        if "cipher" not in found:
            raise Abort(f"openssl s_client could not complete a TLS {tls} handshake with {server.name}:\n"
                        f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return found

    def check_same_parameters(self):
        params = self.results["handshake_parameters"]
        for tls in TLS_VERSIONS:
            seen = {name: params[name][tls] for name in params}
            distinct = {json.dumps(v, sort_keys=True) for v in seen.values()}
            first = next(iter(seen.values()))
            print(f"   TLS {tls} negotiated with every server: " + ", ".join(f"{k} {v}" for k, v in first.items()))
            if len(distinct) > 1:
                raise Abort(f"the servers negotiate different parameters with TLS {tls}: {seen}")

    def measure(self, server, case, round_index):
        if server.per_run:
            self.start(server, verbose=False)
        elif self.veth:
            veth_net.steer_receive(veth_net.NEAR, self.args.server_cpu)
        try:
            return self.measure_running(server, case, round_index)
        finally:
            if server.per_run:
                server.stop()

    def cpu_sample(self, server):
        """Server CPU seconds so far, each way this network can count them."""
        sample = {"process_tree": tree_cpu_seconds(server.pids)}
        if self.veth:
            sample["server_cpu_busy"] = veth_net.cpu_busy_seconds(self.args.server_cpu)
        if server.per_run:
            sample["worker_busy"] = server.metric("portcullis_worker_busy_seconds_total")
        return sample

    def server_cpu_source(self, server):
        """Which sample is the server's cost: the process tree on loopback;
        with veth the whole server CPU (the process and the kernel's receive
        work steered there), or for DPDK the worker's busy poll iterations."""
        if server.per_run:
            return "worker_busy"
        return "server_cpu_busy" if self.veth else "process_tree"

    def measure_running(self, server, case, round_index):
        workload, tls, mode = case.split("/")
        conns = self.args.conns
        # Every slot (and with many partners every identity) has a session to
        # resume before counting starts, and no start-up transient is counted.
        warmup = 2 * conns + (self.args.partners if workload == "many" and mode == "resumed" else 0)
        credentials = ("cert", "partner-a.chain.pem", "partner-a.key.pem") if workload == "returning" else ("identities", "partners.list")
        out_file = self.work / "bench.json"
        out_file.unlink(missing_ok=True)
        argv = self.bench(server, tls, mode, credentials,
                          ["--conns", str(conns), "--duration", str(self.args.duration), "--warmup", str(warmup),
                           "--json", str(out_file)])
        bench = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = []
        before = None
        for line in bench.stderr:
            if line.strip() == "measuring" and before is None:
                before = self.cpu_sample(server)
            else:
                stderr.append(line)
        after = self.cpu_sample(server)
        bench.wait()
        if server.proc.poll() is not None:
            raise Abort(f"{server.name} exited during {case}:\n{server.log.read_text()[-3000:]}")
        if process_tree(server.proc.pid) != server.pids:
            raise Abort(f"{server.name}'s processes changed during {case} ({server.pids} -> "
                        f"{process_tree(server.proc.pid)}): its CPU time would be incomplete")
        run = {"round": round_index + 1, "server": server.name, "case": case}
        if before is None or bench.returncode != 0 or not out_file.exists():
            run["failed"] = f"load generator exited {bench.returncode}: {''.join(stderr)[-500:]}"
            self.results["failures"].append(f"{server.name} {case} round {round_index + 1}: {run['failed']}")
            return run
        s = json.loads(out_file.read_text())
        handshakes = s["handshakes"]
        attempts = handshakes + s["errors_total"]
        counted = {k: after[k] - before[k] for k in after}
        cpu = counted[self.server_cpu_source(server)]
        run.update({
            "handshakes": handshakes, "handshakes_per_s": s["handshakes_per_s"], "duration_s": s["duration_s"],
            "full": s["full"], "resumed": s["resumed"], "resumed_fraction": s["resumed_fraction"],
            "tickets_per_handshake": s["tickets"] / handshakes if handshakes else 0.0,
            "errors": s["errors"], "errors_total": s["errors_total"], "latency_us": s["latency_us"],
            "server_cpu_s": cpu, "server_cpu_us_per_handshake": cpu * 1e6 / handshakes if handshakes else None,
            "server_busy": cpu / s["duration_s"] if s["duration_s"] else None,
            "client_cpu_s": s["client_cpu_s"], "client_busy": s["client_cpu_s"] / s["duration_s"] if s["duration_s"] else None,
            "identities": s.get("identities", 0),
            "server_cpu_source": self.server_cpu_source(server),
            "server_cpu_us_per_handshake_by_source": {
                k: v * 1e6 / handshakes if handshakes else None for k, v in counted.items()},
        })
        if server.per_run:
            run["dpdk_tcp_retransmissions"] = server.metric("portcullis_dpdk_tcp_retransmissions_total")
            run["dpdk_tcp_resets_sent"] = server.metric("portcullis_dpdk_tcp_resets_sent_total")
        problems = []
        if handshakes == 0:
            problems.append(f"no handshake succeeded (errors {s['errors']}): the server refuses the client certificates?")
        elif s["errors_total"] > max(5, 0.01 * attempts):
            problems.append(f"{s['errors_total']} of {attempts} attempts failed: {s['errors']}")
        if mode == "resumed" and handshakes and s["resumed_fraction"] < 0.99:
            problems.append(f"only {s['resumed_fraction']:.3f} of the handshakes resumed")
        if mode == "full" and s["resumed"]:
            problems.append(f"{s['resumed']} handshakes resumed in a full-handshake run")
        if problems:
            run["failed"] = "; ".join(problems)
            self.results["failures"].append(f"{server.name} {case} round {round_index + 1}: {run['failed']}")
            print(f"!!! {server.name} {case}: {run['failed']}", file=sys.stderr, flush=True)
        return run


def run_line(run):
    if "server_cpu_us_per_handshake" not in run or run.get("server_cpu_us_per_handshake") is None:
        return f"FAILED: {run.get('failed')}"
    line = (f"{run['handshakes_per_s']:7.0f} hs/s {run['server_cpu_us_per_handshake']:6.0f} µs/hs  "
            f"server busy {run['server_busy']:.2f} client busy {run['client_busy']:.2f}  "
            f"errors {run['errors_total']} resumed {run['resumed_fraction']:.2f}")
    return line + (f"  FAILED: {run['failed']}" if "failed" in run else "")


def medians(runs, cases, servers):
    out = {}
    for case in cases:
        out[case] = {}
        for server in servers:
            good = [r for r in runs if r["case"] == case and r["server"] == server and "failed" not in r]
            if not good:
                out[case][server] = None
                continue
            out[case][server] = {
                "handshakes_per_s": statistics.median(r["handshakes_per_s"] for r in good),
                "server_cpu_us_per_handshake": statistics.median(r["server_cpu_us_per_handshake"] for r in good),
                "client_busy": statistics.median(r["client_busy"] for r in good),
                "tickets_per_handshake": statistics.median(r["tickets_per_handshake"] for r in good),
                "rounds": [round(r["server_cpu_us_per_handshake"]) for r in good],
            }
        # Ratios within a round (the servers ran back to back there), then
        # their median: this VM's speed drifts between rounds by up to 2x,
        # which a ratio of medians over rounds would mix into the result.
        for ours in PORTCULLIS_VARIANTS:
            for peer in ("nginx", "haproxy"):
                per_round = []
                for r in sorted({x["round"] for x in runs}):
                    a = [x for x in runs if x["case"] == case and x["server"] == ours and x["round"] == r
                         and "failed" not in x]
                    b = [x for x in runs if x["case"] == case and x["server"] == peer and x["round"] == r
                         and "failed" not in x]
                    if a and b:
                        per_round.append(a[0]["server_cpu_us_per_handshake"] / b[0]["server_cpu_us_per_handshake"])
                if per_round:
                    key = f"{ours.replace('-', '_')}_over_{peer}"
                    out[case][key] = statistics.median(per_round)
                    out[case][key + "_rounds"] = [round(x, 3) for x in per_round]
    return out


def table(results, cases, servers):
    med = results["medians"]
    ratios = [(ours, p) for ours in PORTCULLIS_VARIANTS if ours in servers
              for p in ("nginx", "haproxy") if p in servers]
    head = ["case"]
    for s in servers:
        head += [f"{SERVER_LABELS[s]} hs/s", f"{SERVER_LABELS[s]} µs/hs"]
    head += [f"{RATIO_LABELS[ours]}/{SERVER_LABELS[p]}" for ours, p in ratios]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for case in cases:
        row = [case]
        for s in servers:
            m = med[case][s]
            row += [f"{m['handshakes_per_s']:.0f}", f"{m['server_cpu_us_per_handshake']:.0f}"] if m else ["FAILED"] * 2
        for ours, p in ratios:
            ratio = med[case].get(f"{ours.replace('-', '_')}_over_{p}")
            row.append(f"{ratio:.2f}" if ratio is not None else "—")
        lines.append("| " + " | ".join(row) + " |")
    s = results["settings"]
    lines.append("")
    if s.get("network") == "veth":
        counted = (f"µs/hs: server CPU per handshake answered by the backend; clients and backend in a network "
                   f"namespace behind a veth pair. Kernel servers: CPU {s['server_cpu']}'s whole busy time "
                   f"(/proc/stat: the server's processes and the kernel's receive work for its end, steered "
                   f"there). P DPDK: the worker's busy poll iterations (portcullis_worker_busy_seconds_total); "
                   f"af_packet's receive copy, a NIC's DMA, runs on the client CPU")
    else:
        counted = "µs/hs: server CPU (whole process tree, utime+stime) per handshake answered by the backend"
    lines.append(f"{counted}; P/x: Portcullis's µs/hs over x's in the same round, median over the rounds "
                 f"(below 1: Portcullis spends less). Medians of "
                 f"{s['rounds']} interleaved rounds of {s['duration_s']:g} s, {s['conns']} connections, "
                 f"{s['partners']} partner certificates for 'many'. Per-round values in the JSON.")
    return "\n".join(lines)


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_release = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            os_release[k] = v.strip('"')
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "os": os_release.get("PRETTY_NAME", ""), "loadavg_at_start": os.getloadavg()}


def versions(portcullis, servers):
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""
    found = {"openssl": first_line(["openssl", "version"])}
    if any(v in servers for v in PORTCULLIS_VARIANTS):
        found["portcullis"] = " / ".join(
            subprocess.run([str(portcullis), "--version"], capture_output=True, text=True).stdout.strip().splitlines())
    if "nginx" in servers:
        found["nginx"] = first_line(["nginx", "-v"])
    if "haproxy" in servers:
        found["haproxy"] = first_line(["haproxy", "-v"])
    return found


if __name__ == "__main__":
    main()
