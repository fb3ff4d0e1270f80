#!/usr/bin/env bash
# Service invocation through two runtimes against a direct call, on
# loopback, with a 1 KB POST body: caller → runtime A → runtime B's
# internal port → the app, and caller → the app. Runtime A finds the app
# through gossip (A joins B). Measures, with wrk: latency at 1 connection
# (p50, p90) and throughput at 16 connections, and the CPU the two runtimes
# spend per 1,000 req/s. Interleaved rounds, medians reported.
#
# Beside mecha, the same run measures the floor: two zero-work relays
# (bench/relay) chained in front of the app, which parse nothing: Go's
# netpoller with a goroutine per direction, one thread on raw epoll, a
# multiplexed link with batched writes (the transport a framed
# runtime-to-runtime protocol would have), and socat when installed.
#
#   bench/invoke.sh               # 10s per measure, 3 rounds
#   DURATION=20s ROUNDS=5 bench/invoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/mecha" ./cmd/mecha
go build -o "$work/trivialapp" ./bench/trivialapp
go build -o "$work/relay" ./bench/relay

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port); B_HTTP=$(free_port); B_GOSSIP=$(free_port); A_HTTP=$(free_port)
common=(--dapr-grpc-port 0 --metrics-port 0 --broker=false --internal-port 0 --gossip-bind-address 127.0.0.1 --log-level warn)
"$work/trivialapp" -addr "127.0.0.1:$APP_PORT" &
APP_PID=$!
GOMAXPROCS=${RUNTIME_PROCS:-} "$work/mecha" run --app-id target --app-port "$APP_PORT" --dapr-http-port "$B_HTTP" --gossip-port "$B_GOSSIP" \
  --data-dir "$work/b" "${common[@]}" &
B_PID=$!
GOMAXPROCS=${RUNTIME_PROCS:-} "$work/mecha" run --app-id caller --dapr-http-port "$A_HTTP" --gossip-port 0 --join "127.0.0.1:$B_GOSSIP" \
  --data-dir "$work/a" "${common[@]}" &
A_PID=$!
# The floor: pairs of zero-work relays in front of the app.
chains=(copy epoll mux)
declare -A CHAIN_URL CHAIN_PIDS
for mode in copy epoll; do
  p2=$(free_port); p1=$(free_port)
  "$work/relay" -m "$mode" -l "127.0.0.1:$p2" -u "127.0.0.1:$APP_PORT" & q2=$!
  "$work/relay" -m "$mode" -l "127.0.0.1:$p1" -u "127.0.0.1:$p2" & q1=$!
  CHAIN_URL[$mode]="http://127.0.0.1:$p1/ping"; CHAIN_PIDS[$mode]="$q1 $q2"
done
p2=$(free_port); p1=$(free_port)
"$work/relay" -m muxout -l "127.0.0.1:$p2" -u "127.0.0.1:$APP_PORT" & q2=$!
for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$p2") 2>/dev/null && break; sleep 0.1; done
"$work/relay" -m muxin -l "127.0.0.1:$p1" -u "127.0.0.1:$p2" & q1=$!
CHAIN_URL[mux]="http://127.0.0.1:$p1/ping"; CHAIN_PIDS[mux]="$q1 $q2"
if command -v socat >/dev/null; then
  p2=$(free_port); p1=$(free_port)
  socat "TCP-LISTEN:$p2,bind=127.0.0.1,fork,reuseaddr,nodelay" "TCP:127.0.0.1:$APP_PORT,nodelay" & q2=$!
  socat "TCP-LISTEN:$p1,bind=127.0.0.1,fork,reuseaddr,nodelay" "TCP:127.0.0.1:$p2,nodelay" & q1=$!
  chains+=(socat); CHAIN_URL[socat]="http://127.0.0.1:$p1/ping"; CHAIN_PIDS[socat]="$q1 $q2"
fi
for mode in "${chains[@]}"; do
  for _ in $(seq 50); do curl -sf -o /dev/null -X POST "${CHAIN_URL[$mode]}" && break; sleep 0.1; done
done

VIA="http://127.0.0.1:$A_HTTP/v1.0/invoke/target/method/ping"
DIRECT="http://127.0.0.1:$APP_PORT/ping"
for _ in $(seq 200); do
  curl -sf -o /dev/null -X POST "$VIA" && break
  sleep 0.1
done
curl -sf -o /dev/null -X POST "$VIA" || { echo "runtime A never reached the app through B" >&2; exit 1; }

head -c 1024 /dev/zero | tr '\0' 'x' > "$work/body"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = "$(cat "$work/body")"
LUA

