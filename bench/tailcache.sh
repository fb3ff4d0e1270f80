#!/usr/bin/env bash
# The broker's tail cache: tail consumers' delivery latency while a
# lagging consumer reads 1 GiB of history, with the cache on and off, in
# the same run. Run as root for the memory cgroup and the page cache
# drops. See bench/tailcache.
#
#   bench/tailcache.sh
#   RUNS=2 HISTORY=$((1<<30)) bench/tailcache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1}
. bench/lib.sh
build_bench tailcache
for r in $(seq "$RUNS"); do
  echo "== run $r"
  "$work/tailcache" -mecha "$work/mecha" -history "${HISTORY:-1073741824}" -cgroup-mb "${CGROUP_MB:-512}"
done
