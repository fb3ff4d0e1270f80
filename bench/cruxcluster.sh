#!/usr/bin/env bash
# Crux cluster benchmark: state GET and SET through a client runtime
# (--crux-client) of a 3-server Crux cluster (three replicas a slot),
# every key's leader remote, against single-node Crux (a plain `mecha
# run`) in the same run, and strong SETs against eventual ones. wrk on
# CONNS connections; keys k0..k9999 (SET writes them, GET reads them).
# Rounds alternate single-node and cluster so that the machine's noise
# falls on both; prints the medians and their ratios.
#
# The floor, in the same run: single-node behind one zero-work TCP relay
# (bench/relay -m copy), the same count of process crossings as the
# cluster client's path (wrk -> client runtime -> leader) with nothing
# parsed or routed on the way: what any design with the leader in
# another process pays on this machine.
#
#   bench/cruxcluster.sh                 # 3 rounds of 10 s
#   ROUNDS=5 DURATION=20s bench/cruxcluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/mecha" ./cmd/mecha
go build -o "$work/relay" ./bench/relay
# shellcheck source=bench/lib.sh
. bench/lib.sh

wait_healthy() {
  for _ in $(seq 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/v1.0/healthz" && return 0
    sleep 0.1
  done
  echo "runtime on :$1 did not become healthy" >&2
  exit 1
}
run() { # name http-port extra args…
  local name=$1 port=$2
  shift 2
  "$work/mecha" run --app-id bench --dapr-http-port "$port" --dapr-grpc-port 0 --metrics-port 0 --broker=false \
    --internal-port 0 --gossip-port 0 --log-level warn --data-dir "$work/$name" "$@" &
}

SINGLE=$(free_port)
run single "$SINGLE"
SINGLE_PID=$!
G1=$(free_port)
P1=$(free_port)
run s1 "$P1" --bootstrap-expect 3 --gossip-port "$G1"
S1_PID=$!
P2=$(free_port)
run s2 "$P2" --bootstrap-expect 3 --join "127.0.0.1:$G1"
S2_PID=$!
P3=$(free_port)
run s3 "$P3" --bootstrap-expect 3 --join "127.0.0.1:$G1"
S3_PID=$!
CLIENT=$(free_port)
run client "$CLIENT" --crux-client --join "127.0.0.1:$G1"
CLIENT_PID=$!
RELAY=$(free_port)
"$work/relay" -m copy -l "127.0.0.1:$RELAY" -u "127.0.0.1:$SINGLE" &
RELAY_PID=$!
for p in "$SINGLE" "$P1" "$P2" "$P3" "$CLIENT" "$RELAY"; do wait_healthy "$p"; done
# The cluster serves once the slots are assigned.
for _ in $(seq 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$CLIENT/v1.0/state/statestore" \
    -H 'Content-Type: application/json' -d '[{"key":"probe","value":1}]')
  [ "$code" = 204 ] && break
  sleep 0.1
done
[ "$code" = 204 ] || { echo "the cluster did not serve: $code" >&2; exit 1; }

cat > "$work/set.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '[{"key":"k' .. (n % 10000) .. '","value":{"user":"u-1","conn":"c-1","gateway":"gw-1","device":"ios","lastSeen":1700000000}}]')
end
LUA
sed 's/"lastSeen":1700000000}/"lastSeen":1700000000},"options":{"consistency":"strong"}/' "$work/set.lua" > "$work/set-strong.lua"
cat > "$work/get.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1.0/state/statestore/k" .. (n % 10000))
end
LUA

for r in $(seq "$ROUNDS"); do
  echo "single-set $(measure "http://127.0.0.1:$SINGLE/v1.0/state/statestore" "$work/set.lua" "$SINGLE_PID")" >> "$work/res"
  echo "cluster-set $(measure "http://127.0.0.1:$CLIENT/v1.0/state/statestore" "$work/set.lua" "$CLIENT_PID" "$S1_PID" "$S2_PID" "$S3_PID")" >> "$work/res"
  echo "cluster-set-strong $(measure "http://127.0.0.1:$CLIENT/v1.0/state/statestore" "$work/set-strong.lua" "$CLIENT_PID" "$S1_PID" "$S2_PID" "$S3_PID")" >> "$work/res"
  echo "relay-set $(measure "http://127.0.0.1:$RELAY/v1.0/state/statestore" "$work/set.lua" "$SINGLE_PID" "$RELAY_PID")" >> "$work/res"
  echo "single-get $(measure "http://127.0.0.1:$SINGLE" "$work/get.lua" "$SINGLE_PID")" >> "$work/res"
  echo "relay-get $(measure "http://127.0.0.1:$RELAY" "$work/get.lua" "$SINGLE_PID" "$RELAY_PID")" >> "$work/res"
  echo "cluster-get $(measure "http://127.0.0.1:$CLIENT" "$work/get.lua" "$CLIENT_PID" "$S1_PID" "$S2_PID" "$S3_PID")" >> "$work/res"
  # Latency alone: one connection, so nothing queues.
  echo "single-get-1conn $(THREADS=1 CONNS=1 measure "http://127.0.0.1:$SINGLE" "$work/get.lua" "$SINGLE_PID")" >> "$work/res"
  echo "relay-get-1conn $(THREADS=1 CONNS=1 measure "http://127.0.0.1:$RELAY" "$work/get.lua" "$SINGLE_PID" "$RELAY_PID")" >> "$work/res"
  echo "cluster-get-1conn $(THREADS=1 CONNS=1 measure "http://127.0.0.1:$CLIENT" "$work/get.lua" "$CLIENT_PID" "$S1_PID" "$S2_PID" "$S3_PID")" >> "$work/res"
  echo "round $r done" >&2
done

echo "| measure | req/s (median) | p50 | p99 | non-2xx | CPU µs/request, all runtimes (median) |"
echo "|---|---|---|---|---|---|"
for m in single-get relay-get cluster-get single-set relay-set cluster-set cluster-set-strong single-get-1conn relay-get-1conn cluster-get-1conn; do
  grep "^$m " "$work/res" | sort -k2 -n | awk -v m="$m" -v r="$ROUNDS" '
    {rps[NR]=$2; p50[NR]=$3; p99[NR]=$5; err+=$6; cpu[NR]=$7}
    END {i=int((NR+1)/2); printf "| %s | %d | %s | %s | %d | %s |\n", m, rps[i], p50[i], p99[i], err, cpu[i]}'
done
med() { grep "^$1 " "$work/res" | sort -k2 -n | awk '{v[NR]=$2} END {print v[int((NR+1)/2)]}'; }
for op in get set; do
  awk -v c="$(med cluster-$op)" -v s="$(med single-$op)" -v f="$(med relay-$op)" -v op="$op" \
    'BEGIN {printf "%s: cluster client / single node = %.2f×; floor (single node behind one zero-work relay) = %.2f×; cluster client / floor = %.2f×\n", op, c/s, f/s, c/f}'
done
awk -v c="$(med cluster-set-strong)" -v s="$(med cluster-set)" 'BEGIN {printf "set: strong / eventual through the cluster client = %.2f×\n", c/s}'
# The p50 the remote leader adds at one connection, beside one internal
# round trip alone: a GET through statestore/cluster's client router to
# a member on loopback, one at a time (its benchmark, -cpu 1).
p50us() { grep "^$1 " "$work/res" | sort -k2 -n | awk '{v[NR]=$3} END {x=v[int((NR+1)/2)]; if (x ~ /ms$/) {sub(/ms$/,"",x); x*=1000} else sub(/us$/,"",x); print x}'; }
rt=$(go test -run - -bench 'Get/remote' -benchtime 20000x -cpu 1 ./statestore/cluster/ | awk '/Get\/remote/ {print $3/1000}')
awk -v c="$(p50us cluster-get-1conn)" -v s="$(p50us single-get-1conn)" -v f="$(p50us relay-get-1conn)" -v rt="$rt" \
  'BEGIN {printf "p50 at one connection: cluster client adds %.0f µs; one zero-work relay adds %.0f µs; one internal round trip alone (in one process): %.0f µs\n", c-s, f-s, rt}'
