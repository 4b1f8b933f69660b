#!/bin/bash
# End-to-end: a casbox fleet. casboxd --role scheduler in this network
# namespace, three casboxd --role worker, each in a network namespace of its
# own (ip netns + a veth on a bridge this test creates; the scheduler listens
# only on the bridge's address), each with its own state dir and FUSE mount.
#
#   1. Debian's Bazel builds and tests the tiny and zlib workspaces through
#      the scheduler, every spawn remote; at least two workers ran actions
#      (their logs); a clean rebuild is all remote cache hits.
#   2. Faults, with a sleeping action (fleet_action.py):
#      - SIGKILL the worker running it: the action still succeeds, once, on
#        another worker, and the scheduler logged the requeue;
#      - cut a worker's link (ip link set down) while it runs it: the same;
#      - SIGTERM a busy worker: its action completes on it, it exits and
#        takes no more;
#      - an action asking for a platform no worker has: FAILED_PRECONDITION.
#
# Needs root (network namespaces). Knobs: E2E_WORKSPACES="tiny zlib",
# E2E_JOBS (default 8), and lib.sh's.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || e2e_skip "needs root for ip netns"
command -v ip > /dev/null || e2e_skip "no ip (iproute2)"

# Names and a /24 unique to this run; removed on exit.
tag=$$
BR="cbf${tag}b"
NET="10.$((tag % 200 + 20)).$(((tag / 200) % 250))"
SCHED_IP="$NET.1"
NWORKERS=3
WORKER_PIDS=()
SCHED_PID=""

fleet_cleanup() {
  local i pid
  for pid in "${WORKER_PIDS[@]}" "$SCHED_PID"; do
    [ -n "$pid" ] && kill -KILL "$pid" 2> /dev/null
  done
  for pid in "${WORKER_PIDS[@]}" "$SCHED_PID"; do
    [ -n "$pid" ] && wait "$pid" 2> /dev/null
  done
  for i in $(seq 1 "$NWORKERS"); do
    ip netns del "cbf${tag}n$i" 2> /dev/null
  done
  ip link del "$BR" 2> /dev/null
  return 0
}
e2e_on_exit fleet_cleanup

ip link add "$BR" type bridge || e2e_skip "cannot create a bridge"
ip addr add "$SCHED_IP/24" dev "$BR"
ip link set "$BR" up
for i in $(seq 1 "$NWORKERS"); do
  ns="cbf${tag}n$i"
  ip netns add "$ns"
  ip link add "cbf${tag}h$i" type veth peer name "cbf${tag}p$i"
  ip link set "cbf${tag}p$i" netns "$ns"
  ip link set "cbf${tag}h$i" master "$BR" up
  ip -n "$ns" addr add "$NET.$((10 + i))/24" dev "cbf${tag}p$i"
  ip -n "$ns" link set "cbf${tag}p$i" up
  ip -n "$ns" link set lo up
done

# grace 0: the builds start only once every slot joined, and the absent-
# platform check below must not depend on how long the run took.
SCHED_LOG="$E2E_LOG_DIR/scheduler.log"
port="$(e2e_free_port)"
TARGET="$SCHED_IP:$port"
: > "$SCHED_LOG"
"$CASBOXD" --role scheduler --listen "$TARGET" --state-dir "$E2E_TMP/scheduler" \
  --set scheduler.worker_timeout=4 --set scheduler.idle_poll=2 --set scheduler.grace=0 \
  --set scheduler.max_retries=2 < /dev/null >> "$SCHED_LOG" 2>&1 &
SCHED_PID=$!
for _ in $(seq 1 300); do
  grep -qF "casboxd: listening on $TARGET" "$SCHED_LOG" && break
  kill -0 "$SCHED_PID" 2> /dev/null || { tail -n 20 "$SCHED_LOG" >&2; e2e_fail "scheduler exited"; }
  sleep 0.1
done
grep -qF "casboxd: listening on $TARGET" "$SCHED_LOG" || e2e_fail "scheduler did not start"
log "scheduler pid $SCHED_PID on $TARGET (bridge $BR)"

