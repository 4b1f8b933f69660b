#!/bin/bash
# The packages: scripts/package builds the .deb and the .rpm; then
#   - the .deb holds casboxd, the systemd unit, /etc/casbox/casboxd.conf as a
#     conffile, the man page(s); its maintainer scripts parse (sh -n); lintian
#     reports no error;
#   - the unit passes `systemd-analyze verify` (when systemd-analyze exists);
#   - the .rpm lists the same files (rpm -qpl), its config is %config, its
#     scriptlets parse (bash -n), and unit + config are byte-identical to the
#     .deb's;
#   - in a clean Debian root made with debootstrap (--variant=minbase, from the
#     Debian mirror the machine's apt uses), `apt-get install ./casbox.deb`
#     pulls the dependencies from the mirror, creates the user casbox and
#     /var/lib/casbox; `casboxd --version` prints the project version; the
#     packaged config lists every key with its default; casboxd started as
#     casbox with the packaged config (and a --listen override), once with a
#     /dev/fuse of mode 0600 (it stages by hardlinks) and once 0666 (through
#     FUSE), whatever the host's mode, answers GetCapabilities from the host,
#     stores a blob under /var/lib/casbox, and exits 0 on SIGTERM leaving no
#     mount; a reinstall keeps a local edit of the conffile; purge removes
#     /etc/casbox and /var/lib/casbox.
# The Debian root is cached in $(casbox_fixture_cache)/debootstrap-<codename>/
# (${CASBOX_FIXTURE_CACHE:-${CASBOX_TEST_CACHE:-~/.cache/casbox-test}}; delete it
# to make it again, tests/e2e/debootstrap_root.sh), with the .debs apt
# downloaded into it beside it in debootstrap-<codename>-debs/.  The chroot
# part runs in a private mount namespace (unshare -m), so its /proc and /dev
# mounts disappear with it, even when the test is killed.
# It needs root (debootstrap, chroot) and the Debian mirror: without them it
# skips (exit 77) after the build checks.  The chroot cannot create user
# namespaces (the kernel refuses them to a chrooted process), so actions are
# not executed there; tests/e2e/test_bazel_remote_exec.sh covers execution.
#
# Knobs: E2E_PACKAGES=DIR  use the packages already in DIR (scripts/package
#        --out DIR) instead of building them; and lib.sh's.
source "$(dirname "$0")/lib.sh"

version="$("$E2E_REPO/scripts/package" --version)"
arch="$(dpkg --print-architecture)"
deb_name="casbox_${version}-1_${arch}.deb"
rpm_name="casbox-${version}-1.$(uname -m).rpm"

# -- build -----------------------------------------------------------------------
if [ -n "${E2E_PACKAGES:-}" ]; then
  pkgs="$(cd "$E2E_PACKAGES" && pwd)"
  log "using the packages in $pkgs (E2E_PACKAGES)"
else
  for tool in dpkg-buildpackage dh rpmbuild lintian; do
    command -v "$tool" > /dev/null || e2e_fail "$tool is missing: run scripts/setup"
  done
  pkgs="$E2E_TMP/packages"
  log "scripts/package --out $pkgs (log $E2E_LOG_DIR/package.log)"
  if ! CASBOX_SETUP_DONE=1 e2e_run "$E2E_REPO/scripts/package" --out "$pkgs" --no-lint \
      > "$E2E_LOG_DIR/package.log" 2>&1; then
    tail -n 30 "$E2E_LOG_DIR/package.log" >&2
    e2e_fail "scripts/package failed (log $E2E_LOG_DIR/package.log)"
  fi
fi
deb="$pkgs/$deb_name"
rpm="$pkgs/$rpm_name"
[ -f "$deb" ] || e2e_fail "no $deb_name in $pkgs"
[ -f "$rpm" ] || e2e_fail "no $rpm_name in $pkgs"

