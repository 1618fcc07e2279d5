"""Helpers shared by the perf/ scripts: finding a daemon's children and
reading their CPU time from /proc, and waiting for a condition."""
import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_of(pid):
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def cpu_seconds(pids):
    """utime+stime of whole processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def scrape_metric(port, name):
    """One sample of the admin listener's /metrics on 127.0.0.1:port, by its
    full name with labels; 0 when absent or unreachable."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    for line in body.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def bench_listener(address, backend, key="pki/server-ec.key.pem"):
    """The [[listener]] every benchmark measures: mutual TLS with the demo PKI
    (ECDSA P-256 server key, client certificates with an intermediate, CRL
    checking on) in front of one backend."""
    return f"""
[[listener]]
name = "bench"
address = "{address}"
  [listener.tls]
  client_auth = "require"
  trust_bundle = "pki/root-ca.cert.pem"
  crl_files = ["pki/client-ca.crl.pem"]
    [[listener.tls.certificate]]
    chain = "pki/server-ec.chain.pem"
    key = "{key}"
  [listener.upstream]
  backends = ["{backend}"]
"""


@contextlib.contextmanager
def running_portcullis(portcullis, config, log_path, env=None):
    """Portcullis on `config` for the length of the block (stopped with
    SIGTERM after it); yields the worker pids once it logs that it is ready."""
    log_path = Path(log_path)
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([str(portcullis), "--config", str(config)], stdout=log,
                                  stderr=log, env=env)
        try:
            if not wait_for(lambda: "portcullis ready" in log_path.read_text(), 20):
                raise RuntimeError("portcullis did not become ready:\n" + log_path.read_text())
            yield children_of(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=20)


def bench_client(bench, target, pki):
    """portcullis-bench against `target` as the demo PKI's accepted client."""
    return [str(bench), "--target", target, "--sni", "localhost",
            "--ca", str(pki / "root-ca.cert.pem"), "--cert", str(pki / "partner-a.chain.pem"),
            "--key", str(pki / "partner-a.key.pem"), "--quiet"]
