#!/bin/bash
# End-to-end: a fleet on shared storage. BuildStream's artifact server
# (Debian's buildstream) in a network namespace of this test's own is the
# fleet's CAS; casboxd --role scheduler and two casboxd --role worker all have
# it as [cas] remote (the workers write ActionCache entries to the
# scheduler). Debian's Bazel builds and tests zlib through the scheduler,
# every spawn remote: it passes, both workers ran actions, fetching their
# inputs from the artifact server (their log lines), every input and output
# digest of Bazel's execution log is in the artifact server (its own
# FindMissingBlobs), and after `bazel clean` every spawn is a cache hit.
# Skips without root, without the buildstream package, or while casboxd has
# no --role (the fleet, issue 15).
source "$(dirname "$0")/lib.sh"
export E2E_DIR

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
  n="$(grep -c 'fetched [0-9]* blobs' "$E2E_LOG_DIR/worker$i.log" || true)"
  [ "$n" -gt 0 ] || e2e_fail "worker w$i ran no action fetching from the artifact server (log $E2E_LOG_DIR/worker$i.log)"
  log "worker w$i ran $n actions"
done
"$PY" - "$l1.exec.json" "$BST_TARGET" <<'PYEOF' || e2e_fail "blobs missing from the artifact server"
import json, os, sys
sys.path.insert(0, os.environ["E2E_DIR"])
import reapi_client as rc
text, dec, pos, seen = open(sys.argv[1]).read(), json.JSONDecoder(), 0, {}
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    for e in obj.get("inputs", []) + obj.get("actualOutputs", []):
        d = e.get("digest")
        if d:
            seen[d["hash"]] = int(d.get("sizeBytes", 0))
ds = [rc.re_pb2.Digest(hash=h, size_bytes=s) for h, s in seen.items()]
c = rc.Client(sys.argv[2])
missing = [m for i in range(0, len(ds), 1000) for m in c.find_missing(ds[i:i + 1000])]
print("%d of %d blobs missing from the artifact server" % (len(missing), len(ds)), file=sys.stderr)
sys.exit(1 if missing else 0)
PYEOF
bazel_run "$E2E_LOG_DIR/clean.log" clean
l2="$E2E_LOG_DIR/phase2.log"
bazel_run "$l2" test //... "${flags[@]}" --execution_log_json_file="$l2.exec.json"
check_rebuild_from_cache zlib "$l2" "$l2.exec.json" "$ran1"
log "ok: $ran1 actions on 2 workers over the artifact server; rebuild: $(processes_line "$l2")"
