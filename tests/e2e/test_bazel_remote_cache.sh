#!/bin/bash
# End-to-end: a real Bazel (Debian's 4.2.3) uses casboxd as a remote cache.
#
# For each sample workspace (tiny, zlib):
#   1. clean `bazel test //...` with --remote_cache=grpc://127.0.0.1:PORT:
#      actions run locally (linux-sandbox), results are uploaded; on a fresh
#      daemon there must be no cache hit;
#   2. `bazel clean` and the same command again: every action must be a
#      remote cache hit (no local process of any kind), as many as ran in 1;
#   3. the outputs Bazel downloaded in 2 (ByteStream.Read) must work here:
#      run the binaries, decompress, check the executable bits.
# The tiny workspace uses --remote_instance_name=e2e/tiny, zlib the empty name.
#
# Knobs: E2E_WORKSPACES="tiny zlib" (default), E2E_JOBS (default 4),
# plus those of lib.sh (CASBOXD, E2E_LOG_DIR, E2E_KEEP_TMP, ...).
source "$(dirname "$0")/lib.sh"

start_casboxd

for ws in ${E2E_WORKSPACES:-tiny zlib}; do
  stage_workspace "$ws"
  cd "$WS_DIR"
  instance=""
  [ "$ws" = tiny ] && instance="e2e/tiny"
  flags=(
    --remote_cache="grpc://$CASBOXD_TARGET"   # grpc:// = plaintext; without a scheme Bazel uses TLS
    --remote_instance_name="$instance"
    --remote_timeout=60
    --jobs="${E2E_JOBS:-4}"
    --test_output=errors
    --verbose_failures
  )

  log "$ws: phase 1: clean bazel test //... with --remote_cache (local execution, uploads)"
  l1="$E2E_LOG_DIR/$ws-phase1.log"
  bazel_run "$l1" test //... "${flags[@]}" --execution_log_json_file="$l1.exec.json"
  log "$ws: phase 1: $(processes_line "$l1")"
  hits1="$(process_count "$l1" "remote cache hit")"
  [ "$hits1" = 0 ] || e2e_fail "$ws: $hits1 remote cache hits on a fresh casboxd (log $l1)"
  [ "$(process_count "$l1" remote)" = 0 ] || e2e_fail "$ws: remote executions without --remote_executor? (log $l1)"
  ran1=$(($(processes_total "$l1") - $(process_count "$l1" internal)))
  [ "$ran1" -gt 0 ] || e2e_fail "$ws: phase 1 ran no action (log $l1)"

  log "$ws: phase 2: bazel clean, same command: every action must be a remote cache hit"
  bazel_run "$E2E_LOG_DIR/$ws-clean.log" clean
  l2="$E2E_LOG_DIR/$ws-phase2.log"
  bazel_run "$l2" test //... "${flags[@]}" --execution_log_json_file="$l2.exec.json"
  log "$ws: phase 2: $(processes_line "$l2")"
  check_rebuild_from_cache "$ws" "$l2" "$l2.exec.json" "$ran1"
  hits2="$(process_count "$l2" "remote cache hit")"
  grep -qE '\(cached\) PASSED|PASSED' "$l2" || e2e_fail "$ws: no test passed in phase 2 (log $l2)"

  bin="$(bazel_in info bazel-bin "${flags[@]}" 2> /dev/null)"
  log "$ws: checking outputs downloaded from the cache in $bin"
  case "$ws" in
    tiny)
      require_executable "$bin/hello"
      [ "$("$bin/hello")" = "hello from genrule 5" ] || e2e_fail "downloaded hello prints '$("$bin/hello")'"
      grep -q 'hello from genrule' "$bin/gen.h" || e2e_fail "downloaded gen.h is wrong"
      ;;
    zlib)
      require_executable "$bin/minigzip"
      echo hello | "$bin/minigzip" | "$bin/minigzip" -d | grep -qx hello || e2e_fail "downloaded minigzip is broken"
      scratch="$E2E_TMP/scratch"; mkdir -p "$scratch"
      "$bin/example" "$scratch/foo.gz" > /dev/null || e2e_fail "downloaded example (zlib's self test) fails"
      "$bin/minigzip" -d < "$bin/tests/table.txt.gz" | cmp -s - "$bin/tests/table.txt" ||
        e2e_fail "downloaded table.txt.gz does not decompress to table.txt"
      require_executable "$bin/tests/data_tree/run.sh"
      [ "$("$bin/tests/data_tree/run.sh")" = tree-script-ok ] || e2e_fail "tree output run.sh is wrong"
      [ "$(tr '\n' ' ' < "$bin/tests/tree_summary.txt")" = "24 650 tree-script-ok " ] ||
        e2e_fail "downloaded tree_summary.txt is wrong: $(cat "$bin/tests/tree_summary.txt")"
      ;;
  esac
  log "$ws: ok: $ran1 actions uploaded, $hits2 remote cache hits after bazel clean"
  bazel_shutdown "$WS_DIR"
  cd /
done

casboxd_alive || e2e_fail "casboxd died during the builds"
