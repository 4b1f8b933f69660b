#!/bin/bash
# Get the zlib sources of the zlib e2e workspace with `apt-get source` (Debian
# patches applied) into a cache directory, once; print that directory.  It
# holds src/ (the .c/.h files, test/example.c, test/minigzip.c, LICENSE,
# README), COPYRIGHT.debian and VERSION (the Debian source version used).
#
#   tests/e2e/fetch_zlib_source.sh [DIR]
#       DIR defaults to $(casbox_test_cache)/zlib-src, i.e.
#       ${CASBOX_TEST_CACHE:-${XDG_CACHE_HOME:-~/.cache}/casbox-test}/zlib-src
#
# Why not a plain `apt-get source zlib`: that asks for the newest source
# version apt knows of (on bookworm, bookworm-security's), and a mirror need
# not serve it: one answered 404 for 1:1.2.13.dfsg-1+deb12u1 while
# 1:1.2.13.dfsg-1 downloaded at once (issue 12).  So this tries every version
# `apt-cache showsrc zlib` lists, newest first: a 404 moves on to the next at
# once, a transient failure is retried a few times, and a version whose
# sources lack a file the workspace's BUILD names is skipped.  It says on
# stderr which version it used.  The tests do not depend on the exact version:
# they check what they build.
#
# Needs apt deb-src entries: scripts/setup adds them (as root); this script
# adds them itself when run as root (or with sudo).  Downloads nothing but
# Debian's source package, through apt.  The sources never enter git.
# Exit status: 0 and the directory on stdout, or 1 with a one-line error.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../scripts/lib/common.sh"

dest="${1:-$(casbox_test_cache)/zlib-src}"
build_file="$here/workspaces/zlib/BUILD"
tries_per_version=3   # transient failures (network, mirror hiccup) only
retry_delay=3

cached() {
  [ -f "$dest/.complete" ] || return 1
  casbox_log "zlib $(cat "$dest/VERSION" 2> /dev/null || echo '(unknown version)') sources from the cache $dest"
  printf '%s\n' "$dest"
}
cached && exit 0

command -v dpkg-source > /dev/null 2>&1 ||
  casbox_die "dpkg-source is missing (package dpkg-dev): run scripts/setup"
command -v dpkg-parsechangelog > /dev/null 2>&1 ||
  casbox_die "dpkg-parsechangelog is missing (package dpkg-dev): run scripts/setup"
if ! casbox_has_deb_src; then
  casbox_ensure_deb_src ||
    casbox_die "apt has no deb-src entries for 'apt-get source zlib': run scripts/setup as root"
fi

mkdir -p "$(dirname "$dest")"
# One fetch at a time per cache dir; a run that waited finds it complete.
exec {lock}> "$dest.lock"
flock "$lock"
cached && exit 0

