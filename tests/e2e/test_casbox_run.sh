#!/bin/bash
# End-to-end: `casbox run`, the standalone hermetic runner (docs/casbox-run.1).
#
#   1. casbox_run_checks.sh as the caller: bad flags (exit 2, one line),
#      exit and signal statuses (3, 137, 143, 127, 125), hermeticity (a clean
#      environment, no host home or /var, no network, the caller's uid, the
#      host --input tree untouched after writes, deletes, renames and chmods),
#      outputs copied back, --ro/--rw/--tmpfs/--cwd, seccomp policy files,
#      stdio, a terminal and forwarded signals, limits (timeout -> 124, CPU
#      -> 121, a fork bomb under --pids 64, a memory hog under --memory 128M)
#      and the --json report;
#   2. when run as root, the same checks as an ordinary user (created with
#      useradd -m casbox-runner when missing, entered with setpriv, no
#      capabilities), with copies of the binary and the checks in the temp
#      dir; no process of that user may survive;
#   3. casbox_run_replay.py against a fresh casboxd: actions the daemon
#      executed, replayed with `casbox run --action ... --remote ...
#      --compare`, give the same output digests; a time-stamping action is
#      found different; failing and unknown actions give their documented
#      statuses.  As the caller and, when root, as the ordinary user.
#
# Knobs: CASBOX (default: casbox beside $CASBOXD, i.e. build/bin/casbox; its
# helper casbox-replay must be beside it),
# E2E_RUN_USER (default casbox-runner), and lib.sh's.
source "$(dirname "$0")/lib.sh"

CASBOX="${CASBOX:-$(dirname "$CASBOXD")/casbox}"
CASBOX_REPLAY="$(dirname "$CASBOX")/casbox-replay"
[ -x "$CASBOX" ] || e2e_fail "casbox binary $CASBOX does not exist: run scripts/build (cmd/) or set CASBOX"
[ -x "$CASBOX_REPLAY" ] || e2e_fail "$CASBOX_REPLAY (casbox run --action) does not exist beside $CASBOX"
max_userns="$(cat /proc/sys/user/max_user_namespaces 2> /dev/null || echo 1)"
[ "$max_userns" != 0 ] || e2e_skip "user namespaces are disabled (user.max_user_namespaces = 0)"

failed=()

# -- 1. as the caller --------------------------------------------------------------------
me="$(id -un)"
W="$E2E_TMP/caller"
mkdir -p "$W/tmp"
log "casbox run checks as $me ($CASBOX)"
TMPDIR="$W/tmp" e2e_run "$E2E_DIR/casbox_run_checks.sh" "$CASBOX" "$W" "$me" || failed+=("checks as $me")

# -- 2. as an ordinary user ---------------------------------------------------------------
user="${E2E_RUN_USER:-casbox-runner}"
as_user=""
if [ "$(id -u)" = 0 ]; then
  command -v setpriv > /dev/null || e2e_fail "setpriv (util-linux) is not installed"
  if ! id -u "$user" > /dev/null 2>&1; then
    useradd -m -c "casbox run e2e test" "$user" || e2e_fail "useradd -m $user failed"
    log "created user $user"
  fi
  uid="$(id -u "$user")"
  gid="$(id -g "$user")"
  home="$(getent passwd "$user" | cut -d: -f6)"
  [ "$uid" != 0 ] || e2e_fail "user $user has uid 0"
  kill_user_procs() {
    local left i
    # casbox run returns as soon as the command and everything it started are
    # gone; the sandbox's own pid 1 may still be on its way out (the kernel
    # tearing its namespaces down) for a moment. Anything else stays.
    for i in $(seq 30); do
      left="$(pgrep -u "$uid" || true)"
      [ -z "$left" ] && return 0
      sleep 0.1
    done
    log "FAIL: processes of $user left behind: $(ps -o pid=,comm= -p "$(echo $left | tr ' ' ,)" | tr '\n' ' ')"
    pkill -KILL -u "$uid" || true
    return 1
  }
  e2e_on_exit kill_user_procs
  # The user reaches copies in the temp dir, which others may traverse.
  chmod 0711 "$E2E_TMP"
  ubin="$E2E_TMP/user-bin"
  mkdir -p "$ubin"
  cp "$CASBOX" "$ubin/casbox"
  cp "$CASBOX_REPLAY" "$ubin/casbox-replay"
  cp "$E2E_DIR/casbox_run_checks.sh" "$ubin/"
  chmod 0755 "$ubin" "$ubin/casbox" "$ubin/casbox-replay" "$ubin/casbox_run_checks.sh"
  UW="$E2E_TMP/user"
  mkdir -p "$UW/tmp"
  chown -R "$uid:$gid" "$UW"
  as_user="$ubin/as-user"
  cat > "$as_user" << EOF
#!/bin/sh
exec env -i PATH=/usr/bin:/bin HOME=$home LANG=C.UTF-8 TMPDIR=$UW/tmp \\
  setpriv --reuid=$uid --regid=$gid --init-groups --inh-caps=-all --bounding-set=-all -- "\$@"
EOF
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$as_user" "$ubin/casbox" > "$ubin/casbox-as-user"
  chmod 0755 "$as_user" "$ubin/casbox-as-user"
  log "casbox run checks as $user (uid $uid)"
  e2e_run "$as_user" "$ubin/casbox_run_checks.sh" "$ubin/casbox" "$UW" "$user" || failed+=("checks as $user")
  kill_user_procs || failed+=("processes of $user left behind")
else
  log "not root: the checks above ran as an ordinary user ($me); no second round"
fi

# -- 3. replaying actions casboxd executed --------------------------------------------------
start_casboxd
casboxd_exec_enabled || e2e_fail "casboxd does not advertise execution"
log "replaying actions of casboxd ($CASBOXD_TARGET) as $me"
e2e_run "$PY" "$E2E_DIR/casbox_run_replay.py" --target "$CASBOXD_TARGET" --casbox "$CASBOX" \
  --label "replay-$me" || failed+=("replay as $me")
if [ -n "$as_user" ]; then
  log "replaying actions of casboxd as $user"
  e2e_run "$PY" "$E2E_DIR/casbox_run_replay.py" --target "$CASBOXD_TARGET" \
    --casbox "$ubin/casbox-as-user" --instance "casbox-run/e2e-user" --label "replay-$user" ||
    failed+=("replay as $user")
fi

if [ ${#failed[@]} -gt 0 ]; then
  e2e_fail "$(IFS=,; echo "${failed[*]}")"
fi
