#!/usr/bin/env python3
"""portcullis-capacity: how much more load one Portcullis appliance takes,
what runs out first, and how many appliances a target rate needs, read from
the metrics the daemon serves (docs/metrics.md) and, optionally, from an
open-loop sweep of portcullis-bench (docs/capacity.md explains every number).

Three sources, the same figures:

  --metrics-url http://HOST:PORT/metrics --interval 30 [--scrapes 2]
      scrapes the admin listener --scrapes times over --interval seconds and
      takes counter differences (a counter that went down restarted: its new
      value is the increase, as Prometheus's rate() does);
  --metrics-file scrapes.json
      the same from scrapes recorded earlier (perf/capacity-report.sh);
  --prometheus http://HOST:9090 --range 10m [--at UNIX_TIME] [--selector 'instance="a"']
      asks Prometheus for rate(FAMILY[RANGE]) of each family at --at (now),
      which is what docs/prometheus/recording.rules.yml computes with [5m].

Output: --format text|markdown|html|json, to stdout or, with --out DIR, as
DIR/report.{md,html} (with --sweep, PNG plots made by gnuplot) and
DIR/report.json. Python 3 standard library only; gnuplot (Debian
gnuplot-nox) for the plots.
"""
import argparse
import html
import json
import math
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# docs/performance.md: a resumed TLS 1.3 mTLS handshake costs about 55% of a
# full one (859 vs 1569 µs of server CPU, 1 worker); docs/metrics.md uses the
# same figure to split busy time when the metrics alone cannot.
DEFAULT_RESUMED_COST_RATIO = 0.55
# workers.max_connections's default (docs/configuration.md).
DEFAULT_MAX_CONNECTIONS = 10000

COUNTERS = [
    "portcullis_handshakes_total",
    "portcullis_client_certificate_rejections_total",
    "portcullis_worker_busy_seconds_total",
    "portcullis_worker_restarts_total",
    "portcullis_connections_accepted_total",
    "portcullis_connections_refused_total",
    "portcullis_buffer_denials_total",
    "portcullis_hsm_signatures_total",
    "portcullis_hsm_errors_total",
    "portcullis_hsm_sign_duration_seconds_bucket",
    "portcullis_hsm_sign_duration_seconds_sum",
    "portcullis_hsm_sign_duration_seconds_count",
    "portcullis_handshake_duration_seconds_bucket",
    "portcullis_handshake_duration_seconds_sum",
    "portcullis_handshake_duration_seconds_count",
    "portcullis_dpdk_busy_iterations_total",
    "portcullis_dpdk_poll_iterations_total",
]
# Gauges whose average over the window, not their last value, says how
# much of a resource the window's load held.
AVERAGED = ["portcullis_connections_active", "portcullis_buffer_bytes_in_use"]
GAUGES = [
    "portcullis_workers",
    "portcullis_connections_active",
    "portcullis_hsm_sessions_open",
    "portcullis_hsm_in_flight",
    "portcullis_hsm_queued",
    "portcullis_buffer_bytes_in_use",
    "portcullis_buffer_budget_bytes",
    "portcullis_buffer_bytes_high_water",
    "portcullis_worker_resident_bytes",
]


class CapacityError(Exception):
    pass


# ---------------------------------------------------------------- sources

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """Prometheus text format 0.0.4 -> list of (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in LABEL.findall(m.group(3) or "")}
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


class Window:
    """What one interval says: per-second rates of counter series and the
    gauges' values at its end. Series are (labels, value) lists by name."""

    def __init__(self, duration_s, end_time):
        self.duration_s = duration_s
        self.end_time = end_time
        self.rates = {}
        self.gauges = {}
        self.means = {}

    @staticmethod
    def _select(series, match):
        for labels, value in series:
            if all(labels.get(k) == v for k, v in match.items()):
                yield labels, value

    def rate(self, name, **match):
        return sum(v for _, v in self._select(self.rates.get(name, []), match))

    def rate_by(self, name, label, **match):
        out = {}
        for labels, v in self._select(self.rates.get(name, []), match):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
        return out

    def has(self, name):
        return name in self.rates or name in self.gauges

    def gauge(self, name, **match):
        if name not in self.gauges:
            return None
        return sum(v for _, v in self._select(self.gauges[name], match))

    def mean(self, name):
        """The gauge's sum over series averaged over the window (its last
        value when the source gave no average)."""
        return self.means.get(name, self.gauge(name))

    def gauge_by(self, name, label):
        out = {}
        for labels, v in self.gauges.get(name, []):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
        return out

    def buckets(self, name, **match):
        """Cumulative histogram bucket rates summed over series: [(le, rate)]."""
        by_le = {}
        for labels, v in self._select(self.rates.get(name, []), match):
            le = float(labels["le"]) if labels.get("le") not in (None, "+Inf") else math.inf
            by_le[le] = by_le.get(le, 0.0) + v
        return sorted(by_le.items())


def window_between(first, last):
    """A Window from two scrapes (time, samples) of the same daemon."""
    (t0, s0), (t1, s1) = first, last
    if t1 <= t0:
        raise CapacityError(f"scrapes at {t0:.3f} and {t1:.3f}: no time between them for a rate")
    w = Window(t1 - t0, t1)
    before = {(n, tuple(sorted(l.items()))): v for n, l, v in s0}
    counters = set(COUNTERS)
    for name, labels, value in s1:
        if name in counters:
            old = before.get((name, tuple(sorted(labels.items()))), 0.0)
            increase = value - old if value >= old else value
            w.rates.setdefault(name, []).append((labels, increase / w.duration_s))
        else:
            w.gauges.setdefault(name, []).append((labels, value))
    return w


def fetch(url, tls, timeout=10):
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=tls.get("ca"))
        if tls.get("cert"):
            context.load_cert_chain(tls["cert"], tls.get("key"))
    with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
        return r.read().decode()


def from_metrics_url(args):
    tls = {"ca": args.cacert, "cert": args.cert, "key": args.key}
    n = max(2, args.scrapes)
    scrapes = []
    for i in range(n):
        if i:
            time.sleep(args.interval / (n - 1))
        try:
            scrapes.append((time.time(), parse_exposition(fetch(args.metrics_url, tls))))
        except OSError as e:
            raise CapacityError(f"cannot scrape {args.metrics_url}: {e}")
    return from_scrapes(scrapes, {"kind": "metrics-url", "url": args.metrics_url})


