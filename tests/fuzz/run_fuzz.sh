#!/usr/bin/env bash
# Builds one libFuzzer target with clang (+ASan/UBSan) from the sources it
# names and runs it for a bounded time, seeded with a copy of its committed
# corpus. Exit 77 (meson: skipped) only when clang or libFuzzer is missing,
# always with a message saying so.
#   tests/fuzz/run_fuzz.sh SOURCE_ROOT WORK_DIR SECONDS TARGET [--pkg PACKAGE]... [SOURCE]...
# TARGET's own file is tests/fuzz/TARGET.cpp; SOURCEs are further product or
# test-support files relative to SOURCE_ROOT; each --pkg adds a pkg-config
# package's flags. Committed seeds: tests/fuzz/corpus/TARGET/ (only read);
# tests/fuzz/TARGET.dict, if present, is the target's libFuzzer dictionary.
# WORK_DIR keeps the corpus the runs grow, crash-* inputs and build.log.
# From the environment: FUZZ_SECONDS replaces SECONDS (a longer run by hand),
# FUZZ_ARGS adds libFuzzer options (e.g. -max_len=20000).
set -euo pipefail
src=$1 work=$2 seconds=${FUZZ_SECONDS:-$3} target=$4
shift 4
packages=() sources=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--pkg" ]; then
    packages+=("$2")
    shift 2
  else
    sources+=("$src/$1")
    shift
  fi
done

compiler=$(command -v clang++ || command -v clang++-19 || true)
if [ -z "$compiler" ]; then
  echo "SKIPPED LOUDLY: $target not run: clang++ is not installed (scripts/lib/deps.sh installs clang and libclang-rt-dev)"
  exit 77
fi

mkdir -p "$work/corpus"
flags=()
if [ ${#packages[@]} -gt 0 ]; then
  read -r -a flags <<<"$(pkg-config --cflags --libs "${packages[@]}")"
fi
if ! "$compiler" -std=c++20 -O1 -g -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$src" "$src/tests/fuzz/$target.cpp" "${sources[@]}" "${flags[@]}" \
    -o "$work/$target" 2>"$work/build.log"; then
  if grep -q "fuzzer" "$work/build.log" && grep -qi "cannot find\|no such file" "$work/build.log"; then
    echo "SKIPPED LOUDLY: $target not run: the libFuzzer runtime is missing (libclang-rt-dev)"
    cat "$work/build.log"
    exit 77
  fi
  cat "$work/build.log"
  exit 1
fi

# A copy, so the committed seeds never change under a test run; what the run
# adds stays in WORK_DIR for the next one.
if [ -d "$src/tests/fuzz/corpus/$target" ]; then
  cp -R "$src/tests/fuzz/corpus/$target/." "$work/corpus/"
fi
# Targets that write files (config_fuzz) do so under TMPDIR, cleared each run.
rm -rf "$work/tmp"
mkdir -p "$work/tmp"
read -r -a extra <<<"${FUZZ_ARGS:-}"
if [ -f "$src/tests/fuzz/$target.dict" ]; then extra+=("-dict=$src/tests/fuzz/$target.dict"); fi
status=0
TMPDIR="$work/tmp" "$work/$target" -max_total_time="$seconds" -print_final_stats=1 \
  -timeout=10 -artifact_prefix="$work/" "${extra[@]}" "$work/corpus" >"$work/fuzz.log" 2>&1 ||
  status=$?
# libFuzzer exits 77 on a finding, which meson would count as skipped: any
# failure is 1.
if [ $status -ne 0 ]; then
  tail -n 80 "$work/fuzz.log"
  echo "FAILED: $target exited $status; the input is $work/crash-* (or timeout-*/oom-*);"
  echo "add it to tests/fuzz/corpus/$target/ once the bug is fixed"
  exit 1
fi
# Coverage (the last status line) and -print_final_stats.
grep -E '^#[0-9]+' "$work/fuzz.log" | tail -n 1
grep -E '^(Done |stat::)' "$work/fuzz.log"
