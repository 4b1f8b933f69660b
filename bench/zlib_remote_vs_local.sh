#!/bin/bash
# zlib_remote_vs_local.sh - wall time of a clean `bazel test //...` of the
# zlib sample workspace (tests/e2e/workspaces/zlib) executed remotely through
# a fresh casboxd, beside Bazel's own local linux-sandbox build of the same
# workspace, measured in the same run; prints the medians and their ratio.
#
#   bench/zlib_remote_vs_local.sh [RUNS]        (default 3)
#
# Each run is `bazel clean` (not timed) and a timed `bazel test //...` on a
# warm Bazel server, once per mode; the order of the two modes alternates
# from run to run so that drift in the machine's load hits both alike:
#   local   --spawn_strategy=linux-sandbox
#   remote  --remote_executor=grpc://127.0.0.1:PORT --spawn_strategy=remote
#           --noremote_local_fallback --noremote_accept_cached, against a
#           casboxd started for that run on an empty state dir (so the run
#           includes uploading every input)
# A remote run counts only if every spawn ran remotely and none was a cache
# hit; a local run only if its spawns ran in linux-sandbox. Untimed warm-up
# builds in both modes come first (BENCH_WARMUP pairs, default 2): the page
# cache, and the Bazel server's JIT-compiled code for each mode (its own CPU
# time in a remote build fell from 7.6 to 3.9 s over three builds with one
# warm-up). Beside the wall times it prints the CPU seconds each build
# cost: the whole machine's busy time, the Bazel server's own threads and
# casboxd's own threads (the sandboxes are neither), which is where a
# same-machine remote build pays for its gRPC traffic.
#
# Reuses the end-to-end harness (tests/e2e/lib.sh): CASBOXD, CASBOXD_ARGS,
# BAZEL_BIN, E2E_LOG_DIR, E2E_KEEP_TMP, CASBOX_TEST_CACHE work as there.
# BENCH_JOBS sets --jobs for both modes (default 8); BENCH_PROFILE=1 also
# writes Bazel's profile of each timed build beside its log (MODE.N.profile.gz;
# `bazel analyze-profile` reads it). Logs: $E2E_LOG_DIR
# (default /tmp/casbox-e2e-logs-UID/zlib_remote_vs_local).
# A benchmark, not a test: it never judges the times, and exits non-zero
# only when a build or a check failed.
RUNS="${1:-3}"
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [RUNS]" >&2
  exit 2
fi
# shellcheck source=../tests/e2e/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../tests/e2e/lib.sh"

JOBS="${BENCH_JOBS:-8}"
WARMUP="${BENCH_WARMUP:-2}"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || { echo "BENCH_WARMUP must be a number" >&2; exit 2; }
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# median N...: the median of the numbers (mean of the middle two if even).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# busy_ticks: clock ticks all CPUs spent not idle (user, nice, system, irq,
# softirq, steal) since boot, from /proc/stat.
busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# own_ticks PID: ticks the process's own threads used (utime + stime), 0 if
# it is gone. The command name may hold spaces: count fields from the ")".
own_ticks() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  st="${st##*) }"
  awk '{ print $12 + $13 }' <<< "$st"
}

# timed_test LOG FLAGS...: bazel clean, then a timed `bazel test //...`;
# prints the wall seconds, and in LOG.cpu the CPU seconds the machine, the
# Bazel server's own threads and casboxd's own threads (0 when none) used.
# Fails the script when Bazel fails.
timed_test() {
  local logf="$1" t0 t1 b0 b1 z0 z1 d0 d1 tck
  shift
  [ -n "${BENCH_PROFILE:-}" ] && set -- "$@" --profile="${logf%.log}.profile.gz"
  bazel_run "${logf%.log}.clean.log" clean
  b0="$(busy_ticks)" z0="$(own_ticks "$BAZEL_SERVER_PID")" d0="$(own_ticks "${CASBOXD_PID:-0}")"
  t0="$EPOCHREALTIME"
  bazel_run "$logf" test //... --jobs="$JOBS" --verbose_failures "$@"
  t1="$EPOCHREALTIME"
  b1="$(busy_ticks)" z1="$(own_ticks "$BAZEL_SERVER_PID")" d1="$(own_ticks "${CASBOXD_PID:-0}")"
  tck="$(getconf CLK_TCK)"
  awk -v t="$tck" -v b=$((b1 - b0)) -v z=$((z1 - z0)) -v d=$((d1 - d0)) \
    'BEGIN { printf "%.1f %.1f %.1f\n", b / t, z / t, d / t }' > "$logf.cpu"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# cpu_line LOG: "CPU busy B s (Bazel server Z s, casboxd D s)" of that run.
cpu_line() {
  awk '{ printf "CPU busy %s s (Bazel server %s s, casboxd %s s)", $1, $2, $3 }' "$1.cpu"
}

run_local() {
  local i="$1" logf="$E2E_LOG_DIR/local.$1.log" w kinds
  w="$(timed_test "$logf" --spawn_strategy=linux-sandbox)"
  kinds="$(nonremote_kinds "$logf" | paste -sd, -)"
  case ",$kinds," in
    *,linux-sandbox,*) ;;
    *) e2e_fail "local run $i: no linux-sandbox spawns: $(processes_line "$logf") (log $logf)" ;;
  esac
  log "local  run $i: ${w} s  ($(processes_line "$logf")) $(cpu_line "$logf")"
  local_times+=("$w")
  local_cpu+=("$(cat "$logf.cpu")")
  local_line="$(processes_line "$logf")"
}