def from_metrics_file(args):
    """Scrapes recorded earlier: a JSON list of {"time": UNIX_S, "text": EXPOSITION}
    (perf/capacity-report.sh records one while its sweep runs)."""
    try:
        recorded = json.loads(Path(args.metrics_file).read_text())
        scrapes = sorted((float(r["time"]), parse_exposition(r["text"])) for r in recorded)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CapacityError(f"{args.metrics_file}: not a list of {{time, text}} scrapes ({e})")
    if len(scrapes) < 2:
        raise CapacityError(f"{args.metrics_file}: {len(scrapes)} scrape(s), at least 2 are needed")
    return from_scrapes(scrapes, {"kind": "metrics-file", "url": args.metrics_file})


def from_scrapes(scrapes, source):
    n = len(scrapes)
    whole = window_between(scrapes[0], scrapes[-1])
    for name in AVERAGED:
        values = [sum(v for n, _, v in samples if n == name) for _, samples in scrapes]
        whole.means[name] = sum(values) / len(values)
    parts = [window_between(scrapes[i], scrapes[i + 1]) for i in range(n - 1)]
    points = [fit_point(p) for p in parts]
    source.update({"interval_s": whole.duration_s, "scrapes": n})
    return whole, points, source


DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    parts = DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise CapacityError(f"not a Prometheus duration: {text!r} (e.g. 10m, 90s, 1h30m)")
    return sum(float(a) * UNIT_S[b] for a, b in parts)


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def _get(self, path, params):
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = json.loads(urllib.request.urlopen(url, timeout=30).read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise CapacityError(f"{self.url} refused {params.get('query')!r}: {e.code} {detail}")
        except OSError as e:
            raise CapacityError(f"cannot query {self.url}: {e}")
        if body.get("status") != "success":
            raise CapacityError(f"{url}: {body.get('error', body)}")
        return body["data"]["result"]

    def query(self, expr, at):
        return [(r["metric"], float(r["value"][1])) for r in
                self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})]

    def query_range(self, expr, start, end, step):
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in
                self._get("/api/v1/query_range",
                          {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                           "step": f"{step:.3f}"})]


def from_prometheus(args):
    prom = Prometheus(args.prometheus)
    at = args.at if args.at else time.time()
    duration = parse_duration(args.range)
    sel = "{" + args.selector + "}" if args.selector else ""
    w = Window(duration, at)
    for name in COUNTERS:
        result = prom.query(f"rate({name}{sel}[{args.range}])", at)
        if result:
            w.rates[name] = result
    for name in GAUGES:
        result = prom.query(f"{name}{sel}", at)
        if result:
            w.gauges[name] = result
    for name in AVERAGED:
        result = prom.query(f"sum(avg_over_time({name}{sel}[{args.range}]))", at)
        if result:
            w.means[name] = result[0][1]
    if not w.rates and not w.gauges:
        raise CapacityError(f"{args.prometheus} has no portcullis_* series{' for ' + sel if sel else ''}"
                            f" at {at:.0f} (is it scraping Portcullis?)")
    # The intervals the least-squares split of CPU cost fits: sub-windows of
    # the range, each a rate over its own step.
    step = parse_duration(args.step) if args.step else max(duration / 8, 1.0)
    # PromQL durations are whole numbers of a unit.
    step_text = f"{max(1, round(step * 1000))}ms"
    okq = (f'sum by (kind) (rate(portcullis_handshakes_total{{{args.selector + "," if args.selector else ""}'
           f'result!="abandoned"}}[{step_text}]))')
    busyq = f"sum(rate(portcullis_worker_busy_seconds_total{sel}[{step_text}]))"
    start = at - duration + step
    series = {}
    for metric, values in prom.query_range(okq, start, at, step):
        series[metric.get("kind", "")] = dict(values)
    busy = dict(next((v for _, v in prom.query_range(busyq, start, at, step)), []))
    points = []
    for t, b in sorted(busy.items()):
        points.append((series.get("full", {}).get(t, 0.0), series.get("resumed", {}).get(t, 0.0), b))
    instances = sorted({labels.get("instance", "") for labels, _ in w.rates.get("portcullis_handshakes_total", [])})
    if len(instances) > 1:
        print(f"portcullis-capacity: {len(instances)} instances summed as one appliance "
              f"({', '.join(instances[:5])}{', ...' if len(instances) > 5 else ''}); "
              "pick one with --selector 'instance=\"...\"'", file=sys.stderr)
    source = {"kind": "prometheus", "url": args.prometheus, "range": args.range, "at": at,
              "selector": args.selector, "step_s": step, "instances": instances}
    return w, points, source


def full_ran(w):
    """Full handshakes/s that did the work of one: successful, rejected by the
    client-certificate policy (the server signed and verified before it
    refused) and failed. Abandoned ones (the client left) are left out."""
    by_result = w.rate_by("portcullis_handshakes_total", "result", kind="full")
    return sum(v for r, v in by_result.items() if r != "abandoned")


def fit_point(w):
    # Only successful handshakes resume: a resumption that fails is
    # counted as kind="full" (docs/metrics.md).
    return (full_ran(w), w.rate("portcullis_handshakes_total", kind="resumed"),
            w.rate("portcullis_worker_busy_seconds_total"))


# ---------------------------------------------------------------- analysis

def histogram_quantile(q, buckets):
    """Prometheus's histogram_quantile over [(le, cumulative rate)]: linear
    within the bucket, the highest finite bound when the rank is in +Inf."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def split_cpu_cost(points, blended_full, ratio):
    """CPU s per full and per resumed handshake. busy = c_full·full + c_res·resumed
    fitted over the intervals when their mixes differ enough to tell the two
    apart; otherwise c_res = ratio·c_full with the whole window's numbers."""
    usable = [(f, r, b) for f, r, b in points if f + r > 0]
    reason = None
    if len(usable) < 3:
        reason = f"{len(usable)} interval(s) with handshakes, the fit needs 3"
    else:
        shares = [f / (f + r) for f, r, _ in usable]
        spread = max(shares) - min(shares)
        if spread < 0.2:
            reason = (f"the full-handshake share only moved between {min(shares):.2f} and "
                      f"{max(shares):.2f} over the intervals (the fit needs a spread of 0.2)")
        else:
            sff = sum(f * f for f, _, _ in usable)
            srr = sum(r * r for _, r, _ in usable)
            sfr = sum(f * r for f, r, _ in usable)
            sfb = sum(f * b for f, _, b in usable)
            srb = sum(r * b for _, r, b in usable)
            det = sff * srr - sfr * sfr
            if det <= 1e-12 * sff * srr:
                reason = "the intervals' full and resumed rates are collinear"
            else:
                c_full = (sfb * srr - srb * sfr) / det
                c_res = (srb * sff - sfb * sfr) / det
                residual = math.sqrt(sum((b - c_full * f - c_res * r) ** 2 for f, r, b in usable)
                                     / len(usable))
                mean_busy = sum(b for _, _, b in usable) / len(usable)
                if c_full <= 0 or c_res <= 0:
                    reason = (f"the fit gave a non-positive cost (full {c_full * 1e6:.0f} us, "
                              f"resumed {c_res * 1e6:.0f} us)")
                elif residual > 0.25 * mean_busy:
                    reason = (f"the fit leaves {residual:.3f} cores rms unexplained of {mean_busy:.3f} "
                              "busy (more than a quarter: the load was not only handshakes)")
                else:
                    return c_full, c_res, {
                        "method": "least squares",
                        "detail": f"busy = c_full x full/s + c_resumed x resumed/s fitted over "
                                  f"{len(usable)} intervals (full share {min(shares):.2f}..{max(shares):.2f}, "
                                  f"rms residual {residual:.4f} cores)"}
    if blended_full is None:
        return None, None, {"method": "none", "detail": "no handshakes in the window"}
    return blended_full, ratio * blended_full, {
        "method": "ratio",
        "detail": f"resumed = {ratio:g} x full, the ratio docs/performance.md measured "
                  f"(--resumed-cost-ratio); least squares not used: {reason}"}


