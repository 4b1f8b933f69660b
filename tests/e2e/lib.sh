# shellcheck shell=bash
# Shared shell functions of the casbox end-to-end tests (sourced by test_*.sh).
#
# A test script does:
#     source "$(dirname "$0")/lib.sh"       # temp dir, logs, cleanup trap
#     start_casboxd                         # fresh daemon, free port, fresh state
#     stage_workspace tiny                  # temporary copy of a sample workspace
#     cd "$WS_DIR" && bazel_in test //... --remote_cache="grpc://$CASBOXD_TARGET"
# and exits 0 (pass), 77 (skip: e2e_skip) or anything else (fail).  On exit,
# even after a failure or Ctrl-C, the daemon is stopped with SIGTERM (a
# non-zero exit status of casboxd then fails the test), Bazel servers are shut
# down and the temp dir is removed.
#
# Environment:
#   CASBOXD=PATH           daemon binary (default: <repo>/build/bin/casboxd)
#   CASBOXD_ARGS="..."     extra daemon arguments (word-split)
#   E2E_LOG_DIR=DIR        logs (default ${TMPDIR:-/tmp}/casbox-e2e-logs-UID/<test>)
#   E2E_KEEP_TMP=1         keep the temp dir (workspaces, state, Bazel output)
#   BAZEL_BIN=PATH         Bazel (default /usr/bin/bazel-4, Debian's 4.2.3)
#   CASBOX_TEST_CACHE=DIR  cache of zlib sources and generated protos
#                          (default ${XDG_CACHE_HOME:-~/.cache}/casbox-test)
# Nothing here reads outside the repository except that cache, Debian's
# packages and the temp dir.

set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_REPO="$(cd "$E2E_DIR/../.." && pwd)"
# shellcheck source=../../scripts/lib/common.sh
source "$E2E_REPO/scripts/lib/common.sh"

E2E_NAME="$(basename "$0")"; E2E_NAME="${E2E_NAME%.*}"
CASBOXD="${CASBOXD:-$E2E_REPO/build/bin/casboxd}"
BAZEL_BIN="${BAZEL_BIN:-/usr/bin/bazel-4}"
PY="$CASBOX_PYTHON"
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree
E2E_SKIP=77

E2E_TMP="$(mktemp -d "${TMPDIR:-/tmp}/casbox-e2e-$E2E_NAME.XXXXXX")"
E2E_LOG_DIR="${E2E_LOG_DIR:-${TMPDIR:-/tmp}/casbox-e2e-logs-$(id -u)/$E2E_NAME}"
mkdir -p "$E2E_LOG_DIR"
export E2E_LOG_DIR

log() { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
e2e_fail() { log "FAIL: $*"; exit 1; }
e2e_skip() { log "SKIP: $*"; exit "$E2E_SKIP"; }

# -- cleanup ------------------------------------------------------------------
# e2e_on_exit CMD: run CMD (eval'd) when the script exits, last registered
# first.  A failing cleanup turns a passing test into a failure.
_E2E_CLEANUPS=()
e2e_on_exit() { _E2E_CLEANUPS+=("$*"); }

_E2E_CHILD=""
# The original stdout/stderr: a signal may arrive inside a redirected command
# (bazel_run ... > log), and the cleanup messages belong on the terminal.
exec {_E2E_OUT}>&1 {_E2E_ERR}>&2
_e2e_exit() {
  local rc=$? i
  set +e
  trap - EXIT INT TERM
  exec 1>&"$_E2E_OUT" 2>&"$_E2E_ERR"
  if [ -n "$_E2E_CHILD" ]; then   # interrupted while running a long command
    kill -TERM "$_E2E_CHILD" 2>/dev/null
    wait "$_E2E_CHILD" 2>/dev/null
  fi
  for ((i = ${#_E2E_CLEANUPS[@]} - 1; i >= 0; i--)); do
    if ! eval "${_E2E_CLEANUPS[i]}"; then
      [ "$rc" = 0 ] && rc=1
    fi
  done
  if [ "${E2E_KEEP_TMP:-0}" = 1 ]; then
    log "kept $E2E_TMP"
  else
    # A casboxd killed (SIGKILL, a timeout) leaves its FUSE mount
    # <state>/cas/fuse behind, which rm cannot remove and must not walk.
    e2e_unmount_under "$E2E_TMP"
    # Bazel leaves read-only directories in its output base.
    chmod -R u+w "$E2E_TMP" 2>/dev/null
    rm -rf --one-file-system "$E2E_TMP"
  fi
  case "$rc" in
    0) log "PASS (logs: $E2E_LOG_DIR)" ;;
    "$E2E_SKIP") ;;
    *) log "exit status $rc (logs: $E2E_LOG_DIR)" ;;
  esac
  exit "$rc"
}
# e2e_unmount_under DIR: lazily unmount every mount at or below DIR (in this
# mount namespace), deepest first.  Never fails.
e2e_unmount_under() {
  local m
  [ -d "$1" ] || return 0
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do
      fusermount3 -u -z -q "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
        log "cannot unmount $m (left behind)"
    done
  return 0
}
trap _e2e_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# e2e_run CMD...: run a long command so that SIGTERM/SIGINT to the test
# interrupt it at once (bash defers traps while a foreground child runs).
# CMD must be a program, not a shell function.
e2e_run() {
  local rc=0
  "$@" &
  _E2E_CHILD=$!
  wait "$_E2E_CHILD" || rc=$?
  _E2E_CHILD=""
  return "$rc"
}

# -- casboxd ------------------------------------------------------------------
CASBOXD_PID=""      # the daemon
CASBOXD_PORT=""
CASBOXD_TARGET=""
CASBOXD_STATE=""
CASBOXD_LOG="$E2E_LOG_DIR/casboxd.log"
CASBOXD_START_TIMEOUT="${CASBOXD_START_TIMEOUT:-60}"
_CASBOXD_WRAPPER="" # a subshell that waits for the daemon and records its status
_CASBOXD_RC=""
_casboxd_trap_set=0
_casboxd_n=0
: > "$CASBOXD_LOG"

# e2e_free_port: a TCP port that was free a moment ago (casboxd takes no port 0).
e2e_free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# _casboxd_spawn PORT STATE: start the daemon under a wrapper subshell, which
# records its exit status in a file.  (Killing a direct child with SIGKILL
# would make bash print a "Killed" job notice; the wrapper's stderr is quiet.)
_casboxd_spawn() {
  local port="$1" state="$2" pidf rcf
  _casboxd_n=$((_casboxd_n + 1))
  pidf="$E2E_TMP/casboxd.$_casboxd_n.pid"
  rcf="$E2E_TMP/casboxd.$_casboxd_n.rc"
  (
    "$CASBOXD" --listen "127.0.0.1:$port" --state-dir "$state" "${_casboxd_extra[@]}" \
      < /dev/null >> "$CASBOXD_LOG" 2>&1 &
    echo $! > "$pidf"
    rc=0
    wait $! || rc=$?
    echo "$rc" > "$rcf"
  ) 2> /dev/null &
  _CASBOXD_WRAPPER=$!
  _CASBOXD_RC="$rcf"
  while [ ! -s "$pidf" ]; do sleep 0.01; done
  CASBOXD_PID="$(cat "$pidf")"
}

# _casboxd_reap: wait for the wrapper; set CASBOXD_STATUS to the daemon's
# exit status (137 after SIGKILL).  Call it in the main shell, not in $(...).
CASBOXD_STATUS=""
_casboxd_reap() {
  wait "$_CASBOXD_WRAPPER" 2> /dev/null || true
  CASBOXD_STATUS="$(cat "$_CASBOXD_RC" 2> /dev/null || echo unknown)"
  CASBOXD_PID=""
  _CASBOXD_WRAPPER=""
}

# start_casboxd [STATE_DIR]: start the daemon on a free port, by default with
# a fresh state dir in the temp dir (pass the old one to restart on it).
# Waits for "casboxd: listening on 127.0.0.1:PORT" on its stderr.  Sets
# CASBOXD_PID, CASBOXD_PORT, CASBOXD_TARGET (127.0.0.1:PORT), CASBOXD_STATE.
start_casboxd() {
  local state="${1:-$E2E_TMP/state}" try port start line deadline rc
  [ -n "$CASBOXD_PID" ] && e2e_fail "start_casboxd: casboxd already running (pid $CASBOXD_PID)"
  [ -x "$CASBOXD" ] || e2e_fail "casboxd binary $CASBOXD does not exist: run scripts/build (or set CASBOXD)"
  _casboxd_extra=()
  # shellcheck disable=SC2206
  [ -n "${CASBOXD_ARGS:-}" ] && _casboxd_extra=($CASBOXD_ARGS)
  mkdir -p "$state"
  if [ "$_casboxd_trap_set" = 0 ]; then
    e2e_on_exit _casboxd_on_exit
    _casboxd_trap_set=1
  fi
  for try in 1 2 3; do
    port="$(e2e_free_port)"
    line="casboxd: listening on 127.0.0.1:$port"
    printf '=== %s: %s --listen 127.0.0.1:%s --state-dir %s %s\n' "$(date +%T)" "$CASBOXD" \
      "$port" "$state" "${_casboxd_extra[*]:-}" >> "$CASBOXD_LOG"
    start="$(stat -c %s "$CASBOXD_LOG")"
    _casboxd_spawn "$port" "$state"
    deadline=$((SECONDS + CASBOXD_START_TIMEOUT))
    while :; do
      if tail -c +"$((start + 1))" "$CASBOXD_LOG" | grep -qF "$line"; then
        CASBOXD_PORT="$port"
        CASBOXD_TARGET="127.0.0.1:$port"
        CASBOXD_STATE="$state"
        log "casboxd pid $CASBOXD_PID listening on $CASBOXD_TARGET (state $state)"
        return 0
      fi
      if ! kill -0 "$CASBOXD_PID" 2>/dev/null; then
        _casboxd_reap
        rc="$CASBOXD_STATUS"
        if [ "$try" -lt 3 ] && tail -c +"$((start + 1))" "$CASBOXD_LOG" | grep -qi 'in use'; then
          log "port $port was taken meanwhile; trying another"
          continue 2
        fi
        tail -n 30 "$CASBOXD_LOG" >&2
        e2e_fail "casboxd exited with status $rc before printing '$line' (log $CASBOXD_LOG)"
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        kill -KILL "$CASBOXD_PID" 2>/dev/null || true
        _casboxd_reap
        tail -n 30 "$CASBOXD_LOG" >&2
        e2e_fail "casboxd printed no '$line' within ${CASBOXD_START_TIMEOUT}s (log $CASBOXD_LOG)"
      fi
      sleep 0.1
    done
  done
  e2e_fail "could not start casboxd"
}

# stop_casboxd: SIGTERM; the daemon must exit 0 within 30 s.
stop_casboxd() {
  local pid="$CASBOXD_PID" rc i
  [ -n "$pid" ] || return 0
  if ! kill -0 "$pid" 2>/dev/null; then
    _casboxd_reap
    rc="$CASBOXD_STATUS"
    tail -n 30 "$CASBOXD_LOG" >&2
    log "FAIL: casboxd (pid $pid) had already exited with status $rc (log $CASBOXD_LOG)"
    return 1
  fi
  kill -TERM "$pid"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    _casboxd_reap
    tail -n 30 "$CASBOXD_LOG" >&2
    log "FAIL: casboxd did not exit within 30 s of SIGTERM (log $CASBOXD_LOG)"
    return 1
  fi
  _casboxd_reap
  rc="$CASBOXD_STATUS"
  if [ "$rc" != 0 ]; then
    tail -n 30 "$CASBOXD_LOG" >&2
    log "FAIL: casboxd exited with status $rc after SIGTERM, want 0 (log $CASBOXD_LOG)"
    return 1
  fi
  log "casboxd exited 0 on SIGTERM"
}

# kill_casboxd: SIGKILL it now (crash simulation).
kill_casboxd() {
  [ -n "$CASBOXD_PID" ] || return 0
  kill -KILL "$CASBOXD_PID" 2>/dev/null || true
  reap_casboxd
}

# reap_casboxd: wait for a daemon that something else killed; forget it.
reap_casboxd() {
  local pid="$CASBOXD_PID"
  [ -n "$pid" ] || return 0
  _casboxd_reap
  log "casboxd (pid $pid) is gone, exit status $CASBOXD_STATUS"
}

# casboxd_alive: the daemon we started is still running.
casboxd_alive() { [ -n "$CASBOXD_PID" ] && kill -0 "$CASBOXD_PID" 2>/dev/null; }

_casboxd_on_exit() { stop_casboxd; }

# reapi CMD...: the Python REAPI client against the running daemon.
reapi() { "$PY" "$E2E_DIR/reapi_client.py" --target "$CASBOXD_TARGET" "$@"; }

# casboxd_exec_enabled: GetCapabilities advertises execution.
casboxd_exec_enabled() {
  local rc=0
  reapi exec-enabled || rc=$?
  case "$rc" in
    0) return 0 ;;
    3) return 1 ;;
    *) e2e_fail "GetCapabilities failed against $CASBOXD_TARGET" ;;
  esac
}

