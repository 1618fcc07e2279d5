"""A running Portcullis that serves every metric family the shipped rules
and dashboard read: two workers, a listener with the demo PKI, its server
key in a SoftHSM2 token of its own (the hsm_* families), a crl_urls source
on a local HTTP server (the crl_fetch_* families), and a test backend.
Used by metric_names_test.py and prometheus_capacity_test.py.

A missing tool raises Skip; the tests turn it into exit code 77 with the
reason, so meson shows SKIP rather than a pass."""
import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
from perf_common import wait_for  # noqa: E402

SKIP = 77
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
REQUEST = "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"


class Skip(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    def __init__(self, build, source, work, workers=2):
        self.build, self.source, self.work = (Path(p).resolve() for p in (build, source, work))
        self.workers = workers
        self.procs = []
        self.httpd = None
        self.portcullis = self.build / "mgmt" / "portcullis"
        self.bench_bin = self.build / "perf" / "portcullis-bench"
        self.backend_bin = self.build / "tests" / "support" / "portcullis-test-backend"
        self.keytool = self.build / "hsm" / "portcullis-keytool"

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _need(self):
        for binary in (self.portcullis, self.bench_bin, self.backend_bin, self.keytool):
            if not binary.exists():
                raise Skip(f"{binary} not built")
        for tool in ("openssl", "softhsm2-util"):
            if shutil.which(tool) is None:
                raise Skip(f"{tool} not found (scripts/lib/deps.sh installs it)")
        if not SOFTHSM_MODULE.exists():
            raise Skip(f"{SOFTHSM_MODULE} not found (Debian package softhsm2)")

    def _run(self, *cmd, **kw):
        return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                              cwd=self.work, **kw).stdout

    def _start(self):
        self._need()
        w = self.work
        self._run(self.source / "scripts" / "make-demo-pki.sh", w / "pki")
        # The server key is generated inside a token of our own, as
        # quickstart.sh does, so signatures go through hsm/.
        tokens = w / "softhsm" / "tokens"
        tokens.mkdir(parents=True)
        conf = w / "softhsm" / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        self.env = dict(os.environ, SOFTHSM2_CONF=str(conf))
        pin = "1234-capacity"
        (w / "softhsm" / "pin").write_text(pin + "\n")
        (w / "softhsm" / "pin").chmod(0o600)
        self._run("softhsm2-util", "--init-token", "--free", "--label", "capacity", "--pin", pin,
                  "--so-pin", pin, env=self.env)
        tool = [self.keytool]
        opts = ["--module", SOFTHSM_MODULE, "--token", "capacity", "--pin-file", w / "softhsm" / "pin"]
        uri = self._run(*tool, "generate", "--label", "server-ec", "--id", "01", "--type", "ec-p256",
                        *opts, env=self.env).strip()
        self._run(*tool, "csr", "--key", uri, "--subject", "/O=Portcullis Capacity/CN=localhost",
                  "--dns", "localhost", "--out", w / "server.csr", *opts, env=self.env)
        (w / "server.ext").write_text("basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
                                      "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n")
        self._run("openssl", "x509", "-req", "-in", w / "server.csr", "-CA", w / "pki" / "root-ca.cert.pem",
                  "-CAkey", w / "pki" / "root-ca.key.pem", "-CAcreateserial", "-days", "30", "-sha256",
                  "-extfile", w / "server.ext", "-out", w / "server.cert.pem")

        # crl_urls: the demo root CA's CRL over plain HTTP.
        handler = functools.partial(QuietHandler, directory=str(w / "pki"))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        crl_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/root-ca.crl.pem"

        backend_port_file = w / "backend.port"
        self._spawn("backend", self.backend_bin, "--listen", "127.0.0.1:0", "--ready-file",
                    backend_port_file, "--mode", "http")
        if not wait_for(lambda: backend_port_file.exists() and backend_port_file.read_text().strip(), 20):
            raise RuntimeError("test backend did not start")
        backend = f"127.0.0.1:{backend_port_file.read_text().strip()}"

        ocsp_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ocsp"
        (w / "server-chain.pem").write_text((w / "server.cert.pem").read_text() +
                                            (w / "pki" / "root-ca.cert.pem").read_text())
        self.port, self.admin_port = free_port(), free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}/metrics"
        (w / "cache").mkdir()
        config = w / "portcullis.toml"
        config.write_text(f"""
[workers]
count = {self.workers}

[admin]
address = "127.0.0.1:{self.admin_port}"

[revocation]
cache_dir = "cache"

[hsm]
module = "{SOFTHSM_MODULE}"
token = "capacity"
pin_file = "softhsm/pin"

[[listener]]
name = "edge"
address = "127.0.0.1:{self.port}"
  [listener.tls]
  client_auth = "require"
  trust_bundle = "pki/root-ca.cert.pem"
  crl_files = ["pki/client-ca.crl.pem"]
  crl_urls = ["{crl_url}"]
    [[listener.tls.certificate]]
    chain = "server.cert.pem"
    key = "{uri}"
  [listener.upstream]
  backends = ["{backend}"]

# Takes no load: it is here so that the OCSP families are served (client
# checks and stapling; the CRL server refuses the POSTs, which is a failed
# fetch, and soft lets a client through).
[[listener]]
name = "revocation"
address = "127.0.0.1:{free_port()}"
  [listener.tls]
  client_auth = "require"
  trust_bundle = "pki/root-ca.cert.pem"
  crl_files = ["pki/client-ca.crl.pem"]
  ocsp = "leaf"
  ocsp_failure = "soft"
  ocsp_responder = "{ocsp_url}"
  ocsp_stapling = true
  ocsp_stapling_responder = "{ocsp_url}"
    [[listener.tls.certificate]]
    chain = "server-chain.pem"
    key = "{uri}"
  [listener.upstream]
  backends = ["{backend}"]
""")
        self.log = w / "portcullis.log"
        self._spawn("portcullis", self.portcullis, "--config", config, log=self.log)
        if not wait_for(lambda: "portcullis ready" in self.log.read_text(), 30):
            raise RuntimeError("portcullis did not become ready:\n" + self.log.read_text())

    def _spawn(self, name, *cmd, log=None):
        out = open(log or self.work / f"{name}.log", "w")
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                             cwd=self.work, env=getattr(self, "env", None))
        self.procs.append(p)
        return p

    def scrape(self):
        return urllib.request.urlopen(self.admin_url, timeout=10).read().decode()

    def bench(self, *args, client="partner-a"):
        """portcullis-bench against the listener (closed loop); its JSON summary."""
        pki = self.work / "pki"
        cmd = [self.bench_bin, "--target", f"127.0.0.1:{self.port}", "--sni", "localhost",
               "--ca", pki / "root-ca.cert.pem", "--quiet", "--request", REQUEST]
        if client:
            cmd += ["--cert", pki / f"{client}.chain.pem", "--key", pki / f"{client}.key.pem"]
        proc = subprocess.run([str(c) for c in cmd + list(args)], capture_output=True, text=True)
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=20)
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        if self.httpd:
            self.httpd.shutdown()
            self.httpd = None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
