#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running mTLS edge:
# installs packages, builds, makes a demo PKI, starts a demo backend and
# Portcullis, runs a short mTLS load with portcullis-bench (full and resumed
# handshakes, plus clients that must be rejected) and prints what happened,
# then a short capacity report (perf/capacity-report.sh's sweep and figures)
# and where it landed.
#   scripts/quickstart.sh [--serve] [--duration SECONDS] [--workers N] [--dataplane kernel|dpdk]
#       [--no-report]
#   --serve     keep Portcullis and the backend running until Ctrl-C
#   --no-report skip the capacity report (about a minute)
#   --dataplane dpdk   run on the DPDK transport (root): a veth pair whose far
#               end is a network namespace holding the clients and the backend
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/platform.sh
on_platform_or_reexec "$0" "$@" || exit 1
root=$(pwd)

serve=0
report=1
duration=5
workers=0
dataplane=kernel
while [ $# -gt 0 ]; do
  case "$1" in
    --serve) serve=1 ;;
    --no-report) report=0 ;;
    --duration) duration=$2; shift ;;
    --workers) workers=$2; shift ;;
    --dataplane) dataplane=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

case "$dataplane" in
  kernel|dpdk) ;;
  *) echo "--dataplane: kernel or dpdk, not $dataplane" >&2; exit 2 ;;
esac
if [ "$dataplane" = dpdk ] && [ "$(id -u)" -ne 0 ]; then
  echo "--dataplane dpdk needs root (a network namespace, a veth pair, AF_PACKET)" >&2; exit 2
fi

install_dependencies
build_tree build >/dev/null
bin=$root/build