# -- the .deb ----------------------------------------------------------------------
debx="$E2E_TMP/deb"
mkdir -p "$debx/root" "$debx/control"
dpkg-deb -x "$deb" "$debx/root"
dpkg-deb -e "$deb" "$debx/control"
has_cli=0
[ -e "$debx/root/usr/bin/casbox" ] && has_cli=1
for f in usr/sbin/casboxd lib/systemd/system/casbox.service etc/casbox/casboxd.conf \
    usr/share/man/man8/casboxd.8.gz usr/share/doc/casbox/copyright \
    usr/share/doc/casbox/configuration.md usr/share/doc/casbox/operations.md; do
  [ -e "$debx/root/$f" ] || e2e_fail "the .deb has no /$f"
done
if [ "$has_cli" = 1 ] && [ -e "$E2E_REPO/docs/casbox.1" ]; then
  [ -e "$debx/root/usr/share/man/man1/casbox.1.gz" ] || e2e_fail "the .deb has casbox but not its man page"
fi
grep -qx /etc/casbox/casboxd.conf "$debx/control/conffiles" ||
  e2e_fail "/etc/casbox/casboxd.conf is not a conffile of the .deb"
cmp "$debx/root/etc/casbox/casboxd.conf" "$E2E_REPO/packaging/casboxd.conf" ||
  e2e_fail "the .deb's casboxd.conf differs from packaging/casboxd.conf"
cmp "$debx/root/lib/systemd/system/casbox.service" "$E2E_REPO/packaging/systemd/casbox.service" ||
  e2e_fail "the .deb's unit differs from packaging/systemd/casbox.service"
for s in preinst postinst prerm postrm; do
  [ -e "$debx/control/$s" ] || continue
  sh -n "$debx/control/$s" || e2e_fail "the .deb's $s does not parse (sh -n)"
done
grep -q 'adduser .*--system' "$debx/control/postinst" || e2e_fail "the .deb's postinst creates no system user"
log "deb: files, conffile, maintainer scripts ok ($(dpkg-deb -f "$deb" Depends))"

if command -v lintian > /dev/null; then
  lintian --tag-display-limit 0 "$deb" > "$E2E_LOG_DIR/lintian.log" 2>&1 || true
  if grep '^E: ' "$E2E_LOG_DIR/lintian.log" >&2; then
    e2e_fail "lintian reports errors on $deb_name (log $E2E_LOG_DIR/lintian.log)"
  fi
  log "lintian: no errors ($(grep -c '^W: ' "$E2E_LOG_DIR/lintian.log" || true) warnings)"
else
  e2e_fail "lintian is missing: run scripts/setup"
fi

# -- the unit: systemd-analyze verify -----------------------------------------------------
# Offline, against a root holding the package, the host's system units (the
# unit's After=/WantedBy= targets) and the host's copies of the programs the
# unit's Exec*= lines name that the package does not ship (/bin/sh), so that it
# checks this unit, not what the host happens to have installed.
if command -v systemd-analyze > /dev/null; then
  sa="$E2E_TMP/sa-root"
  cp -a "$debx/root" "$sa"
  mkdir -p "$sa/usr/lib/systemd" "$sa/bin"
  for d in /usr/lib/systemd/system /lib/systemd/system; do
    [ -d "$d" ] && [ ! -e "$sa/usr/lib/systemd/system/default.target" ] &&
      cp -a "$d" "$sa/usr/lib/systemd/"
  done
  sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$sa/lib/systemd/system/casbox.service" |
    sort -u | while read -r prog; do
      if [ ! -e "$sa$prog" ] && [ -e "$prog" ]; then
        mkdir -p "$sa$(dirname "$prog")"
        cp -L "$prog" "$sa$prog"
      fi
    done
  if ! systemd-analyze verify --man=no --root="$sa" /lib/systemd/system/casbox.service \
      > "$E2E_LOG_DIR/systemd-analyze.log" 2>&1; then
    cat "$E2E_LOG_DIR/systemd-analyze.log" >&2
    e2e_fail "systemd-analyze verify casbox.service failed"
  fi
  [ -s "$E2E_LOG_DIR/systemd-analyze.log" ] && cat "$E2E_LOG_DIR/systemd-analyze.log" >&2
  systemd-analyze security --offline=yes --root="$sa" /lib/systemd/system/casbox.service \
    > "$E2E_LOG_DIR/systemd-security.log" 2>&1 || true
  log "systemd-analyze verify: ok; $(grep -o 'Overall exposure level.*' "$E2E_LOG_DIR/systemd-security.log" || echo 'no security score')"
