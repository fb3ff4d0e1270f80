#!/usr/bin/env bash
# Crux cluster failover: write unavailability after kill -9 of one of
# three servers, through a client runtime, with strong writes and with
# eventual ones (which also reports the acknowledged writes the crash
# took: the replication lag at that moment). See bench/cruxfailover.
#
#   bench/cruxfailover.sh            # one run of each
#   RUNS=3 bench/cruxfailover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
. bench/lib.sh
build_bench cruxfailover
for r in $(seq "$RUNS"); do
  for c in strong eventual; do
    echo "== run $r, $c"
    "$work/cruxfailover" -mecha "$work/mecha" -consistency "$c"
  done
done