# cpu_ticks pid… → user+system ticks of the processes and their children
# (socat forks one per connection).
cpu_ticks() {
  local t=0 p
  for p in "$@"; do t=$(( t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat") )); done
  for p in $(for q in "$@"; do pgrep -P "$q"; done); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done
  echo "$t"
}

# measure url conns [pids…] → "rps p50_us p90_us cpu_ticks errors"; the
# CPU is the runtimes' unless other pids are given.
measure() {
  local url=$1 conns=$2 out before after
  shift 2
  local pids=("$@")
  [ ${#pids[@]} -gt 0 ] || pids=("$A_PID" "$B_PID")
  before=$(cpu_ticks "${pids[@]}")
  out=$(wrk -t1 -c"$conns" -d"$DURATION" --latency -s "$work/post.lua" "$url")
  after=$(cpu_ticks "${pids[@]}")
  awk -v ticks=$((after - before)) '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1e6; return v }
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=us($2)} $1=="90%" {p90=us($2)} /Non-2xx/ {err=$NF}
    END {printf "%.0f %.0f %.0f %d %d\n", rps, p50, p90, ticks, (err==""?0:err)}' <<<"$out"
}

ONE="http://127.0.0.1:$B_HTTP/v1.0/invoke/target/method/ping"
for r in $(seq "$ROUNDS"); do
  echo "direct1 $(measure "$DIRECT" 1)" >> "$work/res"
  echo "one1 $(measure "$ONE" 1)" >> "$work/res"
  echo "via1 $(measure "$VIA" 1)" >> "$work/res"
  echo "direct16 $(measure "$DIRECT" 16)" >> "$work/res"
  echo "via16 $(measure "$VIA" 16)" >> "$work/res"
  for mode in "${chains[@]}"; do
    # shellcheck disable=SC2086
    echo "$mode-1 $(measure "${CHAIN_URL[$mode]}" 1 ${CHAIN_PIDS[$mode]})" >> "$work/res"
    # shellcheck disable=SC2086
    echo "$mode-16 $(measure "${CHAIN_URL[$mode]}" 16 ${CHAIN_PIDS[$mode]})" >> "$work/res"
  done
done
med() { awk -v k="$1" -v c="$2" '$1==k {print $c}' "$work/res" | sort -n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)'; }
hz=$(getconf CLK_TCK); secs=${DURATION%s}
echo "machine: $(nproc) cores, $(uname -sr); wrk -t1, ${DURATION} per measure, median of $ROUNDS interleaved rounds, 1 KB POST"
echo
echo "| measure | direct | through two runtimes | added |"
echo "|---|---|---|---|"
d50=$(med direct1 3); v50=$(med via1 3); d90=$(med direct1 4); v90=$(med via1 4)
echo "| p50 at 1 connection | ${d50} µs | ${v50} µs | $((v50 - d50)) µs |"
echo "| p90 at 1 connection | ${d90} µs | ${v90} µs | $((v90 - d90)) µs |"
o50=$(med one1 3); o90=$(med one1 4)
echo "| for reference: through one runtime (its app's own), p50 / p90 | | ${o50} / ${o90} µs | $((o50 - d50)) / $((o90 - d90)) µs |"
echo "| req/s at 16 connections | $(med direct16 2) | $(med via16 2) | |"
v16=$(med via16 2); t16=$(med via16 5)
awk -v rps="$v16" -v ticks="$t16" -v hz="$hz" -v s="$secs" 'BEGIN {
  cores = ticks / hz / s; printf "| runtime CPU (A+B) at 16 connections | | %.2f cores at %d req/s = %.3f vCPU per 1,000 req/s | |\n", cores, rps, cores / (rps/1000) }'
echo
echo "The floor: two zero-work relays in front of the app, same run (CPU is the two relays')"
echo
echo "| chain | p50 added | p90 added | req/s at 16 connections | CPU per 1,000 req/s |"
echo "|---|---|---|---|---|"
for mode in mecha "${chains[@]}"; do
  k1=$mode-1; k16=$mode-16
  [ "$mode" = mecha ] && { k1=via1; k16=via16; }
  awk -v m="$mode" -v p50="$(med "$k1" 3)" -v p90="$(med "$k1" 4)" -v d50="$d50" -v d90="$d90" \
      -v rps="$(med "$k16" 2)" -v ticks="$(med "$k16" 5)" -v hz="$hz" -v s="$secs" 'BEGIN {
    printf "| %s | %d µs | %d µs | %d | %.3f vCPU |\n", m, p50 - d50, p90 - d90, rps, ticks / hz / s / (rps / 1000) }'
done
echo
echo "all rounds:"; sed 's/^/  /' "$work/res"
