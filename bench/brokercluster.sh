#!/usr/bin/env bash
# The broker cluster (--broker-cluster: three runtimes, RF=3) against a
# single runtime's broker in the same run: acks=all produce and consume
# rates, produce latency at a fixed rate, and the longest gap between
# acknowledgements across kill -9 of a partition leader's runtime. See
# bench/brokercluster.
#
#   bench/brokercluster.sh
#   RUNS=2 RECORDS=100000 bench/brokercluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
. bench/lib.sh
build_bench brokercluster
for r in $(seq "$RUNS"); do
  echo "== run $r"
  "$work/brokercluster" -mecha "$work/mecha" -records "${RECORDS:-200000}"
done
