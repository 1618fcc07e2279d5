#!/usr/bin/env python3
"""The TLS core's server CPU per handshake with each allocator Debian ships:
glibc's malloc, jemalloc (libjemalloc2) and mimalloc (libmimalloc3), put in
front of glibc's with LD_PRELOAD, so the binary and OpenSSL are the same in
every run. Runs portcullis-tls-core-cost (no sockets) for each case, the
allocators interleaved within each round, and reports the median of the
rounds' total server CPU µs per handshake (setup + handshake + teardown) and
each allocator's ratio to glibc. With --callgrind it also counts the server's
instructions per handshake with each allocator (deterministic, so one run).

  perf/allocators.py --build build [--rounds 5] [--handshakes 300]
                     [--cases tls1.3-full,tls1.3-resumed,tls1.2-full,tls1.2-resumed]
                     [--callgrind] [--json FILE]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
ALLOCATORS = {
    "glibc": None,
    "jemalloc": LIBDIR / "libjemalloc.so.2",
    "mimalloc": LIBDIR / "libmimalloc.so.3",
}
CASES = {
    "tls1.3-full": ["--tls", "1.3", "--mode", "full"],
    "tls1.3-resumed": ["--tls", "1.3", "--mode", "resumed"],
    "tls1.2-full": ["--tls", "1.2", "--mode", "full"],
    "tls1.2-resumed": ["--tls", "1.2", "--mode", "resumed"],
}


# What base/heap_tunables.hpp gives a worker. The tool re-executes itself
# with it, except under valgrind, which cannot follow the exec.
WORKER_TUNABLES = "glibc.malloc.tcache_count=256"


def environment(allocator):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count=" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{WORKER_TUNABLES}" if tunables else WORKER_TUNABLES
    if ALLOCATORS[allocator] is not None:
        env["LD_PRELOAD"] = str(ALLOCATORS[allocator])
    return env


def run_tool(tool, allocator, case, handshakes, extra, wrapper=()):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = list(wrapper) + [str(tool)] + CASES[case] + ["--handshakes", str(handshakes), "--json", out.name] + extra
        done = subprocess.run(argv, env=environment(allocator), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{allocator} {case}: {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        return json.loads(Path(out.name).read_text()), done


def callgrind_instructions(tool, allocator, case):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        handshakes = 40
        run_tool(tool, allocator, case, handshakes, ["--callgrind", "--warmup", "10", "--slots", "4"],
                 wrapper=("valgrind", "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={out}"))
        summary = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if not summary:
            sys.exit(f"{allocator} {case}: no total in callgrind's output")
        return int(summary.group(1)) / handshakes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--allocators", default=",".join(ALLOCATORS))
    ap.add_argument("--callgrind", action="store_true", help="also count instructions per handshake under callgrind")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    tool = Path(args.build).resolve() / "perf" / "portcullis-tls-core-cost"
    if not tool.exists():
        sys.exit(f"{tool} missing: meson compile -C {args.build} portcullis-tls-core-cost")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"--cases: unknown case {c!r} ({', '.join(CASES)})")
    for a in allocators:
        if a not in ALLOCATORS:
            sys.exit(f"--allocators: unknown allocator {a!r} ({', '.join(ALLOCATORS)})")
        if ALLOCATORS[a] is not None and not ALLOCATORS[a].exists():
            sys.exit(f"{a}: {ALLOCATORS[a]} is not installed (scripts/lib/deps.sh installs it)")

    runs = []
    for r in range(args.rounds):
        # The order turns each round, so no allocator always runs first.
        order = allocators[r % len(allocators):] + allocators[:r % len(allocators)]
        for case in cases:
            for allocator in order:
                result, _ = run_tool(tool, allocator, case, args.handshakes, [])
                us = result["server_cpu_us_per_handshake"]["total"]
                runs.append({"round": r + 1, "case": case, "allocator": allocator, "server_cpu_us": us})
                print(f"   round {r + 1} {case:15} {allocator:9} {us:8.1f} µs/handshake", flush=True)

    medians = {c: {a: statistics.median(x["server_cpu_us"] for x in runs if x["case"] == c and x["allocator"] == a)
                   for a in allocators} for c in cases}
    instructions = {}
    if args.callgrind:
        for case in cases:
            instructions[case] = {a: callgrind_instructions(tool, a, case) for a in allocators}

    head = ["case"] + [f"{a} µs" for a in allocators] + [f"{a}/glibc" for a in allocators if a != "glibc"]
    if instructions:
        head += [f"{a} M instr" for a in allocators]
    print()
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    for case in cases:
        m = medians[case]
        row = [case] + [f"{m[a]:.1f}" for a in allocators]
        row += [f"{m[a] / m['glibc']:.3f}" if "glibc" in m else "—" for a in allocators if a != "glibc"]
        if instructions:
            row += [f"{instructions[case][a] / 1e6:.3f}" for a in allocators]
        print("| " + " | ".join(row) + " |")
    print(f"\nServer CPU per handshake of portcullis-tls-core-cost (thread CPU clock), median of {args.rounds} "
          f"interleaved rounds of {args.handshakes} handshakes" +
          ("; instructions: callgrind, server side only, 40 handshakes" if instructions else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "medians": medians, "instructions": instructions,
                                               "settings": vars(args)}, indent=1) + "\n")
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