def analyse(w, points, source, args):
    hs = "portcullis_handshakes_total"
    full_ok = w.rate(hs, kind="full", result="ok")
    resumed_ok = w.rate(hs, kind="resumed", result="ok")
    ok = full_ok + resumed_ok
    full_work = full_ran(w)
    resumed = w.rate(hs, kind="resumed")
    served = full_work + resumed
    ended = w.rate(hs)
    by_kind = {kind: w.rate_by(hs, "result", kind=kind) for kind in ("full", "resumed")}
    report = {
        "source": source,
        "window_s": w.duration_s,
        "end_time": w.end_time,
        "handshakes_per_s": {k: {r: v for r, v in sorted(d.items())} for k, d in by_kind.items()},
        "handshakes_ok_per_s": {"full": full_ok, "resumed": resumed_ok, "total": ok},
        # The load the projections count in: every handshake that cost a full
        # or a resumed handshake's work.
        "handshakes_served_per_s": {"full": full_work, "resumed": resumed, "total": served},
        "resumption_ratio": resumed_ok / ok if ok > 0 else None,
        "not_ok_ratio": (ended - ok) / ended if ended > 0 else None,
        "rejections_per_s": dict(sorted(
            w.rate_by("portcullis_client_certificate_rejections_total", "reason").items())),
        "handshake_latency_ms": {},
        "worker_restarts_per_s": w.rate("portcullis_worker_restarts_total"),
    }
    for kind in ("full", "resumed"):
        b = w.buckets("portcullis_handshake_duration_seconds_bucket", kind=kind)
        p50, p99 = histogram_quantile(0.5, b), histogram_quantile(0.99, b)
        if p50 is not None:
            report["handshake_latency_ms"][kind] = {"p50": p50 * 1e3, "p99": p99 * 1e3}

    # CPU
    workers = w.gauge("portcullis_workers") or 0
    busy = w.rate("portcullis_worker_busy_seconds_total")
    per_worker = w.rate_by("portcullis_worker_busy_seconds_total", "worker")
    ratio = args.resumed_cost_ratio
    weighted = full_work + ratio * resumed
    c_full, c_res, how = split_cpu_cost(points, busy / weighted if weighted > 0 else None, ratio)
    cpu = {
        "workers": workers,
        "cores_busy": busy,
        "busy_by_worker": dict(sorted(per_worker.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)),
        "busiest_worker": max(per_worker.values()) if per_worker else None,
        "us_per_handshake_blended": 1e6 * busy / ok if ok > 0 else None,
        "us_per_served_handshake": 1e6 * busy / served if served > 0 else None,
        "us_per_full": c_full * 1e6 if c_full else None,
        "us_per_resumed": c_res * 1e6 if c_res else None,
        "split": how,
        "ceiling": args.cpu_ceiling,
        # The ratio split whatever the method: the figures recording.rules.yml
        # records, so the two can be compared.
        "ratio_split": {"ratio": ratio,
                        "us_per_full": 1e6 * busy / weighted if weighted > 0 else None,
                        "us_per_resumed": 1e6 * ratio * busy / weighted if weighted > 0 else None},
    }
    polls = w.rate("portcullis_dpdk_poll_iterations_total")
    if polls > 0:
        cpu["dpdk_busy_iteration_fraction"] = w.rate("portcullis_dpdk_busy_iterations_total") / polls
    report["cpu"] = cpu

    # HSM
    hsm = None
    if w.has("portcullis_hsm_signatures_total") or w.has("portcullis_hsm_sessions_open"):
        signs = w.rate_by("portcullis_hsm_signatures_total", "result")
        b = w.buckets("portcullis_hsm_sign_duration_seconds_bucket")
        count = w.rate("portcullis_hsm_sign_duration_seconds_count")
        mean = w.rate("portcullis_hsm_sign_duration_seconds_sum") / count if count > 0 else None
        p50, p99 = histogram_quantile(0.5, b), histogram_quantile(0.99, b)
        sessions = w.gauge("portcullis_hsm_sessions_open")
        hsm = {
            "signatures_per_s": dict(sorted(signs.items())),
            "sign_latency_ms": {"p50": p50 * 1e3 if p50 is not None else None,
                                "p99": p99 * 1e3 if p99 is not None else None,
                                "mean": mean * 1e3 if mean is not None else None},
            "sessions_open": sessions,
            "in_flight": w.gauge("portcullis_hsm_in_flight"),
            "queued": w.gauge("portcullis_hsm_queued"),
            "errors_per_s": dict(sorted(w.rate_by("portcullis_hsm_errors_total", "code").items())),
        }
        if args.hsm_max_sign_rate:
            hsm["max_sign_rate"] = args.hsm_max_sign_rate
            hsm["max_sign_rate_from"] = "--hsm-max-sign-rate (the token's measured maximum)"
        elif sessions and mean:
            # Each session does one signature at a time: sessions / latency
            # bounds what Portcullis can get from the token. Queue wait is in
            # the mean, so this errs low when signatures queue.
            hsm["max_sign_rate"] = sessions / mean
            hsm["max_sign_rate_from"] = ("estimate: sessions open / mean sign latency (no "
                                         "--hsm-max-sign-rate given; the token's own limit may be lower)")
        report["hsm"] = hsm

    # Connections
    active = w.mean("portcullis_connections_active")
    accepted = w.rate("portcullis_connections_accepted_total")
    limit = workers * args.max_connections if workers else None
    report["connections"] = {
        "active": active, "accepted_per_s": accepted,
        "refused_per_s": w.rate("portcullis_connections_refused_total"),
        "mean_lifetime_s": active / accepted if active is not None and accepted > 0 else None,
        "limit": limit, "max_connections_per_worker": args.max_connections,
    }
    in_use = w.mean("portcullis_buffer_bytes_in_use")
    budget = w.gauge("portcullis_buffer_budget_bytes")
    report["memory"] = {
        "buffer_bytes_in_use": in_use, "buffer_budget_bytes": budget,
        "buffer_bytes_high_water": w.gauge("portcullis_buffer_bytes_high_water"),
        "buffer_denials_per_s": w.rate("portcullis_buffer_denials_total"),
        "resident_bytes": w.gauge("portcullis_worker_resident_bytes"),
    }

    report["resources"] = resources(report, args)
    observed_share = full_work / served if served > 0 else None
    report["projection"] = {}
    mixes = [("observed", observed_share)]
    if args.mix is not None:
        mixes.append(("requested", args.mix))
    for name, share in mixes:
        if share is None:
            continue
        report["projection"][name] = project(report, share)
    limiting = [r for r in report["resources"] if r["headroom"] is not None]
    report["headroom"] = min(limiting, key=lambda r: r["headroom"]) if limiting else None
    report["fleet"] = fleet(report, args)
    return report


