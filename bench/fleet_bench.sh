#!/bin/bash
# The fleet's own overhead (prints only; not a test): exec_bench's trivial
# actions (`echo <unique>`, do_not_cache, skip_cache_lookup; bench/exec_bench.c)
# executed by one casboxd (--role all, exec_bench's own daemon) and through a
# casboxd --role scheduler with one casboxd --role worker on the same machine,
# loopback only. Prints each exec_bench's "Execute over gRPC" rows (median,
# p99, mean, actions/s, one at a time and K in flight) and the fleet/all
# ratios of the medians and p99s. Target: one at a time, median <= 1.3x.
#
#   bench/fleet_bench.sh [ACTIONS]     default 200
#
# Env: CASBOX_BUILD_DIR (default build), FLEET_BENCH_SLOTS (execution.slots of
# both, default 2), FLEET_BENCH_INFLIGHT (default 8).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="${CASBOX_BUILD_DIR:-$repo/build}"
casboxd="$build/bin/casboxd"
bench="$build/bin/exec_bench"
n="${1:-200}"
slots="${FLEET_BENCH_SLOTS:-2}"
inflight="${FLEET_BENCH_INFLIGHT:-8}"
[ -x "$casboxd" ] && [ -x "$bench" ] || { echo "fleet_bench: build first (scripts/build)" >&2; exit 1; }
tmp="$(mktemp -d "${TMPDIR:-/tmp}/casbox-fleet-bench.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "fleet_bench: $n actions; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" --casboxd "$casboxd" --actions "$n" --inflight "$inflight" \
  --daemon-arg --set --daemon-arg "execution.slots=$slots" > "$tmp/all.txt"

port="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$casboxd" --role scheduler --listen "127.0.0.1:$port" --state-dir "$tmp/sched" \
  --set scheduler.grace=30 > "$tmp/sched.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$tmp/sched.log" && break; sleep 0.1; done
"$casboxd" --role worker --scheduler "grpc://127.0.0.1:$port" --state-dir "$tmp/worker" \
  --set execution.slots="$slots" > "$tmp/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ "$(grep -c joined "$tmp/sched.log")" -ge "$slots" ] && break; sleep 0.1; done
"$bench" --target "127.0.0.1:$port" --actions "$n" --inflight "$inflight" > "$tmp/fleet.txt"

rows() { grep "Execute over gRPC" "$1"; }
echo "--role all (exec_bench's own daemon, $slots slots):"
rows "$tmp/all.txt"
echo "scheduler + 1 worker ($slots slots), loopback:"
rows "$tmp/fleet.txt"
paste <(rows "$tmp/all.txt" | awk '{print $4, $5}') <(rows "$tmp/fleet.txt" | awk '{print $4, $5}') |
  awk 'NR == 1 { w = "one at a time" } NR == 2 { w = "'"$inflight"' in flight" }
       { printf "fleet/all, %s: median %.2fx, p99 %.2fx\n", w, $3 / $1, $4 / $2 }'
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