# -- sample workspaces ------------------------------------------------------------
# stage_workspace NAME: copy tests/e2e/workspaces/NAME (with ../stubs and
# ../common.bazelrc beside it) into the temp dir and set WS_DIR to the copy.
# The zlib workspace gets its sources from the cache (fetch_zlib_source.sh).
# The repository itself is never written to.  The workspace's Bazel server is
# shut down when the test exits.  (Call it directly, not in $(...).)
WS_DIR=""
stage_workspace() {
  local name="$1" dst="$E2E_TMP/ws" src
  [ -f "$E2E_DIR/workspaces/$name/WORKSPACE" ] || e2e_fail "no workspace tests/e2e/workspaces/$name"
  mkdir -p "$dst"
  [ -d "$dst/stubs" ] || cp -r "$E2E_DIR/workspaces/stubs" "$dst/stubs"
  cp "$E2E_DIR/workspaces/common.bazelrc" "$dst/common.bazelrc"
  rm -rf "${dst:?}/$name"
  cp -r "$E2E_DIR/workspaces/$name" "$dst/$name"
  if [ "$name" = zlib ]; then
    src="$("$E2E_DIR/fetch_zlib_source.sh")" || e2e_fail "could not get the zlib sources"
    cp -r "$src/src" "$dst/zlib/src"
    cp "$src/COPYRIGHT.debian" "$dst/zlib/"
  fi
  WS_DIR="$dst/$name"
  e2e_on_exit "bazel_shutdown '$WS_DIR'"
}

