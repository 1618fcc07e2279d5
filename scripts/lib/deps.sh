# Sourced by quickstart.sh, test.sh and dev-shell.sh, after platform.sh has
# put them on Debian 13: installs every Debian package the project builds,
# tests and demos with. Idempotent; apt runs only when something is missing,
# so a package added here reaches a cached Debian 13 root on its next use.

portcullis_packages=(
  g++ meson ninja-build pkg-config python3
  openssl libssl-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev prometheus-cpp-dev nlohmann-json3-dev
  libcpp-httplib-dev  # the admin listener's HTTP and mutual TLS
  libgtest-dev libgmock-dev libbenchmark-dev
  softhsm2 libp11-dev libengine-pkcs11-openssl pkcs11-provider
  libdpdk-dev ethtool iputils-ping clang libclang-rt-dev
  curl iproute2 procps ca-certificates
  nginx libnginx-mod-stream haproxy
  prometheus  # scrapes the admin listener over mutual TLS in the admin tests; evaluates docs/prometheus rules in prometheus_capacity
  gnuplot-nox  # portcullis-capacity's report figures (PNG, no X11)
  valgrind  # valgrind/callgrind.h for portcullis-tls-core-cost, callgrind for perf/tls_core_profile.sh
  linux-perf strace  # perf/syscalls_per_connection.py counts a worker's system calls with perf stat (or strace)
  libjemalloc2 libmimalloc3  # perf/allocators.py: the TLS core with each allocator (LD_PRELOAD)
)

# In the Debian 13 root only, so that dev-shell.sh debugs and profiles as a
# developer's own machine would.
# Node.js and npm (the real-client tests use its https module and axios) come
# with it there; on a Debian 13 host any Node.js distribution will do.
portcullis_root_packages=(gdb git less clang-format nodejs npm)

install_dependencies() {
  local missing=()
  for p in "${portcullis_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # nginx and HAProxy are peers that perf/compare.sh starts with its own
  # configuration, never services: a policy-rc.d that refuses every start
  # keeps their postinst from starting a daemon on the host's network (the
  # Debian 13 root shares it), and on a systemd host they are not enabled.
  local services=() policy=/usr/sbin/policy-rc.d policy_ours=0 p
  for p in "${missing[@]}"; do
    case "$p" in nginx|haproxy) services+=("$p") ;; esac
  done
  if [ ${#services[@]} -gt 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    policy_ours=1
  fi
  local status=0
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    status=$?
  [ $policy_ours -eq 0 ] || $sudo rm -f "$policy"
  if [ $status -eq 0 ] && [ ${#services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --quiet "${services[@]}" 2>/dev/null || true
  fi
  return $status
}

# meson setup (once per platform) of $1 with extra setup options after it.
# A tree configured on another platform (a Debian 12 build from before the
# Debian 13 root, say) is set up afresh rather than mixed.
configure_tree() {
  local dir=$1; shift
  local platform
  platform="$(. /etc/os-release; echo "$ID-$VERSION_CODENAME") $(openssl version | cut -d' ' -f2)"
  if [ -f "$dir/build.ninja" ] && [ "$(cat "$dir/.portcullis-platform" 2>/dev/null)" != "$platform" ]; then
    echo "== $dir was configured on another platform; setting it up afresh for $platform"
    rm -rf "$dir"
  fi
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" || return 1
    echo "$platform" >"$dir/.portcullis-platform"
  fi
}

# configure_tree + compile everything in $1.
build_tree() {
  configure_tree "$@" && meson compile -C "$1"
}