else
  log "systemd-analyze is not installed: unit not verified"
fi

# -- the .rpm -------------------------------------------------------------------------------
rpm -qpl "$rpm" > "$E2E_TMP/rpm.files" 2> "$E2E_LOG_DIR/rpm-qpl.log" ||
  e2e_fail "rpm -qpl $rpm_name failed (log $E2E_LOG_DIR/rpm-qpl.log)"
for f in /usr/sbin/casboxd /usr/lib/systemd/system/casbox.service /etc/casbox/casboxd.conf \
    /usr/lib/sysusers.d/casbox.conf /var/lib/casbox /usr/share/doc/casbox/configuration.md; do
  grep -qx "$f" "$E2E_TMP/rpm.files" || e2e_fail "rpm -qpl $rpm_name does not list $f"
done
grep -qE '^/usr/share/man/man8/casboxd\.8(\.gz)?$' "$E2E_TMP/rpm.files" ||
  e2e_fail "rpm -qpl $rpm_name lists no casboxd.8"
if [ "$has_cli" = 1 ]; then
  grep -qx /usr/bin/casbox "$E2E_TMP/rpm.files" || e2e_fail "the .deb has casbox, the .rpm does not"
fi
rpm -qpc "$rpm" 2> /dev/null | grep -qx /etc/casbox/casboxd.conf ||
  e2e_fail "/etc/casbox/casboxd.conf is not %config in $rpm_name"
rpm -qp --qf '[%{FILENAMES} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEMODES:perms}\n]' "$rpm" 2> /dev/null |
  grep -qx '/var/lib/casbox casbox:casbox drwxr-x---' || e2e_fail "/var/lib/casbox is not casbox:casbox 0750 in $rpm_name"
rpm -qpR "$rpm" 2> /dev/null | grep -qx fuse3 || e2e_fail "$rpm_name does not require fuse3"
n=0
for tag in PRETRANS PREIN POSTIN PREUN POSTUN POSTTRANS; do
  body="$(rpm -qp --qf "%{$tag}" "$rpm" 2> /dev/null)"
  [ "$body" = "(none)" ] && continue
  prog="$(rpm -qp --qf "%{${tag}PROG}" "$rpm" 2> /dev/null)"
  case "$prog" in /bin/sh|/bin/bash|/usr/bin/sh|/usr/bin/bash) ;; *) e2e_fail "$tag runs $prog, expected /bin/sh" ;; esac
  printf '%s\n' "$body" | bash -n || e2e_fail "the $tag scriptlet of $rpm_name does not parse (bash -n)"
  n=$((n + 1))
done
[ "$n" -ge 4 ] || e2e_fail "$rpm_name has $n scriptlets, expected pre, post, preun and postun"
rpm -qp --qf '%{PREIN}' "$rpm" 2> /dev/null | grep -q 'useradd\|systemd-sysusers' ||
  e2e_fail "the %pre scriptlet of $rpm_name creates no user"
rpmx="$E2E_TMP/rpm"
mkdir -p "$rpmx"
rpm2archive - < "$rpm" | tar -xzf - -C "$rpmx" || e2e_fail "rpm2archive $rpm_name failed (package rpm2cpio)"
cmp "$rpmx/etc/casbox/casboxd.conf" "$debx/root/etc/casbox/casboxd.conf" ||
  e2e_fail "the .rpm and the .deb ship different casboxd.conf"
