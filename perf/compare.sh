#!/usr/bin/env bash
# Portcullis, nginx and HAProxy side by side, after scripts/quickstart.sh:
# installs the peers (Debian's nginx with its stream module, HAProxy), builds
# what it runs (the daemon, portcullis-bench, the test backend), then
# perf/compare.py prints one table of handshakes/s and server CPU per
# handshake. Runs on Debian 13, in the project's Debian 13 root elsewhere.
# --network veth (root) adds the DPDK transport (portcullis-dpdk) to the table.
#   perf/compare.sh [--duration 5] [--rounds 3] [--conns 16] [--network loopback|veth]
#                   [--servers portcullis,portcullis-stateful,nginx,haproxy] [--cases 'returning/*,many/1.3/full']
#                   [--json FILE] [--work DIR]        (perf/compare.py --help for all)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec perf/compare.sh "$@" || exit 1
case "${1:-}" in -h|--help) exec python3 perf/compare.py --help ;; esac

install_dependencies
configure_tree build >/dev/null
ninja -C build mgmt/portcullis perf/portcullis-bench tests/support/portcullis-test-backend >/dev/null
exec python3 perf/compare.py --build build "$@"