work="$(mktemp -d "$(dirname "$dest")/.zlib-src.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The source versions apt knows, newest first, each once.
list_versions() {
  local v sorted=() i j tmp
  while read -r v; do
    [ -n "$v" ] && sorted+=("$v")
  done < <(apt-cache showsrc zlib 2> /dev/null |
    awk '/^Package: / { p = $2 } /^Version: / { if (p == "zlib") print $2 }' | sort -u)
  for ((i = 1; i < ${#sorted[@]}; i++)); do
    for ((j = i; j > 0; j--)); do
      dpkg --compare-versions "${sorted[j - 1]}" lt "${sorted[j]}" || break
      tmp="${sorted[j]}"; sorted[j]="${sorted[j - 1]}"; sorted[j - 1]="$tmp"
    done
  done
  [ ${#sorted[@]} = 0 ] || printf '%s\n' "${sorted[@]}"
}
mapfile -t versions < <(list_versions)
if [ ${#versions[@]} = 0 ] && casbox_can_be_root; then
  # A fresh image may have deb-src entries but no lists yet.
  casbox_log "apt-cache showsrc zlib lists no version: apt-get update"
  if ! _casbox_retry casbox_as_root "${CASBOX_APT[@]}" -q update > "$work/apt-update.log" 2>&1; then
    tail -n 5 "$work/apt-update.log" >&2
    casbox_die "apt-get update failed"
  fi
  mapfile -t versions < <(list_versions)
fi
[ ${#versions[@]} -gt 0 ] ||
  casbox_die "apt-cache showsrc zlib lists no source version: run apt-get update (deb-src entries: scripts/setup)"

# The files the workspace's BUILD names (src/...): a version must have them all.
mapfile -t needed < <(grep -o '"src/[^"]*"' "$build_file" | tr -d '"' | sort -u)
[ ${#needed[@]} -gt 0 ] || casbox_die "no src/ file named in $build_file"

# try_version VERSION DIR: `apt-get source zlib=VERSION` into DIR (empty).
# 0: fetched and unpacked; 2: not served (404 or unknown to apt; no retry);
# 1: failed every try.  Its output goes to DIR.log.
try_version() {
  local v="$1" dir="$2" i
  for ((i = 1; i <= tries_per_version; i++)); do
    rm -rf "$dir"
    mkdir -p "$dir"
    if (cd "$dir" && apt-get -q source "zlib=$v") > "$dir.log" 2>&1; then
      return 0
    fi
    if grep -qE '404 +Not Found|Unable to find a source package|Can not find version' "$dir.log"; then
      return 2
    fi
    [ "$i" -lt "$tries_per_version" ] || break
    casbox_log "apt-get source zlib=$v failed (try $i of $tries_per_version), retrying in $retry_delay s: $(grep -m1 -E '^(E|Err):' "$dir.log" || tail -n 1 "$dir.log")"
    sleep "$retry_delay"
  done
  return 1
}

# extract VERSION DIR OUT: copy the workspace's files out of the unpacked
# source in DIR into OUT; 1 (and why on stderr) when something is missing.
extract() {
  local v="$1" dir="$2" out="$3" zdir f missing=()
  zdir="$(cd "$dir" && ls -d zlib-*/ 2> /dev/null | head -n 1)"
  [ -n "$zdir" ] || { casbox_log "zlib $v: apt-get source unpacked nothing in $dir"; return 1; }
  zdir="$dir/${zdir%/}"
  mkdir -p "$out/src/test"
  for f in "$zdir"/*.c "$zdir"/*.h "$zdir"/LICENSE "$zdir"/README; do
    if [ -f "$f" ]; then cp "$f" "$out/src/"; fi
  done
  for f in example.c minigzip.c; do
    if [ -f "$zdir/test/$f" ]; then cp "$zdir/test/$f" "$out/src/test/"; fi
  done
  cp "$zdir"/debian/copyright "$out/COPYRIGHT.debian" 2> /dev/null || missing+=(debian/copyright)
  for f in "${needed[@]}"; do
    [ -f "$out/$f" ] || missing+=("$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    casbox_log "zlib $v lacks what the workspace builds: ${missing[*]}"
    return 1
  fi
  dpkg-parsechangelog -l "$zdir/debian/changelog" -S Version > "$out/VERSION" ||
    { casbox_log "zlib $v: no readable debian/changelog"; return 1; }
}

casbox_log "fetching zlib sources with apt-get source into $dest (versions: ${versions[*]})"
used="" tried=() n=0
for v in "${versions[@]}"; do
  n=$((n + 1))
  rc=0
  try_version "$v" "$work/try$n" || rc=$?
  case "$rc" in
    0)
      if extract "$v" "$work/try$n" "$work/out$n"; then
        used="$v"
        break
      fi
      tried+=("$v (unusable)")
      ;;
    2)
      casbox_log "zlib $v is not served: $(grep -m1 -E '404 +Not Found|Unable to find|Can not find' "$work/try$n.log" | sed 's/^ *//')"
      tried+=("$v (not served)")
      ;;
    *)
      casbox_log "zlib $v failed $tries_per_version times; last output:"
      tail -n 5 "$work/try$n.log" >&2
      tried+=("$v (failed)")
      ;;
  esac
done
[ -n "$used" ] || casbox_die "apt-get source zlib failed for every version apt lists: ${tried[*]}"

out="$work/out$n"
got="$(cat "$out/VERSION")"
[ "$got" = "$used" ] || casbox_log "warning: apt-get source zlib=$used unpacked $got (debian/changelog)"
touch "$out/.complete"
rm -rf "$dest"
mv -T "$out" "$dest"
casbox_log "using zlib $used${tried[*]:+ (after: ${tried[*]})}: sources cached in $dest ($(find "$dest/src" -name '*.c' | wc -l) .c files)"
printf '%s\n' "$dest"
