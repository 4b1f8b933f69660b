#!/bin/bash
# End-to-end: a fleet on shared storage. BuildStream's artifact server
# (Debian's buildstream) in a network namespace of this test's own is the
# fleet's CAS; casboxd --role scheduler and two casboxd --role worker all have
# it as [cas] remote (the workers write ActionCache entries to the
# scheduler). Debian's Bazel builds and tests zlib through the scheduler,
# every spawn remote: it passes, both workers ran actions (their logs), every
# input and output digest of Bazel's execution log is in the artifact server
# (its own FindMissingBlobs), and after `bazel clean` every spawn is a cache
# hit.
# Skips without root, without the buildstream package, or while casboxd has
# no --role (the fleet, issue 15).
source "$(dirname "$0")/lib.sh"
source "$E2E_DIR/lib_shared_storage.sh"

why="$("$PY" "$E2E_DIR/artifact_server.py" check)" || e2e_skip "$why"
"$CASBOXD" --help 2>&1 | grep -q -- '--role' || e2e_skip "casboxd has no --role (issue 15)"

bst_state="$E2E_TMP/bst.json"
WORKER_PIDS=()
SCHED_PID=""
fleet_down() {
  local pid
  for pid in "${WORKER_PIDS[@]}" "$SCHED_PID"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null
  done
  for pid in "${WORKER_PIDS[@]}" "$SCHED_PID"; do
    [ -n "$pid" ] && wait "$pid" 2> /dev/null
  done
  "$PY" "$E2E_DIR/artifact_server.py" down "$bst_state" > /dev/null 2>&1
  return 0
}
e2e_on_exit fleet_down
BST_URL="$("$PY" "$E2E_DIR/artifact_server.py" up "$E2E_TMP/bst-repo" "$bst_state")" ||
  e2e_fail "bst-artifact-server did not start (log $E2E_TMP/bst-repo.log)"
BST_TARGET="${BST_URL#grpc://}"
BST_REPO="$E2E_TMP/bst-repo"
log "bst-artifact-server at $BST_URL"

SCHED_LOG="$E2E_LOG_DIR/scheduler.log"
port="$(e2e_free_port)"
TARGET="127.0.0.1:$port"
: > "$SCHED_LOG"
"$CASBOXD" --role scheduler --listen "$TARGET" --state-dir "$E2E_TMP/scheduler" \
  --set cas.remote="$BST_URL" < /dev/null >> "$SCHED_LOG" 2>&1 &
SCHED_PID=$!
for _ in $(seq 1 300); do
  grep -qF "casboxd: listening on $TARGET" "$SCHED_LOG" && break
  kill -0 "$SCHED_PID" 2> /dev/null || { tail -n 20 "$SCHED_LOG" >&2; e2e_fail "scheduler exited"; }
  sleep 0.1
done
grep -qF "casboxd: listening on $TARGET" "$SCHED_LOG" || e2e_fail "scheduler did not start"
for i in 1 2; do
  : > "$E2E_LOG_DIR/worker$i.log"
  "$CASBOXD" --role worker --scheduler "grpc://$TARGET" --cas "$BST_URL" \
    --set action_cache.remote="grpc://$TARGET" --state-dir "$E2E_TMP/worker$i" \
    --set worker.name="w$i" --set execution.slots=2 \
    < /dev/null >> "$E2E_LOG_DIR/worker$i.log" 2>&1 &
  WORKER_PIDS[i]=$!
done
for _ in $(seq 1 300); do
  [ "$(grep -c 'fleet: worker .* joined' "$SCHED_LOG")" -ge 4 ] && break
  sleep 0.1
done
[ "$(grep -c 'fleet: worker .* joined' "$SCHED_LOG")" -ge 4 ] ||
  e2e_fail "not every worker slot joined (log $SCHED_LOG)"
log "scheduler on $TARGET, 2 workers with 2 slots each, all on $BST_URL"

stage_workspace zlib
cd "$WS_DIR"
flags=(
  --remote_executor="grpc://$TARGET" --spawn_strategy=remote --noremote_local_fallback
  --remote_timeout=120 --remote_default_exec_properties=OSFamily=Linux --jobs="${E2E_JOBS:-8}"
  --test_output=errors --verbose_failures
)
l1="$E2E_LOG_DIR/phase1.log"
bazel_run "$l1" test //... "${flags[@]}" --execution_log_json_file="$l1.exec.json"
other="$(nonremote_kinds "$l1" | paste -sd, -)"
[ -z "$other" ] || e2e_fail "spawns ran locally ($other) (log $l1)"
ran1="$(process_count "$l1" remote)"
[ "$ran1" -gt 0 ] || e2e_fail "no remote process (log $l1)"
for i in 1 2; do
  n="$(grep -c "worker w$i/[0-9]*: action .* exit" "$E2E_LOG_DIR/worker$i.log" || true)"
  [ "$n" -gt 0 ] || e2e_fail "worker w$i ran no action (log $E2E_LOG_DIR/worker$i.log)"
  cached="$(find "$E2E_TMP/worker$i/cas/blobs" -type f | wc -l)"
  log "worker w$i ran $n actions; its cache holds $cached blobs"
done
exec_log_digests "$l1.exec.json" > "$E2E_TMP/digests"
bst_missing "$E2E_TMP/digests" > "$E2E_TMP/missing"
[ -s "$E2E_TMP/missing" ] && e2e_fail "$(wc -l < "$E2E_TMP/missing") of $(wc -l < "$E2E_TMP/digests") input/output blobs are not in the artifact server"
bazel_run "$E2E_LOG_DIR/clean.log" clean
l2="$E2E_LOG_DIR/phase2.log"
bazel_run "$l2" test //... "${flags[@]}" --execution_log_json_file="$l2.exec.json"
check_rebuild_from_cache zlib "$l2" "$l2.exec.json" "$ran1"
log "ok: $ran1 actions on 2 workers over the artifact server; rebuild: $(processes_line "$l2")"
