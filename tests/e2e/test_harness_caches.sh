#!/bin/bash
# The code that fills the test caches on a new machine, run against empty
# cache dirs with stand-ins for apt-get, apt-cache and debootstrap (a second
# or two, no network, no root needed).
#
# Why: a developer's or CI's machine has its caches filled, so without this
# the code that fills them runs only on a new machine, where it failed
# unnoticed (issue 12: `apt-get source zlib` asked for a version the mirror
# did not serve).  CI fetches the cheap caches afresh on every run
# (scripts/test --fresh-caches), but not the debootstrap root: this covers
# the code that makes it, and its failure paths, which no real run reaches.
#
#   fetch_zlib_source.sh:
#     - tries the versions `apt-cache showsrc` lists newest first (whatever
#       their order there, duplicates once), a 404 once only, and uses the
#       first one served; says which; VERSION holds it; src/ has every file
#       the zlib BUILD names; a second call takes the cache and asks apt
#       nothing;
#     - retries a transient failure, skips a version lacking a file the BUILD
#       names;
#     - when nothing is served: a one-line error, non-zero exit, nothing left
#       in the cache dir; when apt lists no version: apt-get update, then the
#       same.
#   debootstrap_root.sh:
#     - an empty cache: makes the root once (debootstrap --variant=minbase
#       CODENAME TMP MIRROR), marks it complete, drops the downloaded .debs,
#       leaves no tmp dir; a second call reuses it without debootstrap;
#     - throws away a partial root and a stale tmp dir of an interrupted run;
#     - mirror unreachable: exit 77 (the caller skips); another failure: exit
#       1 with a one-line error; no partial root either way.
#   sid_root.sh (debootstrap_root.sh with packages and apt options), with
#   stand-ins for unshare, mount and chroot too (so no root needed):
#     - an empty cache: debootstrap sid, then in the tmp dir, in a private
#       mount namespace with /proc mounted: apt-get update, apt-get install
#       -y of the sid packages (noninteractive), apt-get clean; the root's
#       apt.conf.d/90casbox says Check-Valid-Until false and no
#       recommends; marked complete at DIR/.casbox-complete, no .debs, no
#       tmp dir; a second call reuses it asking nothing;
#     - apt cannot reach the mirror: exit 77; apt fails otherwise: exit 1
#       with a one-line error; no partial root either way.
source "$(dirname "$0")/lib.sh"

fake="$E2E_TMP/fakebin"
mkdir -p "$fake"
export FAKE_CALLS="$E2E_TMP/calls" FAKE_PLAN="$E2E_TMP/plan" FAKE_BUILD="$E2E_DIR/workspaces/zlib/BUILD"
: > "$FAKE_CALLS"

# apt-get: `indextargets` says there is a Sources index; `source zlib=V` does
# what the plan says for V ("VERSION ACTION" lines): serve, 404, flaky (a
# transient failure the first time, then serve), lacking (serve without
# inflate.c); `update` is logged.
cat > "$fake/apt-get" << 'EOF'
#!/bin/bash
set -euo pipefail
args=("$@")
while [ "${1:-}" = -q ] || [ "${1:-}" = -o ]; do [ "$1" = -o ] && shift; shift; done
case "${1:-}" in
  indextargets) echo Sources; exit 0 ;;
  update) echo "update" >> "$FAKE_CALLS"; exit 0 ;;
  source) ;;
  *) echo "fake apt-get: unexpected ${args[*]}" >&2; exit 100 ;;
esac
v="${2#zlib=}"
echo "source $v" >> "$FAKE_CALLS"
action="$(awk -v v="$v" '$1 == v { print $2 }' "$FAKE_PLAN")"
case "$action" in
  404)
    echo "Err:1 http://mirror.invalid/debian zlib $v (dsc)"
    echo "  404  Not Found [IP: 192.0.2.1 80]"
    echo "E: Failed to fetch http://mirror.invalid/debian/pool/main/z/zlib/zlib_$v.dsc  404  Not Found"
    exit 100 ;;
  flaky)
    if [ ! -e "$FAKE_PLAN.flaky.$v" ]; then
      touch "$FAKE_PLAN.flaky.$v"
      echo "Err:1 http://mirror.invalid/debian zlib $v (dsc)"
      echo "  Temporary failure resolving 'mirror.invalid'"
      exit 100
    fi ;;
  serve|lacking) ;;
  *) echo "E: Can not find version '$v' of package 'zlib'"; exit 100 ;;
