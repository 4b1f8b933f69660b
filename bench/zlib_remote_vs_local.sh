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
# hit; a local run only if its spawns ran in linux-sandbox. One untimed local
# warm-up build comes first (Bazel server, page cache).
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
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# median N...: the median of the numbers (mean of the middle two if even).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# timed_test LOG FLAGS...: bazel clean, then a timed `bazel test //...`;
# prints the wall seconds. Fails the script when Bazel fails.
timed_test() {
  local logf="$1" t0 t1
  shift
  [ -n "${BENCH_PROFILE:-}" ] && set -- "$@" --profile="${logf%.log}.profile.gz"
  bazel_run "${logf%.log}.clean.log" clean
  t0="$EPOCHREALTIME"
  bazel_run "$logf" test //... --jobs="$JOBS" --verbose_failures "$@"
  t1="$EPOCHREALTIME"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

run_local() {
  local i="$1" logf="$E2E_LOG_DIR/local.$1.log" w kinds
  w="$(timed_test "$logf" --spawn_strategy=linux-sandbox)"
  kinds="$(nonremote_kinds "$logf" | paste -sd, -)"
  case ",$kinds," in
    *,linux-sandbox,*) ;;
    *) e2e_fail "local run $i: no linux-sandbox spawns: $(processes_line "$logf") (log $logf)" ;;
  esac
  log "local  run $i: ${w} s  ($(processes_line "$logf"))"
  local_times+=("$w")
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
  w="$(timed_test "$logf" \
    --remote_executor="grpc://$CASBOXD_TARGET" \
    --spawn_strategy=remote \
    --noremote_local_fallback \
    --noremote_accept_cached \
    --remote_timeout=120 \
    --remote_default_exec_properties=OSFamily=Linux)"
  other="$(nonremote_kinds "$logf" | paste -sd, -)"
  [ -z "$other" ] || e2e_fail "remote run $i: spawns ran locally ($other) (log $logf)"
  hits="$(process_count "$logf" "remote cache hit")"
  [ "$hits" = 0 ] || e2e_fail "remote run $i: $hits remote cache hits (log $logf)"
  ran="$(process_count "$logf" remote)"
  [ "$ran" -gt 0 ] || e2e_fail "remote run $i: nothing ran remotely (log $logf)"
  log "remote run $i: ${w} s  ($(processes_line "$logf"))"
  remote_times+=("$w")
  remote_line="$(processes_line "$logf")"
}

local_times=() remote_times=() local_line="" remote_line="" prev_state=""

start_casboxd "$E2E_TMP/state.0"
prev_state="$E2E_TMP/state.0"
casboxd_exec_enabled || e2e_fail "casboxd does not advertise execution (exec_enabled is false)"
stage_workspace zlib
cd "$WS_DIR" || e2e_fail "cannot cd to $WS_DIR"

log "warm-up: local build + test of zlib (not timed)"
bazel_run "$E2E_LOG_DIR/warmup.log" test //... --jobs="$JOBS" --spawn_strategy=linux-sandbox

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
echo "logs: $E2E_LOG_DIR"
