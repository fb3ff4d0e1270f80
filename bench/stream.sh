#!/usr/bin/env bash
# Nexmark through the broker, end to end: `mecha stream bench nexmark
# --through-broker` (the generator writes JSON events into an embedded
# broker, a job with --parallelism 2 reads them, all in one process), q0
# and q5, ROUNDS interleaved rounds, medians reported: events per wall
# second, and per CPU-second of the process (per_core), which moves less
# with the load of a shared machine. BEFORE adds another binary's runs to
# the same rounds. Then the floors, each part alone, as
# go test -bench: the generator (BenchmarkGenerateEncode), the broker's
# in-process produce and fetch (BenchmarkProduceFetch), and the job's
# pipeline on JSON records (BenchmarkRound).
#
#   bench/stream.sh                         # 5,000,000 events, 3 rounds
#   EVENTS=2000000 ROUNDS=5 BEFORE=/tmp/old/mecha bench/stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-5000000}
ROUNDS=${ROUNDS:-3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/mecha" ./cmd/mecha
bins=("$work/mecha")
labels=("this build")
if [ -n "${BEFORE:-}" ]; then
  cp "$BEFORE" "$work/before"
  bins+=("$work/before")
  labels+=("BEFORE binary")
fi

for _ in $(seq "$ROUNDS"); do
  for q in q0 q5; do
    for i in "${!bins[@]}"; do
      out=$("${bins[$i]}" stream bench nexmark --query "$q" --events "$EVENTS" --through-broker --parallelism 2)
      eps=$(grep '^outputs=' <<<"$out" | sed -E 's/.*events_per_s=([0-9]+).*/\1/')
      core=$(grep '^nexmark-broker' <<<"$out" | sed -E 's/.*per_core=([0-9]+).*/\1/')
      echo "$q $i $eps $core" >> "$work/results"
    done
  done
done

echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{print $3}'); $EVENTS events, --parallelism 2, median of $ROUNDS interleaved rounds"
echo
echo "| query | build | events/s end to end (median) | all rounds | events per CPU-second (median) | all rounds |"
echo "|---|---|---|---|---|---|"
col() { awk -v q="$1" -v i="$2" -v c="$3" '$1==q && $2==i {print $c}' "$work/results" | sort -n; }
for q in q0 q5; do
  for i in "${!bins[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s |\n' "$q" "${labels[$i]}" \
      "$(col "$q" "$i" 3 | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')" "$(col "$q" "$i" 3 | paste -sd' ')" \
      "$(col "$q" "$i" 4 | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')" "$(col "$q" "$i" 4 | paste -sd' ')"
  done
done
echo
echo "Floors, each part alone (go test -bench, -count 3):"
go test -run XXX -bench 'GenerateEncode' -count 3 ./stream/nexmark | grep '^Benchmark'
go test -run XXX -bench 'ProduceFetch' -count 3 ./broker/inproc | grep '^Benchmark'
go test -run XXX -bench 'Round/q[05]' -count 3 ./stream/job | grep '^Benchmark'
