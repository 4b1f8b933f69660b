#!/bin/bash
# End-to-end: today's clients from a Debian sid root against casboxd on the
# host, with that root registered as casboxd's execution environment.
#
#   - The sid root (debootstrap + bazel-bootstrap 7.7.1 + buildbox) is a
#     cached fixture made by sid_root.sh when missing (docs/testing.md gives
#     its time and size); clients run in it through sid_enter.sh (pivot_root
#     in a private mount namespace, not chroot), casboxd runs on the host and
#     is reached over loopback.
#   - casboxd gets [environment.debian-sid] image = debian-sid, root = the sid
#     root; the workspace's platform //:debian_sid carries
#     exec_properties container-image = debian-sid, so every action runs on
#     the sid root (sid's gcc, the client's toolchain), checked through a
#     genrule that copies /etc/debian_version.
#   - Bazel 7.7.1 offline (workspaces/bazel7, a MODULE.bazel workspace;
#     --override_module stand-ins in workspaces/bazel7_modules,
#     --noenable_workspace, java.library.path for its zstd library):
#     phase 1 clean `bazel test //...` with every spawn remote
#     (--spawn_strategy=remote --noremote_local_fallback), phase 2 after
#     `bazel clean` all remote cache hits. Outputs that are symlinks with
#     absolute targets (one dangling, declare_symlink) come back as symlinks
#     both times.
#   - --remote_cache_compression: a third clean build with every blob sent
#     and read zstd-compressed (casboxd advertises ZSTD); any failure fails.
#   - buildbox 1.4.30 from the same root: casupload/casdownload round trip,
#     recc compiling the workspace's C files remotely (objects identical to a
#     local compile; RECC_FORCE_REMOTE unset), trexe with a working
#     directory and with its defaults (working_directory "."), trexe
#     --action-result-json and rexplorer (the result's auxiliary_metadata
#     must convert to JSON).
#
# Needs root (debootstrap, unshare, pivot_root) and the Debian mirror apt
# uses, the first time; skips (77) without them.
# Knobs: E2E_SID_MIRROR (default: apt's Debian archive), lib.sh's.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || e2e_skip "debootstrap, unshare -m and pivot_root need root"
for tool in debootstrap unshare; do
  command -v "$tool" > /dev/null || e2e_skip "$tool is not installed (scripts/setup installs debootstrap)"
done

# -- the sid root (cached fixture) ---------------------------------------------
mirror="${E2E_SID_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
  grep -v -- '-security' | grep -m1 '/debian/*$' || true)}"
[ -n "$mirror" ] || e2e_skip "apt has no Debian archive to debootstrap sid from (set E2E_SID_MIRROR)"
if declare -F casbox_fixture_cache > /dev/null; then cache_dir="$(casbox_fixture_cache)"; else cache_dir="$(casbox_test_cache)"; fi
t0=$SECONDS
rc=0
e2e_run "$E2E_DIR/sid_root.sh" "$mirror" "$cache_dir/debootstrap-sid-clients" \
  "$E2E_LOG_DIR/sid_root.log" > "$E2E_TMP/root-path" || rc=$?
case "$rc" in
  0) ;;
  77) e2e_skip "the mirror $mirror is not reachable: no sid root (log $E2E_LOG_DIR/sid_root.log)" ;;
  *) e2e_fail "no sid root: tests/e2e/sid_root.sh failed (log $E2E_LOG_DIR/sid_root.log)" ;;
esac
ROOT="$(cat "$E2E_TMP/root-path")"
log "sid root $ROOT ($((SECONDS - t0)) s; $(cat "$ROOT/etc/debian_version"))"
[ -x "$ROOT/usr/bin/bazel" ] || e2e_fail "the sid root has no /usr/bin/bazel"

# in_sid DIR CMD...: CMD in the sid root, in DIR, sharing the temp dir.
in_sid() { local d="$1"; shift; e2e_run "$E2E_DIR/sid_enter.sh" "$ROOT" "$E2E_TMP" "$d" "$@"; }

