#!/bin/bash
# The checks of `casbox run` without a server; run by test_casbox_run.sh once
# as root and once as an ordinary user (not a test by itself).
#
#   casbox_run_checks.sh CASBOX WORKDIR LABEL
#
# CASBOX is the binary, WORKDIR an empty directory owned by the caller, LABEL
# names the round in the log ("root", "user").  One line per check: "ok" or
# "[LABEL] FAIL: why".  Exit status 1 when any check failed.
set -uo pipefail

CASBOX="$1"
W="$2"
LABEL="$3"
PY=/usr/bin/python3
fails=0
me="$(id -u)"

log() { printf '[%s %s] %s\n' "$LABEL" "$(date +%H:%M:%S)" "$*" >&2; }
ok() { log "ok   $*"; }
bad() { printf '[%s] FAIL: %s\n' "$LABEL" "$*" >&2; fails=$((fails + 1)); }

# cb ARGS...: casbox with stdout in $W/out, stderr in $W/err, stdin /dev/null;
# the exit status in RC.
RC=0
cb() { RC=0; "$CASBOX" "$@" > "$W/out" 2> "$W/err" < /dev/null || RC=$?; }
errline() { head -c 400 "$W/err" | tr '\n' '|'; }
expect() {  # expect STATUS NAME
  if [ "$RC" = "$1" ]; then ok "$2"; else bad "$2: exit status $RC, want $1; stderr: $(errline)"; fi
}
# jq-less JSON: json FILE EXPR prints eval(EXPR) with d = the parsed file.
json() { "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>&1; }
jcheck() {  # jcheck NAME FILE EXPR: EXPR must be true
  local v
  v="$(json "$2" "$3")"
  if [ "$v" = True ]; then ok "$1"; else bad "$1: $3 is $v in $(tr -d '\n' < "$2" | head -c 600)"; fi
}

# -- the command line -----------------------------------------------------------------
cb --version
if [ "$RC" = 0 ] && grep -qE '^casbox [0-9]+\.[0-9]+' "$W/out"; then ok "--version"; else bad "--version: $RC $(cat "$W/out")"; fi
cb run --help
if [ "$RC" = 0 ] && grep -q -- '--input DIR' "$W/out" && grep -q -- '--action' "$W/out"; then ok "run --help"; else bad "run --help: $RC"; fi
cb --help
if [ "$RC" = 0 ] && grep -q 'run' "$W/out"; then ok "--help"; else bad "--help: $RC"; fi
cb help run
[ "$RC" = 0 ] && grep -q -- '--timeout' "$W/out" && ok "help run" || bad "help run: $RC"

# bad_flag ARGS...: exit 2, nothing on stdout, exactly one line on stderr.
bad_flag() {
  cb "$@"
  local lines
  lines="$(wc -l < "$W/err")"
  if [ "$RC" = 2 ] && [ ! -s "$W/out" ] && [ "$lines" = 1 ]; then
    ok "bad flags: casbox $* -> 2: $(cat "$W/err")"
  else
    bad "bad flags: casbox $*: exit $RC (want 2), $lines stderr lines (want 1): $(errline)"
  fi
}
bad_flag run --bogus -- true
bad_flag run --timeout abc -- true
bad_flag run --timeout
bad_flag run --memory 12Q -- true
bad_flag run --pids -1 -- true
bad_flag run --env NOEQUALS -- true
bad_flag run --output ../escape -- true
bad_flag run --output /etc/passwd -- true
bad_flag run --ro : -- true
bad_flag run --seccomp /nonexistent/policy -- true
bad_flag run
bad_flag run --compare -- true
bad_flag run --action nothex/12 --remote grpc://127.0.0.1:1
bad_flag run --action "$(printf '0%.0s' $(seq 64))/1"
bad_flag run --action "$(printf '0%.0s' $(seq 64))/1" --remote 127.0.0.1:1 --input /tmp
bad_flag frobnicate
bad_flag --bogus

# -- exit statuses ----------------------------------------------------------------------
cb run -- true; expect 0 "exit 0"
cb run -- sh -c 'exit 3'; expect 3 "exit 3 -> 3"
cb run -- sh -c 'kill -9 $$'; expect 137 "kill -9 self -> 137"
cb run -- sh -c 'kill -TERM $$'; expect 143 "kill -TERM self -> 143"
cb run -- /nonexistent/command
expect 127 "a command that does not exist -> 127"
[ "$(wc -l < "$W/err")" = 1 ] && grep -q 'exec /nonexistent/command' "$W/err" ||
  bad "exec failure: want one line naming the command, got: $(errline)"
cb run --input "$W/does-not-exist" -- true
expect 125 "--input that does not exist -> 125"
grep -q "does-not-exist" "$W/err" || bad "set-up failure message does not name the path: $(errline)"

# -- hermeticity ------------------------------------------------------------------------
export CASBOX_TEST_SECRET=hunter2
cb run --env FOO=bar -- /usr/bin/env
if [ "$RC" = 0 ] && [ "$(sort "$W/out" | tr '\n' ' ')" = "FOO=bar PATH=/usr/local/bin:/usr/bin:/bin " ]; then
  ok "environment cleared (only PATH and --env)"
else
  bad "environment: got $(tr '\n' ' ' < "$W/out") (exit $RC)"
fi
cb run --keep-env CASBOX_TEST_SECRET --keep-env 'HOM*' --env PATH=/bin -- /usr/bin/env
if grep -qx CASBOX_TEST_SECRET=hunter2 "$W/out" && grep -qx PATH=/bin "$W/out" &&
  { [ -z "${HOME:-}" ] || grep -qx "HOME=$HOME" "$W/out"; }; then
  ok "--keep-env passes variables through, --env PATH replaces the default"
else
  bad "--keep-env: got $(tr '\n' ' ' < "$W/out")"
fi
cb run -- sh -c 'for p in /root /home /var /run /etc/shadow /sys/fs "$0"; do test -e "$p" && echo "visible: $p"; done; exit 0' "$W"
if [ "$RC" = 0 ] && [ ! -s "$W/out" ]; then ok "no host home, /var, /run, shadow or the caller's files"; else bad "host paths visible: $(cat "$W/out") $(errline)"; fi
cb run -- sh -c 'id -u; hostname'
[ "$(tr '\n' ' ' < "$W/out")" = "$me casbox " ] && ok "runs as the caller's uid ($me), hostname casbox" || bad "uid/hostname: $(cat "$W/out")"
cb run --root -- id -u
[ "$(cat "$W/out")" = 0 ] && ok "--root: uid 0 inside" || bad "--root: uid $(cat "$W/out") $(errline)"

# network: a listener on the host's loopback is out of reach without --net
"$PY" -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True); time.sleep(300)' > "$W/port" &
listener=$!
for _ in $(seq 50); do [ -s "$W/port" ] && break; sleep 0.1; done
port="$(cat "$W/port")"
cb run -- bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 
[ "$RC" != 0 ] && ok "no network: the host's 127.0.0.1:$port is unreachable" || bad "the sandbox reached the host's 127.0.0.1:$port"
cb run -- sh -c 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "'
[ "$(cat "$W/out")" = lo ] && ok "no network: only lo" || bad "network interfaces inside: $(tr '\n' ' ' < "$W/out")"
cb run --net -- bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
expect 0 "--net reaches the host's 127.0.0.1:$port"
kill "$listener" 2> /dev/null; wait "$listener" 2> /dev/null

