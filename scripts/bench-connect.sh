#!/usr/bin/env bash
# Connect cost of iot-core-local against Mosquitto, side by side: the same client
# (scripts/lib/soak_client.py, Python standard library) makes N mTLS connects (CONNECT,
# CONNACK, DISCONNECT, MQTT 3.1.1) to iot-core-local (release build) and to Mosquitto on the
# same certificates (the account's server certificate and key, its device CA), alternating
# rounds. Prints the median seconds per round for each and the ratio; then the idle memory per
# connection of each (1000 connected, idle clients: RSS delta / 1000).
# Without Mosquitto installed it says so, measures iot-core-local alone and exits 0.
# Usage: scripts/bench-connect.sh [connects per round, default 300] [rounds, default 5]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
connects="${1:-300}"
rounds="${2:-5}"
idle_count=1000
target="${CARGO_TARGET_DIR:-$repo/target}"
client="$repo/scripts/lib/soak_client.py"

echo "==> Building iot-core-local (release)"
cargo build --release -p iot-core-local
account="$target/bench-connect-account"
# shellcheck source=lib/endpoint.sh
. "$repo/scripts/lib/endpoint.sh"
RUST_LOG=warn start_endpoint "$target/release/iot-core-local" "$account" "$target/bench-connect-endpoint.log"
iot_pid=$_endpoint_pid
tls=(--ca "$account/server-ca.pem" --cert "$account/device.pem" --key "$account/device.key")

mosquitto_bin="$(command -v mosquitto || true)"
[ -n "$mosquitto_bin" ] || [ ! -x /usr/sbin/mosquitto ] || mosquitto_bin=/usr/sbin/mosquitto
mq_pid=""
if [ -n "$mosquitto_bin" ]; then
  mq_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mq_conf="$target/bench-connect-mosquitto.conf"
  cat >"$mq_conf" <<CONF
# Run as the invoking user (as root, stay root: the account's key is readable by its owner only).
user $(id -un)
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
listener $mq_port 127.0.0.1
cafile $account/device-ca.pem
certfile $account/server.pem
keyfile $account/server.key
require_certificate true
# As iot-core-local does; without it each connect waits on delayed ACKs (about 40 ms).
set_tcp_nodelay true
CONF
  "$mosquitto_bin" -c "$mq_conf" 2>"$target/bench-connect-mosquitto.log" &
  mq_pid=$!
  trap 'kill "$mq_pid" 2>/dev/null || true; wait "$mq_pid" 2>/dev/null || true; stop_endpoint' EXIT
  for _ in $(seq 1 50); do
    python3 "$client" bench --port "$mq_port" "${tls[@]}" --connects 1 >/dev/null 2>&1 && break
    kill -0 "$mq_pid" 2>/dev/null || { echo "Mosquitto did not start:"; cat "$target/bench-connect-mosquitto.log"; exit 1; }
    sleep 0.2
  done
else
  echo "Mosquitto is not installed: skipped (apt-get install mosquitto); iot-core-local alone."
fi

python3 "$client" bench --port "$p8883" "${tls[@]}" --connects 20 >/dev/null  # warm-up
[ -z "$mq_pid" ] || python3 "$client" bench --port "$mq_port" "${tls[@]}" --connects 20 >/dev/null

echo "==> $rounds rounds of $connects sequential mTLS connects, alternating"
iot_times=(); mq_times=()
for r in $(seq 1 "$rounds"); do
  t=$(python3 "$client" bench --port "$p8883" "${tls[@]}" --connects "$connects")
  iot_times+=("$t")
  line="  round $r: iot-core-local ${t}s"
  if [ -n "$mq_pid" ]; then
    t=$(python3 "$client" bench --port "$mq_port" "${tls[@]}" --connects "$connects")
    mq_times+=("$t")
    line="$line, mosquitto ${t}s"
  fi
  echo "$line"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
iot_median=$(median "${iot_times[@]}")

echo "==> Idle memory: $idle_count connected clients held open"
read -r iot_before iot_during < <(python3 "$client" idle --port "$p8883" "${tls[@]}" --count "$idle_count" --pid "$iot_pid")
if [ -n "$mq_pid" ]; then
  read -r mq_before mq_during < <(python3 "$client" idle --port "$mq_port" "${tls[@]}" --count "$idle_count" --pid "$mq_pid")
fi

echo
printf '%-16s %22s %26s\n' "" "median s / $connects connects" "idle kB per connection"
per_conn() { awk -v a="$1" -v b="$2" -v n="$idle_count" 'BEGIN { printf "%.1f", (b - a) / n }'; }
printf '%-16s %22s %26s\n' "iot-core-local" "$iot_median" "$(per_conn "$iot_before" "$iot_during")"
if [ -n "$mq_pid" ]; then
  mq_median=$(median "${mq_times[@]}")
  printf '%-16s %22s %26s\n' "mosquitto" "$mq_median" "$(per_conn "$mq_before" "$mq_during")"
  awk -v a="$iot_median" -v b="$mq_median" 'BEGIN { printf "time ratio iot-core-local / mosquitto: %.2f\n", a / b }'
else
  echo "mosquitto: skipped (not installed)"
fi
