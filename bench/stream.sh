#!/usr/bin/env bash
# Nexmark through the broker, end to end: `mecha stream bench nexmark
# --through-broker` (the generator writes JSON events into an embedded
# broker, a job with --parallelism 2 reads them, all in one process), q0
# and q5, ROUNDS interleaved rounds, medians reported. BEFORE adds another
# binary's runs to the same rounds. Then the floors, each part alone, as
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
      line=$("${bins[$i]}" stream bench nexmark --query "$q" --events "$EVENTS" --through-broker --parallelism 2 | grep '^outputs=')
      eps=$(sed -E 's/.*events_per_s=([0-9]+).*/\1/' <<<"$line")
      echo "$q $i $eps" >> "$work/results"
    done
  done
done

echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{print $3}'); $EVENTS events, --parallelism 2, median of $ROUNDS interleaved rounds"
echo
echo "| query | build | events/s end to end (median) | all rounds |"
echo "|---|---|---|---|"
for q in q0 q5; do
  for i in "${!bins[@]}"; do
    all=$(awk -v q="$q" -v i="$i" '$1==q && $2==i {print $3}' "$work/results" | sort -n | paste -sd' ')
    med=$(awk -v q="$q" -v i="$i" '$1==q && $2==i {print $3}' "$work/results" | sort -n | awk -v n="$ROUNDS" 'NR==int((n+1)/2)')
    printf '| %s | %s | %s | %s |\n' "$q" "${labels[$i]}" "$med" "$all"
  done
done
echo
echo "Floors, each part alone (go test -bench, -count 3):"
go test -run XXX -bench 'GenerateEncode' -count 3 ./stream/nexmark | grep '^Benchmark'
go test -run XXX -bench 'ProduceFetch' -count 3 ./broker/inproc | grep '^Benchmark'
go test -run XXX -bench 'Round/q[05]' -count 3 ./stream/job | grep '^Benchmark'
