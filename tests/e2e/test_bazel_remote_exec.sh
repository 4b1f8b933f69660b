#!/bin/bash
# End-to-end: a real Bazel (Debian's 4.2.3) sends every action to casboxd.
#
# Skips (exit 77) while casboxd does not advertise execution
# (GetCapabilities: execution_capabilities.exec_enabled), so it turns on by
# itself once the Execution service lands.
#
# For each sample workspace (tiny, zlib):
#   1. clean `bazel test //...` with --remote_executor=grpc://127.0.0.1:PORT
#      --spawn_strategy=remote --noremote_local_fallback: every spawn must be
#      remote (none local), none may be a cache hit on a fresh daemon, and
#      the tests must pass;
#   2. the downloaded outputs work here (binaries run, tree output kept its
#      executable bit);
#   3. `bazel clean` and the same command: everything served from casboxd's
#      action cache ("N remote cache hit", as many as were executed in 1);
#   4. as root with /dev/fuse and the default staging, every action's inputs
#      were mounted through FUSE.
#
# Knobs: E2E_WORKSPACES="tiny zlib", E2E_JOBS (default 8),
# E2E_EXEC_PROPERTIES="k=v ..." (default OSFamily=Linux; "none" sends no
# platform), E2E_DOWNLOAD=all|toplevel|minimal (default all), and lib.sh's.
source "$(dirname "$0")/lib.sh"

start_casboxd
if ! casboxd_exec_enabled; then
  e2e_skip "casboxd does not advertise execution (GetCapabilities: exec_enabled is false)"
fi

download="${E2E_DOWNLOAD:-all}"
for ws in ${E2E_WORKSPACES:-tiny zlib}; do
  stage_workspace "$ws"
  cd "$WS_DIR"
  instance=""
  [ "$ws" = tiny ] && instance="e2e/tiny"
  flags=(
    --remote_executor="grpc://$CASBOXD_TARGET"   # grpc:// = plaintext; without a scheme Bazel uses TLS
    --remote_instance_name="$instance"
    --spawn_strategy=remote
    --noremote_local_fallback
    --remote_timeout=120
    --remote_download_outputs="$download"
    --jobs="${E2E_JOBS:-8}"
    --test_output=errors
    --verbose_failures
  )
  props="${E2E_EXEC_PROPERTIES:-OSFamily=Linux}"
  if [ "$props" != none ]; then
    for p in $props; do flags+=(--remote_default_exec_properties="$p"); done
  fi
  # Bazel 4.2.3 refuses toplevel/minimal unless .d/.jdeps files stay in memory.
  [ "$download" != all ] && flags+=(--experimental_inmemory_dotd_files --experimental_inmemory_jdeps_files)

  log "$ws: phase 1: clean remote build + test of //... via grpc://$CASBOXD_TARGET"
  l1="$E2E_LOG_DIR/$ws-phase1.log"
  t0=$SECONDS
  bazel_run "$l1" test //... "${flags[@]}" --execution_log_json_file="$l1.exec.json"
  log "$ws: phase 1: $(processes_line "$l1") in $((SECONDS - t0)) s"
  other="$(nonremote_kinds "$l1" | paste -sd, -)"
  [ -z "$other" ] || { remote_warnings "$l1"; exec_log_misses "$l1.exec.json" | grep -v ' remote ' | sed 's/^[a-z]* /  ran locally: /' >&2; e2e_fail "$ws: spawns ran locally ($other): $(processes_line "$l1") (log $l1)"; }
  hits1="$(process_count "$l1" "remote cache hit")"
  [ "$hits1" = 0 ] || e2e_fail "$ws: $hits1 remote cache hits on a fresh casboxd (log $l1)"
  ran1="$(process_count "$l1" remote)"
  [ "$ran1" -gt 0 ] || e2e_fail "$ws: no remote process in phase 1: $(processes_line "$l1") (log $l1)"

  if [ "$download" = all ]; then
    bin="$(bazel_in info bazel-bin "${flags[@]}" 2> /dev/null)"
    case "$ws" in
      tiny)
        require_executable "$bin/hello"
        [ "$("$bin/hello")" = "hello from genrule 5" ] || e2e_fail "remotely built hello prints '$("$bin/hello")'"
        ;;
      zlib)
        require_executable "$bin/minigzip"
        echo hello | "$bin/minigzip" | "$bin/minigzip" -d | grep -qx hello || e2e_fail "remotely built minigzip is broken"
        scratch="$E2E_TMP/scratch"; mkdir -p "$scratch"
        "$bin/example" "$scratch/foo.gz" > /dev/null || e2e_fail "remotely built example (zlib self test) fails"
        "$bin/minigzip" -d < "$bin/tests/table.txt.gz" | cmp -s - "$bin/tests/table.txt" ||
          e2e_fail "remotely made table.txt.gz does not decompress to table.txt"
        require_executable "$bin/tests/data_tree/run.sh"
        ;;
    esac
    log "$ws: downloaded outputs work locally"
  fi

  log "$ws: phase 2: bazel clean, same command: expecting remote action-cache hits"
  bazel_run "$E2E_LOG_DIR/$ws-clean.log" clean
  l2="$E2E_LOG_DIR/$ws-phase2.log"
  bazel_run "$l2" test //... "${flags[@]}" --execution_log_json_file="$l2.exec.json"
  log "$ws: phase 2: $(processes_line "$l2")"
  other="$(nonremote_kinds "$l2" | paste -sd, -)"
  [ -z "$other" ] || { remote_warnings "$l2"; e2e_fail "$ws: phase 2 spawns ran locally ($other) (log $l2)"; }
  check_rebuild_from_cache "$ws" "$l2" "$l2.exec.json" "$ran1"
  hits2="$(process_count "$l2" "remote cache hit")"
  log "$ws: ok: $ran1 actions executed remotely, $hits2 cache hits after bazel clean"
  bazel_shutdown "$WS_DIR"
  cd /
done

casboxd_alive || e2e_fail "casboxd died during the builds"

# The default staging (auto) mounts every input tree lazily through FUSE
# where /dev/fuse opens: as root, unless the daemon was told otherwise.
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && [[ "${CASBOXD_ARGS:-}" != *staging* ]]; then
  grep -q "input staging: fuse, .*(execution.staging = auto)" "$CASBOXD_LOG" ||
    e2e_fail "the default staging is not FUSE as root (log $CASBOXD_LOG)"
  staged_hl="$(grep -c ' staged [0-9]* files in ' "$CASBOXD_LOG" || true)"
  staged_fuse="$(grep -c ' fuse tree of [0-9]* files in ' "$CASBOXD_LOG" || true)"
  [ "$staged_hl" = 0 ] && [ "$staged_fuse" -gt 0 ] ||
    e2e_fail "want every action staged through FUSE: $staged_fuse fuse, $staged_hl hardlink (log $CASBOXD_LOG)"
  log "ok: $staged_fuse actions staged lazily through FUSE (the default)"
fi