# -- Bazel ------------------------------------------------------------------------
# All Bazel servers of a test share one --output_user_root in the temp dir;
# each staged workspace gets its own output base (and server) under it.
E2E_BAZEL_ROOT="${E2E_BAZEL_ROOT:-$E2E_TMP/bazel}"

# bazel_in ARGS...: Bazel from the current directory (a staged workspace).
# Keeps Debian's /etc/bazel/bazelrc (it sets the required --install_base),
# ignores ~/.bazelrc.
_BAZEL_CMD=("$BAZEL_BIN" --nohome_rc --output_user_root="$E2E_BAZEL_ROOT" --max_idle_secs=600)
bazel_in() {
  [ -x "$BAZEL_BIN" ] || e2e_fail "no Bazel at $BAZEL_BIN (apt-get install bazel-bootstrap; scripts/setup)"
  "${_BAZEL_CMD[@]}" "$@"
}

# bazel_shutdown DIR: stop the Bazel server of that workspace (never fails).
bazel_shutdown() {
  [ -d "$1" ] || return 0
  (cd "$1" && "$BAZEL_BIN" --nohome_rc --output_user_root="$E2E_BAZEL_ROOT" shutdown) \
    > /dev/null 2>&1 || true
}

# bazel_run LOG ARGS...: bazel_in ARGS > LOG; on failure print the end of the
# log and fail the test.
bazel_run() {
  local logf="$1"; shift
  [ -x "$BAZEL_BIN" ] || e2e_fail "no Bazel at $BAZEL_BIN (apt-get install bazel-bootstrap; scripts/setup)"
  if ! e2e_run "${_BAZEL_CMD[@]}" "$@" > "$logf" 2>&1; then
    tail -n 60 "$logf" >&2
    e2e_fail "bazel $* failed (log $logf)"
  fi
}

# -- Bazel's summary lines -----------------------------------------------------------
# processes_line LOG: the last "INFO: N processes: ..." line, without "INFO: ".
processes_line() {
  grep -E '^INFO: [0-9]+ process' "$1" | tail -n 1 | sed 's/^INFO: //' || true
}