esac
d="zlib-${v#*:}"; d="${d%-*}"
mkdir -p "$d/test" "$d/debian"
for f in $(grep -o '"src/[^"]*"' "$FAKE_BUILD" | tr -d '"'); do
  f="${f#src/}"
  printf '/* fake %s */\n' "$f" > "$d/$f"
done
[ "$action" = lacking ] && rm -f "$d/inflate.c"
echo license > "$d/LICENSE"; echo readme > "$d/README"; echo copyright > "$d/debian/copyright"
printf 'zlib (%s) unstable; urgency=medium\n\n  * Fake.\n\n -- Casbox Test <test@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n' \
  "$v" > "$d/debian/changelog"
EOF
# apt-cache showsrc zlib: the plan's versions, in its order (not sorted),
# each twice (apt lists a version once per suite that has it).
cat > "$fake/apt-cache" << 'EOF'
#!/bin/bash
[ "$1 $2" = "showsrc zlib" ] || { echo "fake apt-cache: unexpected $*" >&2; exit 100; }
awk '{ for (i = 0; i < 2; i++) printf "Package: zlib\nBinary: zlib1g\nVersion: %s\n\nPackage: zlib-other\nVersion: 9:9\n\n", $1 }' "$FAKE_PLAN"
EOF
# debootstrap --variant=minbase CODENAME DIR MIRROR, as FAKE_DEBOOTSTRAP says:
# ok (a tiny root with a .deb left in apt's archive), unreachable, fail.
cat > "$fake/debootstrap" << 'EOF'
#!/bin/bash
echo "debootstrap $*" >> "$FAKE_CALLS"
case "${FAKE_DEBOOTSTRAP:-ok}" in
  unreachable) echo "E: Failed getting release file http://mirror.invalid/debian/dists/$2/Release"; exit 1 ;;
  fail) echo "W: Failure while unpacking required packages."; exit 1 ;;
