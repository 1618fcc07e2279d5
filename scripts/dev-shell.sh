#!/usr/bin/env bash
# A shell (or one command) on the platform, with the repository as the
# working directory: on Debian 13 it runs here; on any other host inside the
# Debian 13 root that quickstart.sh and test.sh use (built on first use).
#   scripts/dev-shell.sh                       # interactive bash
#   scripts/dev-shell.sh meson test -C build   # one command, its exit code
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec "$0" "$@" || exit 1
install_dependencies
if [ $# -eq 0 ]; then
  PS1='[portcullis debian13] \w\$ ' exec bash --norc -i
fi
exec "$@"
