#!/usr/bin/env python3
"""Per-function profile of the TLS core's server side from callgrind output
files written by perf/tls_core_profile.sh (portcullis-tls-core-cost
--callgrind under valgrind --tool=callgrind --collect-atstart=no).

  python3 perf/tls_core_profile.py --results DIR --json FILE [--top 25]

DIR holds, per run NAME (tls1.3-full, ...), NAME.callgrind.out and NAME.json
(the tool's own result: how many handshakes were measured). Prints, per run,
the instructions per handshake (total and per phase), the top functions by
self instructions and an inclusive view of chosen entry points, as Markdown;
writes the same as JSON.

Functions are keyed by object and name; the file callgrind attributes a
piece of code to (inlined headers) and recursion levels ('2) are merged, so
a function's self cost is all its own. Debian's libssl and libcrypto carry
only their exported symbols: the rest shows as object+offset, labelled with
the named functions its cost is reached from (its self cost split up the
call graph in proportion to the callers' call costs).
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# The bench's phase functions (perf/tls_core_cost.cpp): their inclusive cost
# is each phase's instruction count.
PHASES = {
    "setup": ["server_setup"],
    "handshake": ["server_receive", "server_handshake", "server_first_read",
                  "server_read_identity"],
    "teardown": ["server_teardown"],
}

# Entry points worth an inclusive figure: what the levers touch.
INTERESTING = [
    ("SSL_do_handshake", r"SSL_do_handshake"),
    ("SSL_new (TlsConnection setup)", r"SSL_new"),
    ("SSL_free", r"SSL_free"),
    ("SSL_shutdown", r"SSL_shutdown"),
    ("d2i_SSL_SESSION_ex", r"d2i_SSL_SESSION_ex"),
    ("i2d_SSL_SESSION", r"i2d_SSL_SESSION"),
    ("SSL_SESSION_dup", r"SSL_SESSION_dup"),
    ("X509_verify_cert", r"X509_verify_cert"),
    ("X509_verify (certificate signatures)", r"X509_verify"),
    ("X509_CRL_verify (CRL signature)", r"X509_CRL_verify"),
    ("X509_CRL_get0_by_cert", r"X509_CRL_get0_by_cert"),
    ("ECDSA_do_verify", r"ECDSA_do_verify"),
    ("ECDSA_do_sign_ex (server signature)", r"ECDSA_do_sign_ex"),
    ("EVP_DigestSign", r"EVP_DigestSign"),
    ("EVP_DigestSignFinal", r"EVP_DigestSignFinal"),
    ("EVP_DigestVerify", r"EVP_DigestVerify"),
    ("EVP_DigestVerifyFinal", r"EVP_DigestVerifyFinal"),
    ("d2i_X509", r"d2i_X509"),
    ("d2i_X509_AUX", r"d2i_X509_AUX"),
    ("ASN1_item_d2i", r"ASN1_item_d2i"),
    ("X509_PUBKEY_get0", r"X509_PUBKEY_get0"),
    ("d2i_PUBKEY", r"d2i_PUBKEY"),
    ("OSSL_DECODER_from_data", r"OSSL_DECODER_from_data"),
    ("OSSL_DECODER_CTX_new_for_pkey", r"OSSL_DECODER_CTX_new_for_pkey"),
    ("EVP_PKEY_derive", r"EVP_PKEY_derive"),
    ("EVP_PKEY_encapsulate", r"EVP_PKEY_encapsulate"),
    ("EVP_PKEY_keygen", r"EVP_PKEY_keygen"),
    ("EVP_EncryptInit_ex (ticket encrypt)", r"EVP_EncryptInit_ex"),
    ("EVP_DecryptInit_ex (ticket decrypt)", r"EVP_DecryptInit_ex"),
    ("ticket_key_callback", r"ticket_key_callback\("),
    ("check_ticket_session", r"check_ticket_session\("),
    ("session_still_trusted", r"session_still_trusted\("),
    ("store_new_session (shared session cache store)", r"store_new_session\("),
    ("store_new_session_locally (worker's own sessions)", r"store_new_session_locally\("),
    ("get_trusted_cached_session", r"get_trusted_cached_session\("),
    ("verify_client_certificate", r"verify_client_certificate\("),
    ("TlsConnection::capture_identity", r"TlsConnection::capture_identity\("),
    ("server_read_identity (--read-identity: access log, PROXY v2)", r"server_read_identity\("),
    ("subject_rfc2253 (identity DN strings)", r"subject_rfc2253"),
    ("X509_digest (fingerprints, cache keys)", r"X509_digest"),
    ("CRYPTO_malloc", r"CRYPTO_malloc"),
    ("CRYPTO_free", r"CRYPTO_free"),
]

# Named in the brief but internal to libssl: Debian's library does not export
# them, so callgrind cannot see them by name.
HIDDEN = [
    "ssl_generate_session_id", "tls_construct_new_session_ticket", "tls_decrypt_ticket",
    "ssl_session_dup", "check_crl",
]

NAME_REF = re.compile(r"^\((\d+)\)(?: (.*))?$")
RECURSION = re.compile(r"'\d+$")
ADDRESS = re.compile(r"^0x[0-9a-f]+$")
HEADER = re.compile(r"^(\w+):\s*(.*)$")


class Profile:
    """Self costs, call edges and totals of one callgrind output file (Ir only)."""

    def __init__(self, path):
        self.self_cost = defaultdict(int)  # (object, function) -> Ir
        self.edges = defaultdict(int)  # (caller, callee) -> Ir of the calls
        self.totals = None
        tables = {"ob": {}, "fl": {}, "fn": {}}
        kind_table = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl",
                      "cfi": "fl", "cfl": "fl", "fn": "fn", "cfn": "fn"}
        ob = fn = None
        cob = cfn = None
        pending_call = False
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.rstrip("\n")
                if not line or line.startswith("#"):
                    continue
                head = line[0]
                if head.isdigit() or head in "+-*":
                    cost = line.split()
                    ir = int(cost[1]) if len(cost) > 1 else 0
                    if pending_call:
                        callee = (cob if cob is not None else ob, cfn)
                        self.edges[(fn, callee)] += ir
                        pending_call = False
                        cob = None
                    else:
                        self.self_cost[fn] += ir
                    continue
                header = HEADER.match(line)
                if header:
                    if header.group(1) in ("totals", "summary") and self.totals is None:
                        self.totals = int(header.group(2).split()[0])
                    continue
                key, _, value = line.partition("=")
                if key in kind_table:
                    name = self._name(tables[kind_table[key]], value)
                    if key == "ob":
                        ob = name
                    elif key == "cob":
                        cob = name
                    elif key == "fn":
                        fn = (ob, self._function(name))
                    elif key == "cfn":
                        cfn = self._function(name)
                elif key == "calls":
                    pending_call = True
        self.total_self = sum(self.self_cost.values())
        if self.totals is None:
            self.totals = self.total_self
        # Merged recursion levels call themselves: such edges are not cost
        # beyond the function's own.
        self.edges = {e: c for e, c in self.edges.items() if e[0] != e[1]}
        self.callers = defaultdict(list)
        self.inclusive = defaultdict(int)
        for function, cost in self.self_cost.items():
            self.inclusive[function] += cost
        for (caller, callee), cost in self.edges.items():
            self.callers[callee].append((caller, cost))
            self.inclusive[caller] += cost

    @staticmethod
    def _name(table, value):
        m = NAME_REF.match(value)
        if not m:
            return value
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), value)

    @staticmethod
    def _function(name):
        return RECURSION.sub("", name)

    def find(self, pattern):
        """Functions whose name matches (search) the regex, most inclusive first."""
        rx = re.compile(r"(^|::|\s)" + pattern)
        found = [f for f in self.inclusive if f[1] and rx.search(f[1])]
        return sorted(found, key=lambda f: -self.inclusive[f])

    def reached_from(self, function, limit=3):
        """Named ancestors sharing `function`'s cost, as [(name, fraction)]."""
        memo = {}

        def spread(node, active):
            # Callers on a cycle back to `node`, and callers reached from
            # nothing named, drop out; the rest share the cost by call cost.
            if node in memo:
                return memo[node]
            parts, weight_sum = [], 0
            for caller, weight in self.callers.get(node, []):
                if weight <= 0 or caller in active:
                    continue
                shares = {caller: 1.0} if not unnamed(caller) else spread(caller, active | {node})
                if shares:
                    parts.append((weight, shares))
                    weight_sum += weight
            out = defaultdict(float)
            for weight, shares in parts:
                for named, fraction in shares.items():
                    out[named] += weight / weight_sum * fraction
            memo[node] = dict(out)
            return memo[node]

        shares = sorted(spread(function, frozenset()).items(), key=lambda kv: -kv[1])
        return [(display_name(f), share) for f, share in shares[:limit]]


