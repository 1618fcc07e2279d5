#!/usr/bin/env python3
"""Every metric name docs/prometheus/*.rules.yml and docs/grafana-dashboard.json
read is one a running Portcullis serves. A renamed family otherwise leaves an
alert that can never fire and a panel that stays empty, and promtool's unit
tests cannot tell: they feed the rules the names the rules expect.

The daemon (tests/prometheus/portcullis_fixture.py) runs with an HSM key, a
crl_urls source and two workers, and takes a few handshakes, so that the
families that exist only with those are served. A name counts as served when
it is a sample name of the scrape, or a histogram family's name plus _bucket,
_sum or _count. Names with a colon are recording-rule outputs; each must be
recorded by recording.rules.yml.

  metric_names_test.py BUILD_DIR SOURCE_ROOT
"""
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from portcullis_fixture import SKIP, Deployment, Skip  # noqa: E402

IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def names_in_expr(expr):
    """Metric names a PromQL expression reads: identifiers outside strings,
    label matchers and by/without/on/ignoring lists that are not followed by
    '(' (functions, aggregations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set()
    for m in IDENT.finditer(expr):
        rest = expr[m.end():].lstrip()
        word = m.group(0)
        if rest.startswith("("):
            continue
        if word.startswith("portcullis_") or ":" in word:
            names.add(word)
    return names


def rule_exprs(path):
    """(record or alert name, expr) of a rules file, read without a YAML
    library: every rule's expr is a one-line value or a '|' block."""
    out = []
    lines = Path(path).read_text().splitlines()
    i = 0
    current = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-\s*(record|alert):\s*(\S+)", line)
        if m:
            current = (m.group(1), m.group(2))
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2)
            if value.startswith("|") or value == "":
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i])
                    i += 1
                value = "\n".join(block)
                out.append((current, value))
                continue
            # a plain scalar may continue on more-indented lines
            i += 1
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent \
                    and not re.match(r"\s*(labels|annotations|for|record|alert|- )", lines[i]):
                value += " " + lines[i].strip()
                i += 1
            out.append((current, value))
            continue
        i += 1
    return out


def dashboard_exprs(path):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((("panel", p.get("title")), t["expr"]))
            walk(p.get("panels", []))
    walk(json.loads(Path(path).read_text())["panels"])
    return out


def served_names(metrics_text):
    samples, histograms = set(), set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            samples.add(name)
            if kind.strip() in ("histogram", "summary"):
                histograms.add(name)
        elif line and not line.startswith("#"):
            samples.add(IDENT.match(line).group(0))
    for h in histograms:
        samples |= {h + "_bucket", h + "_sum", h + "_count"}
    return samples


def main():
    build, source = sys.argv[1], Path(sys.argv[2])
    prom = source / "docs" / "prometheus"
    used = []
    for f in ("recording.rules.yml", "alerts.rules.yml"):
        used += [(f, who, expr) for who, expr in rule_exprs(prom / f)]
    used += [("grafana-dashboard.json", who, expr) for who, expr in dashboard_exprs(source / "docs" / "grafana-dashboard.json")]
    recorded = {who[1] for f, who, _ in used if who and who[0] == "record"}
    if len(used) < 30 or len(recorded) < 5:
        print(f"FAIL: read only {len(used)} expressions ({len(recorded)} recording rules): the parser is broken")
        return 1

    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-metric-names.") as tmp:
            with Deployment(build, source, tmp) as d:
                # Full and resumed handshakes, and a refused client, so that
                # the labelled series of each family exist.
                d.bench("--mode", "full", "--conns", "2", "--handshakes", "20")
                d.bench("--mode", "resume", "--conns", "2", "--handshakes", "20")
                d.bench("--mode", "full", "--conns", "1", "--handshakes", "3", client="partner-revoked")
                served = served_names(d.scrape())
    except Skip as e:
        print(f"SKIP: {e}; metric names of the rules and dashboard NOT checked")
        return SKIP

    failures = 0
    checked = set()
    for where, who, expr in used:
        for name in sorted(names_in_expr(expr)):
            checked.add(name)
            if ":" in name:
                ok = name in recorded
                why = "is not recorded by recording.rules.yml"
            else:
                ok = name in served
                why = "is not served by a running portcullis"
            if not ok:
                failures += 1
                print(f"FAIL  {where} {who[0]} {who[1]!r}: {name} {why}")
    print(f"{len(checked)} names checked in {len(used)} expressions against {len(served)} served names")
    if failures:
        return 1
    print("ok    every name is served or recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