def resources(report, args):
    """Each resource: what is used of it now, what it holds, and the
    successful handshakes/s at which it is full for a share `m` of full
    handshakes (the function max_rate(m)), assuming its use grows in
    proportion to the handshakes of each kind."""
    ok = report["handshakes_served_per_s"]
    cpu, hsm, conns, mem = report["cpu"], report.get("hsm"), report["connections"], report["memory"]
    out = []
    cores = cpu["workers"] * args.cpu_ceiling
    if cpu["us_per_full"] and cores > 0:
        c_full, c_res = cpu["us_per_full"] / 1e6, cpu["us_per_resumed"] / 1e6
        out.append({"resource": "cpu", "unit": "cores", "used": cpu["cores_busy"], "capacity": cores,
                    "max_rate": lambda m, c_full=c_full, c_res=c_res: cores / (m * c_full + (1 - m) * c_res),
                    "note": f"{cpu['workers']:g} workers x ceiling {args.cpu_ceiling:g}; "
                            f"cost split by {cpu['split']['method']}"})
    elif cores > 0:
        out.append({"resource": "cpu", "unit": "cores", "used": cpu["cores_busy"], "capacity": cores,
                    "max_rate": None, "note": "no successful handshakes: no cost per handshake"})
    if hsm is not None:
        signs_ok = hsm["signatures_per_s"].get("ok", 0.0)
        signs = sum(hsm["signatures_per_s"].values())
        cap = hsm.get("max_sign_rate")
        # Signatures per full handshake that ran: 1 when every one signed
        # (TLS 1.3 signs before the client's certificate arrives).
        per_full = signs / ok["full"] if ok["full"] > 0 and signs > 0 else 1.0
        entry = {"resource": "hsm", "unit": "signatures/s", "used": signs_ok, "capacity": cap,
                 "note": f"{per_full:.2f} signatures per full handshake; "
                         f"{hsm.get('max_sign_rate_from', 'no maximum known: give --hsm-max-sign-rate')}"}
        entry["max_rate"] = (lambda m, cap=cap, per_full=per_full:
                             cap / (m * per_full) if m > 0 else math.inf) if cap else None
        out.append(entry)
    if conns["limit"]:
        active = conns["active"] or 0.0
        total = ok["total"]
        if active > 0 and total > 0:
            # Little's law: open connections = arrival rate x lifetime, so
            # with lifetimes unchanged they grow in proportion to the rate.
            per_rate = active / total
            fn = lambda m, limit=conns["limit"], per_rate=per_rate: limit / per_rate
        else:
            fn = lambda m: math.inf
        out.append({"resource": "connections", "unit": "connections", "used": active,
                    "capacity": conns["limit"], "max_rate": fn,
                    "note": f"workers x max_connections ({args.max_connections}, --max-connections); "
                            "connection lifetimes assumed unchanged"})
    if mem["buffer_budget_bytes"]:
        in_use = mem["buffer_bytes_in_use"] or 0.0
        total = ok["total"]
        if in_use > 0 and total > 0:
            fn = lambda m, budget=mem["buffer_budget_bytes"], per=in_use / total: budget / per
        else:
            fn = lambda m: math.inf
        out.append({"resource": "memory", "unit": "buffer bytes", "used": in_use,
                    "capacity": mem["buffer_budget_bytes"], "max_rate": fn,
                    "note": "buffer blocks held for bytes in flight, against workers.buffer_budget_bytes"})
    for r in out:
        r["headroom"] = (1 - r["used"] / r["capacity"]) if r["capacity"] else None
    return out


def project(report, share):
    best = None
    limits = {}
    for r in report["resources"]:
        if r["max_rate"] is None:
            continue
        rate = r["max_rate"](share)
        limits[r["resource"]] = rate
        if best is None or rate < best[1]:
            best = (r["resource"], rate)
    return {"full_share": share, "max_rate": best[1] if best else None,
            "limited_by": best[0] if best else None, "by_resource": limits}


def fleet(report, args):
    if not args.target_rate:
        return None
    share = args.mix if args.mix is not None else (report["projection"].get("observed") or {}).get("full_share")
    if share is None:
        return None
    p = project(report, share)
    if not p["max_rate"] or math.isinf(p["max_rate"]):
        return None
    per = p["max_rate"] * args.plan_utilisation
    needed = math.ceil(args.target_rate / per)
    return {"target_rate": args.target_rate, "full_share": share, "redundancy": args.redundancy,
            "plan_utilisation": args.plan_utilisation, "per_appliance_rate": per,
            "limited_by": p["limited_by"], "appliances_for_load": needed,
            "appliances": needed + args.redundancy}


def mm1_wait_p99(rho, service_s):
    """p99 of the wait before service in an M/M/1 queue at utilisation rho:
    P(wait > t) = rho * exp(-(1 - rho) t / service), so no wait at all for
    99% of arrivals while rho <= 0.01."""
    if rho <= 0.01:
        return 0.0
    if rho >= 1:
        return math.inf
    return service_s * math.log(100 * rho) / (1 - rho)


