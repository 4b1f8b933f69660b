#!/bin/bash
# End-to-end crash safety: SIGKILL casboxd in the middle of large ByteStream
# uploads, restart it on the same state dir, and check that
#   - blobs acknowledged before the kill are still there and intact;
#   - half-sent uploads are not visible (FindMissingBlobs reports them);
#   - no file under <state>/cas/blobs/<aa>/<hash> has content whose SHA-256
#     is not <hash> (no torn or unverified blob was published);
#   - the interrupted uploads can be resumed (QueryWriteStatus) or redone,
#     and then read back correctly.
# Round 1 kills when every upload has sent half of its data; round 2 kills
# right after the last chunk (finish_write) went out, while the daemon is
# hashing/renaming: there a blob may be present or missing, never corrupt.
#
# Knobs: E2E_SIGKILL_COUNT (uploads at once, default 4),
#        E2E_SIGKILL_MIB (size of each, default 64), and lib.sh's.
source "$(dirname "$0")/lib.sh"

count="${E2E_SIGKILL_COUNT:-4}"
mib="${E2E_SIGKILL_MIB:-64}"
helper=("$PY" "$E2E_DIR/sigkill_upload.py")
rec="$E2E_TMP/records"
mkdir -p "$rec"

start_casboxd
state="$CASBOXD_STATE"
"${helper[@]}" put --target "$CASBOXD_TARGET" --out "$rec/committed.json" --count 5 ||
  e2e_fail "uploading the committed blobs failed"

round() { # NAME KILL_AT
  local name="$1" kill_at="$2" rc=0
  log "round $name: $count uploads of $mib MiB, SIGKILL at ${kill_at} of the data"
  e2e_run "${helper[@]}" killmid --target "$CASBOXD_TARGET" --pid "$CASBOXD_PID" --seed "$name-$RANDOM" \
    --count "$count" --size-mib "$mib" --kill-at "$kill_at" --out "$rec/$name.json" || rc=$?
  casboxd_alive && e2e_fail "round $name: casboxd still runs after the helper's SIGKILL"
  reap_casboxd
  [ "$rc" = 0 ] || e2e_fail "round $name: the upload/kill step failed"
  start_casboxd "$state"
  e2e_run "${helper[@]}" verify --target "$CASBOXD_TARGET" --state "$state" \
    --in "$rec/committed.json" --in "$rec/$name.json" ||
    e2e_fail "round $name: checks after the restart failed (casboxd log $CASBOXD_LOG)"
}

round half 0.5
round finish 1.0

casboxd_alive || e2e_fail "casboxd died"
