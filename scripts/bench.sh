#!/usr/bin/env bash
# What a sample costs, next to mosquitto_pub (C, OpenSSL) on the same machine, in one run:
# median wall time, CPU time (user + sys) and peak RSS of each tool, and the ratios.
#
# Builds the samples and iot-core-local (release), creates a fresh local account, starts
# iot-core-local, and runs every sample and mosquitto_pub against it, in turns. When `mosquitto`
# is installed it also starts a plain Mosquitto broker on the same PKI (TLS, client certificate
# required) and runs mtls-connect and mosquitto_pub against it. Tools that are not installed are
# skipped, and the script says so. Loopback only; touches nothing outside target/.
# Needs python3 and a C compiler (scripts/lib/measure.py and runone.c do the measuring, with
# wait4; see there why a small C program starts each run).
#
# Usage: scripts/bench.sh [runs per tool, default 20]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
runs="${1:-20}"
warmup=3
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/release"
account="$target/bench-account"

command -v python3 >/dev/null || { echo "scripts/bench.sh needs python3 (scripts/lib/measure.py)"; exit 1; }
runone="$target/bench-runone"
cc -O2 -Wall -o "$runone" scripts/lib/runone.c

echo "==> Building the samples and iot-core-local (cargo build --release)"
cargo build --release -p iot-core-local -p mtls-connect -p websocket-connect \
  -p custom-auth-unsigned -p custom-auth-signed

# shellcheck source=lib/endpoint.sh
. "$repo/scripts/lib/endpoint.sh"
RUST_LOG=warn start_endpoint "$bin/iot-core-local" "$account" "$target/bench-endpoint.log"
mosquitto_pid=""
stop_all() {
  [ -n "$mosquitto_pid" ] && kill "$mosquitto_pid" 2>/dev/null && wait "$mosquitto_pid" 2>/dev/null
  stop_endpoint
}
trap stop_all EXIT

ca=(--ca-file "$account/server-ca.pem")
cert=(--cert "$account/device.pem" --key "$account/device.key")
ok="Connection attempt successful!"
# websocket-connect signs with the account's long-term key, given as environment variables.
# Nothing else from this shell's AWS settings reaches it.
for v in $(env | grep -o '^AWS_[A-Z_]*' || true); do unset "$v"; done
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
AWS_ACCESS_KEY_ID="$(awk '/^\[iot-core-local\]/{s=1;next} /^\[/{s=0} s && $1=="aws_access_key_id"{print $3}' "$account/aws-credentials")"
AWS_SECRET_ACCESS_KEY="$(awk '/^\[iot-core-local\]/{s=1;next} /^\[/{s=0} s && $1=="aws_secret_access_key"{print $3}' "$account/aws-credentials")"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

samples=(
  mtls-connect "$ok" "$bin/mtls-connect" "${cert[@]}" "${ca[@]}" --port "$p8883" localhost
  --- websocket-connect "$ok" "$bin/websocket-connect" "${ca[@]}" --port "$p443" --signing-region us-east-1 localhost
  --- custom-auth-unsigned "$ok" "$bin/custom-auth-unsigned" --authorizer unsigned-authorizer
      --username demo-user --password "$(cat "$account/custom-auth-password")" "${ca[@]}" --port "$p443" localhost
  --- custom-auth-signed "$ok" "$bin/custom-auth-signed" --authorizer signed-authorizer
      --authorizer-token-key-name token --authorizer-token-key-value allow
      --authorizer-private-key "$account/authorizer-private.pem" "${ca[@]}" --port "$p443" localhost
)
# mosquitto_pub: MQTT 5 like the samples, the same certificate and client id pattern; it has to
# publish something, so it sends one empty QoS 0 message before DISCONNECT, on a topic init's
# policy allows it (test/<clientId>/...).
pub() { # pub <port>
  echo mosquitto_pub - mosquitto_pub -V 5 -h localhost -p "$1" --cafile "$account/server-ca.pem" \
    --cert "$account/device.pem" --key "$account/device.key" -i test-mosquitto-pub -t test/test-mosquitto-pub/connect -n
}

results="$(mktemp)"
have_pub=0
if command -v mosquitto_pub >/dev/null; then
  have_pub=1
else
  echo "mosquitto_pub is not installed: skipped (apt-get install mosquitto-clients); no ratios to it"
fi

echo "==> Against iot-core-local (ports $p8883 and $p443): $runs runs of each tool, in turns, after $warmup warm-up rounds"
if [ "$have_pub" = 1 ]; then
  # shellcheck disable=SC2046
  python3 scripts/lib/measure.py "$runone" "$runs" "$warmup" iot-core-local $(pub "$p8883") --- "${samples[@]}" >>"$results"
else
  python3 scripts/lib/measure.py "$runone" "$runs" "$warmup" iot-core-local "${samples[@]}" >>"$results"
fi

if command -v mosquitto >/dev/null; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  conf="$target/bench-mosquitto.conf"
  cat >"$conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
user $(id -un)
listener $port 127.0.0.1
cafile $account/device-ca.pem
certfile $account/server.pem
keyfile $account/server.key
require_certificate true
EOF
  mosquitto -c "$conf" 2>"$target/bench-mosquitto.log" &
  mosquitto_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "==> Against Mosquitto (port $port, same PKI): $runs runs of each tool, in turns"
  mtls=(mtls-connect "$ok" "$bin/mtls-connect" "${cert[@]}" "${ca[@]}" --port "$port" localhost)
  if [ "$have_pub" = 1 ]; then
    # shellcheck disable=SC2046
    python3 scripts/lib/measure.py "$runone" "$runs" "$warmup" mosquitto $(pub "$port") --- "${mtls[@]}" >>"$results"
  else
    python3 scripts/lib/measure.py "$runone" "$runs" "$warmup" mosquitto "${mtls[@]}" >>"$results"
  fi
else
  echo "mosquitto (the broker) is not installed: the run against a plain Mosquitto is skipped"
fi

echo
printf '%-15s %-21s %10s %10s %10s\n' SERVER TOOL "WALL ms" "CPU ms" "RSS MiB"
awk -F'\t' '{ printf "%-15s %-21s %10.2f %10.2f %10.2f\n", $1, $2, $3, $4, $5 / 1024 }' "$results"
echo
echo "Ratios (medians; the goals in brackets):"
awk -F'\t' '
  { key = $1 "/" $2; wall[key] = $3; rss[key] = $5; order[n++] = key }
  function line(text, value, goal) { printf "  %-62s %5.2f  [goal <= %s]\n", text, value, goal }
  END {
    split("iot-core-local mosquitto", servers, " ")
    for (i = 1; i <= 2; i++) {
      pub = servers[i] "/mosquitto_pub"; mtls = servers[i] "/mtls-connect"
      if ((pub in wall) && (mtls in wall))
        line("mtls-connect / mosquitto_pub wall, " servers[i], wall[mtls] / wall[pub], "1.0")
    }
    for (k = 0; k < n; k++) {
      split(order[k], p, "/"); pub = p[1] "/mosquitto_pub"
      if (p[2] != "mosquitto_pub" && (pub in rss))
        line(p[2] " / mosquitto_pub peak RSS, " p[1], rss[order[k]] / rss[pub], "1.2")
    }
    ws = "iot-core-local/websocket-connect"; mtls = "iot-core-local/mtls-connect"
    if ((ws in wall) && (mtls in wall))
      line("websocket-connect / mtls-connect wall, iot-core-local", wall[ws] / wall[mtls], "1.5")
  }' "$results"
rm -f "$results"