cmp "$rpmx/usr/lib/systemd/system/casbox.service" "$debx/root/lib/systemd/system/casbox.service" ||
  e2e_fail "the .rpm and the .deb ship different units"
# The same programs in both (casbox and its helper when this version has them).
(cd "$debx/root" && find usr/bin usr/sbin usr/libexec -type f 2> /dev/null | sort) > "$E2E_TMP/deb.programs"
(cd "$rpmx" && find usr/bin usr/sbin usr/libexec -type f 2> /dev/null | sort) > "$E2E_TMP/rpm.programs"
diff -u "$E2E_TMP/deb.programs" "$E2E_TMP/rpm.programs" >&2 ||
  e2e_fail "the .deb and the .rpm ship different programs"
if [ "$has_cli" = 1 ]; then
  grep -qx usr/libexec/casbox/casbox-replay "$E2E_TMP/deb.programs" ||
    e2e_fail "casbox is packaged without its helper /usr/libexec/casbox/casbox-replay"
fi
grep -q '^u casbox .*/var/lib/casbox' "$rpmx/usr/lib/sysusers.d/casbox.conf" ||
  e2e_fail "the .rpm's sysusers.d file does not create casbox with home /var/lib/casbox"
log "rpm: $n scriptlets parse; files, %config, user and unit ok; programs: $(tr '\n' ' ' < "$E2E_TMP/deb.programs")"

# -- a clean Debian root ------------------------------------------------------------------
[ "$(id -u)" = 0 ] || e2e_skip "debootstrap and chroot need root (the package checks above passed)"
for tool in debootstrap chroot unshare; do
  command -v "$tool" > /dev/null || e2e_skip "$tool is not installed (scripts/setup installs debootstrap)"
done
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$codename" ] || e2e_skip "no VERSION_CODENAME in /etc/os-release"
# The Debian archives apt uses here: "URI SUITE COMPONENT" per index.
apt-get indextargets --format '$(TARGET_OF) $(CREATED_BY) $(ARCHITECTURE) $(REPO_URI) $(RELEASE) $(COMPONENT)' |
  awk -v arch="$arch" '$1 == "deb" && $2 == "Packages" && $3 == arch && $4 ~ /debian/ { print $4, $5, $6 }' |
  sort -u > "$E2E_TMP/archives"
mirror="$(awk -v s="$codename" '$2 == s { print $1; exit }' "$E2E_TMP/archives")"
[ -n "$mirror" ] || e2e_skip "apt has no Debian archive for $codename (see $E2E_TMP/archives): debootstrap cannot run"

# The root is a cached fixture (debootstrap_root.sh makes it when missing).
cache_dir="$(casbox_fixture_cache)"
debs_cache="$cache_dir/debootstrap-$codename-debs"
mkdir -p "$cache_dir" "$debs_cache"
rc=0
e2e_run "$E2E_DIR/debootstrap_root.sh" "$codename" "$mirror" "$cache_dir/debootstrap-$codename" \
  "$E2E_LOG_DIR/debootstrap.log" > "$E2E_TMP/root-cache" || rc=$?
case "$rc" in
  0) root_cache="$(cat "$E2E_TMP/root-cache")" ;;
  77) e2e_skip "debootstrap cannot reach $mirror (log $E2E_LOG_DIR/debootstrap.log)" ;;
  *) e2e_fail "no Debian root: tests/e2e/debootstrap_root.sh failed (log $E2E_LOG_DIR/debootstrap.log)" ;;
esac

root="$E2E_TMP/root"
log "copying the cached root to $root"
cp -a "$root_cache" "$root"
rm -f "$root/.casbox-complete"
# apt sources: the same Debian archives as the machine's apt.
: > "$root/etc/apt/sources.list"
awk '{ c[$1 " " $2] = c[$1 " " $2] " " $3 } END { for (k in c) print "deb " k c[k] }' "$E2E_TMP/archives" |
  sort > "$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2> /dev/null || true
