#!/usr/bin/env bash
# Publish through the Dapr HTTP API (POST /v1.0/publish/pubsub/orders,
# wrk on 16 connections) into two pubsubs side by side, in one run:
#   - pubsub.mecha, the default of `mecha run`: durable, in the embedded
#     broker's log (--broker-fsync interval, the default; and always);
#   - pubsub.in-memory, from a component YAML: nothing kept.
# Each is its own `mecha run` with the same flags; the measures are
# interleaved, ROUNDS times, and the medians reported with the CPU each
# mecha spent per request.
#
#   bench/publish.sh                 # 10s per measure, 3 rounds
#   DURATION=20s ROUNDS=5 bench/publish.sh
#   MECHA=/tmp/old/mecha bench/publish.sh   # a binary built elsewhere
#   BEFORE=/tmp/old/mecha bench/publish.sh  # adds its pubsub.mecha, same run
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -n "${MECHA:-}" ]; then
  cp "$MECHA" "$work/mecha"
else
  go build -o "$work/mecha" ./cmd/mecha
fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
mkdir -p "$work/inmemory"
cat > "$work/inmemory/pubsub.yaml" <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
YAML

names=("pubsub.mecha, fsync interval (default)" "pubsub.mecha, fsync always")
extra=("" "--broker-fsync always")
bins=("$work/mecha" "$work/mecha")
if [ -n "${BEFORE:-}" ]; then
  cp "$BEFORE" "$work/before"
  names+=("pubsub.mecha, fsync interval, BEFORE binary")
  extra+=("")
  bins+=("$work/before")
fi
# The reference goes last.
names+=("pubsub.in-memory")
extra+=("--resources-path $work/inmemory")
bins+=("$work/mecha")
declare -a PORTS PIDS
for i in "${!names[@]}"; do
  PORTS[$i]=$(free_port)
  # shellcheck disable=SC2086
  "${bins[$i]}" run --app-id "pub$i" --dapr-http-port "${PORTS[$i]}" --dapr-grpc-port 0 --metrics-port 0 \
    --broker-port -1 --internal-port 0 --gossip-port 0 --gossip-bind-address 127.0.0.1 --log-level warn --data-dir "$work/data$i" ${extra[$i]} &
  PIDS[$i]=$!
done
for i in "${!names[@]}"; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:${PORTS[$i]}/v1.0/healthz" && break
    sleep 0.1
  done
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"warm":1}' \
    "http://127.0.0.1:${PORTS[$i]}/v1.0/publish/pubsub/orders" || { echo "${names[$i]}: publish failed" >&2; exit 1; }
done

cat > "$work/publish.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"orderId":42,"item":"book","qty":1}'
LUA

for _ in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    echo "$i $(measure "http://127.0.0.1:${PORTS[$i]}/v1.0/publish/pubsub/orders" "$work/publish.lua" "${PIDS[$i]}")" >> "$work/results"
  done
done

echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{print $3}'); wrk -t$THREADS -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds"
echo
echo "| publish through | req/s (median) | × in-memory | p50 | p90 | p99 | non-2xx | all rounds req/s | mecha CPU µs/request |"
echo "|---|---|---|---|---|---|---|---|---|"
last=$((${#names[@]} - 1))
base=$(awk -v i="$last" '$1==i {print $2}' "$work/results" | sort -n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
for i in "${!names[@]}"; do
  all=$(awk -v i="$i" '$1==i {print $2}' "$work/results" | sort -n | paste -sd' ')
  med=$(awk -v i="$i" '$1==i' "$work/results" | sort -k2,2n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
  cpu=$(awk -v i="$i" '$1==i {print $7}' "$work/results" | sort -n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
  read -r _ rps p50 p90 p99 errs _ <<<"$med"
  printf '| %s | %s | %.2f | %s | %s | %s | %s | %s | %s |\n' "${names[$i]}" "$rps" "$(echo "$rps / $base" | bc -l)" "$p50" "$p90" "$p99" "$errs" "$all" "$cpu"
done
