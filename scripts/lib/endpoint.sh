# Sourced by the scripts that need a running iot-core-local.
# start_endpoint <iot-core-local binary> <account dir> <log file>
#   creates a fresh account, starts `serve` on free loopback ports, waits for its `ready` line,
#   sets p443 and p8883, and stops the endpoint (SIGINT) when the calling script exits.
start_endpoint() {
  local bin=$1 account=$2 log=$3
  "$bin" init --force "$account" >/dev/null
  _endpoint_ready="$(mktemp)"
  RUST_LOG="${RUST_LOG:-info}" "$bin" serve --dir "$account" --port-443 0 --port-8883 0 \
    >"$_endpoint_ready" 2>"$log" &
  _endpoint_pid=$!
  trap stop_endpoint EXIT
  for _ in $(seq 1 100); do
    grep -q '^ready ' "$_endpoint_ready" && break
    kill -0 "$_endpoint_pid" 2>/dev/null || { echo "iot-core-local did not start:"; cat "$log"; exit 1; }
    sleep 0.1
  done
  read -r _ p443 p8883 < <(grep '^ready ' "$_endpoint_ready" | sed 's/port_443=//; s/port_8883=//')
  [ -n "${p8883:-}" ] || { echo "iot-core-local did not report its ports:"; cat "$log"; exit 1; }
}

stop_endpoint() {
  kill -INT "$_endpoint_pid" 2>/dev/null || true
  wait "$_endpoint_pid" 2>/dev/null || true
  rm -f "$_endpoint_ready"
}