# What systemd-tmpfiles makes at boot on the systems the package is for
# (/usr/lib/tmpfiles.d/debian.conf), and a chroot lacks: without it
# fusermount3 cannot unmount, so where /dev/fuse is 0666 the casbox user's
# daemon would leave its FUSE mount behind on SIGTERM.
[ -e "$root/etc/mtab" ] || ln -s ../proc/self/mounts "$root/etc/mtab"
# Nothing may start services inside (there is no systemd in the root anyway).
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$debs_cache"/*.deb "$root/var/cache/apt/archives/" 2> /dev/null || true
cp "$deb" "$root/tmp/casbox.deb"

port="$(e2e_free_port)"
log "installing into the root and running casboxd there on 127.0.0.1:$port (log $E2E_LOG_DIR/chroot.log)"
rc=0
e2e_run env ROOT="$root" PORT="$port" VERSION="$version" PY="$PY" E2E_DIR="$E2E_DIR" \
  REPO="$E2E_REPO" E2E_TMP="$E2E_TMP" DEBS_CACHE="$debs_cache" LOGS="$E2E_LOG_DIR" \
  unshare --mount --propagation private bash -euo pipefail -c '
  say() { printf "[chroot] %s\n" "$*" >&2; }
  fail() { say "FAIL: $*"; exit 1; }
  in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }
  daemon=""
  # A failed check exits with the daemon still running: it must not outlive
  # the test (it is no child of the test once this shell is gone).
  stop_daemon() {
    [ -n "$daemon" ] || return 0
    kill -KILL "$daemon" 2> /dev/null || true
    wait "$daemon" 2> /dev/null || true
    daemon=""
  }
  trap stop_daemon EXIT
  trap "exit 143" TERM INT
  mount -t proc proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"

  say "apt-get update"
  apt_ok=0
  for i in 1 2 3; do
    in_root apt-get -q update > "$E2E_TMP/apt-update.log" 2>&1 && { apt_ok=1; break; }
    sleep 5
  done
  if [ "$apt_ok" = 0 ]; then
    cat "$E2E_TMP/apt-update.log" >&2
    exit 77
  fi
  say "apt-get install /tmp/casbox.deb"
  in_root apt-get -q install -y /tmp/casbox.deb >&2 || fail "apt-get install /tmp/casbox.deb failed"
  cp -n "$ROOT"/var/cache/apt/archives/*.deb "$DEBS_CACHE/" 2> /dev/null || true
  rm -f "$ROOT"/var/cache/apt/archives/*.deb

  in_root dpkg-query -W -f "\${Status} \${Version}\n" casbox | grep -qx "install ok installed $VERSION-1" ||
    fail "casbox $VERSION-1 is not installed"
  got="$(in_root /usr/sbin/casboxd --version)" || fail "casboxd --version failed"
  [ "$got" = "casboxd $VERSION" ] || fail "casboxd --version printed \"$got\", want \"casboxd $VERSION\""
  say "casboxd --version: $got"
  if [ -e "$ROOT/usr/bin/casbox" ]; then
    got="$(in_root /usr/bin/casbox --version)" || fail "casbox --version failed"
    [ "$got" = "casbox $VERSION" ] || fail "casbox --version printed \"$got\", want \"casbox $VERSION\""
    say "casbox --version: $got"
  fi

  pw="$(in_root getent passwd casbox)" || fail "no user casbox"
  IFS=: read -r _ _ uid gid _ home shell <<< "$pw"
  [ "$home" = /var/lib/casbox ] || fail "casbox home is $home, want /var/lib/casbox"
  case "$shell" in */nologin|/bin/false) ;; *) fail "casbox has the login shell $shell" ;; esac
  [ "$uid" -lt 1000 ] || fail "casbox is not a system user (uid $uid)"
  st="$(stat -c "%u:%g %a" "$ROOT/var/lib/casbox")"
  [ "$st" = "$uid:$gid 750" ] || fail "/var/lib/casbox is $st, want $uid:$gid 750"
  say "user casbox ($uid:$gid), /var/lib/casbox 0750"

  # The packaged config: every key of this casboxd with its default, and each
  # commented default, uncommented, is accepted and is the default.
  in_root /usr/sbin/casboxd --print-config | sh "$REPO/packaging/gen-config.sh" |
    diff -u "$ROOT/etc/casbox/casboxd.conf" - >&2 || fail "/etc/casbox/casboxd.conf does not match casboxd --print-config"
  sed "s/^#\([a-z_]* = \)/\1/; /^worker_name = *$/d" "$ROOT/etc/casbox/casboxd.conf" > "$ROOT/tmp/all-keys.conf"
  in_root /usr/sbin/casboxd --config /tmp/all-keys.conf --print-config > "$E2E_TMP/all-keys.out" ||
    fail "casboxd rejects the packaged defaults uncommented"
  in_root /usr/sbin/casboxd --state-dir /var/lib/casbox --print-config > "$E2E_TMP/defaults.out"
  diff -u "$E2E_TMP/defaults.out" "$E2E_TMP/all-keys.out" >&2 ||
    fail "the commented defaults in casboxd.conf are not casboxd'\''s defaults"
  say "casboxd.conf: every key, defaults verified"

  # The daemon as systemd would run it: user casbox, the packaged config.
  # Its input staging (auto) depends on /dev/fuse: FUSE where the user may
  # open it (0666, as distributions ship it), else hardlinks (0600).  Both
  # run here, whatever the host has: the chroot gets a /dev/fuse node of each
  # mode in turn, bound over its /dev/fuse in this private mount namespace
  # (the host'\''s /dev/fuse is never changed).
  modes="host"
  if [ -c /dev/fuse ]; then
    modes="0600 0666"
    mkdir -p "$E2E_TMP/devnodes"
    mount -t tmpfs -o mode=0755,size=64k casbox-devnodes "$E2E_TMP/devnodes"
    read -r maj min < <(stat -c "%t %T" /dev/fuse)
    for m in $modes; do mknod -m "$m" "$E2E_TMP/devnodes/fuse-$m" c "$((16#$maj))" "$((16#$min))"; done
  else
    say "the host has no /dev/fuse: one round, hardlink staging"
  fi
  n=0
  for mode in $modes; do
    n=$((n + 1))
    dlog="$LOGS/casboxd-chroot-$mode.log"
    [ "$mode" = host ] || mount --bind "$E2E_TMP/devnodes/fuse-$mode" "$ROOT/dev/fuse"
    chroot --userspec="$uid:$gid" --groups="$gid" "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      /usr/sbin/casboxd --config /etc/casbox/casboxd.conf --listen "127.0.0.1:$PORT" \
      > "$dlog" 2>&1 < /dev/null &
    daemon=$!
    for i in $(seq 1 300); do
      grep -qF "casboxd: listening on 127.0.0.1:$PORT" "$dlog" && break
      kill -0 "$daemon" 2> /dev/null || { cat "$dlog" >&2; fail "casboxd exited at start (/dev/fuse $mode)"; }
      sleep 0.1
    done
    grep -qF "casboxd: listening" "$dlog" || { cat "$dlog" >&2; fail "casboxd did not start listening (/dev/fuse $mode)"; }
    staging="$(grep -m1 -o "input staging: .*" "$dlog" || echo "no input staging line")"
    say "/dev/fuse $mode: casboxd (pid $daemon) listening on 127.0.0.1:$PORT as casbox; $staging"
    case "$mode" in
      0600) [[ "$staging" == "input staging: hardlink "* ]] || fail "/dev/fuse 0600: want hardlink staging, got: $staging" ;;
      0666) [[ "$staging" == "input staging: fuse, "* ]] || fail "/dev/fuse 0666: want FUSE staging, got: $staging" ;;
    esac
    "$PY" "$E2E_DIR/reapi_client.py" --target "127.0.0.1:$PORT" capabilities > "$E2E_TMP/caps.txt" ||
      fail "GetCapabilities failed"
    grep -q SHA256 "$E2E_TMP/caps.txt" || { cat "$E2E_TMP/caps.txt" >&2; fail "GetCapabilities names no SHA256"; }
    "$PY" "$E2E_DIR/reapi_client.py" --target "127.0.0.1:$PORT" exec-enabled ||
      fail "the packaged config does not enable execution"
    hash="$(cd "$E2E_DIR" && "$PY" -c "
