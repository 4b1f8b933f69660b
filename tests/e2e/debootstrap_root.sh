#!/bin/bash
# Make, once, a cached Debian root for the tests, and print its path.
#
#   tests/e2e/debootstrap_root.sh [-o NAME=VALUE]... SUITE MIRROR DIR LOG [PACKAGE...]
#       debootstrap --variant=minbase SUITE into DIR from MIRROR, then, when
#       PACKAGEs are named, apt-get update and apt-get install -y PACKAGE...
#       in it; output in LOG.  Each -o NAME=VALUE is an apt option written
#       to the root's /etc/apt/apt.conf.d/90casbox (NAME "VALUE";), so the
#       install and every later apt run in the root use it.
#
# Two roots are made with it:
#   - test_packaging.sh: SUITE = the host's codename, no packages,
#     DIR = $(casbox_fixture_cache)/debootstrap-CODENAME;
#   - test_bazel7_env.sh, through sid_root.sh: sid with bazel-bootstrap and
#     buildbox, -o Acquire::Check-Valid-Until=false (sid's Release file may be
#     past its Valid-Until on the mirror; debootstrap does not check it),
#     DIR = $(casbox_fixture_cache)/debootstrap-sid-clients.
#
# Why a script of its own: the roots are large cached fixtures (minutes and
# hundreds of MB to make; docs/testing.md) that CI does not make afresh on
# every run, so the code that makes them when the cache is empty would
# otherwise run only on a new machine.  tests/e2e/test_harness_caches.sh runs
# it against an empty cache dir with stand-ins for debootstrap and apt on
# every run, and `scripts/test --fresh` runs it for real (docs/testing.md).
#
# DIR/.casbox-complete marks a finished root; anything else at DIR is thrown
# away and made again.  The work happens in DIR.tmp.PID, which is renamed to
# DIR when everything succeeded; the .debs apt downloaded are removed from
# the root.  One run at a time per DIR (flock on DIR.lock): a run that waited
# finds the root made.  apt-get runs under chroot in a private mount
# namespace (unshare -m) with /proc mounted there, so nothing stays mounted
# in DIR afterwards; the tmp dir is removed with --one-file-system in case an
# interrupted run left something mounted.  Needs root (debootstrap does).
# DEBOOTSTRAP names the debootstrap to run (default: debootstrap on PATH).
# Exit status: 0 with DIR on stdout; 77 when the mirror cannot be reached
# (the caller skips); 1 with a one-line error otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

usage="usage: tests/e2e/debootstrap_root.sh [-o NAME=VALUE]... SUITE MIRROR DIR LOG [PACKAGE...]"
apt_options=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o)
      [ $# -ge 2 ] || casbox_die "$usage"
      [[ "$2" =~ ^[A-Za-z0-9.:_-]+=[^\"]*$ ]] || casbox_die "-o wants NAME=VALUE (apt option), not '$2'"
      apt_options+=("$2")
      shift 2 ;;
    --) shift; break ;;
    -*) casbox_die "$usage" ;;
    *) break ;;
  esac
done
[ $# -ge 4 ] || casbox_die "$usage"
suite="$1" mirror="$2" root="$3" logf="$4"
shift 4
packages=("$@")
DEBOOTSTRAP="${DEBOOTSTRAP:-debootstrap}"

done_already() {
  [ -e "$root/.casbox-complete" ] || return 1
  printf '%s\n' "$root"
}
done_already && exit 0

command -v "$DEBOOTSTRAP" > /dev/null 2>&1 ||
  casbox_die "debootstrap is not installed (scripts/setup installs it)"
if [ ${#packages[@]} -gt 0 ]; then
  command -v unshare > /dev/null 2>&1 || casbox_die "unshare is not installed (util-linux)"
fi
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

# unreachable [apt]: LOG says the mirror could not be reached (with apt:
# also apt's "Failed to fetch").
unreachable() {
  local re='Failed getting release file|Temporary failure|Could not resolve|Connection (refused|timed out)|unable to connect'
  [ "${1:-}" = apt ] && re="$re|Failed to fetch"
  grep -qiE "$re" "$logf"
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

# We hold the lock: whatever is there is a leftover of an interrupted run.
rm -rf --one-file-system "$root" "$root".tmp.*
: > "$logf"
t0=$SECONDS
what="debootstrap --variant=minbase $suite from $mirror into $root"
[ ${#packages[@]} = 0 ] || what="$what, then apt-get install ${packages[*]}"
casbox_log "$what (once; log $logf)"
rc=0
step "$DEBOOTSTRAP" --variant=minbase "$suite" "$tmp" "$mirror" || rc=$?
if [ "$rc" != 0 ]; then
  tail -n 20 "$logf" >&2
  unreachable && { casbox_log "debootstrap cannot reach $mirror (log $logf)"; exit 77; }
  casbox_die "debootstrap failed with status $rc (log $logf)"
fi
[ -x "$tmp/bin/sh" ] || [ -x "$tmp/usr/bin/sh" ] ||
  casbox_die "debootstrap exited 0 but $tmp has no /bin/sh (log $logf)"

if [ ${#apt_options[@]} -gt 0 ]; then
  mkdir -p "$tmp/etc/apt/apt.conf.d"
  for o in "${apt_options[@]}"; do
    printf '%s "%s";\n' "${o%%=*}" "${o#*=}"
  done > "$tmp/etc/apt/apt.conf.d/90casbox"
fi
if [ ${#packages[@]} -gt 0 ]; then
  # shellcheck disable=SC2016
  if ! step unshare -m --propagation private sh -ec '
      root="$1"; shift
      mount -t proc proc "$root/proc"
      chroot "$root" apt-get update
      DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y "$@"
      chroot "$root" apt-get clean' debootstrap-root "$tmp" "${packages[@]}"; then
    tail -n 20 "$logf" >&2
    unreachable apt && { casbox_log "apt-get in the $suite root cannot reach $mirror (log $logf)"; exit 77; }
    casbox_die "apt-get install ${packages[*]} in the $suite root failed (log $logf)"
  fi
fi
rm -f "$tmp"/var/cache/apt/archives/*.deb
touch "$tmp/.casbox-complete"
mv -T "$tmp" "$root"
casbox_log "$suite root made in $((SECONDS - t0)) s: $(du -sh --one-file-system "$root" | cut -f1)"
printf '%s\n' "$root"