esac
mkdir -p "$3/usr/bin" "$3/var/cache/apt/archives" "$3/etc" "$3/proc"
ln -s usr/bin "$3/bin"
printf '#!/bin/true\n' > "$3/usr/bin/sh"; chmod 0755 "$3/usr/bin/sh"
touch "$3/var/cache/apt/archives/base-files_1_amd64.deb"
echo "$2" > "$3/etc/debian_version"
echo "I: Base system installed successfully."
EOF
chmod 0755 "$fake"/*
export PATH="$fake:$PATH"

calls() { grep -c "^$1" "$FAKE_CALLS" || true; }
# run OUT ERR CMD...: CMD with stdout and stderr in files; sets rc.
run() {
  local o="$1" e="$2"; shift 2
  rc=0
  "$@" > "$o" 2> "$e" || rc=$?
}
fetch="$E2E_DIR/fetch_zlib_source.sh"
cache="$E2E_TMP/cache"

# -- fetch_zlib_source.sh ---------------------------------------------------------------
printf '%s\n' "1:1.2.11.dfsg-2 serve" "1:1.2.13.dfsg-1+deb12u1 404" "1:1.2.13.dfsg-1 serve" > "$FAKE_PLAN"
t0=$SECONDS
run "$E2E_TMP/out" "$E2E_TMP/err" env CASBOX_TEST_CACHE="$cache" "$fetch"
cat "$E2E_TMP/err" >&2
[ "$rc" = 0 ] || e2e_fail "fetch_zlib_source.sh exited $rc with 1:1.2.13.dfsg-1 served"
[ "$(cat "$E2E_TMP/out")" = "$cache/zlib-src" ] || e2e_fail "it printed '$(cat "$E2E_TMP/out")', want $cache/zlib-src"
want="source 1:1.2.13.dfsg-1+deb12u1
source 1:1.2.13.dfsg-1"
[ "$(cat "$FAKE_CALLS")" = "$want" ] ||
  e2e_fail "apt-get calls: $(paste -sd, "$FAKE_CALLS"); want the 404 once, then 1:1.2.13.dfsg-1, then nothing"
[ "$(cat "$cache/zlib-src/VERSION")" = 1:1.2.13.dfsg-1 ] || e2e_fail "VERSION is $(cat "$cache/zlib-src/VERSION")"
grep -q "using zlib 1:1.2.13.dfsg-1 " "$E2E_TMP/err" || e2e_fail "it did not say which version it used"
for f in $(grep -o '"src/[^"]*"' "$FAKE_BUILD" | tr -d '"') COPYRIGHT.debian src/LICENSE src/README; do
  [ -f "$cache/zlib-src/$f" ] || e2e_fail "no $f in $cache/zlib-src"
done
[ $((SECONDS - t0)) -lt 10 ] || e2e_fail "a 404 took $((SECONDS - t0)) s to move on from"
log "ok: a 404 for the newest version is tried once, the next one is used and named"

: > "$FAKE_CALLS"
run "$E2E_TMP/out" "$E2E_TMP/err" env CASBOX_TEST_CACHE="$cache" "$fetch"
[ "$rc" = 0 ] && [ "$(cat "$E2E_TMP/out")" = "$cache/zlib-src" ] || e2e_fail "second call: exit $rc, printed $(cat "$E2E_TMP/out")"
[ ! -s "$FAKE_CALLS" ] || e2e_fail "second call asked apt: $(paste -sd, "$FAKE_CALLS")"
grep -q "1:1.2.13.dfsg-1 sources from the cache" "$E2E_TMP/err" || e2e_fail "second call did not name the cached version"
log "ok: the second call takes the cache"

: > "$FAKE_CALLS"
printf '%s\n' "2:2.0-1 lacking" "1:1.2.13.dfsg-1+deb12u1 flaky" "1:1.2.13.dfsg-1 serve" > "$FAKE_PLAN"
run "$E2E_TMP/out" "$E2E_TMP/err" "$fetch" "$E2E_TMP/z2"
cat "$E2E_TMP/err" >&2
[ "$rc" = 0 ] || e2e_fail "fetch with a flaky mirror exited $rc"
[ "$(cat "$E2E_TMP/z2/VERSION")" = "1:1.2.13.dfsg-1+deb12u1" ] ||
  e2e_fail "VERSION is $(cat "$E2E_TMP/z2/VERSION"), want 1:1.2.13.dfsg-1+deb12u1 (retried)"
[ "$(calls "source 2:2.0-1")" = 1 ] && [ "$(calls "source 1:1.2.13.dfsg-1+deb12u1")" = 2 ] &&
  [ "$(calls "source 1:1.2.13.dfsg-1$")" = 0 ] ||
  e2e_fail "apt-get calls: $(paste -sd, "$FAKE_CALLS"); want 2:2.0-1 once (lacks inflate.c), the flaky one twice"
grep -q "lacks what the workspace builds: src/inflate.c" "$E2E_TMP/err" || e2e_fail "it did not say why 2:2.0-1 was skipped"
log "ok: a version lacking a BUILD file is skipped, a transient failure retried"

: > "$FAKE_CALLS"
printf '%s\n' "1:1.2.13.dfsg-1+deb12u1 404" "1:1.2.13.dfsg-1 404" > "$FAKE_PLAN"
run "$E2E_TMP/out" "$E2E_TMP/err" "$fetch" "$E2E_TMP/z3/zlib-src"
cat "$E2E_TMP/err" >&2
[ "$rc" != 0 ] || e2e_fail "fetch exited 0 with no version served"
[ ! -s "$E2E_TMP/out" ] || e2e_fail "fetch printed $(cat "$E2E_TMP/out") with no version served"
[ "$(grep -c 'error' "$E2E_TMP/err")" = 1 ] && tail -n 1 "$E2E_TMP/err" | grep -q '^casbox: error: .*every version' ||
  e2e_fail "want one error line naming every version, got: $(tail -n 1 "$E2E_TMP/err")"
[ "$(ls -A "$E2E_TMP/z3" | grep -v '\.lock$' || true)" = "" ] || e2e_fail "left behind: $(ls -A "$E2E_TMP/z3")"
[ "$(calls source)" = 2 ] || e2e_fail "apt-get calls: $(paste -sd, "$FAKE_CALLS"); want each 404 once"
log "ok: nothing served: one error line, exit $rc, nothing left"

: > "$FAKE_CALLS"
: > "$FAKE_PLAN"
if casbox_can_be_root; then
  run "$E2E_TMP/out" "$E2E_TMP/err" "$fetch" "$E2E_TMP/z4"
  [ "$rc" != 0 ] && tail -n 1 "$E2E_TMP/err" | grep -q 'lists no source version' ||
    e2e_fail "no version listed: exit $rc, $(tail -n 1 "$E2E_TMP/err")"
  [ "$(calls update)" = 1 ] || e2e_fail "no version listed: apt-get update ran $(calls update) times, want 1"
  log "ok: no version listed: apt-get update, then one error line"
fi

# -- debootstrap_root.sh -------------------------------------------------------------------
mk="$E2E_DIR/debootstrap_root.sh"
fixtures="$E2E_TMP/fixtures"
root="$fixtures/debootstrap-bookworm"
: > "$FAKE_CALLS"
run "$E2E_TMP/out" "$E2E_TMP/err" "$mk" bookworm http://mirror.invalid/debian "$root" "$E2E_TMP/db.log"
cat "$E2E_TMP/err" >&2
[ "$rc" = 0 ] || e2e_fail "debootstrap_root.sh exited $rc on an empty cache"
[ "$(cat "$E2E_TMP/out")" = "$root" ] || e2e_fail "it printed '$(cat "$E2E_TMP/out")', want $root"
grep -qx "debootstrap --variant=minbase bookworm $root.tmp.[0-9]* http://mirror.invalid/debian" "$FAKE_CALLS" ||
  e2e_fail "debootstrap calls: $(paste -sd, "$FAKE_CALLS")"
[ -e "$root/.casbox-complete" ] && [ "$(cat "$root/etc/debian_version")" = bookworm ] ||
  e2e_fail "$root is not the complete root"
[ -z "$(ls "$root"/var/cache/apt/archives/*.deb 2> /dev/null)" ] || e2e_fail "the downloaded .debs were kept in $root"
[ -z "$(ls -d "$root".tmp.* 2> /dev/null)" ] || e2e_fail "tmp dirs left: $(ls -d "$root".tmp.*)"
: > "$FAKE_CALLS"
run "$E2E_TMP/out" "$E2E_TMP/err" "$mk" bookworm http://mirror.invalid/debian "$root" "$E2E_TMP/db.log"
[ "$rc" = 0 ] && [ "$(cat "$E2E_TMP/out")" = "$root" ] && [ ! -s "$FAKE_CALLS" ] ||
  e2e_fail "second call: exit $rc, debootstrap calls: $(paste -sd, "$FAKE_CALLS")"
log "ok: debootstrap root made once on an empty cache, then reused"

rm -f "$root/.casbox-complete"
mkdir -p "$root.tmp.1"
run "$E2E_TMP/out" "$E2E_TMP/err" "$mk" bookworm http://mirror.invalid/debian "$root" "$E2E_TMP/db.log"
[ "$rc" = 0 ] && [ -e "$root/.casbox-complete" ] && [ ! -e "$root.tmp.1" ] ||
  e2e_fail "a partial root and a stale tmp dir: exit $rc, $(ls -d "$root"* | paste -sd' ')"
log "ok: a partial root and a stale tmp dir are thrown away"

for mode in unreachable fail; do
  r2="$fixtures/debootstrap-$mode"
  run "$E2E_TMP/out" "$E2E_TMP/err" env FAKE_DEBOOTSTRAP="$mode" "$mk" bookworm http://mirror.invalid/debian "$r2" "$E2E_TMP/db.log"
  want=1
  [ "$mode" = unreachable ] && want=77
  [ "$rc" = "$want" ] || e2e_fail "debootstrap $mode: exit $rc, want $want"
  [ ! -e "$r2" ] && [ -z "$(ls -d "$r2".tmp.* 2> /dev/null)" ] || e2e_fail "debootstrap $mode left $(ls -d "$r2"*)"
  [ "$mode" = unreachable ] || tail -n 1 "$E2E_TMP/err" | grep -q '^casbox: error: debootstrap failed' ||
    e2e_fail "debootstrap fail: want one error line, got $(tail -n 1 "$E2E_TMP/err")"
done
log "ok: mirror unreachable exits 77, another failure exits 1, no partial root"

# -- sid_root.sh: debootstrap_root.sh with packages and apt options ---------------------
# unshare -m --propagation private CMD...: runs CMD here; mount: logged, the
# target must exist; chroot DIR CMD...: apt-get as FAKE_APT says: ok (install
# leaves a .deb per package and its doc dir), unreachable (the .debs cannot
# be fetched), fail (a package apt does not know).
ns="$E2E_TMP/fakens"
mkdir -p "$ns"
cat > "$ns/unshare" << 'EOF'
#!/bin/bash
[ "$1 $2 $3" = "-m --propagation private" ] || { echo "fake unshare: unexpected $*" >&2; exit 1; }
echo "unshare $1 $2 $3" >> "$FAKE_CALLS"
shift 3
exec "$@"
EOF
cat > "$ns/mount" << 'EOF'
#!/bin/bash
echo "mount $*" >> "$FAKE_CALLS"
[ -d "${*: -1}" ] || { echo "mount: ${*: -1}: mount point does not exist." >&2; exit 32; }
EOF
cat > "$ns/chroot" << 'EOF'
#!/bin/bash
d="$1"; shift
echo "chroot $d $*${DEBIAN_FRONTEND:+ (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)}" >> "$FAKE_CALLS"
[ -x "$d/usr/bin/sh" ] || { echo "chroot: $d is no root" >&2; exit 125; }
[ "$1" = apt-get ] || { echo "fake chroot: unexpected $*" >&2; exit 1; }
case "$2 ${FAKE_APT:-ok}" in
  "update unreachable")
    echo "Err:1 http://mirror.invalid/debian sid InRelease"
    echo "  Temporary failure resolving 'mirror.invalid'"
    echo "W: Some index files failed to download. They have been ignored, or old ones used instead." ;;
  "install unreachable")
    echo "E: Failed to fetch http://mirror.invalid/debian/pool/main/b/buildbox/buildbox_1_amd64.deb  Temporary failure resolving 'mirror.invalid'"
    exit 100 ;;
  "install fail") echo "E: Unable to locate package buildbox"; exit 100 ;;
  "install ok")
    shift 3
    for p in "$@"; do
      touch "$d/var/cache/apt/archives/${p}_1_amd64.deb"
      mkdir -p "$d/usr/share/doc/$p"
    done ;;
esac
exit 0
EOF
chmod 0755 "$ns"/*
sid_mk="$E2E_DIR/sid_root.sh"
sid="$fixtures/debootstrap-sid-clients"
: > "$FAKE_CALLS"
t0=$SECONDS
run "$E2E_TMP/out" "$E2E_TMP/err" env -u SID_ROOT_PACKAGES -u DEBIAN_FRONTEND PATH="$ns:$PATH" "$sid_mk" http://mirror.invalid/debian "$sid" "$E2E_TMP/sid.log"
cat "$E2E_TMP/err" >&2
[ "$rc" = 0 ] || e2e_fail "sid_root.sh exited $rc on an empty cache (log: $(tail -n 5 "$E2E_TMP/sid.log" | paste -sd'|'))"
[ "$(cat "$E2E_TMP/out")" = "$sid" ] || e2e_fail "it printed '$(cat "$E2E_TMP/out")', want $sid"
tmpd="$(sed -n 's/^debootstrap .* \([^ ]*\.tmp\.[0-9]*\) .*/\1/p' "$FAKE_CALLS")"
[ "${tmpd%.tmp.*}" = "$sid" ] || e2e_fail "debootstrap calls: $(paste -sd, "$FAKE_CALLS")"
want="debootstrap --variant=minbase sid $tmpd http://mirror.invalid/debian
unshare -m --propagation private
mount -t proc proc $tmpd/proc
chroot $tmpd apt-get update
chroot $tmpd apt-get install -y bazel-bootstrap buildbox build-essential ca-certificates (DEBIAN_FRONTEND=noninteractive)
chroot $tmpd apt-get clean"
[ "$(cat "$FAKE_CALLS")" = "$want" ] ||
  e2e_fail "calls: $(paste -sd, "$FAKE_CALLS"); want: $(printf %s "$want" | paste -sd,)"