# -- casboxd with the sid root as an execution environment ---------------------
IMAGE=debian-sid
cat > "$E2E_TMP/casboxd.conf" << CONF
[environment.debian-sid]
image = $IMAGE
root = $ROOT
CONF
CASBOXD_ARGS="--config $E2E_TMP/casboxd.conf ${CASBOXD_ARGS:-}"
start_casboxd
casboxd_exec_enabled || e2e_skip "casboxd does not advertise execution"

# -- Bazel 7.7.1 -----------------------------------------------------------------
WS="$E2E_TMP/ws/bazel7"
mkdir -p "$E2E_TMP/ws"
cp -r "$E2E_DIR/workspaces/bazel7" "$E2E_DIR/workspaces/bazel7_modules" "$E2E_TMP/ws/"
M="$E2E_TMP/ws/bazel7_modules"
cat > "$WS/.bazelrc" << RC
common --noenable_workspace
common --override_module=apple_support=$M/apple_support
common --override_module=protobuf=$M/protobuf
common --override_module=buildozer=$M/buildozer
common --override_module=zlib=$M/zlib
build --nosandbox_debug
build --symlink_prefix=/
build --incompatible_strict_action_env
build --repo_env=CC=/usr/bin/gcc
build --extra_execution_platforms=//:debian_sid --host_platform=//:debian_sid --platforms=//:debian_sid
test --test_output=errors
RC
BAZEL7=(bazel --nohome_rc --output_user_root="$E2E_TMP/bazel7"
  --host_jvm_args=-Djava.library.path=/usr/share/bazel:/usr/lib/x86_64-linux-gnu --max_idle_secs=300)
e2e_on_exit "in_sid '$WS' ${BAZEL7[*]} shutdown > /dev/null 2>&1 || true"
REMOTE=(--remote_executor="grpc://$CASBOXD_TARGET" --spawn_strategy=remote --noremote_local_fallback
  --remote_timeout=120 --jobs=8 --verbose_failures)

# bazel7 LOG ARGS...: Bazel 7 in the sid root, output in LOG; fails the test.
bazel7() {
  local logf="$1"; shift
  if ! in_sid "$WS" "${BAZEL7[@]}" "$@" > "$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    e2e_fail "bazel $* failed in the sid root (log $logf)"
  fi
}

l1="$E2E_LOG_DIR/bazel7-phase1.log"
t0=$SECONDS
bazel7 "$l1" test //... "${REMOTE[@]}"
log "bazel 7 phase 1: $(processes_line "$l1") in $((SECONDS - t0)) s"
other="$(nonremote_kinds "$l1" | paste -sd, -)"
[ -z "$other" ] || e2e_fail "bazel 7: spawns ran locally ($other) (log $l1)"
n1="$(process_count "$l1" remote)"
[ "$n1" -ge 6 ] || e2e_fail "bazel 7: only $n1 remote spawns, expected at least 6 (log $l1)"
grep -q "1 test passes" "$l1" || e2e_fail "bazel 7: hello_test did not pass (log $l1)"
bin="$(in_sid "$WS" "${BAZEL7[@]}" info bazel-bin 2> /dev/null)"
want="$(cat "$ROOT/etc/debian_version")"
got="$(cat "$bin/where.txt")"
[ "$got" = "$want" ] ||
  e2e_fail "the action's /etc/debian_version is '$got', not the sid root's '$want': not run in the environment"
[ "$(in_sid "$WS" "$bin/hello")" = "hello from genrule 5" ] || e2e_fail "bazel 7: the remote-built hello does not run"
# check_symlinks WHEN: absolute output symlinks came back as symlinks (issue 14).
check_symlinks() {
  local t
  t="$(readlink "$bin/abs_link" || true)"
  [ "$t" = /etc/debian_version ] ||
    e2e_fail "bazel 7 $1: abs_link is not the symlink -> /etc/debian_version (readlink: '$t')"
  t="$(readlink "$bin/dangling_link" || true)"
  [ "$t" = /nonexistent/casbox-e2e/dangling ] ||
    e2e_fail "bazel 7 $1: dangling_link is not the dangling symlink (readlink: '$t')"
  log "bazel 7 $1: abs_link and the dangling dangling_link came back as symlinks"
}
check_symlinks "remote execution"