run_remote() {
  local i="$1" logf="$E2E_LOG_DIR/remote.$1.log" w other hits ran state="$E2E_TMP/state.$1"
  # A fresh daemon on an empty state dir for every run.
  stop_casboxd || e2e_fail "casboxd did not stop cleanly"
  if [ -n "$prev_state" ]; then
    chmod -R u+w "$prev_state" 2>/dev/null
    rm -rf "$prev_state"
  fi
  start_casboxd "$state"
  prev_state="$state"
  remote_flags
  w="$(timed_test "$logf" "${REMOTE_FLAGS[@]}")"
  other="$(nonremote_kinds "$logf" | paste -sd, -)"
  [ -z "$other" ] || e2e_fail "remote run $i: spawns ran locally ($other) (log $logf)"
  hits="$(process_count "$logf" "remote cache hit")"
  [ "$hits" = 0 ] || e2e_fail "remote run $i: $hits remote cache hits (log $logf)"
  ran="$(process_count "$logf" remote)"
  [ "$ran" -gt 0 ] || e2e_fail "remote run $i: nothing ran remotely (log $logf)"
  log "remote run $i: ${w} s  ($(processes_line "$logf")) $(cpu_line "$logf")"
  remote_times+=("$w")
  remote_cpu+=("$(cat "$logf.cpu")")
  remote_line="$(processes_line "$logf")"
}

# The remote mode's flags; CASBOXD_TARGET is read when they are used.
remote_flags() {
  REMOTE_FLAGS=(--remote_executor="grpc://$CASBOXD_TARGET" --spawn_strategy=remote
    --noremote_local_fallback --noremote_accept_cached --remote_timeout=120
    --remote_default_exec_properties=OSFamily=Linux)
}

local_times=() remote_times=() local_line="" remote_line="" prev_state=""
local_cpu=() remote_cpu=()

start_casboxd "$E2E_TMP/state.0"
prev_state="$E2E_TMP/state.0"
casboxd_exec_enabled || e2e_fail "casboxd does not advertise execution (exec_enabled is false)"
stage_workspace zlib
cd "$WS_DIR" || e2e_fail "cannot cd to $WS_DIR"
remote_flags

# One untimed build per mode first, so that each timed build finds the Bazel
# server's JIT-compiled code for its mode (the gRPC client or the local
# sandbox) and a warm page cache; the remote one against the daemon of run 0.
log "warm-up: $WARMUP local and $WARMUP remote build(s) + test of zlib (not timed)"
for i in $(seq 1 "$WARMUP"); do
  bazel_run "$E2E_LOG_DIR/warmup.$i.clean.log" clean
  bazel_run "$E2E_LOG_DIR/warmup.$i.log" test //... --jobs="$JOBS" --spawn_strategy=linux-sandbox
  bazel_run "$E2E_LOG_DIR/warmup.$i.remote.clean.log" clean
  bazel_run "$E2E_LOG_DIR/warmup.$i.remote.log" test //... --jobs="$JOBS" "${REMOTE_FLAGS[@]}"
done
BAZEL_SERVER_PID="$(bazel_in info server_pid 2> /dev/null)"

for i in $(seq 1 "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then
    run_local "$i"
    run_remote "$i"
  else
    run_remote "$i"
    run_local "$i"
  fi
done

med_local="$(median "${local_times[@]}")"
med_remote="$(median "${remote_times[@]}")"
ratio="$(awk -v r="$med_remote" -v l="$med_local" 'BEGIN { printf "%.2f", r / l }')"
runs_local="$(IFS=/; echo "${local_times[*]}")"
runs_remote="$(IFS=/; echo "${remote_times[*]}")"

echo
echo "zlib: clean 'bazel test //...' (--jobs=$JOBS), median of $RUNS run(s), $(nproc) CPUs"
echo "load at start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-34s %7s s   (runs %s)\n' "local, linux-sandbox" "$med_local" "$runs_local"
printf '      %s\n' "$local_line"
printf '  %-34s %7s s   (runs %s)\n' "remote, fresh casboxd per run" "$med_remote" "$runs_remote"
printf '      %s\n' "$remote_line"
printf '  %-34s %7sx\n' "ratio remote / local" "$ratio"
# mean_cpu ROWS...: the mean of each column of "busy bazel casboxd" rows.
mean_cpu() {
  printf '%s\n' "$@" | awk '{ b += $1; z += $2; d += $3 } END {
    printf "CPU busy %.1f s (Bazel server %.1f s, casboxd %.1f s)", b / NR, z / NR, d / NR }'
}
echo "  mean CPU seconds per build, local:  $(mean_cpu "${local_cpu[@]}")"
echo "  mean CPU seconds per build, remote: $(mean_cpu "${remote_cpu[@]}")"
echo "logs: $E2E_LOG_DIR"
