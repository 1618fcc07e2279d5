#!/usr/bin/env bash
# Per-function callgrind profile of the TLS core's server side: builds
# portcullis-tls-core-cost, runs it under callgrind with collection on only
# around the server's calls of measured handshakes (--callgrind), full and
# resumed, TLS 1.3 and 1.2, and prints instructions per handshake (total and
# per phase), the top functions by self instructions and an inclusive view
# of chosen entry points (perf/tls_core_profile.py). Instruction counts do
# not depend on what else the machine runs, so they compare builds exactly
# where CPU time on a shared machine cannot.
#
#   perf/tls_core_profile.sh [--build DIR] [--out DIR] [--json FILE] [--tls "1.3 1.2"]
#                            [--handshakes N] [--warmup N] [--slots N] [--top N] [-- TOOL ARGS]
#
# TOOL ARGS go to every portcullis-tls-core-cost run (--groups X25519, say).
# --out (default BUILD/tls-core-profile) receives per run NAME (tls1.3-full,
# tls1.3-resumed, tls1.2-full, tls1.2-resumed): NAME.callgrind.out,
# callgrind_annotate's self view (NAME.self.txt, --inclusive=no) and inclusive
# view (NAME.inclusive.txt), the tool's output (NAME.log, NAME.json). The
# summary goes to --json (default perf/results-tls-core-profile.json).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec "$0" "$@" || exit 1
install_dependencies

build=build out="" json=perf/results-tls-core-profile.json tls_versions="1.3 1.2"
handshakes=40 warmup=10 slots=4 top=25
command="perf/tls_core_profile.sh $*"
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --tls) tls_versions=$2; shift 2 ;;
    --handshakes) handshakes=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$build/tls-core-profile}

configure_tree "$build"
meson compile -C "$build" portcullis-tls-core-cost
tool=$build/perf/portcullis-tls-core-cost

mkdir -p "$out"
names=()
for tls in $tls_versions; do
  # A worker's per-thread cache (base/heap_tunables.hpp), added to what the
  # environment says unless it names the count itself.
  tunables=${GLIBC_TUNABLES:-}
  case "$tunables" in
    *glibc.malloc.tcache_count=*) ;;
    "") tunables=glibc.malloc.tcache_count=256 ;;
    *) tunables="$tunables:glibc.malloc.tcache_count=256" ;;
  esac
  for mode in full resumed; do
    name=tls$tls-$mode
    echo "== $name: $handshakes measured handshakes under callgrind (after $warmup warm-up)"
    rm -f "$out/$name".*
    # Collection starts off: the tool switches it on around the server's calls.
    # Valgrind cannot follow the tool's re-exec with a worker's glibc tunables
    # (base/heap_tunables.hpp), so they are given here.
    if ! GLIBC_TUNABLES="$tunables" valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$out/$name.callgrind.out" \
        "$tool" --callgrind --mode "$mode" --tls "$tls" --handshakes "$handshakes" \
        --warmup "$warmup" --slots "$slots" --json "$out/$name.json" "${extra[@]}" \
        >"$out/$name.log" 2>&1; then
      echo "FAILED: $name (last lines of $out/$name.log below)" >&2
      tail -n 20 "$out/$name.log" >&2
      exit 1
    fi
    callgrind_annotate --inclusive=no "$out/$name.callgrind.out" >"$out/$name.self.txt"
    callgrind_annotate --inclusive=yes "$out/$name.callgrind.out" >"$out/$name.inclusive.txt"
    names+=("$name")
  done
done

python3 perf/tls_core_profile.py --results "$out" --runs "${names[*]}" --top "$top" \
  --json "$json" --command "$command"
echo "callgrind output and annotations in $out"
