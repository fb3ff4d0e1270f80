# Shell functions the wrk benchmark scripts share; source it.

# free_port prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_ticks pid prints the CPU time (user+system, in clock ticks) the
# process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure url script pid [pid...]: one wrk run with THREADS, CONNS and
# DURATION; prints "rps p50 p90 p99 non2xx cpu_us_per_request", the last
# being the CPU time the measured processes (summed) spent per request:
# unlike req/s it barely moves with the noise of a shared machine. script
# may be empty.
measure() {
  local url=$1 script=$2
  shift 2
  local args=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  local out before=0 after=0 p
  for p in "$@"; do before=$((before + $(cpu_ticks "$p"))); done
  out=$(wrk "${args[@]}" "$url")
  for p in "$@"; do after=$((after + $(cpu_ticks "$p"))); done
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
       / requests in / {n=$1} /Requests\/sec/ {rps=int($2)} $1=="50%" {p50=$2} $1=="90%" {p90=$2} $1=="99%" {p99=$2}
       /Non-2xx/ {err=$NF} END {printf "%d %s %s %s %d %.1f\n", rps, p50, p90, p99, (err==""?0:err), ticks/hz*1e6/n}' <<<"$out"
}

# build_bench prog: builds mecha and bench/prog into $work, a temporary
# directory removed on exit.
build_bench() {
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  go build -o "$work/mecha" ./cmd/mecha
  go build -o "$work/$1" "./bench/$1"
}