[ -e "$sid/.casbox-complete" ] && [ "$(cat "$sid/etc/debian_version")" = sid ] && [ -d "$sid/usr/share/doc/buildbox" ] ||
  e2e_fail "$sid is not the complete root"
[ "$(cat "$sid/etc/apt/apt.conf.d/90casbox")" = 'Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";' ] || e2e_fail "the sid root's 90casbox: $(cat "$sid/etc/apt/apt.conf.d/90casbox")"
[ ! -e "$root/etc/apt/apt.conf.d/90casbox" ] || e2e_fail "the bookworm root (no apt options) has a 90casbox"
[ -z "$(ls "$sid"/var/cache/apt/archives/*.deb 2> /dev/null)" ] || e2e_fail "the downloaded .debs were kept in $sid"
[ -z "$(ls -d "$sid".tmp.* 2> /dev/null)" ] || e2e_fail "tmp dirs left: $(ls -d "$sid".tmp.*)"
: > "$FAKE_CALLS"
run "$E2E_TMP/out" "$E2E_TMP/err" env PATH="$ns:$PATH" "$sid_mk" http://mirror.invalid/debian "$sid" "$E2E_TMP/sid.log"
[ "$rc" = 0 ] && [ "$(cat "$E2E_TMP/out")" = "$sid" ] && [ ! -s "$FAKE_CALLS" ] ||
  e2e_fail "second call: exit $rc, calls: $(paste -sd, "$FAKE_CALLS")"
