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

# shellcheck source=bench/lib.sh
. bench/lib.sh
APP_PORT=$(free_port)
HTTP_PORT=$(free_port)
"$work/trivialapp" -addr "127.0.0.1:$APP_PORT" &
APP_PID=$!
"$work/mecha" run --app-id bench --app-port "$APP_PORT" --dapr-http-port "$HTTP_PORT" --dapr-grpc-port 0 \
  --metrics-port 0 --broker-port -1 --log-level warn --data-dir "$work/data" &
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

names=("state GET" "state SET" "publish" "local invoke" "trivial app called directly (no mecha)")
urls=("$BASE/v1.0/state/statestore/bench" "$BASE/v1.0/state/statestore" "$BASE/v1.0/publish/pubsub/orders"
      "$BASE/v1.0/invoke/bench/method/ping" "http://127.0.0.1:$APP_PORT/ping")
scripts=("" "$work/set.lua" "$work/publish.lua" "" "")
pids=("$MECHA_PID" "$MECHA_PID" "$MECHA_PID" "$MECHA_PID" "$APP_PID")
ROUNDS=${ROUNDS:-3}

# The machine is shared and noisy: run the measures interleaved, ROUNDS
# times, and report the round with the median req/s of each.
for r in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    echo "$i $(measure "${urls[$i]}" "${scripts[$i]}" "${pids[$i]}")" >> "$work/results"
  done
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t$THREADS -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds"
echo
echo "| measure | req/s (median) | p50 | p90 | p99 | non-2xx | all rounds req/s | CPU µs/request (median) |"
echo "|---|---|---|---|---|---|---|---|"
for i in "${!names[@]}"; do
  all=$(awk -v i="$i" '$1==i {print $2}' "$work/results" | sort -n | paste -sd' ')
  med=$(awk -v i="$i" '$1==i' "$work/results" | sort -k2,2n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
  cpu=$(awk -v i="$i" '$1==i {print $7}' "$work/results" | sort -n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
  read -r _ rps p50 p90 p99 errs _ <<<"$med"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${names[$i]}" "$rps" "$p50" "$p90" "$p99" "$errs" "$all" "$cpu"
done
echo
echo "idle RSS: $((idle_rss / 1024)) MB; RSS after load: $(( $(awk '/VmRSS/ {print $2}' /proc/$MECHA_PID/status) / 1024 )) MB"

# The reference for a dedicated store, in the same run: redis-server with
# redis-benchmark, 16 connections, no pipelining.
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
  REDIS_PID=$!
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo
  echo "redis-server (same run): redis-benchmark -t set,get -c $CONNS -n 500000 -d 200"
  redis-benchmark -p "$REDIS_PORT" -t set,get -c "$CONNS" -n 500000 -d 200 -q 2>/dev/null | tr '\r' '\n' | grep -E '^(SET|GET): [0-9]' | sed 's/^/  /'
fi