def latency_projection(report, sweep, share, generator=None):
    """The offered rate at which the sweep's p99 bound would be reached at a
    share `share` of full handshakes, if each worker were an M/M/1 queue
    (Poisson arrivals, as the bench sends them, spread evenly over the
    workers) with the mean service time the CPU split measured. With
    `generator` ({"service_s", "threads"}: the load generator's own CPU per
    connection, measured by the bench), its threads are queues in series
    too: what the sweep measured, rather than the appliance alone. What the
    queues do not explain of the lowest step's p99 (network, the backend) is
    taken as a constant on top. None without the costs, a bound or a passed
    step."""
    cpu = report["cpu"]
    bound = sweep.get("p99_max_ms")
    steps = [s for s in sweep["steps"] if s.get("passed", True) and s.get("p99_ms") is not None]
    if not (cpu.get("us_per_full") and cpu.get("us_per_resumed") and bound and steps):
        return None
    cores = cpu["workers"] * cpu["ceiling"]
    service = (share * cpu["us_per_full"] + (1 - share) * cpu["us_per_resumed"]) / 1e6
    if cores <= 0 or service <= 0:
        return None
    capacity = cores / service  # handshakes/s at which the CPU is full
    queues = [(capacity, service)]
    if generator:
        queues.append((generator["threads"] / generator["service_s"], generator["service_s"]))
    limit = min(c for c, _ in queues)

    def waits_ms(rate):
        return sum(1e3 * mm1_wait_p99(rate / c, sv) for c, sv in queues)

    low = steps[0]
    base_ms = max(0.0, low["p99_ms"] - waits_ms(low["offered_rate"]))
    out = {"p99_max_ms": bound, "base_ms": base_ms, "service_ms": service * 1e3,
           "cpu_max_rate": capacity, "generator_max_rate": queues[1][0] if generator else None}
    lo, hi = 0.0, limit
    if base_ms < bound:
        for _ in range(80):
            mid = (lo + hi) / 2
            if base_ms + waits_ms(mid) <= bound:
                lo = mid
            else:
                hi = mid
    out["max_rate"] = lo
    out["utilisation"] = lo / capacity
    return out


def generator_cost(sweep):
    """The load generator's CPU seconds per connection over the steps that
    passed, and its threads; None when the sweep does not say (an older
    bench)."""
    steps = [s for s in sweep["steps"] if s.get("passed", True) and s.get("client_cpu_s") is not None]
    connections = sum(s.get("connections") or 0 for s in steps)
    cpu_s = sum(s["client_cpu_s"] for s in steps)
    if connections == 0 or cpu_s <= 0:
        return None
    return {"service_s": cpu_s / connections, "threads": sweep.get("threads") or 1}


def sweep_comparison(report, sweep):
    """The sweep's mix, what the metrics project for it (throughput; at the
    sweep's p99 bound for the appliance alone, and with the load generator's
    own queue as the sweep had it), and where the sweep's knee lies."""
    done = [(s.get("full") or 0, s.get("resumed") or 0) for s in sweep["steps"]]
    full, resumed = sum(f for f, _ in done), sum(r for _, r in done)
    if full + resumed == 0:
        return None
    share = full / (full + resumed)
    throughput = project(report, share)
    generator = generator_cost(sweep)
    out = {"full_share": share, "highest_achieved": max(s["achieved_rate"] for s in sweep["steps"]),
           "projected_max_rate": throughput["max_rate"], "limited_by": throughput["limited_by"],
           "at_p99_bound": latency_projection(report, sweep, share),
           "generator": generator,
           "with_generator": latency_projection(report, sweep, share, generator) if generator else None,
           "knee_rate": (sweep["knee"] or {}).get("rate")}
    # At the bound: the lower of the latency model's rate and whatever other
    # resource fills first.
    for key, versus, model in (("projected_at_p99_bound", "knee_vs_p99_bound", out["at_p99_bound"]),
                               ("projected_for_sweep", "knee_vs_for_sweep", out["with_generator"])):
        if model and throughput["max_rate"]:
            out[key] = min(model["max_rate"], throughput["max_rate"])
            if out["knee_rate"] and out[key] > 0:
                out[versus] = out["knee_rate"] / out[key] - 1
    rates = [s["offered_rate"] for s in sweep["steps"]]
    out["sweep_step"] = (rates[1] - rates[0]) if len(rates) > 1 else None
    return out


def load_sweep(path):
    data = json.loads(Path(path).read_text())
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise CapacityError(f"{path}: no steps[] (expected portcullis-bench --sweep JSON)")
    need = ("offered_rate", "achieved_rate", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors")
    for i, s in enumerate(steps):
        missing = [k for k in need if k not in s]
        if missing:
            raise CapacityError(f"{path}: steps[{i}] lacks {', '.join(missing)}")
    return {"steps": sorted(steps, key=lambda s: s["offered_rate"]), "knee": data.get("knee"),
            "p99_max_ms": data.get("p99_max_ms"), "resume_fraction": data.get("resume_fraction"),
            "threads": data.get("threads")}


# ---------------------------------------------------------------- rendering

def jsonable(report):
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if not callable(v)}
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, float) and math.isinf(x):
            return None
        return x
    return clean(report)