l2="$E2E_LOG_DIR/bazel7-phase2.log"
bazel7 "$E2E_LOG_DIR/bazel7-clean.log" clean
bazel7 "$l2" test //... "${REMOTE[@]}"
hits="$(process_count "$l2" "remote cache hit")"
[ "$(process_count "$l2" remote)" = 0 ] && [ "$hits" = "$n1" ] ||
  e2e_fail "bazel 7 phase 2: '$(processes_line "$l2")', expected $n1 remote cache hits and nothing executed (log $l2)"
check_symlinks "remote cache hits"
log "bazel 7 phase 2: $(processes_line "$l2")"

# --remote_cache_compression: casboxd advertises ZSTD; Bazel 7 then sends
# and reads every blob zstd-compressed.
case_remote_cache_compression() {
  local l3="$E2E_LOG_DIR/bazel7-compression.log" rc=0
  bazel7 "$E2E_LOG_DIR/bazel7-clean2.log" clean
  in_sid "$WS" "${BAZEL7[@]}" test //... "${REMOTE[@]}" --remote_cache_compression \
    --noremote_accept_cached > "$l3" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    other="$(nonremote_kinds "$l3" | paste -sd, -)"
    [ -z "$other" ] || e2e_fail "bazel 7 --remote_cache_compression: spawns ran locally ($other) (log $l3)"
    log "bazel 7 --remote_cache_compression: $(processes_line "$l3")"
  else
    tail -n 40 "$l3" >&2
    e2e_fail "bazel 7 --remote_cache_compression failed (log $l3)"
  fi
}
case_remote_cache_compression

# -- buildbox 1.4.30 from the same root ----------------------------------------
R="http://$CASBOXD_TARGET"
BB="$E2E_TMP/bb"
mkdir -p "$BB/src" "$BB/up"
cp "$E2E_DIR/workspaces/bazel7/greet.c" "$E2E_DIR/workspaces/bazel7/greet.h" \
  "$E2E_DIR/workspaces/bazel7/main.c" "$BB/src/"
echo '#define GREETING "hello from recc"' > "$BB/src/gen.h"

# must_pass NAME LOG: a client's failure fails the test, with its log's tail.
must_pass() {
  tail -n 20 "$2" >&2
  e2e_fail "$1 failed (log $2)"
}

# casupload / casdownload round trip
head -c 300000 /dev/urandom > "$BB/up/blob.bin"
echo "text" > "$BB/up/small.txt"
in_sid "$BB/up" casupload --remote="$R" --output-digest-file="$BB/root.digest" blob.bin small.txt \
  > "$E2E_LOG_DIR/casupload.log" 2>&1 || e2e_fail "casupload failed (log $E2E_LOG_DIR/casupload.log)"
in_sid "$BB" casdownload --remote="$R" --destination-dir="$BB/down" --root-digest="$(cat "$BB/root.digest")" \
  > "$E2E_LOG_DIR/casdownload.log" 2>&1 || e2e_fail "casdownload failed (log $E2E_LOG_DIR/casdownload.log)"
cmp "$BB/up/blob.bin" "$BB/down/blob.bin" && cmp "$BB/up/small.txt" "$BB/down/small.txt" ||
  e2e_fail "casdownload did not give back what casupload sent"
log "casupload/casdownload: round trip of $(cat "$BB/root.digest")"

