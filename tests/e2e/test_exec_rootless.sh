#!/bin/bash
# End-to-end: casboxd running as an ordinary user (no root, no capabilities,
# no delegated cgroup) executes a real Bazel build and sandboxed actions.
#
# Needs root to create the user (useradd -m casbox-rootless; kept afterwards,
# it is harmless) and to switch to it (setpriv); skips (exit 77) otherwise.
# Only the daemon runs as that user: a copy of the casboxd binary and a state
# dir it owns live in this test's temp dir.  Bazel runs as the caller.
#
#   1. casboxd's uid really is the user's (/proc/PID/status);
#   2. `bazel test //...` of the tiny workspace with --remote_executor,
#      --spawn_strategy=remote --noremote_local_fallback: every spawn remote,
#      no cache hit on a fresh daemon, the test passes, the built binary
#      prints what it should;
#   3. a Python REAPI check: the action runs as the user's uid (mapped to
#      itself), outputs (file, executable, directory, symlink) come back,
#      state dir and /root invisible, a 1 s timeout gives DEADLINE_EXCEEDED
#      quickly with the partial stdout;
#   4. casboxd exits 0 on SIGTERM (lib.sh), and no process of its tree
#      (spawner, supervisors, sandboxed commands) is left behind.
#
# With E2E_ROOTLESS_STAGING=fuse (test_fuse_rootless.sh) all of it runs with
# execution.staging=fuse: casboxd mounts its FUSE input filesystem in a user
# and mount namespace of its own (daemon/rootless.c), /dev/fuse being made
# 0666 for the test as distributions ship it (restored afterwards), and every
# action must have been staged through FUSE.
#
# Knobs: E2E_ROOTLESS_USER (default casbox-rootless), E2E_JOBS (default 4),
# and lib.sh's.
source "$(dirname "$0")/lib.sh"

user="${E2E_ROOTLESS_USER:-casbox-rootless}"
[ "$(id -u)" = 0 ] || e2e_skip "needs root to create and switch to the user '$user' (run as root)"
command -v setpriv > /dev/null || e2e_skip "setpriv (util-linux) is not installed"
if ! id -u "$user" > /dev/null 2>&1; then
  command -v useradd > /dev/null || e2e_skip "useradd is not available to create the user '$user'"
  if useradd -m -s /usr/sbin/nologin -c "casbox rootless e2e test" "$user"; then
    log "created user $user"
  else
    id -u "$user" > /dev/null 2>&1 || e2e_fail "useradd -m $user failed"   # or a parallel run made it
  fi
fi
uid="$(id -u "$user")"
staging="${E2E_ROOTLESS_STAGING:-hardlink}"
case "$staging" in
  hardlink)
    # Explicit: the default (auto) would take FUSE where /dev/fuse is 0666.
    CASBOXD_ARGS="${CASBOXD_ARGS:-} --set execution.staging=hardlink"
    ;;
  fuse)
    [ -c /dev/fuse ] || e2e_skip "no /dev/fuse"
    fuse_mode="$(stat -c %a /dev/fuse)"
    restore_fuse() { chmod "$fuse_mode" /dev/fuse; }
    e2e_on_exit restore_fuse
    chmod 0666 /dev/fuse
    CASBOXD_ARGS="${CASBOXD_ARGS:-} --set execution.staging=fuse"
    ;;
  *) e2e_fail "E2E_ROOTLESS_STAGING=$staging: want hardlink or fuse" ;;
esac
gid="$(id -g "$user")"
[ "$uid" != 0 ] || e2e_fail "user $user has uid 0"
max_userns="$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)"
[ "$max_userns" != 0 ] || e2e_skip "user namespaces are disabled (user.max_user_namespaces = 0)"

