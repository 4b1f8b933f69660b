#!/bin/bash
# Make, once, the Debian sid root that test_bazel7_env.sh runs today's REAPI
# clients from (Bazel 7.7.1 from bazel-bootstrap, buildbox's recc, trexe,
# casupload, casdownload, rexplorer, buildbox-casd), and print its path.
#
#   tests/e2e/sid_root.sh MIRROR DIR LOG
#       debootstrap --variant=minbase sid into DIR from MIRROR, then
#       apt-get install $SID_ROOT_PACKAGES in it; output in LOG.  DIR is
#       normally $(casbox_fixture_cache)/debootstrap-sid-clients.
#
# Same rules as the bookworm root of test_packaging (debootstrap_root.sh on
# the issue12 branch; fold the two together when both are on main): a large
# cached fixture (docs/testing.md gives its time and size), so the code that
# makes it when the cache is empty is a script of its own that a test can
# run against an empty dir.  DIR/.casbox-complete marks a finished root;
# anything else at DIR is thrown away and made again.  The work happens in
# DIR.tmp.PID, renamed to DIR when done; .debs are removed.  One run at a
# time per DIR (flock on DIR.lock).  Needs root.
#
# sid's Release file may be past its Valid-Until on the mirror: the root's
# apt is told Acquire::Check-Valid-Until=false (debootstrap does not check).
# apt-get runs under chroot in a private mount namespace (unshare -m) with
# /proc mounted there, so nothing stays mounted in DIR afterwards.
# Exit status: 0 with DIR on stdout; 77 when the mirror cannot be reached
# (the caller skips); 1 with a one-line error otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

[ $# = 3 ] || casbox_die "usage: tests/e2e/sid_root.sh MIRROR DIR LOG"
mirror="$1" root="$2" logf="$3"
packages="${SID_ROOT_PACKAGES:-bazel-bootstrap buildbox build-essential ca-certificates}"
# Stand-ins for tests of this script (PATH may also hold a fake debootstrap).
DEBOOTSTRAP="${DEBOOTSTRAP:-debootstrap}"

done_already() {
  [ -e "$root/.casbox-complete" ] || return 1
  printf '%s\n' "$root"
}
done_already && exit 0

command -v "$DEBOOTSTRAP" > /dev/null 2>&1 ||
  casbox_die "debootstrap is not installed (scripts/setup installs it)"
mkdir -p "$(dirname "$root")" "$(dirname "$logf")"
exec {lock}> "$root.lock"
flock "$lock"
done_already && exit 0

tmp="$root.tmp.$$"
child=""
cleanup() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2> /dev/null || true
    wait "$child" 2> /dev/null || true
  fi
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

unreachable() {
  grep -qiE 'Failed getting release file|Temporary failure|Could not resolve|Connection (refused|timed out)|unable to connect|Failed to fetch' \
    "$logf"
}

# step CMD...: run CMD with its output appended to LOG, interruptible.
step() {
  local rc=0
  "$@" >> "$logf" 2>&1 < /dev/null &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

rm -rf --one-file-system "$root" "$root".tmp.*
: > "$logf"
t0=$SECONDS
casbox_log "debootstrap --variant=minbase sid from $mirror into $root, then apt-get install $packages (once; log $logf)"
if ! step "$DEBOOTSTRAP" --variant=minbase sid "$tmp" "$mirror"; then
  tail -n 20 "$logf" >&2
  unreachable && { casbox_log "debootstrap cannot reach $mirror (log $logf)"; exit 77; }
  casbox_die "debootstrap failed (log $logf)"
fi
[ -x "$tmp/bin/sh" ] || [ -x "$tmp/usr/bin/sh" ] ||
  casbox_die "debootstrap exited 0 but $tmp has no /bin/sh (log $logf)"
mkdir -p "$tmp/etc/apt/apt.conf.d"
cat > "$tmp/etc/apt/apt.conf.d/90casbox" << 'CONF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
CONF
# shellcheck disable=SC2016
if ! step unshare -m --propagation private sh -ec '
    mount -t proc proc "$1/proc"
    chroot "$1" apt-get update
    DEBIAN_FRONTEND=noninteractive chroot "$1" apt-get install -y $2
    chroot "$1" apt-get clean' sid-root "$tmp" "$packages"; then
  tail -n 20 "$logf" >&2
  unreachable && { casbox_log "apt-get in the sid root cannot reach $mirror (log $logf)"; exit 77; }
  casbox_die "apt-get install $packages in the sid root failed (log $logf)"
fi
rm -f "$tmp"/var/cache/apt/archives/*.deb
touch "$tmp/.casbox-complete"
mv -T "$tmp" "$root"
casbox_log "sid root made in $((SECONDS - t0)) s: $(du -sh --one-file-system "$root" | cut -f1)"
printf '%s\n' "$root"