def unnamed(function):
    return function[1] is None or ADDRESS.match(function[1]) is not None


def short_object(ob):
    return Path(ob).name if ob else "?"


def display_name(function):
    ob, name = function
    if unnamed(function):
        return f"{short_object(ob).split('.so')[0]}+{int(name, 16):#x}"
    return simplify(name)


def simplify(name):
    """C++ names without their argument lists: the tables stay readable."""
    name = name.replace("(anonymous namespace)::", "")
    depth = 0
    for i, ch in enumerate(name):
        if ch in "<[":
            depth += 1
        elif ch in ">]":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            return name[:i]
    return name


def summarise(name, profile, handshakes, top):
    per = lambda ir: ir / handshakes
    phases = {}
    for phase, functions in PHASES.items():
        cost = 0
        for fn in functions:
            matches = profile.find(rf"{fn}\(")
            cost += sum(profile.inclusive[f] for f in matches)
        phases[phase] = per(cost)
    phase_sum = sum(phases.values())
    total = per(profile.totals)
    rows = []
    for function, cost in sorted(profile.self_cost.items(), key=lambda kv: -kv[1])[:top]:
        row = {"function": display_name(function), "object": short_object(function[0]),
               "self_per_handshake": per(cost), "percent": 100.0 * cost / profile.totals}
        if unnamed(function):
            row["reached_from"] = [{"function": f, "share": round(s, 3)}
                                   for f, s in profile.reached_from(function)]
        rows.append(row)
    inclusive = []
    for label, pattern in INTERESTING:
        matches = profile.find(pattern if pattern.endswith(r"\(") else pattern + r"($|\()")
        if not matches:
            continue
        cost = profile.inclusive[matches[0]]
        inclusive.append({"entry": label, "function": display_name(matches[0]),
                          "inclusive_per_handshake": per(cost),
                          "percent": 100.0 * cost / profile.totals})
    return {
        "run": name,
        "handshakes": handshakes,
        "instructions_per_handshake": total,
        "phases_per_handshake": phases,
        "outside_phases_per_handshake": total - phase_sum,
        "top_self": rows,
        "inclusive": inclusive,
        "not_visible": HIDDEN,
    }


