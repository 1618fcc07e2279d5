#!/usr/bin/env python3
"""portcullis-capacity's arithmetic on scrapes whose rates are known: the
exposition parser, counter differences across a restart, histogram quantiles
(checked against the value promtool computes for the same buckets in
docs/prometheus/tests/recording_test.yml), the least-squares split of CPU
cost and when it refuses, the projection and the first resource to run out,
fleet sizing, the latency model's rate at a p99 bound, the sweep schema, and
a whole report with its gnuplot figures.
tests/prometheus/prometheus_capacity_test.py checks the same program against
a real daemon and a real Prometheus.

  capacity_test.py CAPACITY_SCRIPT
"""
import importlib.machinery
import importlib.util
import json
import math
import random
import shutil
import sys
import tempfile
from pathlib import Path

failures = []


def check(condition, what):
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        failures.append(what)


def load(path):
    loader = importlib.machinery.SourceFileLoader("capacity", str(path))
    spec = importlib.util.spec_from_loader("capacity", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def exposition(full, resumed, rejected, busy0, busy1, signs, workers=2, active=10, in_use=0):
    return f"""# TYPE portcullis_workers gauge
portcullis_workers {workers}
# TYPE portcullis_handshakes_total counter
portcullis_handshakes_total{{listener="edge",kind="full",result="ok"}} {full}
portcullis_handshakes_total{{listener="edge",kind="resumed",result="ok"}} {resumed}
portcullis_handshakes_total{{listener="edge",kind="full",result="rejected"}} {rejected}
portcullis_handshakes_total{{listener="edge",kind="full",result="abandoned"}} {rejected * 10}
# TYPE portcullis_client_certificate_rejections_total counter
portcullis_client_certificate_rejections_total{{listener="edge",reason="revoked"}} {rejected}
# TYPE portcullis_worker_busy_seconds_total counter
portcullis_worker_busy_seconds_total{{worker="0"}} {busy0}
portcullis_worker_busy_seconds_total{{worker="1"}} {busy1}
# TYPE portcullis_connections_active gauge
portcullis_connections_active{{listener="edge"}} {active}
# TYPE portcullis_connections_accepted_total counter
portcullis_connections_accepted_total{{listener="edge"}} {full + resumed + rejected}
# TYPE portcullis_buffer_bytes_in_use gauge
portcullis_buffer_bytes_in_use{{worker="0"}} {in_use}
# TYPE portcullis_buffer_budget_bytes gauge
portcullis_buffer_budget_bytes{{worker="0"}} 1000000
# TYPE portcullis_hsm_signatures_total counter
portcullis_hsm_signatures_total{{key="pkcs11:token=t;object=\\"k\\"",result="ok"}} {signs}
# TYPE portcullis_hsm_sessions_open gauge
portcullis_hsm_sessions_open 4
# TYPE portcullis_hsm_sign_duration_seconds histogram
portcullis_hsm_sign_duration_seconds_bucket{{key="k",le="0.005"}} {signs / 2}
portcullis_hsm_sign_duration_seconds_bucket{{key="k",le="0.01"}} {signs}
portcullis_hsm_sign_duration_seconds_bucket{{key="k",le="+Inf"}} {signs}
portcullis_hsm_sign_duration_seconds_sum{{key="k"}} {signs * 0.0075}
portcullis_hsm_sign_duration_seconds_count{{key="k"}} {signs}
"""


def main():
    cap = load(sys.argv[1])

    samples = cap.parse_exposition(exposition(1, 2, 3, 4, 5, 6))
    key = [l for n, l, _ in samples if n == "portcullis_hsm_signatures_total"][0]["key"]
    check(key == 'pkcs11:token=t;object="k"', f"escaped label value parsed ({key})")

    # A counter that went down restarted: its new value is the increase.
    w = cap.window_between((0, [("portcullis_handshakes_total", {"kind": "full"}, 100.0)]),
                           (10, [("portcullis_handshakes_total", {"kind": "full"}, 30.0)]))
    check(abs(w.rate("portcullis_handshakes_total") - 3.0) < 1e-9, "a reset counter's new value is its increase")

    # Half the signatures within 5 ms, all within 10 ms: promtool says 9.9 ms
    # (docs/prometheus/tests/recording_test.yml).
    q = cap.histogram_quantile(0.99, [(0.005, 1.0), (0.01, 2.0), (math.inf, 2.0)])
    check(abs(q - 0.0099) < 1e-12, f"p99 as Prometheus computes it ({q})")
    check(cap.histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 5.0)]) == 0.01,
          "a rank in +Inf gives the highest finite bound")

    # Intervals of different mixes made with known costs plus noise: the fit
    # finds the costs back.
    rng = random.Random(7)
    c_full, c_res = 2e-3, 0.9e-3
    points = []
    for share in (1.0, 0.8, 0.5, 0.2, 0.0, 0.6):
        total = 300
        f, r = share * total, (1 - share) * total
        points.append((f, r, (c_full * f + c_res * r) * (1 + rng.uniform(-0.02, 0.02))))
    got_full, got_res, how = cap.split_cpu_cost(points, None, 0.55)
    check(how["method"] == "least squares" and abs(got_full / c_full - 1) < 0.05 and abs(got_res / c_res - 1) < 0.08,
          f"least squares recovers the costs ({got_full * 1e6:.0f}, {got_res * 1e6:.0f} us; {how['detail']})")
    steady = [(100, 200, 0.38), (101, 199, 0.38), (99, 201, 0.38), (100, 200, 0.38)]
    got_full, got_res, how = cap.split_cpu_cost(steady, 2e-3, 0.55)
    check(how["method"] == "ratio" and "spread" in how["detail"] and abs(got_res - 1.1e-3) < 1e-12,
          f"one mix throughout: the ratio, and why ({how['detail']})")

    # The latency model: M/M/1 waits, and the rate where the p99 bound is met.
    check(cap.mm1_wait_p99(0.005, 1e-3) == 0.0, "no wait for 99% of arrivals at 0.5% utilisation")
    check(abs(cap.mm1_wait_p99(0.5, 1e-3) - 1e-3 * math.log(50) / 0.5) < 1e-12,
          "M/M/1 wait p99 at rho 0.5: S ln(50) / 0.5")
    model = {"cpu": {"workers": 1, "ceiling": 1.0, "us_per_full": 2000.0, "us_per_resumed": 1000.0}}
    lat = cap.latency_projection(model, {"p99_max_ms": 100.0, "steps": [
        {"offered_rate": 50.0, "p99_ms": 10.0, "passed": True}]}, 0.5)
    service = 1.5e-3
    base = 10.0 - 1e3 * service * math.log(100 * 50 * service) / (1 - 50 * service)
    at_bound = base + 1e3 * cap.mm1_wait_p99(lat["utilisation"], service)
    check(abs(lat["cpu_max_rate"] - 1 / service) < 1e-9 and abs(lat["base_ms"] - base) < 1e-9
          and abs(at_bound - 100.0) < 0.01 and lat["max_rate"] < lat["cpu_max_rate"],
          f"p99 bound of 100 ms reached at {lat['max_rate']:.1f}/s of {lat['cpu_max_rate']:.1f}/s "
          f"(base {lat['base_ms']:.2f} ms)")
    check(cap.latency_projection(model, {"p99_max_ms": None, "steps": [
        {"offered_rate": 50.0, "p99_ms": 10.0}]}, 0.5) is None, "no bound, no latency projection")

    with tempfile.TemporaryDirectory(prefix="portcullis-capacity-test.") as tmp:
        tmp = Path(tmp)
        # 10 s: 1000 full (+ 0 rejected), 1000 resumed, 10 busy core-seconds
        # over 2 workers, 1000 signatures.
        scrapes = [{"time": 1000.0, "text": exposition(0, 0, 0, 0, 0, 0)},
                   {"time": 1010.0, "text": exposition(1000, 1000, 0, 5, 5, 1000, in_use=200000)}]
        (tmp / "scrapes.json").write_text(json.dumps(scrapes))
        args = ["--metrics-file", str(tmp / "scrapes.json"), "--format", "json", "--mix", "full=0.3",
                "--target-rate", "50000", "--redundancy", "1"]
        report = run(cap, args, tmp / "r1.json")
        ok = report["handshakes_ok_per_s"]
        check(ok == {"full": 100.0, "resumed": 100.0, "total": 200.0}, f"rates from the counters ({ok})")
        c = 1.0 / (100 + 0.55 * 100)  # core-seconds per full handshake, the ratio split
        cpu = report["cpu"]
        check(cpu["split"]["method"] == "ratio" and abs(cpu["us_per_full"] - 1e6 * c) < 1e-6,
              f"CPU per full handshake by the ratio ({cpu['us_per_full']:.1f} us)")
        res = {r["resource"]: r for r in report["resources"]}
        check(abs(res["cpu"]["headroom"] - 0.5) < 1e-12, "cpu headroom: 1 core of 2 busy")
        check(abs(res["memory"]["headroom"] - 0.9) < 1e-12, "memory headroom: mean 100000 of 1000000 bytes")
        mix_rate = 2 / (0.3 * c + 0.7 * 0.55 * c)
        proj = report["projection"]
        check(abs(proj["observed"]["max_rate"] - 400) < 1e-6 and proj["observed"]["limited_by"] == "cpu",
              f"observed mix: 400/s, cpu ({proj['observed']})")
        check(abs(proj["requested"]["max_rate"] - mix_rate) < 1e-6,
              f"30% full: {mix_rate:.1f}/s ({proj['requested']['max_rate']:.1f})")
        fleet = report["fleet"]
        check(fleet["appliances"] == math.ceil(50000 / (0.8 * mix_rate)) + 1,
              f"fleet: ceil(50000 / (0.8 x {mix_rate:.1f})) + 1 = {fleet['appliances']}")
        check(report["hsm"]["max_sign_rate_from"].startswith("estimate"),
              "without --hsm-max-sign-rate the HSM maximum is an estimate and says so")

        # An HSM of 150 signatures/s runs out before the cores.
        report = run(cap, args + ["--hsm-max-sign-rate", "150"], tmp / "r2.json")
        proj = report["projection"]["observed"]
        check(proj["limited_by"] == "hsm" and abs(proj["max_rate"] - 300) < 1e-6,
              f"hsm limits at 150 / (0.5 x 1 signature) = 300/s ({proj})")
        check(abs(report["headroom"]["headroom"] - (1 - 100 / 150)) < 1e-12 and report["headroom"]["resource"] == "hsm",
              "headroom is the resource closest to full")

        bad = tmp / "bad-sweep.json"
        bad.write_text(json.dumps({"steps": [{"offered_rate": 10}], "knee": None}))
        code = cap.main(args + ["--sweep", str(bad)])
        check(code == 1, "a sweep without the step fields is refused")

        sweep = tmp / "sweep.json"
        # The generator: 0.5 CPU s per passed step over 10 s of r/s connections.
        steps = [{"offered_rate": r, "achieved_rate": min(r, 350) * 0.99, "p50_ms": 2 + r / 100,
                  "p90_ms": 3 + r / 50, "p99_ms": 5 + (r / 40) ** 2, "max_ms": 50 + r, "errors": 0 if r < 400 else 9,
                  "full": r * 5, "resumed": r * 5, "connections": r * 10, "client_cpu_s": 0.5,
                  "passed": r < 400} for r in (100, 200, 300, 400)]
        sweep.write_text(json.dumps({"steps": steps, "knee": {"rate": 300, "p99_ms": 61.25}, "p99_max_ms": 100.0}))
        if shutil.which("gnuplot") is None:
            print("SKIP: gnuplot not found (Debian package gnuplot-nox); the figures NOT checked")
            return 1 if failures else 77
        for fmt in ("markdown", "html"):
            out = tmp / f"report-{fmt}"
            code = cap.main([a for a in args if a not in ("--format", "json")] +
                            ["--format", fmt, "--sweep", str(sweep), "--out", str(out)])
            name = "report.md" if fmt == "markdown" else "report.html"
            check(code == 0 and (out / name).exists() and (out / "report.json").exists(), f"{fmt}: {name} written")
            text = (out / name).read_text() if (out / name).exists() else ""
            for png in ("throughput.png", "latency.png", "cpu.png", "headroom.png"):
                data = (out / png).read_bytes() if (out / png).exists() else b""
                check(data.startswith(b"\x89PNG") and png in text, f"{fmt}: {png} drawn and linked")
            check("knee" in text.lower() and "300" in text, f"{fmt}: the sweep's knee is reported")
            check("p99 bound" in text and "the projection at the bound" in text,
                  f"{fmt}: the projection at the sweep's p99 bound, and the knee against it")
            comparison = json.loads((out / "report.json").read_text())["sweep"]["comparison"]
            check(comparison["knee_rate"] == 300 and comparison["projected_at_p99_bound"] > 0
                  and abs(comparison["knee_vs_p99_bound"] - (300 / comparison["projected_at_p99_bound"] - 1)) < 1e-12,
                  f"{fmt}: report.json compares the knee with the projection ({comparison['knee_vs_p99_bound']:+.3f})")
            gen = comparison["generator"]
            check(gen is not None and abs(gen["service_s"] - 0.5 * 3 / (100 + 200 + 300) / 10) < 1e-12
                  and comparison["projected_for_sweep"] < comparison["projected_at_p99_bound"]
                  and "load generator cost" in text,
                  f"{fmt}: the generator's CPU per connection over the passed steps "
                  f"({gen and gen['service_s'] * 1e6:.0f} us) lowers what the sweep could show "
                  f"({comparison.get('projected_for_sweep', 0):.1f}/s)")
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


def run(cap, args, out):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cap.main(args)
    if code != 0:
        print(buf.getvalue())
        raise SystemExit(f"FAIL  portcullis-capacity {' '.join(args)} exited {code}")
    out.write_text(buf.getvalue())
    return json.loads(buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
