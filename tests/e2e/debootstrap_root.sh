#!/bin/bash
# Make, once, the clean Debian root that test_packaging.sh installs casbox
# into, and print its path.
#
#   tests/e2e/debootstrap_root.sh CODENAME MIRROR DIR LOG
#       debootstrap --variant=minbase CODENAME into DIR from MIRROR, its
#       output in LOG; DIR is normally $(casbox_fixture_cache)/debootstrap-CODENAME
#
# Why a script of its own: the root is a large cached fixture (minutes and
# some 300 MB to make) that CI does not make afresh on every run, so the code
# that makes it when the cache is empty would otherwise run only on a new
# machine.  tests/e2e/test_harness_caches.sh runs it against an empty cache
# dir with a stand-in debootstrap on every run, and `scripts/test --fresh`
# runs it for real (docs/testing.md).
#
# DIR/.casbox-complete marks a finished root; anything else at DIR is thrown
# away and made again.  debootstrap works in DIR.tmp.PID, which is renamed to
# DIR when it succeeded; the .debs it downloaded are removed from the root.
# One run at a time per DIR (flock on DIR.lock): a run that waited finds the
# root made.  Needs root (debootstrap does).
# Exit status: 0 with DIR on stdout; 77 when debootstrap cannot reach MIRROR
# (the caller skips); 1 with a one-line error otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

[ $# = 4 ] || casbox_die "usage: tests/e2e/debootstrap_root.sh CODENAME MIRROR DIR LOG"
codename="$1" mirror="$2" root="$3" logf="$4"

done_already() {
  [ -e "$root/.casbox-complete" ] || return 1
  printf '%s\n' "$root"
}
done_already && exit 0

command -v debootstrap > /dev/null 2>&1 ||
  casbox_die "debootstrap is not installed (scripts/setup installs it)"
mkdir -p "$(dirname "$root")" "$(dirname "$logf")"
exec {lock}> "$root.lock"
flock "$lock"
done_already && exit 0

tmp="$root.tmp.$$"
child=""
# --one-file-system: an interrupted debootstrap can leave /proc or /sys
# mounted in its target; never walk into them.
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

# We hold the lock: whatever is there is a leftover of an interrupted run.
rm -rf --one-file-system "$root" "$root".tmp.*
casbox_log "debootstrap --variant=minbase $codename from $mirror into $root (once; log $logf)"
debootstrap --variant=minbase "$codename" "$tmp" "$mirror" > "$logf" 2>&1 < /dev/null &
child=$!
rc=0
wait "$child" || rc=$?
child=""
if [ "$rc" != 0 ]; then
  tail -n 20 "$logf" >&2
  if grep -qiE 'Failed getting release file|Temporary failure|Could not resolve|Connection (refused|timed out)|unable to connect' \
      "$logf"; then
    casbox_log "debootstrap cannot reach $mirror (log $logf)"
    exit 77
  fi
  casbox_die "debootstrap failed with status $rc (log $logf)"
fi
[ -x "$tmp/bin/sh" ] || [ -x "$tmp/usr/bin/sh" ] ||
  casbox_die "debootstrap exited 0 but $tmp has no /bin/sh (log $logf)"
rm -f "$tmp"/var/cache/apt/archives/*.deb
touch "$tmp/.casbox-complete"
mv -T "$tmp" "$root"
printf '%s\n' "$root"