[ $((SECONDS - t0)) -lt 10 ] || e2e_fail "the sid root with stand-ins took $((SECONDS - t0)) s"
log "ok: sid root made once on an empty cache (debootstrap, apt-get in a private mount namespace, apt options), then reused"

for mode in unreachable fail; do
  r2="$fixtures/debootstrap-sid-$mode"
  run "$E2E_TMP/out" "$E2E_TMP/err" env FAKE_APT="$mode" PATH="$ns:$PATH" "$sid_mk" http://mirror.invalid/debian "$r2" "$E2E_TMP/sid.log"
  want=1
  [ "$mode" = unreachable ] && want=77
  [ "$rc" = "$want" ] || e2e_fail "apt-get $mode in the sid root: exit $rc, want $want"
  [ ! -e "$r2" ] && [ -z "$(ls -d "$r2".tmp.* 2> /dev/null)" ] || e2e_fail "apt-get $mode left $(ls -d "$r2"*)"
  [ "$mode" = unreachable ] || { [ "$(grep -c 'error' "$E2E_TMP/err")" = 1 ] &&
    tail -n 1 "$E2E_TMP/err" | grep -q '^casbox: error: apt-get install .* in the sid root failed'; } ||
    e2e_fail "apt-get fail: want one error line, got $(tail -n 1 "$E2E_TMP/err")"
done
log "ok: apt in the sid root: mirror unreachable exits 77, another failure exits 1, no partial root"