def fmt(x, digits=0, unit=""):
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "unbounded"
    return f"{x:,.{digits}f}{unit}"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def blocks(report, sweep, images):
    """The report as (kind, payload) blocks that render as Markdown or HTML."""
    b = []
    src = report["source"]
    where = (f"{src['url']}, {src['scrapes']} scrapes over {report['window_s']:.1f} s"
             if src["kind"] in ("metrics-url", "metrics-file") else
             f"Prometheus {src['url']}, rate over {src['range']} at "
             f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(src['at']))}"
             + (f", {{{src['selector']}}}" if src["selector"] else ""))
    b.append(("h1", "Portcullis capacity report"))
    b.append(("p", f"Source: {where}. docs/capacity.md explains each figure."))
    head = []
    proj = report["projection"]
    if "observed" in proj and proj["observed"]["max_rate"]:
        o = proj["observed"]
        head.append(f"Projected maximum at the observed mix ({pct(o['full_share'])} full): "
                    f"**{fmt(o['max_rate'])} handshakes/s**, limited by **{o['limited_by']}**.")
    if "requested" in proj and proj["requested"]["max_rate"]:
        o = proj["requested"]
        head.append(f"At {pct(o['full_share'])} full handshakes: **{fmt(o['max_rate'])} handshakes/s**, "
                    f"limited by **{o['limited_by']}**.")
    if report["headroom"]:
        h = report["headroom"]
        head.append(f"Headroom: **{pct(h['headroom'])}** ({h['resource']}, the resource closest to full).")
    if report["fleet"]:
        f = report["fleet"]
        head.append(f"Fleet for {fmt(f['target_rate'])} handshakes/s at {pct(f['full_share'])} full: "
                    f"**{f['appliances']} appliances** ({f['appliances_for_load']} for the load at "
                    f"{pct(f['plan_utilisation'])} of {fmt(f['per_appliance_rate'] / f['plan_utilisation'])}/s each, "
                    f"+{f['redundancy']} redundancy).")
    c = report.get("sweep", {}).get("comparison") if sweep else None
    if c:
        head.append(f"Sweep: highest achieved {fmt(c['highest_achieved'])}/s at {pct(c['full_share'])} full; "
                    f"the metrics project {fmt(c['projected_max_rate'])}/s for that mix ({c['limited_by']}).")
        lat = c["at_p99_bound"]
        if lat and c.get("projected_at_p99_bound") is not None:
            head.append(f"Projected maximum at the sweep's p99 bound ({fmt(lat['p99_max_ms'])} ms): "
                        f"**{fmt(c['projected_at_p99_bound'])} handshakes/s** ({pct(lat['utilisation'])} of the CPU; "
                        f"each worker an M/M/1 queue of {fmt(lat['service_ms'], 2)} ms handshakes, "
                        f"plus {fmt(lat['base_ms'], 1)} ms the queue does not explain).")
        gen = c.get("with_generator")
        if gen and c.get("projected_for_sweep") is not None:
            head.append(f"The load generator cost {fmt(c['generator']['service_s'] * 1e6)} us of CPU per connection "
                        f"on {c['generator']['threads']} thread(s), full at {fmt(gen['generator_max_rate'])}/s: "
                        f"with its queue in series the bound is reached at "
                        f"**{fmt(c['projected_for_sweep'])} handshakes/s**, what this sweep could show.")
    if sweep and sweep["knee"]:
        line = (f"Sweep knee: {fmt(sweep['knee']['rate'])}/s offered at p99 "
                f"{fmt(sweep['knee']['p99_ms'], 1)} ms")
        parts = []
        if c and c.get("knee_vs_p99_bound") is not None:
            d = c["knee_vs_p99_bound"]
            parts.append(f"{pct(abs(d))} {'below' if d < 0 else 'above'} the projection at the bound")
        if c and c.get("knee_vs_for_sweep") is not None:
            d = c["knee_vs_for_sweep"]
            parts.append(f"{pct(abs(d))} {'below' if d < 0 else 'above'} it with the load generator's queue")
        if parts:
            line += ": " + ", ".join(parts)
            if c.get("sweep_step"):
                line += f" (steps of {fmt(c['sweep_step'])}/s: the knee is the last step that passed)"
        head.append(line + ".")
    elif sweep:
        head.append("Sweep knee: none (no step passed the bench's bounds).")
    b.append(("list", head))

    ok = report["handshakes_ok_per_s"]
    served = report["handshakes_served_per_s"]
    b.append(("h2", "Handshakes"))
    rows = []
    for kind, results in report["handshakes_per_s"].items():
        for result, v in results.items():
            rows.append([kind, result, fmt(v, 2)])
    b.append(("table", (["kind", "result", "per s"], rows or [["-", "-", "0"]])))
    b.append(("p", f"Successful: {fmt(ok['total'], 2)}/s ({fmt(ok['full'], 2)} full, "
                   f"{fmt(ok['resumed'], 2)} resumed). Resumption ratio {pct(report['resumption_ratio'])}; "
                   f"not ok {pct(report['not_ok_ratio'])} of ended handshakes. "
                   f"Served (what the projections count: full handshakes that ran, i.e. ok, rejected "
                   f"or failed, plus resumed ones): {fmt(served['total'], 2)}/s, {pct(served['full'] / served['total']) if served['total'] else 'n/a'} full."))
    lat = report["handshake_latency_ms"]
    if lat:
        b.append(("table", (["kind", "p50 ms", "p99 ms"],
                            [[k, fmt(v["p50"], 2), fmt(v["p99"], 2)] for k, v in lat.items()])))
    rejections = {r: v for r, v in report["rejections_per_s"].items() if v > 0}
    b.append(("h3", "Client-certificate rejections"))
    if rejections:
        b.append(("table", (["reason", "per s"], [[r, fmt(v, 2)] for r, v in rejections.items()])))
    else:
        b.append(("p", "None in the window."))

    cpu = report["cpu"]
    b.append(("h2", "CPU"))
    b.append(("table", (["figure", "value"], [
        ["workers", fmt(cpu["workers"])],
        ["cores busy", fmt(cpu["cores_busy"], 3)],
        ["busiest worker", fmt(cpu["busiest_worker"], 3)],
        ["CPU us per successful handshake (blended)", fmt(cpu["us_per_handshake_blended"])],
        ["CPU us per handshake served (blended, rejected and failed included)", fmt(cpu["us_per_served_handshake"])],
        ["CPU us per full handshake", fmt(cpu["us_per_full"])],
        ["CPU us per resumed handshake", fmt(cpu["us_per_resumed"])],
    ] + ([["DPDK busy iterations", pct(cpu["dpdk_busy_iteration_fraction"])]]
         if "dpdk_busy_iteration_fraction" in cpu else []))))
    b.append(("p", f"Full vs resumed split: **{cpu['split']['method']}**: {cpu['split']['detail']}. "
                   "Costs are one core's time (core-us); busy time covers everything the workers do."))
    if "cpu" in images:
        b.append(("img", (images["cpu"], "CPU per handshake by kind")))

    hsm = report.get("hsm")
    b.append(("h2", "HSM"))
    if hsm is None:
        b.append(("p", "No HSM families served (no [hsm] section): the keys are PEM files."))
    else:
        lat = hsm["sign_latency_ms"]
        b.append(("table", (["figure", "value"], [
            ["signatures/s by result", ", ".join(f"{k} {fmt(v, 2)}" for k, v in hsm["signatures_per_s"].items() if v > 0) or "0"],
            ["sign latency p50 / p99 / mean ms", f"{fmt(lat['p50'], 2)} / {fmt(lat['p99'], 2)} / {fmt(lat['mean'], 2)}"],
            ["sessions open", fmt(hsm["sessions_open"])],
            ["in flight / queued", f"{fmt(hsm['in_flight'])} / {fmt(hsm['queued'])}"],
            ["maximum signatures/s", f"{fmt(hsm.get('max_sign_rate'))} ({hsm.get('max_sign_rate_from', 'unknown')})"],
            ["errors/s", ", ".join(f"{k} {fmt(v, 3)}" for k, v in hsm["errors_per_s"].items() if v > 0) or "none"],
        ])))

    conns, mem = report["connections"], report["memory"]
    b.append(("h2", "Connections and memory"))
    b.append(("table", (["figure", "value"], [
        ["active connections (mean over the window)", fmt(conns["active"], 1)],
        ["accepted/s", fmt(conns["accepted_per_s"], 2)],
        ["mean connection lifetime s (active / accepted)", fmt(conns["mean_lifetime_s"], 3)],
        ["connection limit (workers x max_connections)", fmt(conns["limit"])],
        ["buffer bytes in use (mean) / budget", f"{fmt(mem['buffer_bytes_in_use'])} / {fmt(mem['buffer_budget_bytes'])}"],
        ["buffer denials/s", fmt(mem["buffer_denials_per_s"], 2)],
        ["worker resident bytes", fmt(mem["resident_bytes"])],
    ])))

    b.append(("h2", "Headroom and projection"))
    rows = []
    for r in report["resources"]:
        rows.append([r["resource"], f"{fmt(r['used'], 2)} / {fmt(r['capacity'], 2)} {r['unit']}",
                     pct(r["headroom"]),
                     *(fmt(proj[m]["by_resource"].get(r["resource"])) if m in proj else "n/a"
                       for m in ("observed", "requested")), r["note"]])
    mix_head = (f"max handshakes/s at {pct(proj['requested']['full_share'])} full" if "requested" in proj
                else "max handshakes/s (no --mix)")
    b.append(("table", (["resource", "used / capacity", "headroom", "max handshakes/s at observed mix", mix_head,
                         "assumption"], rows)))
    if "headroom" in images:
        b.append(("img", (images["headroom"], "Headroom by resource")))
    b.append(("p", "Each resource's use is assumed to grow in proportion to the handshakes of each kind; "
                   "the first to reach its capacity sets the maximum. Headroom = 1 - used / capacity of "
                   "the resource closest to full."))

    if report["fleet"]:
        f = report["fleet"]
        b.append(("h2", "Fleet sizing"))
        b.append(("p", f"ceil({fmt(f['target_rate'])} / ({fmt(f['per_appliance_rate'] / f['plan_utilisation'])} x "
                       f"{f['plan_utilisation']:g})) + {f['redundancy']} = **{f['appliances']} appliances** "
                       f"(each limited by {f['limited_by']}; --plan-utilisation keeps every appliance "
                       f"under the 'headroom under 20%' alert with the default 0.8)."))

    if sweep:
        b.append(("h2", "Sweep (open loop)"))
        b.append(("table", (["offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
                             "full", "resumed"],
                            [[fmt(s["offered_rate"]), fmt(s["achieved_rate"], 1), fmt(s["p50_ms"], 2),
                              fmt(s["p90_ms"], 2), fmt(s["p99_ms"], 2), fmt(s["max_ms"], 2),
                              str(s["errors"]), str(s.get("full", "")), str(s.get("resumed", ""))]
                             for s in sweep["steps"]])))
        for key, title in (("throughput", "Achieved vs offered rate"), ("latency", "Latency vs offered rate")):
            if key in images:
                b.append(("img", (images[key], title)))
    return b


