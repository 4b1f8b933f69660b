#!/bin/bash
# End-to-end: Debian's Bazel against casboxd whose store is a cache in front of
# BuildStream's artifact server (Debian's buildstream package, another
# project's REAPI CAS) as the source of truth ([cas] remote, issue 16). The
# artifact server runs in a network namespace of this test's own
# (artifact_server.py); casboxd reaches it over a veth link.
#
#   1. `bazel test //...` of the zlib workspace, every spawn remote: passes;
#      every input Bazel uploaded and every output the actions produced is in
#      the artifact server, checked through its own CAS API
#      (FindMissingBlobs on the digests of Bazel's execution log).
#   2. `bazel clean`, same command: every spawn a remote cache hit.
#   3. Some input blobs (the zlib sources) deleted from the artifact server's
#      repository, casboxd restarted on an empty state dir with a local cache
#      of 1 MiB (smaller than the build's inputs): the build still passes,
#      every action executed remotely again, the deleted blobs are back in
#      the artifact server, and casboxd fetched inputs from it and evicted.
#   4. An output blob that an ActionCache entry names (minigzip) deleted from
#      the artifact server: after `bazel clean` the action that made it runs
#      again (GetActionResult answered NOT_FOUND) and the rest are hits.
# Skips without root or without the buildstream package.
source "$(dirname "$0")/lib.sh"
source "$E2E_DIR/lib_shared_storage.sh"

why="$("$PY" "$E2E_DIR/artifact_server.py" check)" || e2e_skip "$why"
bst_state="$E2E_TMP/bst.json"
e2e_on_exit "'$PY' '$E2E_DIR/artifact_server.py' down '$bst_state' > /dev/null 2>&1"
BST_URL="$("$PY" "$E2E_DIR/artifact_server.py" up "$E2E_TMP/bst-repo" "$bst_state")" ||
  e2e_fail "bst-artifact-server did not start (log $E2E_TMP/bst-repo.log)"
BST_TARGET="${BST_URL#grpc://}"
BST_REPO="$E2E_TMP/bst-repo"
log "bst-artifact-server at $BST_URL (repository $BST_REPO)"
base_args="${CASBOXD_ARGS:-}"

stage_workspace zlib
cd "$WS_DIR"
flags=(
  --spawn_strategy=remote --noremote_local_fallback --remote_timeout=120
  --remote_default_exec_properties=OSFamily=Linux --jobs="${E2E_JOBS:-8}"
  --test_output=errors --verbose_failures
)

CASBOXD_ARGS="$base_args --set cas.remote=$BST_URL"
start_casboxd "$E2E_TMP/state1"

log "phase 1: clean bazel test //... through casboxd (grpc://$CASBOXD_TARGET) backed by $BST_URL"
l1="$E2E_LOG_DIR/phase1.log"
bazel_run "$l1" test //... --remote_executor="grpc://$CASBOXD_TARGET" "${flags[@]}" \
  --execution_log_json_file="$l1.exec.json"
other="$(nonremote_kinds "$l1" | paste -sd, -)"
[ -z "$other" ] || e2e_fail "phase 1: spawns ran locally ($other) (log $l1)"
ran1="$(process_count "$l1" remote)"
[ "$ran1" -gt 0 ] && [ "$(process_count "$l1" "remote cache hit")" = 0 ] ||
  e2e_fail "phase 1: $(processes_line "$l1"): want remote executions and no hits (log $l1)"
exec_log_digests "$l1.exec.json" > "$E2E_TMP/digests1"
bst_missing "$E2E_TMP/digests1" > "$E2E_TMP/missing1"
[ -s "$E2E_TMP/missing1" ] && { head -5 "$E2E_TMP/missing1" >&2;
  e2e_fail "phase 1: $(wc -l < "$E2E_TMP/missing1") of $(wc -l < "$E2E_TMP/digests1") inputs/outputs are not in the artifact server"; }
log "phase 1: ok: $ran1 actions ran remotely; all $(wc -l < "$E2E_TMP/digests1") input and output blobs are in the artifact server"

log "phase 2: bazel clean, same command: every spawn a cache hit"
bazel_run "$E2E_LOG_DIR/clean2.log" clean
l2="$E2E_LOG_DIR/phase2.log"
bazel_run "$l2" test //... --remote_executor="grpc://$CASBOXD_TARGET" "${flags[@]}" \
  --execution_log_json_file="$l2.exec.json"
