#!/bin/sh
# Checks and unit-tests docs/prometheus/*.rules.yml with promtool. Without
# promtool the rules are unverified, so say so and skip (77), never pass.
set -eu
dir="$1"
if ! command -v promtool >/dev/null 2>&1; then
    echo "SKIP: promtool not found (Debian package prometheus); docs/prometheus rules NOT checked" >&2
    exit 77
fi
promtool check rules "$dir"/recording.rules.yml "$dir"/alerts.rules.yml
promtool check config --syntax-only "$dir"/prometheus.yml
promtool test rules "$dir"/tests/*.yml
