#!/usr/bin/env bash
# HTTP API benchmark: state GET, state SET, publish and local invoke through
# `mecha run`, each with wrk on 16 connections from the same machine, plus
# idle RSS. Results go to stdout in the format of docs/benchmarks.md.
#
#   bench/http.sh            # 10s per measure
#   DURATION=30s bench/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/mecha" ./cmd/mecha
go build -o "$work/trivialapp" ./bench/trivialapp

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port)
HTTP_PORT=$(free_port)
"$work/trivialapp" -addr "127.0.0.1:$APP_PORT" &
"$work/mecha" run --app-id bench --app-port "$APP_PORT" --dapr-http-port "$HTTP_PORT" --dapr-grpc-port 0 \
  --metrics-port 0 --log-level warn --data-dir "$work/data" &
MECHA_PID=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/v1.0/healthz" && break
  sleep 0.1
done
sleep 2
idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$MECHA_PID/status)

BASE="http://127.0.0.1:$HTTP_PORT"
curl -sf -X POST "$BASE/v1.0/state/statestore" -H 'Content-Type: application/json' \
  -d '[{"key":"bench","value":{"user":"u-1","conn":"c-1","gateway":"gw-1","device":"ios","lastSeen":1700000000}}]'

cat > "$work/set.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '[{"key":"k' .. (n % 10000) .. '","value":{"user":"u-1","conn":"c-1","gateway":"gw-1","device":"ios","lastSeen":1700000000}}]')
end
LUA
cat > "$work/publish.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"orderId":42,"item":"book","qty":1}'
LUA

run() { # name url [script]
  local name=$1 url=$2 script=${3:-}
  local args=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  local out
  out=$(wrk "${args[@]}" "$url")
  local rps p50 p90 p99 errs
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p90=$(awk '$1=="90%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$rps" "$p50" "$p90" "$p99" "${errs:-0}"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t$THREADS -c$CONNS -d$DURATION"
echo
echo "| measure | req/s | p50 | p90 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
run "state GET" "$BASE/v1.0/state/statestore/bench"
run "state SET" "$BASE/v1.0/state/statestore" "$work/set.lua"
run "publish" "$BASE/v1.0/publish/pubsub/orders" "$work/publish.lua"
run "local invoke" "$BASE/v1.0/invoke/bench/method/ping"
run "same app, called directly (ceiling for invoke)" "http://127.0.0.1:$APP_PORT/ping"
echo
echo "idle RSS: $((idle_rss / 1024)) MB; RSS after load: $(( $(awk '/VmRSS/ {print $2}' /proc/$MECHA_PID/status) / 1024 )) MB"