work=$(mktemp -d /tmp/portcullis-quickstart.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Where clients and the backend run, and the address they reach Portcullis at.
host=127.0.0.1
in_clients=()
backend_listen=127.0.0.1:0
dataplane_toml=""
if [ "$dataplane" = dpdk ]; then
  [ -x "$bin/dataplane/portcullis-dpdk-probe" ] || { echo "this build has no DPDK (libdpdk-dev missing?)"; exit 1; }
  ns=pcl-quick-$$ near=pclq$$a far=pclq$$b
  echo "== veth pair: $near (DPDK af_packet, 10.77.7.1) <-> $far in namespace $ns (10.77.7.2: clients, backend)"
  ip netns add "$ns"
  ip link add "$near" type veth peer name "$far"
  ip link set "$far" netns "$ns"
  ip link set "$near" up
  ip netns exec "$ns" ip addr add 10.77.7.2/24 dev "$far"
  ip netns exec "$ns" ip link set "$far" up
  ip netns exec "$ns" ip link set lo up
  # Offloads off on both ends, or the kernel hands DPDK frames without checksums.
  ethtool -K "$near" tx off tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$ns" ethtool -K "$far" tx off tso off gso off gro off >/dev/null 2>&1 || true
  veth_cleanup() { cleanup; ip link del "$near" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; }
  trap veth_cleanup EXIT
  host=10.77.7.1
  in_clients=(ip netns exec "$ns")
  backend_listen=10.77.7.2:0
  # One polling worker unless asked: on a small machine the clients need a core too.
  [ "$workers" -eq 0 ] && workers=1
  dataplane_toml="[dataplane]
transport = \"dpdk\"

[dataplane.dpdk]
eal_args = [\"--no-huge\", \"-m\", \"256\", \"--log-level\", \"error\"]
device = \"net_af_packet0,iface=$near\"
address = \"10.77.7.1/24\"
"
fi

echo "== demo PKI in $work/pki"
scripts/make-demo-pki.sh "$work/pki" >/dev/null

echo "== SoftHSM2 token in $work/softhsm: server keys generated inside it, certificates for them"
# The embedded default HSM: a token of our own in a temp dir, never the system's.
mkdir -p "$work/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work/softhsm/tokens" > "$work/softhsm/softhsm2.conf"
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
hsm_pin=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask 077; printf '%s\n' "$hsm_pin" > "$work/softhsm/pin"; umask 022
softhsm2-util --init-token --free --label portcullis-demo --pin "$hsm_pin" --so-pin "$hsm_pin" >/dev/null
hsm_module=/usr/lib/softhsm/libsofthsm2.so
keytool() { "$bin/hsm/portcullis-keytool" "$@" --module "$hsm_module" --token portcullis-demo --pin-file "$work/softhsm/pin"; }
printf 'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n' > "$work/softhsm/server.ext"
for kind in ec rsa; do
  type=$([ $kind = ec ] && echo ec-p256 || echo rsa-2048)
  id=$([ $kind = ec ] && echo 01 || echo 02)
  uri=$(keytool generate --label "server-$kind" --id $id --type $type)
  keytool csr --key "$uri" --subject "/C=GB/O=Portcullis Demo/CN=localhost" --dns localhost \
    --out "$work/softhsm/server-$kind.csr"
  openssl x509 -req -in "$work/softhsm/server-$kind.csr" -CA "$work/pki/root-ca.cert.pem" \
    -CAkey "$work/pki/root-ca.key.pem" -CAcreateserial -days 30 -sha256 \
    -extfile "$work/softhsm/server.ext" -out "$work/softhsm/server-$kind.cert.pem" 2>/dev/null
  echo "   $uri -> softhsm/server-$kind.cert.pem"
done

echo "== demo backend (HTTP, reads the PROXY v2 header)"
"${in_clients[@]}" "$bin/tests/support/portcullis-test-backend" --listen "$backend_listen" \
  --ready-file "$work/backend.port" --mode http --proxy-protocol >"$work/backend.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/backend.port" ] && break; sleep 0.05; done
backend_port=$(cat "$work/backend.port")

port=${PORTCULLIS_PORT:-8443}
admin_port=${PORTCULLIS_ADMIN_PORT:-9443}
cat > "$work/portcullis.toml" <<TOML
[workers]
count = $workers

[admin]
address = "127.0.0.1:$admin_port"

$dataplane_toml
[hsm]
module = "$hsm_module"
token = "portcullis-demo"
pin_file = "softhsm/pin"

[[listener]]
name = "edge"
address = "$host:$port"

  [listener.tls]
  client_auth = "require"
  trust_bundle = "pki/root-ca.cert.pem"
  crl_files = ["pki/client-ca.crl.pem"]
  alpn = ["http/1.1"]

    [[listener.tls.certificate]]
    chain = "softhsm/server-ec.cert.pem"
    key = "pkcs11:token=portcullis-demo;object=server-ec;type=private"

    [[listener.tls.certificate]]
    chain = "softhsm/server-rsa.cert.pem"
    key = "pkcs11:token=portcullis-demo;object=server-rsa;type=private"

  [listener.upstream]
  backends = ["${backend_listen%:*}:$backend_port"]
  proxy_protocol = true
TOML

echo "== portcullis --check-config"
"$bin/mgmt/portcullis" --check-config "$work/portcullis.toml"
echo "== starting portcullis on $host:$port ($dataplane transport)"
"$bin/mgmt/portcullis" --config "$work/portcullis.toml" >"$work/portcullis.log" 2>&1 &
portcullis_pid=$!
pids=("$portcullis_pid" "${pids[@]}")
for _ in $(seq 200); do grep -q "portcullis ready" "$work/portcullis.log" && break; sleep 0.05; done
grep -q "portcullis ready" "$work/portcullis.log" || { cat "$work/portcullis.log"; echo "portcullis did not start"; exit 1; }

pki=$work/pki
bench() { "${in_clients[@]}" "$bin/perf/portcullis-bench" --target "$host:$port" --ca "$pki/root-ca.cert.pem" --sni localhost --quiet "$@"; }
good=(--cert "$pki/partner-a.chain.pem" --key "$pki/partner-a.key.pem")
request='GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'

echo "== curl through the edge"
"${in_clients[@]}" curl -sS --cacert "$pki/root-ca.cert.pem" --cert "$pki/partner-a.chain.pem" \
  --key "$pki/partner-a.key.pem" --resolve "localhost:$port:$host" "https://localhost:$port/" | head -5

# portcullis-capacity scrapes /metrics through both load phases: their
# different mixes let it measure CPU per full and per resumed handshake.
python3 "$bin/perf/portcullis-capacity" --metrics-url "http://127.0.0.1:$admin_port/metrics" \
  --interval $((2 * duration + 1)) --scrapes $((2 * duration + 2)) --mix full=0.3 >"$work/capacity.txt" 2>&1 &
capacity_pid=$!
echo "== load: ${duration}s of full handshakes, ${duration}s of resumed handshakes (TLS 1.3, 8 connections)"
bench "${good[@]}" --mode full --tls 1.3 --conns 8 --duration "$duration" --request "$request" --json "$work/full.json" >/dev/null
bench "${good[@]}" --mode resume --tls 1.3 --conns 8 --duration "$duration" --request "$request" --json "$work/resume.json" >/dev/null
echo "== clients that must be rejected: no certificate, revoked, unknown CA (20 each)"
bench --mode full --tls 1.3 --conns 2 --handshakes 20 --request "$request" --json "$work/nocert.json" >/dev/null
bench --cert "$pki/partner-revoked.chain.pem" --key "$pki/partner-revoked.key.pem" --mode full --tls 1.3 --conns 2 \
  --handshakes 20 --request "$request" --json "$work/revoked.json" >/dev/null
bench --cert "$pki/rogue-client.cert.pem" --key "$pki/rogue-client.key.pem" --mode full --tls 1.3 --conns 2 \
  --handshakes 20 --request "$request" --json "$work/rogue.json" >/dev/null

echo "== live reload (POST /reload on the admin listener)"
curl -sS -X POST "http://127.0.0.1:$admin_port/reload"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def load(name):
    with open(f"{work}/{name}.json") as f:
        return json.load(f)
full, resume = load("full"), load("resume")
print()
print(f"Portcullis quickstart results (client side, portcullis-bench)")
print(f"  full handshakes   : {full['handshakes_per_s']:8.0f}/s  p50 {full['latency_us']['p50']:.0f} us  p99 {full['latency_us']['p99']:.0f} us  errors {full['errors_total']}")
print(f"  resumed handshakes: {resume['handshakes_per_s']:8.0f}/s  p50 {resume['latency_us']['p50']:.0f} us  p99 {resume['latency_us']['p99']:.0f} us  resumed fraction {resume['resumed_fraction']:.2f}  errors {resume['errors_total']}")
for name, label in (("nocert", "no client certificate"), ("revoked", "revoked certificate"), ("rogue", "unknown CA")):
    r = load(name)
    print(f"  {label:22}: {r['errors_total']} of {r['errors_total'] + r['handshakes']} refused {dict(r['errors'])}")
PY
echo
echo "Server side (http://127.0.0.1:$admin_port/metrics, a few lines):"
curl -sS "http://127.0.0.1:$admin_port/metrics" | grep -E \
  '^portcullis_(dpdk_(rx_packets|tx_packets|busy_iterations|tcp_connections)|handshakes_total|client_certificate_rejections_total\{.*(revoked|unknown_ca|no_certificate)|handshake_duration_seconds_(sum|count)|ticket_decryptions_total|reloads_total|worker_busy_seconds_total|connections_accepted_total|hsm_signatures_total|hsm_sign_duration_seconds_(sum|count))' \
  | grep -v ' 0$' | sed 's/^/  /'
echo
wait "$capacity_pid" || true
echo "Capacity of this box (portcullis-capacity over the load above, docs/capacity.md):"
sed 's/^/  /' "$work/capacity.txt"
if [ $report -eq 1 ]; then
  # Its own daemon on the benchmark listener, a short open-loop sweep (2 s
  # steps: a quick look; docs/capacity.md runs 5 s steps), figures included.
  echo "  A capacity report with an open-loop sweep and figures (perf/capacity-report.sh, about a minute):"
  if python3 perf/capacity_report.py --build "$bin" --sweep 50:1000:50 --step-duration 2 --calibrate 2 \
      >"$work/capacity-report.log" 2>&1; then
    grep -E '^- (Projected maximum at the sweep|Sweep knee)' "$(tail -1 "$work/capacity-report.log")" | sed 's/^/    /' || true
    echo "    report: $(tail -1 "$work/capacity-report.log")"
  else
    echo "    the capacity report failed; its output: $work/capacity-report.log"
  fi
else
  echo "  A full report with a load sweep and figures: perf/capacity-report.sh (writes build/capacity-report-TIME/report.md)"
fi
echo
echo "Rejections logged by the server (first of each reason):"
grep "client rejected" "$work/portcullis.log" | sed 's/.*client rejected/  client rejected/' | sort -u -t= -k4,4 | head -5

if [ $serve -eq 1 ]; then
  echo
  echo "Serving on https://localhost:$port (config $work/portcullis.toml, log $work/portcullis.log). Ctrl-C stops."
  wait "$portcullis_pid"
fi
