# Sourced by quickstart.sh, test.sh and dev-shell.sh. Debian 13 (trixie) is
# the platform: on a Debian 13 host `on_platform_or_reexec` returns and the
# caller goes on natively; on any other host it builds (once) a Debian 13
# root with mmdebstrap and re-executes the caller inside it, so everything
# after the call runs on Debian 13 whatever the host is. What it does not do:
# install the project's packages (deps.sh does that, on the host or in the root).
#
# The root lives in $PORTCULLIS_ROOT (default /var/lib/portcullis/root-trixie)
# and is reused while it exists; PORTCULLIS_ROOT_REBUILD=1 builds it afresh.
# It is entered in a private mount namespace (unshare --mount), so every bind
# mount below disappears when the command exits or dies.

portcullis_suite=trixie
portcullis_root=${PORTCULLIS_ROOT:-/var/lib/portcullis/root-$portcullis_suite}

on_platform() {
  local id="" codename=""
  # shellcheck disable=SC1091
  [ -r /etc/os-release ] && { id=$(. /etc/os-release; echo "${ID:-}"); codename=$(. /etc/os-release; echo "${VERSION_CODENAME:-}"); }
  [ "$id" = debian ] && [ "$codename" = "$portcullis_suite" ]
}

# Creates the root when it is missing (or PORTCULLIS_ROOT_REBUILD=1), with
# the project's packages already in it; takes a lock so two scripts started
# together build it once. Needs root.
ensure_platform_root() {
  local parent lock
  parent=$(dirname "$portcullis_root")
  mkdir -p "$parent"
  lock=$parent/.$(basename "$portcullis_root").lock
  exec 9>"$lock"
  flock 9
  if [ "${PORTCULLIS_ROOT_REBUILD:-0}" = 1 ] && [ -d "$portcullis_root" ]; then
    echo "== PORTCULLIS_ROOT_REBUILD=1: removing $portcullis_root"
    rm -rf --one-file-system "$portcullis_root"
  fi
  if [ ! -f "$portcullis_root/.portcullis-root" ]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
      echo "== installing mmdebstrap on the host"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap debian-archive-keyring
    fi
    # Built next to its final place and renamed, so an interrupted build is
    # never mistaken for a root.
    local tmp=$portcullis_root.partial
    rm -rf --one-file-system "$tmp"
    local include
    include=$(IFS=,; echo "${portcullis_packages[*]},${portcullis_root_packages[*]}")
    echo "== building a Debian 13 ($portcullis_suite) root in $portcullis_root with mmdebstrap (once; later runs reuse it)"
    local started=$SECONDS
    if ! mmdebstrap --variant=apt --quiet --include="$include" \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        "$portcullis_suite" "$tmp"; then
      rm -rf --one-file-system "$tmp"
      flock -u 9
      return 1
    fi
    date -u +%FT%TZ >"$tmp/.portcullis-root"
    mv "$tmp" "$portcullis_root"
    echo "== root ready in $((SECONDS - started)) s"
  fi
  flock -u 9
}

# The certificate authorities the host's administrator added
# (/usr/local/share/ca-certificates: a company proxy's, say) are trusted in
# the root too, or npm and curl inside fail where they work outside.
sync_local_certificates() {
  local R=$1 src=/usr/local/share/ca-certificates dst=$1/usr/local/share/ca-certificates
  [ -d "$src" ] || return 0
  if ! diff -rq "$src" "$dst" >/dev/null 2>&1; then
    rm -rf "$dst"
    cp -a "$src" "$dst"
    chroot "$R" update-ca-certificates --fresh >/dev/null 2>&1 ||
      echo "WARNING: update-ca-certificates failed in $R; TLS to local registries may fail" >&2
  fi
}

# run_in_platform_root DIR CMD... : CMD in the root with the working
# directory DIR, as root, with a clean environment (the host's PATH points at
# host tools) except the variables the tests and scripts read.
run_in_platform_root() {
  local dir=$1; shift
  local R=$portcullis_root
  # The root's resolver and hosts follow the host's at every entry.
  cat /etc/resolv.conf >"$R/etc/resolv.conf" 2>/dev/null || true
  if [ -r /etc/hosts ]; then cat /etc/hosts >"$R/etc/hosts"; else printf '127.0.0.1 localhost\n::1 localhost\n' >"$R/etc/hosts"; fi
  sync_local_certificates "$R"
  local keep=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
  local name
  for name in TERM CI ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS MESON_TESTTHREADS \
      http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
      $(compgen -e | grep -E '^PORTCULLIS_' || true); do
    [ -n "${!name+x}" ] && keep+=("$name=${!name}")
  done
  unshare --mount --propagation private -- bash -euc '
    R=$1 dir=$2; shift 2
    # ip netns exec remounts / as a slave: / must be a mount point.
    mount --bind "$R" "$R"
    mount -t proc proc "$R/proc"
    mount --rbind /sys "$R/sys"
    mount --rbind /dev "$R/dev"   # /dev/shm, /dev/hugepages, /dev/net/tun with it
    # A /run of its own: ip netns and DPDK write there, and nothing they leave
    # should outlive the namespace on the host.
    mount -t tmpfs -o mode=755 tmpfs "$R/run"
    mkdir -p "$R/run/lock"
    mount --bind /tmp "$R/tmp"
    mkdir -p "$R$dir"
    mount --bind "$dir" "$R$dir"
    exec chroot "$R" /usr/bin/env -i "${@}"
  ' _ "$R" "$dir" "${keep[@]}" /bin/bash -c 'cd "$1" && shift && exec "$@"' _ "$dir" "$@"
}

# on_platform_or_reexec SCRIPT ARGS... : returns 0 on Debian 13; anywhere
# else re-executes SCRIPT ARGS inside the root and exits with its status, or
# returns 1 when the root cannot be built (the caller reports it its way).
on_platform_or_reexec() {
  on_platform && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "== not Debian 13: the Debian 13 root needs root; re-running under sudo"
    exec sudo --preserve-env=CI,PORTCULLIS_ROOT,PORTCULLIS_ROOT_REBUILD bash "$@"
  fi
  ensure_platform_root || { echo "could not build the Debian 13 root in $portcullis_root" >&2; return 1; }
  echo "== running $1 inside the Debian 13 root ($portcullis_root)"
  run_in_platform_root "$(pwd)" bash "$@"
  exit $?
}