def render_markdown(bl):
    out = []
    for kind, x in bl:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + x + "\n")
        elif kind == "p":
            out.append(x + "\n")
        elif kind == "list":
            out.extend(f"- {item}" for item in x)
            out.append("")
        elif kind == "table":
            head, rows = x
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + " --- |" * len(head))
            out.extend("| " + " | ".join(r) + " |" for r in rows)
            out.append("")
        elif kind == "img":
            out.append(f"![{x[1]}]({x[0]})\n")
    return "\n".join(out)


def render_html(bl):
    def inline(text):
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))
    out = ["<!doctype html><html><head><meta charset=\"utf-8\"><title>Portcullis capacity report</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}</style></head><body>"]
    for kind, x in bl:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(x)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{inline(x)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in x) + "</ul>")
        elif kind == "table":
            head, rows = x
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                               for r in rows) + "</table>")
        elif kind == "img":
            out.append(f'<p><img src="{html.escape(x[0])}" alt="{html.escape(x[1])}"></p>')
    out.append("</body></html>")
    return "\n".join(out)


def render_text(report):
    o = report["handshakes_ok_per_s"]
    cpu = report["cpu"]
    lines = [f"handshakes ok/s  full {o['full']:.2f}  resumed {o['resumed']:.2f}  "
             f"rejected {sum(v for r, v in report['handshakes_per_s']['full'].items() if r == 'rejected'):.2f}  "
             f"resumption ratio {pct(report['resumption_ratio'])}",
             f"cpu us/handshake full {fmt(cpu['us_per_full'])}  resumed {fmt(cpu['us_per_resumed'])}  "
             f"blended {fmt(cpu['us_per_handshake_blended'])}  ({cpu['split']['method']})"]
    for name, p in report["projection"].items():
        lines.append(f"max handshakes/s at {pct(p['full_share'])} full ({name}): {fmt(p['max_rate'])} "
                     f"limited by {p['limited_by']}")
    if report["headroom"]:
        lines.append(f"headroom {pct(report['headroom']['headroom'])} ({report['headroom']['resource']})")
    if report["fleet"]:
        lines.append(f"fleet: {report['fleet']['appliances']} appliances")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def gnuplot(script, out_png):
    proc = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if proc.returncode != 0 or not out_png.exists():
        raise CapacityError(f"gnuplot failed for {out_png.name}: {proc.stderr.strip()}")


