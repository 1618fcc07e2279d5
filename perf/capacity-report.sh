#!/usr/bin/env bash
# One command to a capacity report of this machine: builds the daemon,
# portcullis-bench and the test backend, starts Portcullis as perf/compare.sh
# does (the benchmark listener of perf/perf_common.py), runs an open-loop
# sweep of portcullis-bench while /metrics is scraped every second, then
# portcullis-capacity writes report.md (or .html), its gnuplot figures and
# report.json into a directory, whose report path is the last line printed.
# Runs on Debian 13, in the project's Debian 13 root elsewhere.
#   perf/capacity-report.sh [--out DIR] [--sweep 50:1000:50] [--step-duration 5]
#       [--resume-fraction 0.5] [--workers 1] [--calibrate 5]
#       [--mix full=0.3] [--target-rate 50000] [--redundancy 1] [--hsm-max-sign-rate N]
#       [--format markdown|html]          (perf/capacity_report.py --help, portcullis-capacity --help)
# Fails, making no report, while portcullis-bench has no --sweep (the
# open-loop load of issue #18 comes with its own branch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec perf/capacity-report.sh "$@" || exit 1
case "${1:-}" in -h|--help) sed -n '2,15p' "$0"; exit 0 ;; esac

install_dependencies
configure_tree build >/dev/null
# portcullis-capacity is a configure_file: configure_tree made it.
ninja -C build mgmt/portcullis perf/portcullis-bench \
  tests/support/portcullis-test-backend >/dev/null
# Read whole first: grep -q leaving early would make the pipe fail (pipefail).
bench_help=$(build/perf/portcullis-bench --help 2>&1 || true)
if ! grep -q -- '--sweep' <<<"$bench_help"; then
  echo "perf/capacity-report.sh: build/perf/portcullis-bench has no --sweep (open-loop load, issue #18)." >&2
  echo "Merge the open-loop branch first; no report made." >&2
  exit 1
fi
exec python3 perf/capacity_report.py --build build "$@"
