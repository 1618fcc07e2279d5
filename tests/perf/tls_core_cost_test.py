#!/usr/bin/env python3
"""portcullis-tls-core-cost in each of its modes, briefly. The tool checks
SSL_session_reused on every handshake itself (a handshake that resumes, or
fails to, against its --mode ends the run non-zero); this test checks on top
what its JSON says: how many handshakes resumed, and through what (tickets
decrypted, session-cache hits), and that every phase was measured. Unless the
build uses sanitizers (valgrind cannot run those), a --callgrind run under
callgrind is summarised by perf/tls_core_profile.py and must have collected
the server's phase functions and next to nothing else.

  tls_core_cost_test.py TOOL SOURCE_ROOT SANITIZE
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

N, WARMUP = 6, 2
failures = []


def check(condition, what):
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        failures.append(what)


def run(tool, work, name, *args, expect=0):
    out = work / f"{name}.json"
    proc = subprocess.run([tool, "--handshakes", str(N), "--warmup", str(WARMUP), "--slots", "2",
                           "--json", str(out), *args], capture_output=True, text=True)
    check(proc.returncode == expect, f"{name}: exit status {proc.returncode} (expected {expect})")
    if proc.returncode != 0:
        if expect == 0:
            print(proc.stdout + proc.stderr)
        return None
    return json.loads(out.read_text())


def phases_measured(name, result):
    us = result["server_cpu_us_per_handshake"]
    check(all(us[p] > 0 for p in ("setup", "handshake", "teardown")),
          f"{name}: every phase measured ({us})")
    check(abs(us["total"] - us["setup"] - us["handshake"] - us["teardown"]) < 1e-6,
          f"{name}: total is the sum of the phases")


def main():
    tool, source, sanitize = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    every = N + WARMUP
    with tempfile.TemporaryDirectory(prefix="portcullis-core-cost-test.") as tmp:
        work = Path(tmp)
        r = run(tool, work, "tls1.3-full", "--mode", "full")
        if r:
            check(r["resumed"] == 0 and r["handshakes"] == N, "tls1.3-full: no handshake resumed")
            phases_measured("tls1.3-full", r)
        r = run(tool, work, "tls1.3-resumed", "--mode", "resumed")
        if r:
            check(r["resumed"] == N, f"tls1.3-resumed: {r['resumed']} of {N} resumed")
            check(r["tickets_decrypted"]["current"] >= every,
                  f"tls1.3-resumed: tickets decrypted with the current key {r['tickets_decrypted']}")
            check(r["session_cache_counters"]["stores"] == 0,
                  f"tls1.3-resumed: stateless tickets are not copied into the session-ID cache "
                  f"({r['session_cache_counters']})")
            phases_measured("tls1.3-resumed", r)
        r = run(tool, work, "tls1.3-read-identity", "--mode", "resumed", "--read-identity")
        if r:
            check(r["read_identity"] and r["resumed"] == N,
                  f"tls1.3-read-identity: {r['resumed']} of {N} resumed, identity read")
        r = run(tool, work, "tls1.2-full", "--mode", "full", "--tls", "1.2")
        if r:
            check(r["resumed"] == 0, "tls1.2-full: no handshake resumed")
        r = run(tool, work, "tls1.2-resumed", "--mode", "resumed", "--tls", "1.2")
        if r:
            check(r["resumed"] == N, f"tls1.2-resumed: {r['resumed']} of {N} resumed")
            # One context made every session, so its own decoded copies answer.
            check(r["worker_session_cache"]["hits"] >= every and
                  r["session_cache_counters"]["hits"] == 0 and
                  sum(r["tickets_decrypted"].values()) == 0,
                  f"tls1.2-resumed: by session ID from the worker's own sessions "
                  f"({r['worker_session_cache']}, shared {r['session_cache_counters']}, "
                  f"tickets {r['tickets_decrypted']})")
            phases_measured("tls1.2-resumed", r)
        r = run(tool, work, "tls1.2-resumed-shared", "--mode", "resumed", "--tls", "1.2",
                "--worker-session-entries", "0")
        if r:
            check(r["resumed"] == N, f"tls1.2-resumed-shared: {r['resumed']} of {N} resumed")
            check(r["session_cache_counters"]["hits"] >= every and
                  r["worker_session_cache"]["hits"] == 0,
                  f"tls1.2-resumed-shared: by session ID through the shared cache "
                  f"({r['session_cache_counters']}, worker {r['worker_session_cache']})")
        r = run(tool, work, "tls1.3-stateful", "--mode", "resumed", "--ticket-mode", "stateful")
        if r:
            check(r["resumed"] == N, f"tls1.3-stateful: {r['resumed']} of {N} resumed")
            check(sum(r["tickets_decrypted"].values()) == 0 and
                  r["session_cache_counters"]["stores"] >= every and
                  r["worker_session_cache"]["hits"] >= every,
                  f"tls1.3-stateful: tickets are session IDs, answered by the worker's copies "
                  f"(tickets {r['tickets_decrypted']}, shared {r['session_cache_counters']}, "
                  f"worker {r['worker_session_cache']})")
        r = run(tool, work, "tls1.2-tickets", "--mode", "resumed", "--tls", "1.2", "--tickets", "on")
        if r:
            check(r["resumed"] == N, f"tls1.2-tickets: {r['resumed']} of {N} resumed")
            # A TLS 1.2 ticket is presented until renewed: each client slot's is
            # decrypted once, and every later visit resumes the worker's copy.
            check(0 < r["tickets_decrypted"]["current"] < every and
                  r["worker_session_cache"]["hits"] >= every - r["tickets_decrypted"]["current"] and
                  r["session_cache_counters"]["hits"] == 0,
                  f"tls1.2-tickets: each ticket decrypted once, then the worker's copy "
                  f"(tickets {r['tickets_decrypted']}, worker {r['worker_session_cache']})")
        r = run(tool, work, "tls1.2-tickets-no-copy", "--mode", "resumed", "--tls", "1.2",
                "--tickets", "on", "--worker-session-entries", "0")
        if r:
            check(r["resumed"] == N, f"tls1.2-tickets-no-copy: {r['resumed']} of {N} resumed")
            check(r["tickets_decrypted"]["current"] >= every,
                  f"tls1.2-tickets-no-copy: by ticket every time ({r['tickets_decrypted']})")
        run(tool, work, "tls1.3-no-tickets", "--mode", "resumed", "--tickets", "off", expect=2)
        run(tool, work, "callgrind-outside-valgrind", "--callgrind", expect=2)

        if sanitize != "none":
            print(f"SKIPPED LOUDLY: the callgrind run (this build uses -fsanitize={sanitize}, "
                  "which valgrind cannot run)")
        elif shutil.which("valgrind") is None:
            check(False, "valgrind is installed (scripts/lib/deps.sh installs it)")
        else:
            name = "tls1.3-resumed"
            results = work / "profile"
            results.mkdir()
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", "--collect-atstart=no",
                 f"--callgrind-out-file={results / (name + '.callgrind.out')}", tool, "--callgrind",
                 "--mode", "resumed", "--handshakes", "3", "--warmup", "1", "--slots", "2",
                 "--json", str(results / f"{name}.json")], capture_output=True, text=True)
            check(proc.returncode == 0, f"callgrind run: exit status {proc.returncode}")
            if proc.returncode == 0:
                summary_file = work / "summary.json"
                proc = subprocess.run(
                    [sys.executable, str(source / "perf" / "tls_core_profile.py"), "--results",
                     str(results), "--json", str(summary_file)], capture_output=True, text=True)
                check(proc.returncode == 0, f"tls_core_profile.py: exit status {proc.returncode}")
                if proc.returncode != 0:
                    print(proc.stdout + proc.stderr)
                else:
                    s = json.loads(summary_file.read_text())["runs"][0]
                    total = s["instructions_per_handshake"]
                    phases = s["phases_per_handshake"]
                    check(all(phases[p] > 0 for p in ("setup", "handshake", "teardown")),
                          f"callgrind: every phase collected ({phases})")
                    check(0 <= s["outside_phases_per_handshake"] < 0.01 * total,
                          f"callgrind: {s['outside_phases_per_handshake']:.0f} of {total:.0f} "
                          "instructions per handshake outside the server's phase functions")
                    check(len(s["top_self"]) > 0 and s["top_self"][0]["self_per_handshake"] > 0,
                          "callgrind: a self-cost table")
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failed check(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