# the host input tree is never modified
IN="$W/input"
mkdir -p "$IN/sub" "$IN/deldir"
printf 'data\n' > "$IN/a.txt"
printf 'b\n' > "$IN/b.txt"
printf 'c\n' > "$IN/c.txt"
printf 'k\n' > "$IN/sub/k"
printf 'gone\n' > "$IN/deldir/x"
printf '#!/bin/sh\necho tool\n' > "$IN/exe.sh"
chmod 755 "$IN/exe.sh"
ln -s a.txt "$IN/link"
snapshot() { (cd "$IN" && find . -printf '%y %m %s %T@ %p %l\n' | sort && find . -type f -exec sha256sum {} + | sort); }
snapshot > "$W/before"
cb run --input "$IN" -- sh -ec '
  test "$(cat a.txt)" = data
  echo more >> a.txt
  rm sub/k
  chmod 000 exe.sh
  mv b.txt b2.txt
  rm -rf deldir
  mkdir newdir && echo n > newdir/n
  ln -sf /etc/passwd link
  touch -d 2000-01-01 c.txt
  test "$(cat a.txt)" = "$(printf "data\nmore")"
  test ! -e sub/k && test ! -e deldir && test -e b2.txt && test ! -e b.txt
  ./exe.sh 2>/dev/null && exit 9 || true'
