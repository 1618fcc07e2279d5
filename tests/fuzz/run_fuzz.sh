#!/usr/bin/env bash
# Builds the packet-input fuzz target with clang's libFuzzer (+ASan/UBSan)
# and runs it for a bounded time. Exit 77 (meson: skipped) without clang.
#   tests/fuzz/run_fuzz.sh SOURCE_ROOT WORK_DIR SECONDS
set -euo pipefail
src=$1 work=$2 seconds=$3
compiler=$(command -v clang++-14 || command -v clang++ || true)
if [ -z "$compiler" ]; then
  echo "SKIPPED LOUDLY: clang++ not installed (scripts/lib/deps.sh installs clang-14)"
  exit 77
fi
mkdir -p "$work/corpus"
if ! "$compiler" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$src" "$src/tests/fuzz/frame_fuzz.cpp" "$src/dataplane/net/frame.cpp" \
    "$src/dataplane/tcp/tcp_connection.cpp" -o "$work/frame_fuzz" 2>"$work/build.log"; then
  if grep -q "fuzzer" "$work/build.log" && grep -qi "cannot find\|no such file" "$work/build.log"; then
    echo "SKIPPED LOUDLY: libFuzzer runtime missing (libclang-rt-14-dev)"; cat "$work/build.log"
    exit 77
  fi
  cat "$work/build.log"; exit 1
fi
"$work/frame_fuzz" -max_total_time="$seconds" -print_final_stats=1 "$work/corpus" 2>&1 | tail -15
