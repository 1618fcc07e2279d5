#!/usr/bin/env python3
"""docs/prometheus/recording.rules.yml, evaluated by a real Prometheus server
scraping a running Portcullis under load, agrees with what
portcullis-capacity --prometheus prints for the same instant and window.

Prometheus (the Debian package, started here with its own configuration and
storage in a temporary directory) scrapes the admin listener every second and
evaluates the shipped recording and alert rules every second. The load comes
in phases (full handshakes, resumed ones, both with a refused client), so the
rates by kind, the rejected handshakes the CPU split counts, and the HSM
signatures all move. Then, at the timestamp of the newest recording-rule
sample, each recorded value is compared with portcullis-capacity's JSON for
--range 5m --at that time: the same rate() over the same samples, except a
scrape that landed just after the rule evaluation, hence the tolerance.

  prometheus_capacity_test.py BUILD_DIR SOURCE_ROOT CAPACITY_SCRIPT
"""
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metric_names_test import dashboard_exprs  # noqa: E402
from portcullis_fixture import SKIP, Deployment, Skip, free_port, wait_for  # noqa: E402

CAPACITY_PANELS = {"Handshakes/s by kind (capacity load)", "CPU µs per handshake by kind",
                   "Headroom by resource", "HSM sign latency p50 / p99 by key"}

RELATIVE_TOLERANCE = 0.05
failures = []


def check(condition, what):
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        failures.append(what)


def close(a, b, absolute=1e-6):
    return a is not None and b is not None and abs(a - b) <= max(absolute, RELATIVE_TOLERANCE * max(abs(a), abs(b)))


def query(url, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = json.loads(urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}",
                                             timeout=10).read())
    assert body["status"] == "success", body
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def one(url, expr, at, **labels):
    values = [v for m, v in query(url, expr, at) if all(m.get(k) == x for k, x in labels.items())]
    return values[0] if len(values) == 1 else None


def main():
    build, source, capacity = (Path(a).resolve() for a in sys.argv[1:4])
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("SKIP: prometheus not found (Debian package prometheus, scripts/lib/deps.sh); "
              "recording rules NOT compared with portcullis-capacity")
        return SKIP
    rules = source / "docs" / "prometheus"
    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-prometheus-capacity.") as tmp:
            work = Path(tmp)
            (work / "deployment").mkdir()
            with Deployment(build, source, work / "deployment") as d:
                return run(d, prometheus, rules, capacity, work)
    except Skip as e:
        print(f"SKIP: {e}; recording rules NOT compared with portcullis-capacity")
        return SKIP


def run(d, prometheus, rules, capacity, work):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (work / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules / 'recording.rules.yml'}
  - {rules / 'alerts.rules.yml'}
scrape_configs:
  - job_name: portcullis
    static_configs:
      - targets: ['127.0.0.1:{d.admin_port}']