import reapi_client as rc
c = rc.Client(\"127.0.0.1:$PORT\")
d = c.upload_blob(b\"casbox package test, round $n\n\")
assert c.find_missing([d]) == [], \"the blob is missing after upload\"
print(d.hash)")" || fail "the blob round trip failed"
    # By its path in the CAS layout, not by walking the state dir: with FUSE
    # staging casboxd has its input tree mounted at cas/fuse, which no other
    # user (root included) may enter (no allow_other).
    blob="$ROOT/var/lib/casbox/cas/blobs/${hash:0:2}/$hash"
    [ -f "$blob" ] || fail "no blob $hash at ${blob#$ROOT} (<state>/cas/blobs/<aa>/<hash>)"
    [ "$(stat -c %u "$blob")" = "$uid" ] || fail "$blob is not owned by casbox"
    say "GetCapabilities, execution enabled, blob stored in ${blob#$ROOT}"
    kill -TERM "$daemon"
    rc=0
    wait "$daemon" || rc=$?
    daemon=""
    [ "$rc" = 0 ] || { cat "$dlog" >&2; fail "casboxd exited $rc on SIGTERM, want 0 (/dev/fuse $mode)"; }
    # With FUSE staging it must have unmounted cas/fuse.
    left="$(awk -v p="$ROOT/var/lib/casbox/" "index(\$5, p) == 1 { print \$5 }" /proc/self/mountinfo)"
    [ -z "$left" ] || { cat "$dlog" >&2; fail "casboxd left mounts behind after SIGTERM: $left"; }
    [ "$mode" = host ] || umount "$ROOT/dev/fuse"
    say "casboxd exited 0 on SIGTERM, no mount left under /var/lib/casbox"
  done

  # Upgrade path: a reinstall keeps a local edit of the conffile.
  echo "# local edit" >> "$ROOT/etc/casbox/casboxd.conf"
  in_root dpkg -i /tmp/casbox.deb > "$E2E_TMP/reinstall.log" 2>&1 ||
    { cat "$E2E_TMP/reinstall.log" >&2; fail "reinstalling the .deb failed"; }
  grep -qx "# local edit" "$ROOT/etc/casbox/casboxd.conf" || fail "a reinstall overwrote the edited conffile"
  # Purge: configuration and state go, the system user stays.
  in_root apt-get -q purge -y casbox > "$E2E_TMP/purge.log" 2>&1 ||
    { cat "$E2E_TMP/purge.log" >&2; fail "apt-get purge casbox failed"; }
  [ ! -e "$ROOT/etc/casbox" ] || fail "/etc/casbox is still there after purge"
  [ ! -e "$ROOT/var/lib/casbox" ] || fail "/var/lib/casbox is still there after purge"
  [ ! -e "$ROOT/usr/sbin/casboxd" ] || fail "/usr/sbin/casboxd is still there after purge"
  say "reinstall keeps the conffile; purge removes /etc/casbox and /var/lib/casbox"
' > "$E2E_LOG_DIR/chroot.log" 2>&1 || rc=$?
cat "$E2E_LOG_DIR/chroot.log" >&2
case "$rc" in
  0) ;;
  77) e2e_skip "apt-get update in the Debian root failed: the mirror $mirror is not reachable (log $E2E_LOG_DIR/chroot.log)" ;;
  *) e2e_fail "the install test in the Debian root failed (log $E2E_LOG_DIR/chroot.log)" ;;
esac