# start_worker I: casboxd --role worker in namespace I (2 slots).
start_worker() {
  local i="$1"
  ip netns exec "cbf${tag}n$i" "$CASBOXD" --role worker --scheduler "grpc://$TARGET" \
    --state-dir "$E2E_TMP/worker$i" --set worker.name="w$i" --set execution.slots=2 \
    < /dev/null >> "$E2E_LOG_DIR/worker$i.log" 2>&1 &
  WORKER_PIDS[i]=$!
}
for i in $(seq 1 "$NWORKERS"); do
  : > "$E2E_LOG_DIR/worker$i.log"
  start_worker "$i"
done
for _ in $(seq 1 300); do
  [ "$(grep -c 'fleet: worker .* joined' "$SCHED_LOG")" -ge $((2 * NWORKERS)) ] && break
  sleep 0.1
done
[ "$(grep -c 'fleet: worker .* joined' "$SCHED_LOG")" -ge $((2 * NWORKERS)) ] ||
  e2e_fail "not every worker slot joined: $(grep 'joined' "$SCHED_LOG")"
log "$NWORKERS workers joined, 2 slots each"

# -- 1. Bazel through the fleet --------------------------------------------------
for ws in ${E2E_WORKSPACES:-tiny zlib}; do
  stage_workspace "$ws"
  cd "$WS_DIR"
  instance=""
  [ "$ws" = tiny ] && instance="e2e/tiny"
  flags=(
    --remote_executor="grpc://$TARGET"
    --remote_instance_name="$instance"
    --spawn_strategy=remote
    --noremote_local_fallback
    --remote_timeout=120
    --remote_default_exec_properties=OSFamily=Linux
    --jobs="${E2E_JOBS:-8}"
    --test_output=errors
    --verbose_failures
  )
  l1="$E2E_LOG_DIR/$ws-phase1.log"
  bazel_run "$l1" test //... "${flags[@]}" --execution_log_json_file="$l1.exec.json"
  log "$ws: phase 1: $(processes_line "$l1")"
  other="$(nonremote_kinds "$l1" | paste -sd, -)"
  [ -z "$other" ] || e2e_fail "$ws: spawns ran locally ($other) (log $l1)"
  ran1="$(process_count "$l1" remote)"
  [ "$ran1" -gt 0 ] || e2e_fail "$ws: no remote process (log $l1)"
  bazel_run "$E2E_LOG_DIR/$ws-clean.log" clean
  l2="$E2E_LOG_DIR/$ws-phase2.log"
  bazel_run "$l2" test //... "${flags[@]}" --execution_log_json_file="$l2.exec.json"
  log "$ws: phase 2: $(processes_line "$l2")"
  check_rebuild_from_cache "$ws" "$l2" "$l2.exec.json" "$ran1"
  bazel_shutdown "$WS_DIR"
  cd /
done
busy=0
for i in $(seq 1 "$NWORKERS"); do
  n="$(grep -c "worker w$i/[0-9]*: action .* exit" "$E2E_LOG_DIR/worker$i.log" || true)"
  log "worker w$i ran $n actions"
  [ "$n" -gt 0 ] && busy=$((busy + 1))
done
[ "$busy" -ge 2 ] || e2e_fail "actions ran on $busy worker(s); want at least 2"

# -- 2. faults ------------------------------------------------------------------------
# run_sleeper S OUT: a sleeping action in the background; RUN_PID is its client.
run_sleeper() {
  "$PY" "$E2E_DIR/fleet_action.py" --target "$TARGET" --sleep "$1" > "$2" 2>&1 &
  RUN_PID=$!
}
# running_worker: the worker whose log says it started an action after mark
# lines (MARKS[i]); waits up to 30 s.
running_worker() {
  local i n
  for _ in $(seq 1 300); do
    for i in $(seq 1 "$NWORKERS"); do
      n="$(grep -c ': running action ' "$E2E_LOG_DIR/worker$i.log" || true)"
      if [ "$n" -gt "${MARKS[i]}" ]; then
        echo "$i"
        return 0
      fi
    done
    sleep 0.1
  done
  return 1
}
mark_workers() {
  MARKS=()
  for i in $(seq 1 "$NWORKERS"); do
    MARKS[i]="$(grep -c ': running action ' "$E2E_LOG_DIR/worker$i.log" || true)"
  done
}
requeues() { grep -c 'requeued' "$SCHED_LOG" || true; }