expect 0 "the command's writes, deletes, renames and chmods inside --input"
snapshot > "$W/after"
if cmp -s "$W/before" "$W/after"; then ok "host --input dir untouched"; else bad "host --input dir changed: $(diff "$W/before" "$W/after" | head -5 | tr '\n' '|')"; fi

# -- outputs ------------------------------------------------------------------------------
cb run --input "$IN" --output gen/f.txt --output gen/tool --output gen/d --output gen/ln \
  --output gen/missing --output a.txt --output-dir "$W/dest" --json "$W/o.json" -- sh -ec '
  mkdir -p gen/d/e
  echo F > gen/f.txt
  printf "#!/bin/sh\necho T\n" > gen/tool && chmod 755 gen/tool
  echo E > gen/d/e/x
  ln -s f.txt gen/ln
  echo changed > a.txt'
expect 0 "a run with --output"
D="$W/dest"
if [ "$(cat "$D/gen/f.txt")" = F ] && [ -x "$D/gen/tool" ] && [ "$("$D/gen/tool")" = T ] &&
  [ "$(cat "$D/gen/d/e/x")" = E ] && [ "$(readlink "$D/gen/ln")" = f.txt ] &&
  [ "$(cat "$D/a.txt")" = changed ] && [ ! -e "$D/gen/missing" ] && [ ! -e "$D/b.txt" ]; then
  ok "--output files, executable bit, directories and symlinks copied back"
else
  bad "--output: $(cd "$D" 2>/dev/null && find . -printf '%p %m %l|')"
fi
grep -q 'gen/missing' "$W/err" && ok "a missing output is reported" || bad "no warning for gen/missing: $(errline)"
jcheck "JSON lists which outputs were copied" "$W/o.json" \
  '[o["copied"] for o in d["outputs"]] == [True, True, True, True, False, True] and d["outputs"][4]["path"] == "gen/missing"'
[ "$(cat "$IN/a.txt")" = data ] || bad "--output changed the host input"
cb run --input "$IN" --output-dir "$W/all" -- sh -ec 'rm sub/k; echo new > new.txt; chmod 600 a.txt'
if [ "$RC" = 0 ] && [ -f "$W/all/new.txt" ] && [ ! -e "$W/all/sub/k" ] && [ -f "$W/all/c.txt" ] &&
  [ "$(stat -c %a "$W/all/a.txt")" = 600 ]; then
  ok "--output-dir alone copies the whole exec root as the command left it"
else
  bad "--output-dir alone: $RC $(cd "$W/all" 2>/dev/null && find . | tr '\n' ' ') $(errline)"
fi
cb run --output out/x --output-dir "$W/dest2" -- sh -c 'mkdir out && echo y > out/x'
[ "$RC" = 0 ] && [ "$(cat "$W/dest2/out/x")" = y ] && ok "--output without --input" || bad "--output without --input: $RC $(errline)"

# -- mounts, cwd --------------------------------------------------------------------------
mkdir -p "$W/ro" "$W/rw"
echo r > "$W/ro/f"
cb run --ro "$W/ro:/data" --rw "$W/rw:/out" --tmpfs /scratch --cwd sub --input "$IN" -- sh -c '
  cat /data/f && ! touch /data/x 2>/dev/null && echo w > /out/x && touch /scratch/t && pwd'
