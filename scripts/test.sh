#!/usr/bin/env bash
# Installs what the tests need, builds, runs the whole suite twice (a normal
# build and an address+undefined sanitizer build), then the tests that cross
# threads under ThreadSanitizer, and ends with one line:
# "N passed, N failed[, N skipped]" counting every test case of all runs.
#   scripts/test.sh [--no-sanitize] [extra meson test args...]
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec "$0" "$@" || { echo "0 passed, 1 failed"; exit 1; }

sanitize=1
if [ "${1:-}" = "--no-sanitize" ]; then sanitize=0; shift; fi

install_dependencies || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

# Real-client tests use axios from the npm registry; without it they skip loudly.
if [ -f tests/clients/package-lock.json ] && command -v npm >/dev/null; then
  (cd tests/clients && npm ci --no-audit --no-fund --silent) || echo "WARNING: npm ci failed; axios tests will skip"
fi

logs=()
status=0
failed_programs=0
run_suite() {
  local dir=$1; shift
  if ! build_tree "$dir" "$@"; then
    echo "BUILD FAILED in $dir"
    status=1
    failed_programs=$((failed_programs + 1))  # counted, so the last line cannot say 0 failed
    return
  fi
  if ! meson test -C "$dir" --print-errorlogs --num-processes 2 "${extra_args[@]}"; then
    status=1
    failed_programs=$((failed_programs + 1))
  fi
  [ -f "$dir/meson-logs/testlog.junit.xml" ] && logs+=("$dir/meson-logs/testlog.junit.xml")
}

extra_args=("$@")
run_suite build
if [ $sanitize -eq 1 ]; then
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_suite build-sanitize -Db_sanitize=address,undefined -Db_lundef=false
fi

# ThreadSanitizer over what crosses threads: the signing service and the
# paused handshake against SoftHSM (hsm_signing), hsm_unit, the worker's
# Connection and Reactor (dataplane_core_unit), the supervisor's control
# block against racing readers (mgmt_unit), and every integration suite: the
# daemon's forked workers run HSM session threads, a reload thread and DPDK's
# EAL threads, the admin process cpp-httplib's. A TSan report in any process a
# test started fails that test (tests/integration/harness.cpp), halt_on_error
# stops the process at the first one. Only what those tests need is built
# (scripts/meson_tests.py reads it from meson). The unit tests left out run
# one thread per process. tests/tsan.supp holds third-party races only.
tsan_selection=(hsm_unit hsm_signing dataplane_core_unit mgmt_unit suite:integration)
run_tsan_suite() {
  local dir=build-tsan names=() targets=()
  if configure_tree "$dir" -Db_sanitize=thread -Db_lundef=false; then
    mapfile -t names < <(python3 scripts/meson_tests.py "$dir" --names "${tsan_selection[@]}")
    mapfile -t targets < <(python3 scripts/meson_tests.py "$dir" --targets "${tsan_selection[@]}")
  fi
  if [ ${#names[@]} -eq 0 ] || [ ${#targets[@]} -eq 0 ] || ! ninja -C "$dir" "${targets[@]}"; then
    echo "BUILD FAILED in $dir"
    status=1
    failed_programs=$((failed_programs + 1))
    return
  fi
  if ! TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
      meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 2 "${extra_args[@]}" \
      "${names[@]}"; then
    status=1
    failed_programs=$((failed_programs + 1))
  fi
  [ -f "$dir/meson-logs/testlog.junit.xml" ] && logs+=("$dir/meson-logs/testlog.junit.xml")
}
if [ $sanitize -eq 1 ]; then run_tsan_suite; fi

if [ ${#logs[@]} -eq 0 ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
summary=$(python3 scripts/count_results.py --min-failed "$failed_programs" "${logs[@]}")
echo "$summary"
case "$summary" in
  *" 0 failed"*) [ $status -eq 0 ] || exit 1 ;;
  *) exit 1 ;;
esac