def millions(x):
    return f"{x / 1e6:.3f} M" if x >= 1e5 else f"{x / 1e3:.1f} K"


def print_markdown(summary, result):
    print(f"### {summary['run']}: {millions(summary['instructions_per_handshake'])} "
          f"instructions per handshake (server side, {summary['handshakes']} handshakes, "
          f"{result.get('cipher', '?')}, {result.get('group', '?')})\n")
    print("| phase | instructions per handshake |\n| --- | ---: |")
    for phase, cost in summary["phases_per_handshake"].items():
        print(f"| {phase} | {millions(cost)} |")
    print(f"| (bench code between the phases) | {summary['outside_phases_per_handshake']:.0f} |\n")
    print("| # | function (self) | instructions per handshake | % |\n| ---: | --- | ---: | ---: |")
    for i, row in enumerate(summary["top_self"], 1):
        label = row["function"]
        if row.get("reached_from"):
            label += " (no symbol; reached from " + ", ".join(
                f"{r['function']} {100 * r['share']:.0f}%" for r in row["reached_from"]) + ")"
        print(f"| {i} | {label} | {millions(row['self_per_handshake'])} | {row['percent']:.2f} |")
    print("\n| entry (inclusive) | instructions per handshake | % |\n| --- | ---: | ---: |")
    for row in summary["inclusive"]:
        print(f"| {row['entry']} | {millions(row['inclusive_per_handshake'])} | {row['percent']:.1f} |")
    print()


def machine():
    """Where and with what the profile was taken."""
    def output(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                   if "=" in line)
    return {
        "date": datetime.date.today().isoformat(),
        "os": release.get("PRETTY_NAME", "?").strip('"'),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "openssl": output("openssl", "version"),
        "valgrind": output("valgrind", "--version"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="directory written by tls_core_profile.sh")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--runs", default="", help="run names, in order (default: every run in DIR)")
    ap.add_argument("--command", default="", help="the command that made DIR, for the record")
    args = ap.parse_args()
    results = Path(args.results)
    names = args.runs.split() or sorted(p.name[:-len(".callgrind.out")]
                                        for p in results.glob("*.callgrind.out"))
    out = machine()
    out["command"] = args.command.strip()
    out["runs"] = []
    for name in names:
        result = json.loads((results / f"{name}.json").read_text())
        if not result.get("callgrind"):
            sys.exit(f"{name}: the run was not made with --callgrind")
        profile = Profile(results / f"{name}.callgrind.out")
        if profile.total_self != profile.totals:
            sys.exit(f"{name}: self costs add up to {profile.total_self}, "
                     f"callgrind's totals say {profile.totals}")
        summary = summarise(name, profile, result["handshakes"], args.top)
        summary["settings"] = {k: result[k] for k in
                               ("mode", "tls", "group", "cipher", "crl", "client_tickets", "session_cache",
                                "warmup", "slots", "resumed") if k in result}
        print_markdown(summary, result)
        out["runs"].append(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