# recc: every C file compiled remotely (in the sid environment), objects
# identical to sid's local gcc; the second run is all cache hits.
for pass in 1 2; do
  for f in greet main; do
    in_sid "$BB/src" env RECC_SERVER="$R" RECC_VERBOSE=1 "RECC_REMOTE_PLATFORM_container-image=$IMAGE" \
      recc /usr/bin/gcc -c "$f.c" -o "$f.o" > "$E2E_LOG_DIR/recc-$f-$pass.log" 2>&1 ||
      e2e_fail "recc gcc -c $f.c failed (log $E2E_LOG_DIR/recc-$f-$pass.log)"
    if [ "$pass" = 1 ]; then
      grep -q "Executing action remotely" "$E2E_LOG_DIR/recc-$f-1.log" ||
        e2e_fail "recc compiled $f.c locally (log $E2E_LOG_DIR/recc-$f-1.log)"
    else
      grep -qiE "cache hit" "$E2E_LOG_DIR/recc-$f-2.log" ||
        e2e_fail "recc's second compile of $f.c was not a cache hit (log $E2E_LOG_DIR/recc-$f-2.log)"
    fi
    in_sid "$BB/src" gcc -c "$f.c" -o "$f.local.o" || e2e_fail "local gcc -c $f.c failed in the sid root"
    cmp "$BB/src/$f.o" "$BB/src/$f.local.o" || e2e_fail "recc's $f.o differs from a local compile"
  done
done
log "recc: greet.c and main.c compiled remotely, objects identical to local gcc; second run cache hits"

# trexe with a working directory, outputs downloaded
trexe_args=(trexe --remote="$R" --platform-properties="container-image=$IMAGE" --input-path=gen.h
  --output-path=out.txt --d="$BB/trexe-out")
# (output paths are relative to the working directory; trexe --d puts them
# at that relative path)
in_sid "$BB/src" "${trexe_args[@]}" --working-dir=w -- /bin/sh -c \
  'cat /etc/debian_version > out.txt' > "$E2E_LOG_DIR/trexe-wd.log" 2>&1 ||
  e2e_fail "trexe --working-dir=w failed (log $E2E_LOG_DIR/trexe-wd.log)"
[ "$(cat "$BB/trexe-out/out.txt" 2>/dev/null)" = "$want" ] ||
  e2e_fail "trexe's output is not the sid root's /etc/debian_version (log $E2E_LOG_DIR/trexe-wd.log)"
log "trexe --working-dir=w: ran in the environment, output downloaded"
# trexe with its defaults (working_directory ".") and --action-result-json
if in_sid "$BB/src" "${trexe_args[@]}" -- /bin/sh -c 'echo ok > out.txt' \
  > "$E2E_LOG_DIR/trexe-defaults.log" 2>&1; then
  log "trexe with its defaults: ok"
else
  must_pass "trexe with its defaults (working_directory '.')" "$E2E_LOG_DIR/trexe-defaults.log"
fi
rm -rf "$BB/trexe-out"
if in_sid "$BB/src" "${trexe_args[@]}" --working-dir=w \
  --action-result-json="$BB/result.json" -- /bin/sh -c 'echo ok > out.txt' \
  > "$E2E_LOG_DIR/trexe-json.log" 2>&1; then
  grep -q '"exitCode"\|"outputFiles"' "$BB/result.json" ||
    e2e_fail "trexe --action-result-json wrote no ActionResult ($BB/result.json)"
  log "trexe --action-result-json: ok"
else
  must_pass "trexe --action-result-json" "$E2E_LOG_DIR/trexe-json.log"
fi
# rexplorer on recc's cached action
action="$(grep -oE 'Action Digest: [0-9a-f]{64}/[0-9]+' "$E2E_LOG_DIR/recc-greet-1.log" | head -n1 | cut -d' ' -f3)"
[ -n "$action" ] || e2e_fail "no action digest in recc's log"
if in_sid "$BB" rexplorer --remote="$R" --action="$action" > "$E2E_LOG_DIR/rexplorer.log" 2>&1; then
  grep -q "greet.o" "$E2E_LOG_DIR/rexplorer.log" || e2e_fail "rexplorer printed no greet.o (log $E2E_LOG_DIR/rexplorer.log)"
  log "rexplorer: printed the action and its result"
else
  must_pass "rexplorer" "$E2E_LOG_DIR/rexplorer.log"
fi