# SIGKILL
mark_workers
q0="$(requeues)"
run_sleeper 6 "$E2E_TMP/kill.out"
victim="$(running_worker)" || e2e_fail "no worker started the sleeping action"
kill -KILL "${WORKER_PIDS[victim]}"
wait "${WORKER_PIDS[victim]}" 2> /dev/null || true
wait "$RUN_PID" || e2e_fail "after SIGKILL of w$victim: $(cat "$E2E_TMP/kill.out")"
read -r _ who out _ < "$E2E_TMP/kill.out"
[[ "$who" != "w$victim/"* ]] || e2e_fail "the action's result names the killed worker $who"
[ "$out" = ok ] || e2e_fail "unexpected result after SIGKILL: $(cat "$E2E_TMP/kill.out")"
[ "$(requeues)" -gt "$q0" ] || e2e_fail "no requeue logged after SIGKILL of w$victim"
log "ok: SIGKILL of busy worker w$victim: the action was requeued and ran on $who"
start_worker "$victim"

# link down
mark_workers
q0="$(requeues)"
run_sleeper 6 "$E2E_TMP/cut.out"
cut="$(running_worker)" || e2e_fail "no worker started the sleeping action"
ip link set "cbf${tag}h$cut" down
wait "$RUN_PID" || e2e_fail "after cutting w$cut's link: $(cat "$E2E_TMP/cut.out")"
read -r _ who out _ < "$E2E_TMP/cut.out"
[[ "$who" != "w$cut/"* ]] || e2e_fail "the result names the cut-off worker $who"
[ "$(requeues)" -gt "$q0" ] || e2e_fail "no requeue logged after cutting w$cut"
ip link set "cbf${tag}h$cut" up
log "ok: cutting busy worker w$cut's link: the action was requeued and ran on $who"

# SIGTERM a busy worker: it finishes, exits, takes no more
mark_workers
run_sleeper 4 "$E2E_TMP/term.out"
term="$(running_worker)" || e2e_fail "no worker started the sleeping action"
kill -TERM "${WORKER_PIDS[term]}"
wait "$RUN_PID" || e2e_fail "after SIGTERM of w$term: $(cat "$E2E_TMP/term.out")"
read -r _ who out _ < "$E2E_TMP/term.out"
[[ "$who" == "w$term/"* ]] || e2e_fail "SIGTERM'd w$term did not finish its action (result: $who)"
rc=0
wait "${WORKER_PIDS[term]}" || rc=$?
[ "$rc" = 0 ] || e2e_fail "w$term exited with $rc after SIGTERM (log $E2E_LOG_DIR/worker$term.log)"
WORKER_PIDS[term]=""
n0="$(grep -c ': running action ' "$E2E_LOG_DIR/worker$term.log" || true)"
"$PY" "$E2E_DIR/fleet_action.py" --target "$TARGET" > "$E2E_TMP/after.out" 2>&1 ||
  e2e_fail "an action after w$term stopped: $(cat "$E2E_TMP/after.out")"
[ "$(grep -c ': running action ' "$E2E_LOG_DIR/worker$term.log" || true)" = "$n0" ] ||
  e2e_fail "w$term took work after SIGTERM"
log "ok: SIGTERM'd busy worker w$term finished its action, exited 0 and took no more"

# a platform no worker announced
"$PY" "$E2E_DIR/fleet_action.py" --target "$TARGET" --platform gpu=tesla \
  --expect-code FAILED_PRECONDITION > "$E2E_TMP/plat.out" 2>&1 ||
  e2e_fail "absent platform: $(cat "$E2E_TMP/plat.out")"
grep -q "gpu=tesla" "$E2E_TMP/plat.out" || e2e_fail "the message does not name the platform: $(cat "$E2E_TMP/plat.out")"
log "ok: an absent platform is FAILED_PRECONDITION: $(cut -c1-160 "$E2E_TMP/plat.out")"

kill -0 "$SCHED_PID" 2> /dev/null || e2e_fail "the scheduler died"
kill -TERM "$SCHED_PID"
rc=0
wait "$SCHED_PID" || rc=$?
SCHED_PID=""
[ "$rc" = 0 ] || e2e_fail "the scheduler exited with $rc on SIGTERM"
log "ok: the scheduler exited 0 on SIGTERM"