# process_count LOG KIND: the number before KIND in that line, 0 if absent.
# KIND: "remote", "remote cache hit", "internal", "linux-sandbox", "local", ...
# "remote" alone does not include "remote cache hit".
process_count() {
  processes_line "$1" | tr ',:' '\n\n' | sed 's/^ *//; s/\.$//' |
    awk -v kind="$2" '{ n = $1; $1 = ""; sub(/^ /, ""); if ($0 == kind) s += n } END { print s + 0 }'
}

# processes_total LOG: N of "N processes".
processes_total() {
  processes_line "$1" | grep -oE '^[0-9]+' || echo 0
}

# processes_kinds LOG: the kinds in the line, one per line ("remote cache hit", ...).
processes_kinds() {
  processes_line "$1" | sed 's/^[0-9]* processes*: *//; s/\.$//' | tr ',' '\n' |
    sed 's/^ *[0-9]* *//' | grep -v '^$' || true
}

# nonremote_kinds LOG: kinds other than internal / remote / remote cache hit
# (local execution of any flavour: linux-sandbox, local, processwrapper-sandbox,
# worker, disk cache hit, ...).
nonremote_kinds() {
  processes_kinds "$1" | grep -vxE 'internal|remote|remote cache hit' || true
}

# total_actions LOG: N of "Build completed successfully, N total actions".
total_actions() {
  grep -oE 'Build completed successfully, [0-9]+ total action' "$1" | tail -n 1 | grep -oE '[0-9]+' || echo 0
}

# remote_warnings LOG: Bazel's warnings about the remote cache/executor
# (Bazel falls back to local execution on a broken remote cache; this says why).
remote_warnings() {
  grep -A2 -E '^(WARNING|ERROR): .*([Rr]emote|gRPC|grpc)' "$1" | grep -v '^	at ' | head -n 12 >&2 || true
}

# exec_log_misses JSON: from Bazel's --execution_log_json_file, one line per
# spawn that was not a remote cache hit: "xml|other RUNNER MNEMONIC OUTPUT".
# "xml" marks Bazel's test.xml generation spawn (generate-xml.sh): its
# command line carries the test's wall time in whole seconds, so after a
# cached test (0 s) its key differs from a first run that took >= 1 s.  That
# miss is Bazel's doing, not the cache's.
exec_log_misses() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
text = open(sys.argv[1]).read()
dec, pos = json.JSONDecoder(), 0
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    if obj.get("remoteCacheHit", False):
        continue
    outs = [o.get("path", "") for o in obj.get("actualOutputs", [])] or \
        list(obj.get("listedOutputs", []))
    xml = obj.get("mnemonic") == "TestRunner" and len(outs) == 1 and outs[0].endswith("/test.xml")
    print("%s %s %s %s" % ("xml" if xml else "other", obj.get("runner", "?").replace(" ", "-"),
                           obj.get("mnemonic", "?"), outs[0] if outs else "-"))
PYEOF
}

# check_rebuild_from_cache WS LOG EXECLOG EXPECTED: the clean rebuild logged
# in LOG must have taken every spawn from the remote cache: EXPECTED remote
# cache hits, except test.xml generation spawns that Bazel re-keys (see
# exec_log_misses), which may run again (remotely or locally).
check_rebuild_from_cache() {
  local ws="$1" logf="$2" json="$3" want="$4" misses other xml hits total internal
  misses="$(exec_log_misses "$json")" || e2e_fail "$ws: cannot read $json"
  other="$(grep -v '^xml ' <<< "$misses" || true)"
  xml="$(grep -c '^xml ' <<< "$misses" || true)"
  hits="$(process_count "$logf" "remote cache hit")"
  total="$(processes_total "$logf")"
  internal="$(process_count "$logf" internal)"
  if [ -n "$other" ] || [ $((hits + xml)) != "$want" ] || [ $((total - internal - hits)) != "$xml" ]; then
    remote_warnings "$logf"
    [ -z "$other" ] || sed 's/^other /  not a cache hit: /' <<< "$other" >&2
    e2e_fail "$ws: clean rebuild: $(processes_line "$logf"); want $want remote cache hits and" \
      "nothing run (test.xml spawns that Bazel re-keys aside: $xml) (log $logf)"
  fi
  [ "$xml" = 0 ] || log "$ws: $xml test.xml generation spawn(s) ran again (Bazel keys them on the test's duration)"
}

# require_executable FILE
require_executable() { [ -x "$1" ] || e2e_fail "$1 is missing or not executable"; }
