#!/bin/bash
# Get the zlib sources of the zlib e2e workspace with `apt-get source zlib`
# (Debian bookworm: 1:1.2.13.dfsg-1, Debian patches applied) into a cache
# directory, once; print that directory.  It holds src/ (the .c/.h files,
# test/example.c, test/minigzip.c, LICENSE, README) and COPYRIGHT.debian.
#
#   tests/e2e/fetch_zlib_source.sh [DIR]
#       DIR defaults to ${CASBOX_TEST_CACHE:-${XDG_CACHE_HOME:-~/.cache}/casbox-test}/zlib-src
#
# Needs apt deb-src entries: scripts/setup adds them (as root); this script
# adds them itself when run as root (or with sudo).  Downloads nothing but
# Debian's source package, through apt.  The sources never enter git.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../scripts/lib/common.sh"

dest="${1:-$(casbox_test_cache)/zlib-src}"
expected_version="1:1.2.13.dfsg-1"

if [ -f "$dest/.complete" ]; then
  printf '%s\n' "$dest"
  exit 0
fi

command -v dpkg-source >/dev/null 2>&1 ||
  casbox_die "dpkg-source is missing (package dpkg-dev): run scripts/setup"
if ! casbox_has_deb_src; then
  casbox_ensure_deb_src ||
    casbox_die "apt has no deb-src entries for 'apt-get source zlib': run scripts/setup as root"
fi

mkdir -p "$(dirname "$dest")"
work="$(mktemp -d "$(dirname "$dest")/.zlib-src.XXXXXX")"
trap 'rm -rf "$work"' EXIT
casbox_log "fetching zlib sources with apt-get source into $dest"
if ! (cd "$work" && _casbox_retry apt-get -q source zlib > "$work/apt-source.log" 2>&1); then
  cat "$work/apt-source.log" >&2
  casbox_die "apt-get source zlib failed"
fi
zlib_dir="$(cd "$work" && ls -d zlib-*/ | head -n 1)"
[ -n "$zlib_dir" ] || casbox_die "apt-get source zlib unpacked nothing in $work"
zlib_dir="$work/$zlib_dir"
version="$(dpkg-parsechangelog -l "$zlib_dir/debian/changelog" -S Version)"
[ "$version" = "$expected_version" ] ||
  casbox_log "warning: got zlib $version; the e2e BUILD file was written for $expected_version"

out="$work/out"
mkdir -p "$out/src/test"
cp "$zlib_dir"/*.c "$zlib_dir"/*.h "$out/src/"
cp "$zlib_dir"/test/example.c "$zlib_dir"/test/minigzip.c "$out/src/test/"
cp "$zlib_dir"/LICENSE "$zlib_dir"/README "$out/src/"
cp "$zlib_dir"/debian/copyright "$out/COPYRIGHT.debian"
printf '%s\n' "$version" > "$out/VERSION"
touch "$out/.complete"
rm -rf "$dest"
mv "$out" "$dest"
casbox_log "zlib $version sources cached in $dest ($(find "$dest/src" -name '*.c' | wc -l) .c files)"
printf '%s\n' "$dest"