if [ "$RC" = 0 ] && [ "$(tr '\n' ' ' < "$W/out")" = "r /casbox/exec/sub " ] && [ "$(cat "$W/rw/x")" = w ] && [ ! -e "$W/ro/x" ]; then
  ok "--ro, --rw, --tmpfs and --cwd"
else
  bad "mounts: $RC $(cat "$W/out") $(errline)"
fi

# -- seccomp ---------------------------------------------------------------------------------
printf '# no new directories\nmkdir errno=EACCES\nmkdirat errno=EACCES\n' > "$W/policy"
cb run --seccomp "$W/policy" -- sh -c 'mkdir /tmp/x'
if [ "$RC" != 0 ] && grep -q 'Permission denied' "$W/err"; then ok "--seccomp FILE denies what the policy lists"; else bad "--seccomp FILE: $RC $(errline)"; fi
printf 'no_such_syscall\n' > "$W/badpolicy"
bad_flag run --seccomp "$W/badpolicy" -- true
grep -q 'badpolicy:1' "$W/err" || bad "a bad policy file: the message should name file:line: $(errline)"
cb run --seccomp strict -- true; expect 0 "--seccomp strict"
cb run --seccomp none -- true; expect 0 "--seccomp none"

# -- stdio, signals ---------------------------------------------------------------------
out="$(echo hello | "$CASBOX" run -- cat 2> /dev/null)"
[ "$out" = hello ] && ok "stdin and stdout pass through" || bad "stdin/stdout: '$out'"
cb run -- sh -c 'echo to-stderr >&2'
[ "$(cat "$W/err")" = to-stderr ] && [ ! -s "$W/out" ] && ok "stderr passes through" || bad "stderr: $(errline)"
if command -v script > /dev/null; then
  out="$(script -qec "$CASBOX run -- sh -c 'test -t 0 && test -t 1 && echo a-terminal'" /dev/null < /dev/null | tr -d '\r')"
  [ "$out" = a-terminal ] && ok "a terminal passes through" || bad "terminal: '$out'"
fi
"$CASBOX" run -- sh -c 'trap "echo got-TERM; exit 7" TERM; echo ready; sleep 60 & wait' > "$W/sig.out" 2>&1 &
pid=$!
for _ in $(seq 400); do grep -q ready "$W/sig.out" 2> /dev/null && break; sleep 0.05; done
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" = 7 ] && grep -q got-TERM "$W/sig.out" && ok "SIGTERM is forwarded to the command" || bad "SIGTERM forwarding: exit $rc, $(cat "$W/sig.out")"
"$CASBOX" run -- sh -c 'echo ready; exec sleep 60' > "$W/sig.out" 2>&1 &
pid=$!
for _ in $(seq 400); do grep -q ready "$W/sig.out" 2> /dev/null && break; sleep 0.05; done
kill -HUP "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" = 129 ] && ok "SIGHUP forwarded: the command dies of it, 128+1" || bad "SIGHUP: exit $rc"

# -- limits ------------------------------------------------------------------------------
start=$SECONDS
cb run --timeout 1 --json "$W/t.json" -- sh -c 'echo started; sleep 30'
expect 124 "--timeout 1 -> 124"
[ $((SECONDS - start)) -lt 10 ] || bad "--timeout 1 took $((SECONDS - start)) s"
grep -q 'started' "$W/out" || bad "output before the timeout was lost"
grep -q 'timeout of 1 s' "$W/err" || bad "no timeout verdict on stderr: $(errline)"
jcheck "JSON says timeout" "$W/t.json" 'd["limit"] == "timeout" and d["exit_status"] == 124 and d["signal"] == 9 and d["limits"]["timeout_seconds"] == 1.0'

cb run --cpu-seconds 1 --timeout 30 --json "$W/c.json" -- sh -c 'while :; do :; done'
expect 121 "--cpu-seconds 1 -> 121"
jcheck "JSON says cpu" "$W/c.json" 'd["limit"] == "cpu" and d["exit_status"] == 121 and d["cpu_seconds"] > 0.3'