check_rebuild_from_cache zlib "$l2" "$l2.exec.json" "$ran1"
log "phase 2: ok: $(processes_line "$l2")"

log "phase 3: zlib sources deleted from the artifact server; casboxd on an empty state, cache 1 MiB"
exec_log_digests "$l1.exec.json" inputs .c > "$E2E_TMP/sources"
deleted="$(bst_delete "$E2E_TMP/sources")"
[ "$deleted" -gt 5 ] || e2e_fail "phase 3: only $deleted source blobs to delete"
[ "$(bst_missing "$E2E_TMP/sources" | wc -l)" = "$deleted" ] ||
  e2e_fail "phase 3: the artifact server still has blobs deleted from its repository"
stop_casboxd || e2e_fail "casboxd did not stop cleanly (log $CASBOXD_LOG)"
CASBOXD_ARGS="$base_args --set cas.remote=$BST_URL --set cas.max_bytes=1M"
start_casboxd "$E2E_TMP/state3"
bazel_run "$E2E_LOG_DIR/clean3.log" clean
l3="$E2E_LOG_DIR/phase3.log"
bazel_run "$l3" test //... --remote_executor="grpc://$CASBOXD_TARGET" "${flags[@]}" \
  --execution_log_json_file="$l3.exec.json"
other="$(nonremote_kinds "$l3" | paste -sd, -)"
[ -z "$other" ] || e2e_fail "phase 3: spawns ran locally ($other) (log $l3)"
[ "$(process_count "$l3" remote)" -ge "$ran1" ] ||
  e2e_fail "phase 3: $(processes_line "$l3"): want every action executed again (log $l3)"
[ -z "$(bst_missing "$E2E_TMP/sources")" ] ||
  e2e_fail "phase 3: deleted sources are still missing from the artifact server after the build"
fetched="$(grep -oE 'fetched [0-9]+ blobs' "$CASBOXD_LOG" | awk '{s += $2} END {print s + 0}')"
[ "$fetched" -gt 0 ] || e2e_fail "phase 3: casboxd logged no blob fetched from the remote (log $CASBOXD_LOG)"
blobs_mib="$(du -sm "$E2E_TMP/state3/cas/blobs" | cut -f1)"
log "phase 3: ok: $(processes_line "$l3"); $fetched input blobs fetched from the artifact server; local cache now ${blobs_mib} MiB"

log "phase 4: an output that an ActionCache entry names is deleted from the artifact server"
exec_log_digests "$l3.exec.json" outputs k8-fastbuild/bin/minigzip > "$E2E_TMP/minigzip"
[ "$(wc -l < "$E2E_TMP/minigzip")" = 1 ] || e2e_fail "phase 4: want one minigzip output in $l3.exec.json"
bst_delete "$E2E_TMP/minigzip" > /dev/null
bazel_run "$E2E_LOG_DIR/clean4.log" clean
l4="$E2E_LOG_DIR/phase4.log"
bazel_run "$l4" test //... --remote_executor="grpc://$CASBOXD_TARGET" "${flags[@]}" \
  --execution_log_json_file="$l4.exec.json"
misses="$(exec_log_misses "$l4.exec.json" | grep -v '^xml ' || true)"
grep -q ' CppLink .*k8-fastbuild/bin/minigzip$' <<< "$misses" ||
  e2e_fail "phase 4: the minigzip link was served from the cache although its output was gone: $misses (log $l4)"
[ "$(grep -c . <<< "$misses")" = 1 ] || e2e_fail "phase 4: want only minigzip's link to run again, ran: $misses"
[ -z "$(bst_missing "$E2E_TMP/minigzip")" ] || e2e_fail "phase 4: minigzip is not back in the artifact server"
bin="$(bazel_in info bazel-bin --remote_executor="grpc://$CASBOXD_TARGET" "${flags[@]}" 2> /dev/null)"
echo hello | "$bin/minigzip" | "$bin/minigzip" -d | grep -qx hello || e2e_fail "phase 4: minigzip is broken"
log "phase 4: ok: $(processes_line "$l4"); only minigzip's link ran again"
casboxd_alive || e2e_fail "casboxd died during the builds"