""")
    log = open(work / "prometheus.log", "w")
    server = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                               f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                               "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready():
            try:
                return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
            except OSError:
                return False
        if not wait_for(ready, 30):
            print("FAIL  prometheus did not become ready:\n" + (work / "prometheus.log").read_text())
            return 1
        check(wait_for(lambda: one(url, 'up{job="portcullis"}', None) == 1, 15), "prometheus scrapes portcullis")

        # Phases of different mixes; a revoked partner next to the good one
        # in the mixed phase.
        phases = [
            [("--mode", "full", "--conns", "3", "--duration", "10")],
            [("--mode", "resume", "--conns", "3", "--duration", "10")],
            [("--mode", "full", "--conns", "1", "--duration", "10"),
             ("--mode", "resume", "--conns", "2", "--duration", "10"),
             ("--mode", "full", "--conns", "1", "--duration", "10", "partner-revoked")],
        ]
        for phase in phases:
            threads = []
            for args in phase:
                client = args[-1] if args[-1].startswith("partner") else "partner-a"
                bench_args = args[:-1] if args[-1].startswith("partner") else args
                t = threading.Thread(target=d.bench, args=bench_args, kwargs={"client": client})
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
        # The last scrapes of the load are in, and a rule evaluation after them.
        time.sleep(3)

        stamp = one(url, "timestamp(instance_kind:portcullis_handshakes_ok:rate5m)", time.time() - 1, kind="full")
        check(stamp is not None, "the recording rules have been evaluated")
        if stamp is None:
            print("      rules:", urllib.request.urlopen(f"{url}/api/v1/rules", timeout=10).read()[:2000])
            print("      prometheus log:", (work / "prometheus.log").read_text()[-2000:])
            return 1
        at = stamp
        proc = subprocess.run([sys.executable, str(capacity), "--prometheus", url, "--range", "5m",
                               "--at", f"{at:.3f}", "--step", "5s", "--format", "json", "--mix", "full=0.3",
                               "--target-rate", "50000"], capture_output=True, text=True)
        check(proc.returncode == 0, f"portcullis-capacity --prometheus exits 0 ({proc.stderr.strip()})")
        if proc.returncode != 0:
            return 1
        report = json.loads(proc.stdout)
        print(f"      at {at:.3f}: capacity {json.dumps({k: report[k] for k in ('handshakes_ok_per_s', 'resumption_ratio')})}")

        def compare(what, mine, expr, scale=1.0, **labels):
            recorded = one(url, expr, at, **labels)
            recorded = recorded * scale if recorded is not None else None
            check(close(mine, recorded), f"{what}: portcullis-capacity {mine} vs {expr}{labels or ''} {recorded}")

        ok = report["handshakes_ok_per_s"]
        check(ok["full"] > 1 and ok["resumed"] > 1, f"the load made full and resumed handshakes ({ok})")
        check(report["rejections_per_s"].get("revoked", 0) > 0, "the revoked partner was refused")
        compare("full ok/s", ok["full"], "instance_kind:portcullis_handshakes_ok:rate5m", kind="full")
        compare("resumed ok/s", ok["resumed"], "instance_kind:portcullis_handshakes_ok:rate5m", kind="resumed")
        compare("full ok/s of the listener", ok["full"], "instance_listener_kind:portcullis_handshakes_ok:rate5m",
                kind="full", listener="edge")
        compare("resumption ratio", report["resumption_ratio"],
                "instance_listener:portcullis_handshakes_resumed:ratio_rate5m", listener="edge")
        compare("not-ok ratio", report["not_ok_ratio"], "instance_listener:portcullis_handshakes_not_ok:ratio_rate5m",
                listener="edge")
        cpu = report["cpu"]
        compare("cores busy", cpu["cores_busy"], "instance:portcullis_worker_busy_seconds:rate5m")
        compare("CPU us per ok handshake", cpu["us_per_handshake_blended"],
                "instance:portcullis_worker_busy_microseconds_per_handshake:ratio_rate5m")
        compare("CPU us per full handshake (ratio)", cpu["ratio_split"]["us_per_full"],
                "instance:portcullis_worker_busy_microseconds_per_full_handshake:ratio_rate5m")
        compare("CPU us per resumed handshake (ratio)", cpu["ratio_split"]["us_per_resumed"],
                "instance:portcullis_worker_busy_microseconds_per_resumed_handshake:ratio_rate5m")
        resources = {r["resource"]: r for r in report["resources"]}
        compare("cpu headroom", resources["cpu"]["headroom"], "instance_resource:portcullis_headroom:ratio",
                resource="cpu")
        compare("memory headroom", resources["memory"]["headroom"], "instance_resource:portcullis_headroom:ratio",
                resource="memory")
        hsm = report.get("hsm")
        check(hsm is not None and hsm["signatures_per_s"].get("ok", 0) > 0, "the HSM signed")
        if hsm:
            compare("HSM ok signatures/s", hsm["signatures_per_s"].get("ok"),
                    "instance_key_result:portcullis_hsm_signatures:rate5m", result="ok")
            compare("HSM sign p99 ms", hsm["sign_latency_ms"]["p99"],
                    "instance_key:portcullis_hsm_sign_duration_seconds:p99_rate5m", scale=1e3)
            compare("HSM sign mean ms", hsm["sign_latency_ms"]["mean"],
                    "instance_key:portcullis_hsm_sign_duration_seconds:mean_rate5m", scale=1e3)
        split = cpu["split"]
        print(f"      CPU split by {split['method']}: full {cpu['us_per_full']:.0f} us, resumed "
              f"{cpu['us_per_resumed']:.0f} us ({split['detail']})")
        check(cpu["us_per_full"] > 0 and cpu["us_per_resumed"] > 0, "CPU per handshake of both kinds")
        proj = report["projection"]
        check(proj["observed"]["max_rate"] > ok["total"] and proj["observed"]["limited_by"] in resources,
              f"projected maximum above the observed rate ({proj['observed']['max_rate']:.0f}/s, "
              f"{proj['observed']['limited_by']})")
        check(report["fleet"] is not None and report["fleet"]["appliances"] >= 2,
              f"fleet sizing for 50000/s: {report['fleet'] and report['fleet']['appliances']} appliances")
        # Every dashboard query evaluates (Grafana's variables replaced by what
        # it would send), and the capacity panels show data.
        for (kind, title), expr in dashboard_exprs(rules.parent / "grafana-dashboard.json"):
            concrete = (expr.replace("$__rate_interval", "15s").replace("$__range", "1m")
                        .replace("$listener", ".*"))
            try:
                result = query(url, concrete, at)
                error = None
            except (OSError, AssertionError) as e:
                result, error = [], e
            if error or title in CAPACITY_PANELS:
                check(error is None and (title not in CAPACITY_PANELS or result),
                      f"dashboard panel {title!r}: {len(result)} series{f' ({error})' if error else ''}")
        # The alert rules load and evaluate next to the recording rules.
        groups = json.loads(urllib.request.urlopen(f"{url}/api/v1/rules", timeout=10).read())["data"]["groups"]
        health = [r.get("health") for g in groups for r in g["rules"]]
        check(len(health) >= 30 and all(h == "ok" for h in health),
              f"every rule evaluates without error ({len(health)} rules: {sorted(set(health))})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