def plots(report, sweep, out):
    if shutil.which("gnuplot") is None:
        raise CapacityError("gnuplot not found (Debian package gnuplot-nox): install it, or pass "
                            "--no-plots for a report without figures")
    images = {}
    # pngcairo draws antialiased text; the plain png terminal is the fallback
    # of a gnuplot built without cairo.
    cairo = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True).returncode == 0
    term = ("set terminal pngcairo size 800,450 noenhanced font 'sans,10'\n" if cairo
            else "set terminal png size 800,450 noenhanced\n")
    if sweep:
        data = out / "sweep.dat"
        data.write_text("# offered achieved p50 p90 p99 max errors\n" + "".join(
            f"{s['offered_rate']} {s['achieved_rate']} {s['p50_ms']} {s['p90_ms']} {s['p99_ms']} "
            f"{s['max_ms']} {s['errors']}\n" for s in sweep["steps"]))
        knee = sweep["knee"]
        mark = (f"set arrow from {knee['rate']}, graph 0 to {knee['rate']}, graph 1 nohead dt 2 lc rgb 'red'\n"
                f"set label 'knee {knee['rate']:g}/s' at {knee['rate']}, graph 0.95 offset 0.5,0 tc rgb 'red'\n"
                if knee else "")
        gnuplot(term + f"set output '{out / 'throughput.png'}'\n" + mark +
                "set title 'Achieved vs offered handshake rate'\nset xlabel 'offered /s'\n"
                "set ylabel 'achieved /s'\nset key left top\nset grid\n"
                f"plot '{data}' using 1:2 with linespoints lw 2 title 'achieved', "
                f"'{data}' using 1:1 with lines dt 3 lc rgb 'gray' title 'offered'\n", out / "throughput.png")
        images["throughput"] = "throughput.png"
        gnuplot(term + f"set output '{out / 'latency.png'}'\n" + mark +
                "set title 'Handshake latency vs offered rate'\nset xlabel 'offered /s'\n"
                "set ylabel 'ms'\nset logscale y\nset key left top\nset grid\n"
                f"plot '{data}' using 1:3 with linespoints title 'p50', "
                f"'{data}' using 1:4 with linespoints title 'p90', "
                f"'{data}' using 1:5 with linespoints lw 2 title 'p99'\n", out / "latency.png")
        images["latency"] = "latency.png"
    cpu = report["cpu"]
    bars = [(label, v) for label, v in (("full", cpu["us_per_full"]), ("resumed", cpu["us_per_resumed"]),
                                          ("blended per ok", cpu["us_per_handshake_blended"])) if v]
    if bars:
        data = out / "cpu.dat"
        data.write_text("".join(f"{i} \"{label}\" {v}\n" for i, (label, v) in enumerate(bars)))
        gnuplot(term + f"set output '{out / 'cpu.png'}'\n"
                f"set title 'Worker CPU per handshake ({cpu['split']['method']})'\n"
                "set ylabel 'core-us'\nset style fill solid 0.6\nset boxwidth 0.6\nset yrange [0:*]\n"
                "set grid ytics\nunset key\n"
                f"plot '{data}' using 1:3:xtic(2) with boxes, '' using 1:3:(sprintf('%.0f',$3)) "
                "with labels offset 0,1\n", out / "cpu.png")
        images["cpu"] = "cpu.png"
    rows = [(r["resource"], r["headroom"]) for r in report["resources"] if r["headroom"] is not None]
    if rows:
        data = out / "headroom.dat"
        data.write_text("".join(f"{i} \"{name}\" {100 * h}\n" for i, (name, h) in enumerate(rows)))
        gnuplot(term + f"set output '{out / 'headroom.png'}'\n"
                "set title 'Headroom by resource (1 - used / capacity)'\nset ylabel '%'\n"
                "set yrange [0:110]\nset style fill solid 0.6\nset boxwidth 0.6\nset grid ytics\nunset key\n"
                "set arrow from graph 0, first 20 to graph 1, first 20 nohead dt 2 lc rgb 'red'\n"
                f"plot '{data}' using 1:3:xtic(2) with boxes, '' using 1:3:(sprintf('%.1f%%',$3)) "
                "with labels offset 0,1\n", out / "headroom.png")
        images["headroom"] = "headroom.png"
    return images


# ---------------------------------------------------------------- main

def parse_mix(text):
    shares = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k not in ("full", "resumed") or not v:
            raise argparse.ArgumentTypeError(f"--mix: full=SHARE[,resumed=SHARE], not {text!r}")
        shares[k] = float(v)
    full = shares["full"] if "full" in shares else 1 - shares["resumed"]
    if not 0 <= full <= 1 or ("resumed" in shares and abs(full + shares["resumed"] - 1) > 1e-9):
        raise argparse.ArgumentTypeError(f"--mix: shares between 0 and 1 that add up to 1, not {text!r}")
    return full


def main(argv=None):
    ap = argparse.ArgumentParser(prog="portcullis-capacity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics-url", help="the admin listener's /metrics")
    src.add_argument("--prometheus", help="a Prometheus server scraping Portcullis")
    src.add_argument("--metrics-file", help="scrapes recorded earlier: JSON list of {time, text}")
    ap.add_argument("--interval", type=float, default=30, help="--metrics-url: seconds between first and last scrape")
    ap.add_argument("--scrapes", type=int, default=2,
                    help="--metrics-url: scrapes over --interval; 4 or more let the CPU split use least squares")
    ap.add_argument("--cacert", help="--metrics-url over https: CA of the admin certificate")
    ap.add_argument("--cert", help="--metrics-url over https: client certificate (role scrape)")
    ap.add_argument("--key", help="--metrics-url over https: its key")
    ap.add_argument("--range", default="10m", help="--prometheus: rate window, e.g. 10m")
    ap.add_argument("--at", type=float, default=0, help="--prometheus: evaluation time (Unix seconds, default now)")
    ap.add_argument("--step", default="", help="--prometheus: sub-interval of the least-squares fit (default range/8)")
    ap.add_argument("--selector", default="", help="--prometheus: label matchers added to every query, e.g. instance=\"a:9443\"")
    ap.add_argument("--hsm-max-sign-rate", type=float, default=0, help="the token's measured signatures/s at most")
    ap.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                    help="workers.max_connections of the appliance (not in the metrics)")
    ap.add_argument("--cpu-ceiling", type=float, default=1.0, help="share of each worker core usable (default 1.0)")
    ap.add_argument("--resumed-cost-ratio", type=float, default=DEFAULT_RESUMED_COST_RATIO,
                    help="resumed / full CPU cost when least squares cannot split them (default 0.55)")
    ap.add_argument("--mix", type=parse_mix, help="project also for this mix, e.g. full=0.3")
    ap.add_argument("--target-rate", type=float, default=0, help="fleet sizing: successful handshakes/s to carry")
    ap.add_argument("--redundancy", type=int, default=1, help="fleet sizing: appliances to add for failures (N+1)")
    ap.add_argument("--plan-utilisation", type=float, default=0.8,
                    help="fleet sizing: the share of each appliance's maximum to plan for (default 0.8)")
    ap.add_argument("--sweep", help="portcullis-bench --sweep JSON to plot and tabulate")
    ap.add_argument("--format", choices=["text", "markdown", "html", "json"], default=None)
    ap.add_argument("--out", help="directory for report.{md,html,json} and the plots")
    ap.add_argument("--no-plots", action="store_true", help="no gnuplot figures")
    args = ap.parse_args(argv)
    fmt_ = args.format or ("markdown" if args.out else "text")
    try:
        sweep = load_sweep(args.sweep) if args.sweep else None
        w, points, source = (from_metrics_url(args) if args.metrics_url else
                             from_metrics_file(args) if args.metrics_file else from_prometheus(args))
        report = analyse(w, points, source, args)
        if sweep:
            report["sweep"] = {"knee": sweep["knee"], "steps": len(sweep["steps"]),
                               "comparison": sweep_comparison(report, sweep)}
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            images = {} if args.no_plots else plots(report, sweep, out)
            (out / "report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
            bl = blocks(report, sweep, images)
            if fmt_ in ("markdown", "text", "json"):
                (out / "report.md").write_text(render_markdown(bl))
                print(out / "report.md")
            if fmt_ == "html":
                (out / "report.html").write_text(render_html(bl))
                print(out / "report.html")
            return 0
        if fmt_ == "json":
            print(json.dumps(jsonable(report), indent=2))
        elif fmt_ == "markdown":
            print(render_markdown(blocks(report, sweep, {})))
        elif fmt_ == "html":
            print(render_html(blocks(report, sweep, {})))
        else:
            print(render_text(report))
        return 0
    except CapacityError as e:
        print(f"portcullis-capacity: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
