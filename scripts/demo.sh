#!/usr/bin/env bash
# The one-command demo: build, create a local AWS IoT Core account, start iot-core-local, run
# every sample in every mode against it, print a table, stop the endpoint.
# Exits non-zero if any row failed. Needs only a Rust toolchain; touches nothing outside target/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile_dir="${CARGO_TARGET_DIR:-$repo/target}/debug"
account="${CARGO_TARGET_DIR:-$repo/target}/demo-account"
log="${CARGO_TARGET_DIR:-$repo/target}/demo-endpoint.log"

# Build exactly what the other commands a newcomer runs will want, so that none of them compiles
# again: `cargo test --workspace` (the tests, and the sample binaries its end-to-end tests run,
# are one feature set: --workspace --all-targets), and `cargo run -p <sample>` for each sample and
# for iot-core-local (each package alone is another feature set, one cargo invocation per package).
echo "==> Building the workspace and its tests (cargo build --workspace --all-targets)"
cargo build --workspace --all-targets
echo "==> Building each package as 'cargo run -p <package>' will (cargo build -p <package>)"
for package in iot-core-local mtls-connect websocket-connect custom-auth-unsigned custom-auth-signed; do
  cargo build -p "$package"
done

echo "==> Creating a local account in $account and starting iot-core-local (log: $log)"
# shellcheck source=lib/endpoint.sh
. "$repo/scripts/lib/endpoint.sh"
start_endpoint "$profile_dir/iot-core-local" "$account" "$log"
echo "    443 listener on port $p443, 8883 listener on port $p8883"
echo

ca=(--ca-file "$account/server-ca.pem")
password="$(cat "$account/custom-auth-password")"
# SigV4 credentials come from the account's credentials file only, never from this shell.
aws_env() {
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE="$account/aws-credentials" AWS_PROFILE="$1" "${@:2}"
}

rows=()
failed=0
run() { # run <sample> <mode> <transport> <mqtt> <command...>
  local sample=$1 mode=$2 transport=$3 mqtt=$4; shift 4
  local out start end ms status
  start=$(date +%s%N)
  if out="$("$@" 2>&1)" && grep -q '^Connection attempt successful!$' <<<"$out"; then
    status="ok"
  else
    status="FAILED"; failed=$((failed + 1))
  fi
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  rows+=("$(printf '%-21s %-22s %-30s %-6s %-7s %5s ms' "$sample" "$mode" "$transport" "$mqtt" "$status" "$ms")")
  if [ "$status" != ok ]; then
    rows+=("$(printf '    %s' "$(echo "$out" | grep -E '^(Connection attempt failed|hint|error)' | tr '\n' ' ')")")
  fi
  printf '.'
}

echo -n "==> Running the samples "
for v in 5 3.1.1; do
  cert=(--cert "$account/device.pem" --key "$account/device.key")
  run mtls-connect "X.509 certificate" "TLS, port 8883" "$v" \
    "$profile_dir/mtls-connect" "${cert[@]}" "${ca[@]}" --port "$p8883" --mqtt-version "$v" localhost
  run mtls-connect "X.509 certificate" "TLS+ALPN x-amzn-mqtt-ca, 443" "$v" \
    "$profile_dir/mtls-connect" "${cert[@]}" "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
  run websocket-connect "SigV4, long-term key" "WebSocket, 443" "$v" \
    aws_env iot-core-local "$profile_dir/websocket-connect" "${ca[@]}" --port "$p443" --signing-region us-east-1 --mqtt-version "$v" localhost
  run websocket-connect "SigV4, session token" "WebSocket, 443" "$v" \
    aws_env iot-core-local-temporary "$profile_dir/websocket-connect" "${ca[@]}" --port "$p443" --signing-region us-east-1 --mqtt-version "$v" localhost
  unsigned=(--authorizer unsigned-authorizer --username demo-user --password "$password")
  run custom-auth-unsigned "authorizer, unsigned" "TLS+ALPN mqtt, 443" "$v" \
    "$profile_dir/custom-auth-unsigned" "${unsigned[@]}" "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
  run custom-auth-unsigned "authorizer, unsigned" "WebSocket, 443" "$v" \
    "$profile_dir/custom-auth-unsigned" "${unsigned[@]}" --websockets "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
  signed=(--authorizer signed-authorizer --authorizer-token-key-name token --authorizer-token-key-value allow
          --authorizer-private-key "$account/authorizer-private.pem")
  run custom-auth-signed "authorizer, signed" "TLS+ALPN mqtt, 443" "$v" \
    "$profile_dir/custom-auth-signed" "${signed[@]}" "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
  run custom-auth-signed "authorizer, signed" "WebSocket, 443" "$v" \
    "$profile_dir/custom-auth-signed" "${signed[@]}" --websockets "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
  run websocket-connect "authorizer, unsigned" "WebSocket, 443" "$v" \
    "$profile_dir/websocket-connect" "${unsigned[@]}" "${ca[@]}" --port "$p443" --mqtt-version "$v" localhost
done

# One row through a real HTTP proxy, if tinyproxy is installed: mTLS on the 443 listener, the
# tunnel opened by tinyproxy on a free loopback port, its log checked for the CONNECT.
proxy_note=""
tinyproxy_bin="$(command -v tinyproxy || ls /usr/sbin/tinyproxy /usr/bin/tinyproxy 2>/dev/null | head -1 || true)"
if [ -n "$tinyproxy_bin" ]; then
  proxy_dir="${CARGO_TARGET_DIR:-$repo/target}/demo-proxy"
  mkdir -p "$proxy_dir"
  proxy_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 38128)"
  rm -f "$proxy_dir/tinyproxy.log"
  printf 'Port %s\nListen 127.0.0.1\nAllow 127.0.0.1\nLogFile "%s"\nLogLevel Connect\n' \
    "$proxy_port" "$proxy_dir/tinyproxy.log" >"$proxy_dir/tinyproxy.conf"
  "$tinyproxy_bin" -d -c "$proxy_dir/tinyproxy.conf" >/dev/null 2>&1 &
  proxy_pid=$!
  trap 'kill "$proxy_pid" 2>/dev/null || true; stop_endpoint' EXIT
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
    sleep 0.1
  done
  run mtls-connect "X.509 certificate" "proxy, TLS+ALPN, 443" 5 \
    "$profile_dir/mtls-connect" "${cert[@]}" "${ca[@]}" --port "$p443" \
    --proxy-host 127.0.0.1 --proxy-port "$proxy_port" localhost
  if ! grep -q "CONNECT localhost:$p443 HTTP/1.1" "$proxy_dir/tinyproxy.log" 2>/dev/null; then
    rows+=("    the proxy's log ($proxy_dir/tinyproxy.log) shows no CONNECT: the row did not go through it")
    failed=$((failed + 1))
  fi
  kill "$proxy_pid" 2>/dev/null || true
  proxy_note="The proxied row went through tinyproxy; its log: $proxy_dir/tinyproxy.log"
else
  proxy_note="Skipped the proxied row: tinyproxy is not installed (sudo apt-get install tinyproxy)."
fi
echo
echo
printf '%-21s %-22s %-30s %-6s %-7s %8s\n' SAMPLE AUTHENTICATION TRANSPORT MQTT RESULT TIME
printf '%s\n' "$(printf '%.0s-' {1..100})"
printf '%s\n' "${rows[@]}"
echo
echo "$proxy_note"
if [ "$failed" -eq 0 ]; then
  echo "All ${#rows[@]} connections accepted by iot-core-local. Its decisions: $log"
else
  echo "$failed connection(s) FAILED. The endpoint's decisions, with reasons: $log"
  exit 1
fi