# The fork bomb only with a limit that holds: RLIMIT_NPROC does not bind root.
cb run --pids 64 --json "$W/p0.json" -- true
pids_method="$(json "$W/p0.json" 'd["pids_limit_method"]')"
if [ "$me" = 0 ] && [ "$pids_method" = rlimit ]; then
  log "SKIP fork bomb: no cgroup for the pids limit, and RLIMIT_NPROC does not bind root"
else
  marker="casbox-forkbomb-$$-$RANDOM"
  start=$SECONDS
  cb run --pids 64 --timeout 60 --json "$W/p.json" -- bash -c 'f() { f | f & }; f; sleep 2' "$marker"
  took=$((SECONDS - start))
  if [ "$RC" != 124 ] && [ "$took" -lt 50 ]; then ok "fork bomb with --pids 64 contained ($pids_method, exit $RC, ${took} s)"; else bad "fork bomb: exit $RC after ${took} s"; fi
  sleep 0.5
  if pgrep -f "$marker" > /dev/null; then bad "fork bomb processes survived: $(pgrep -f "$marker" | wc -l)"; pkill -KILL -f "$marker"; else ok "no fork bomb process survived"; fi
  if [ "$pids_method" != rlimit ]; then
    [ "$RC" = 122 ] || bad "fork bomb under a cgroup pids limit: exit $RC, want 122"
    jcheck "JSON says pids" "$W/p.json" 'd["limit"] == "pids" and d["exit_status"] == 122'
  fi
fi

cb run --memory 128M --timeout 60 --json "$W/m.json" -- sh -c 'head -c 600M /dev/zero | tail > /dev/null'
mem_method="$(json "$W/m.json" 'd["memory_limit_method"]')"
if [ "$mem_method" = rlimit ]; then
  # RLIMIT_AS: the allocation fails, nobody is killed
  [ "$RC" != 0 ] && [ "$RC" != 124 ] && ok "memory hog with --memory 128M fails under RLIMIT_AS (exit $RC)" || bad "memory hog (rlimit): exit $RC"
else
  expect 123 "memory hog with --memory 128M killed ($mem_method) -> 123"
  jcheck "JSON says memory" "$W/m.json" 'd["limit"] == "memory" and d["exit_status"] == 123 and d["limits"]["memory_bytes"] == 128 << 20'
fi

# -- the JSON report ----------------------------------------------------------------------
cb run --timeout 5 --memory 1G --json "$W/r.json" -- sh -c 'exit 5'
expect 5 "a run with --json"
jcheck "JSON report fields" "$W/r.json" 'd["exit_status"] == 5 and d["exit_code"] == 5 and d["signal"] is None and d["limit"] is None and d["error"] is None and d["ran"] is True and d["argv"] == ["sh", "-c", "exit 5"] and d["wall_seconds"] > 0 and abs(d["cpu_seconds"] - d["user_cpu_seconds"] - d["system_cpu_seconds"]) < 1e-5'
jcheck "JSON report: peak memory and limits" "$W/r.json" 'd["peak_memory_bytes"] > 0 and d["limits"] == {"timeout_seconds": 5.0, "memory_bytes": 1 << 30, "pids": None, "cpu_seconds": None} and d["memory_limit_method"] in ("cgroup-v1", "cgroup-v2", "rlimit")'
cb run --json "$W/k.json" -- sh -c 'kill -9 $$'
jcheck "JSON report of a killed command" "$W/k.json" 'd["exit_status"] == 137 and d["exit_code"] is None and d["signal"] == 9 and d["signal_name"] == "SIGKILL"'
cb run --json "$W/e.json" -- /nonexistent/command
jcheck "JSON report of an exec failure" "$W/e.json" 'd["exit_status"] == 127 and "nonexistent" in d["error"]'

# -- nothing left behind --------------------------------------------------------------------
left="$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'casbox-run.*' -user "$me" 2> /dev/null | wc -l)"
[ "$left" = 0 ] && ok "no scratch directory left in ${TMPDIR:-/tmp}" || bad "$left casbox-run.* scratch directories left in ${TMPDIR:-/tmp}"

if [ "$fails" -gt 0 ]; then
  log "$fails check(s) failed"
  exit 1
fi
log "all checks passed"
