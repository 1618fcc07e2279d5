# Sourced by quickstart.sh and test.sh: installs every Debian package the
# project builds, tests and demos with. Idempotent; apt runs only when
# something is missing.

portcullis_packages=(
  g++ meson ninja-build pkg-config python3
  openssl libssl-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  softhsm2 libp11-dev libengine-pkcs11-openssl
  libdpdk-dev ethtool iputils-ping clang-14 libclang-rt-14-dev
  curl iproute2 procps
)

install_dependencies() {
  local missing=()
  for p in "${portcullis_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node.js runs the real-client tests (https module, axios); any distribution of it will do.
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# meson setup (once) + compile into $1 with extra setup options after it.
build_tree() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@"
  fi
  meson compile -C "$dir"
}