# The user must reach the binary and its state dir: both go into the temp
# dir, which becomes traversable (not listable) by others.
[ -x "$CASBOXD" ] || e2e_fail "casboxd binary $CASBOXD does not exist: run scripts/build (or set CASBOXD)"
chmod 0711 "$E2E_TMP"
ubin="$E2E_TMP/user-bin"
mkdir -p "$ubin"
cp "$CASBOXD" "$ubin/casboxd"
chmod 0755 "$ubin" "$ubin/casboxd"
ustate="$E2E_TMP/user-state"
mkdir -p "$ustate"
chown "$uid:$gid" "$ustate"
chmod 0700 "$ustate"
# A wrapper that becomes the user with exec only (setpriv does not fork), so
# the pid lib.sh records and signals is casboxd's own.
wrapper="$ubin/casboxd-as-user"
cat > "$wrapper" <<EOF
#!/bin/sh
exec env -i PATH=/usr/bin:/bin HOME=/nonexistent LANG=C.UTF-8 \\
  setpriv --reuid=$uid --regid=$gid --init-groups --inh-caps=-all --bounding-set=-all \\
  -- "$ubin/casboxd" "\$@"
EOF
chmod 0755 "$wrapper"

# Whatever happens, no process of ours survives the test: the daemon's
# process tree (spawner, supervisors, sandboxes; all run as the user) is
# recorded while it runs and checked after it stopped.  Only those pids (with
# their start times) are ever killed: other runs of this test may use the user.
tree_file="$E2E_TMP/casboxd-tree"
: > "$tree_file"
descendants() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" || true); do descendants "$c"; done
}
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2> /dev/null | cut -d' ' -f20; }
record_tree() {
  local p
  [ -n "$CASBOXD_PID" ] || return 0
  for p in $(descendants "$CASBOXD_PID"); do
    echo "$p $(start_time "$p")" >> "$tree_file"
  done
}
check_tree() {
  local p t left=() rc=0 i
  for ((i = 0; i < 50; i++)); do  # give a torn-down tree 5 s to go
    left=()
    while read -r p t; do
      [ -n "$t" ] && [ "$(start_time "$p")" = "$t" ] && left+=("$p")
    done < <(sort -u "$tree_file")
    [ ${#left[@]} = 0 ] && break
    sleep 0.1
  done
  if [ ${#left[@]} -gt 0 ]; then
    log "FAIL: processes of casboxd survived it: $(ps -o pid=,user=,comm= -p "$(IFS=,; echo "${left[*]}")" | tr '\n' ' ')"
    kill -KILL "${left[@]}" 2> /dev/null || true
    rc=1
  fi
  return "$rc"
}
e2e_on_exit check_tree      # runs after lib.sh's stop_casboxd

CASBOXD="$wrapper"
start_casboxd "$ustate"
e2e_on_exit record_tree     # runs before it
duid="$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$CASBOXD_PID/status")"
[ "$duid" = "$uid $uid $uid $uid" ] || e2e_fail "casboxd (pid $CASBOXD_PID) runs with uids '$duid', want $uid ($user)"
dcap="$(awk '/^CapEff:/ { print $2 }' "/proc/$CASBOXD_PID/status")"
if [ "$staging" = fuse ]; then
  # Capabilities, but only over its own user namespace, which maps nothing
  # but the user's uid: no privilege on the host.
  [ "$(readlink "/proc/$CASBOXD_PID/ns/user")" != "$(readlink /proc/self/ns/user)" ] ||
    e2e_fail "casboxd as $user with staging=fuse is in the host's user namespace"
  umap="$(awk '{ print $1, $2, $3 }' "/proc/$CASBOXD_PID/uid_map" | paste -sd';')"
  [ "$umap" = "$uid $uid 1" ] || e2e_fail "casboxd's user namespace maps '$umap', want '$uid $uid 1'"
  log "casboxd runs as $user (uid $uid) in a user namespace of its own mapping only $uid"
else
  [ "$dcap" = 0000000000000000 ] || e2e_fail "casboxd as $user has effective capabilities $dcap"
  log "casboxd runs as $user (uid $uid), no capabilities"
fi
if [ "$staging" = fuse ]; then
  grep -q "input staging: fuse" "$CASBOXD_LOG" ||
    e2e_fail "casboxd as $user did not mount FUSE (log $CASBOXD_LOG)"
  grep -q "rootless: running in a user and mount namespace of its own" "$CASBOXD_LOG" ||
    e2e_fail "casboxd as $user did not enter its own namespaces (log $CASBOXD_LOG)"
  log "casboxd as $user mounted FUSE in its own user namespace"
fi
casboxd_exec_enabled || e2e_fail "casboxd as $user does not advertise execution"

# -- a real Bazel build, every action remote -------------------------------------------
stage_workspace tiny
cd "$WS_DIR" || e2e_fail "cannot cd to $WS_DIR"
flags=(
  --remote_executor="grpc://$CASBOXD_TARGET"
  --spawn_strategy=remote
  --noremote_local_fallback
  --remote_timeout=120
  --remote_default_exec_properties=OSFamily=Linux
  --jobs="${E2E_JOBS:-4}"
  --test_output=errors
  --verbose_failures
)
l1="$E2E_LOG_DIR/tiny-rootless.log"
t0=$SECONDS
log "bazel test //... via casboxd running as $user"
bazel_run "$l1" test //... "${flags[@]}"
log "$(processes_line "$l1") in $((SECONDS - t0)) s"
other="$(nonremote_kinds "$l1" | paste -sd, -)"
[ -z "$other" ] || { remote_warnings "$l1"; e2e_fail "spawns ran locally ($other): $(processes_line "$l1") (log $l1)"; }
hits="$(process_count "$l1" "remote cache hit")"
[ "$hits" = 0 ] || e2e_fail "$hits remote cache hits on a fresh casboxd (log $l1)"
ran="$(process_count "$l1" remote)"
[ "$ran" -ge 4 ] || e2e_fail "only $ran remote processes (want the genrule, 2 compiles, a link and the test): $(processes_line "$l1") (log $l1)"
grep -q 'hello_test .*PASSED' "$l1" || e2e_fail "//:hello_test did not pass (log $l1)"
bin="$(bazel_in info bazel-bin "${flags[@]}" 2> /dev/null)"
require_executable "$bin/hello"
out="$("$bin/hello")"
[ "$out" = "hello from genrule 5" ] || e2e_fail "remotely built hello prints '$out'"
log "ok: $ran actions executed by casboxd as $user; the test passed and hello works"
bazel_shutdown "$WS_DIR"
cd /

# -- sandboxed actions as that user --------------------------------------------------------
log "REAPI checks of sandboxed actions as $user"
cat > "$E2E_TMP/rootless_check.py" <<'PYEOF'
import os, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[5])
import exec_helpers as eh
import reapi_client as rc

target, uid, gid, state = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
c = rc.Client(target, timeout=120)
failed = []

def result(name, ok, why=""):
    print(("ok    %s" % name) if ok else ("FAIL  %s\n      %s" % (name, why)), flush=True)
    if not ok:
        failed.append(name)

def text(d):
    return eh.read_blob(c, d).decode(errors="replace")

# uid inside: the daemon's uid mapped to itself, one id only.
ad = eh.upload_action(c, ["/bin/sh", "-c", "id -u; id -g; cat /proc/self/uid_map; "
                          "for p in '%s' /root /home /etc/shadow; do test -e \"$p\" && "
                          "echo VISIBLE $p; done; true" % state])
_ops, r = eh.execute(c, ad)
lines = text(r.result.stdout_digest).splitlines()
result("action runs as the daemon's uid %s/gid %s" % (uid, gid),
       r.status.code == 0 and lines[:2] == [uid, gid],
       "status %s, stdout %r" % (r.status.code, lines))
umap = lines[2].split() if len(lines) > 2 else []
result("uid_map maps only %s to itself" % uid, umap == [uid, uid, "1"], "uid_map %r" % umap)
vis = [x for x in lines if x.startswith("VISIBLE")]
result("state dir, /root, /home, /etc/shadow invisible", not vis, "%s" % vis)

# outputs
script = ("printf data > f.txt; printf '#!/bin/sh\\n' > tool; chmod 755 tool; "
          "mkdir -p d/e; printf x > d/e/x; ln -s f.txt link; cat in.txt")
root = eh.upload_tree(c, {"in.txt": b"input\n", "d": {}})
ad = eh.upload_action(c, ["/bin/sh", "-c", script], root=root,
                      output_paths=["f.txt", "tool", "d", "link"])
_ops, r = eh.execute(c, ad)
files = {f.path: f for f in r.result.output_files}
ok = (r.status.code == 0 and r.result.exit_code == 0 and set(files) == {"f.txt", "tool"}
      and eh.read_blob(c, files["f.txt"].digest) == b"data" and files["tool"].is_executable
      and not files["f.txt"].is_executable
      and [d.path for d in r.result.output_directories] == ["d"]
      and [(s.path, s.target) for s in r.result.output_symlinks] == [("link", "f.txt")]
      and text(r.result.stdout_digest) == "input\n")
result("outputs: file, executable, directory, symlink; input read", ok,
       "status %s %r, exit %d, result %s, stderr %r" % (
           r.status.code, r.status.message, r.result.exit_code, r.result,
           text(r.result.stderr_digest)[-300:]))
if ok:
    t = rc.re_pb2.Tree()
    t.ParseFromString(eh.read_blob(c, r.result.output_directories[0].tree_digest))
    result("output directory Tree d/e/x", [x.name for x in t.root.directories] == ["e"] and
           len(t.children) == 1 and [f.name for f in t.children[0].files] == ["x"], "%s" % t)
try:
    ar = c.get_action_result(ad)
    result("successful action cached", ar.exit_code == 0 and
           {f.path for f in ar.output_files} == {"f.txt", "tool"}, "%s" % ar)
except rc.grpc.RpcError as e:
    result("successful action cached", False, "GetActionResult: %s" % (rc.rpc_status(e)[:2],))

# timeout
ad = eh.upload_action(c, ["/bin/sh", "-c", "echo partial; sleep 30"], timeout=1)
t0 = time.time()
_ops, r = eh.execute(c, ad)
took = time.time() - t0
result("1 s timeout -> DEADLINE_EXCEEDED in %.1f s with partial stdout" % took,
       r.status.code == eh.code_value("DEADLINE_EXCEEDED") and took < 10 and
       r.HasField("result") and text(r.result.stdout_digest) == "partial\n",
       "status %s %r after %.1f s, stdout %r" % (rc.code_name(r.status.code), r.status.message,
                                                 took, text(r.result.stdout_digest)))
sys.exit(1 if failed else 0)
PYEOF
e2e_run "$PY" "$E2E_TMP/rootless_check.py" "$CASBOXD_TARGET" "$uid" "$gid" "$ustate" "$E2E_DIR" ||
  e2e_fail "sandboxed action checks as $user failed (casboxd log $CASBOXD_LOG)"

casboxd_alive || e2e_fail "casboxd died"
if [ "$staging" = fuse ]; then
  staged_hl="$(grep -c ' staged [0-9]* files in ' "$CASBOXD_LOG" || true)"
  staged_fuse="$(grep -c ' fuse tree of [0-9]* files in ' "$CASBOXD_LOG" || true)"
  [ "$staged_hl" = 0 ] && [ "$staged_fuse" -ge "$((ran + 3))" ] ||
    e2e_fail "want every action staged through FUSE: $staged_fuse fuse, $staged_hl hardlink (log $CASBOXD_LOG)"
  log "ok: $staged_fuse actions staged through FUSE as $user"
fi
record_tree
stop_casboxd || e2e_fail "casboxd did not stop cleanly"
check_tree || e2e_fail "processes of casboxd (user $user) survived it"
log "ok: casboxd as $user built tiny remotely and sandboxed actions as uid $uid"
