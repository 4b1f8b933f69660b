# shellcheck shell=bash
# Shell functions shared by scripts/{setup,build,run,test} and tests/e2e.
# Sourced, not executed.  Debian/apt only; bash.

CASBOX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Build and test dependencies (Debian 12 package names).  Keep in sync with
# README.md and docs/testing.md.
CASBOX_PACKAGES=(
  build-essential cmake pkg-config
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev protobuf-compiler
  libgrpc-dev libfuse3-dev fuse3 liburing-dev libseccomp-dev libcap-dev
  libcmocka-dev libssl-dev openssl curl libinih-dev libcurl4-openssl-dev libzstd-dev zstd libmicrohttpd-dev libgnutls28-dev
  bazel-bootstrap bazel-bootstrap-source
  python3-grpcio python3-protobuf python3-zstandard chromium
  bubblewrap time dpkg-dev clang-format clang libclang-rt-14-dev
  debhelper lintian rpm rpm2cpio debootstrap systemd
  buildstream iproute2 btrfs-progs
)

# Tests use Debian's python (python3-grpcio, python3-protobuf), never a pyenv
# shim that happens to be first on PATH.
CASBOX_PYTHON="${CASBOX_PYTHON:-/usr/bin/python3}"

casbox_log() { printf 'casbox: %s\n' "$*" >&2; }
casbox_die() { printf 'casbox: error: %s\n' "$*" >&2; exit 1; }

# casbox_missing_packages PKG...: print the packages that are not installed.
casbox_missing_packages() {
  local p st
  for p in "$@"; do
    st="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [ "$st" = "install ok installed" ] || printf '%s\n' "$p"
  done
}

# casbox_as_root CMD...: run CMD as root (directly, or through sudo).
# Returns 127 when that is impossible.
casbox_as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 127
  fi
}

casbox_can_be_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }

# _casbox_retry CMD...: apt runs elsewhere on the machine hold the dpkg lock
# or the mirror hiccups: retry a few times instead of failing the build.
_casbox_retry() {
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    "$@" && return 0
    casbox_log "apt busy or failed (try $i of 10), retrying in 15 s: $*"
    sleep 15
  done
  return 1
}

CASBOX_APT=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)

# casbox_apt_install PKG...: install packages, refreshing the lists if the
# first attempt fails (fresh images have empty lists).  Needs root/sudo.
casbox_apt_install() {
  casbox_log "installing with apt-get: $*"
  if casbox_as_root "${CASBOX_APT[@]}" install -y "$@"; then
    return 0
  fi
  _casbox_retry casbox_as_root "${CASBOX_APT[@]}" update || casbox_die "apt-get update failed"
  _casbox_retry casbox_as_root "${CASBOX_APT[@]}" install -y "$@" ||
    casbox_die "apt-get install failed: $*"
}

# casbox_has_deb_src: apt knows at least one source-package index (deb-src).
casbox_has_deb_src() {
  apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx 'Sources'
}

CASBOX_DEB_SRC_FILE=/etc/apt/sources.list.d/casbox-deb-src.sources

# _casbox_deb_src_entries: print deb822 deb-src stanzas mirroring the Debian
# `deb` entries apt already uses (same URIs, suites, components, Signed-By),
# from /etc/apt/sources.list{,.d/*.list} (one-line style) and
# /etc/apt/sources.list.d/*.sources (deb822).  Only Debian archives: other
# repositories often have no source indexes and would break `apt-get update`.
_casbox_deb_src_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '
      /^[[:space:]]*deb[[:space:]]/ {
        line = $0; sub(/^[[:space:]]*deb[[:space:]]+/, "", line)
        signed = ""
        if (line ~ /^\[/) {
          opts = substr(line, 2, index(line, "]") - 2)
          line = substr(line, index(line, "]") + 1)
          n = split(opts, o, /[[:space:]]+/)
          for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) { signed = o[i]; sub(/^signed-by=/, "", signed) }
        }
        n = split(line, w, /[[:space:]]+/); k = 0
        for (i = 1; i <= n; i++) if (w[i] != "") v[++k] = w[i]
        if (k < 3 || v[1] !~ /debian/) next
        comps = v[3]; for (i = 4; i <= k; i++) comps = comps " " v[i]
        printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", v[1], v[2], comps
        if (signed != "") printf "Signed-By: %s\n", signed
        printf "\n"
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$CASBOX_DEB_SRC_FILE" ] || continue
    awk '
      function flush() {
        if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && types !~ /deb-src/ &&
            uris ~ /debian/ && enabled !~ /^[[:space:]]*no/) {
          printf "Types: deb-src\n%s\n", body
        }
        types = ""; uris = ""; enabled = ""; body = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      {
        if ($0 ~ /^Types:/) { types = $0; sub(/^Types:[[:space:]]*/, "", types); next }
        if ($0 ~ /^URIs:/) { uris = $0 }
        if ($0 ~ /^Enabled:/) { enabled = $0; sub(/^Enabled:/, "", enabled) }
        body = body $0 "\n"
      }
      END { flush() }' "$f"
  done
}

# casbox_ensure_deb_src: make `apt-get source` work (the zlib e2e workspace
# needs it): if apt has no deb-src entry, add one per Debian `deb` entry in
# CASBOX_DEB_SRC_FILE and refresh the lists.  Quiet when nothing is needed.
casbox_ensure_deb_src() {
  casbox_has_deb_src && return 0
  if ! casbox_can_be_root; then
    casbox_log "apt has no deb-src entries, needed by 'apt-get source zlib' (e2e tests)."
    casbox_log "as root, add deb-src lines mirroring your deb lines, then run: apt-get update"
    return 1
  fi
  local entries codename
  entries="$(_casbox_deb_src_entries)"
  if [ -z "$entries" ]; then
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    entries="Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
  fi
  casbox_log "adding deb-src entries to $CASBOX_DEB_SRC_FILE (for 'apt-get source')"
  printf '# Added by casbox scripts/setup: source indexes for `apt-get source`.\n%s\n' \
    "$entries" | casbox_as_root tee "$CASBOX_DEB_SRC_FILE" >/dev/null ||
    casbox_die "cannot write $CASBOX_DEB_SRC_FILE"
  if ! _casbox_retry casbox_as_root "${CASBOX_APT[@]}" update; then
    casbox_as_root rm -f "$CASBOX_DEB_SRC_FILE"
    casbox_die "apt-get update failed with the new deb-src entries (removed them again)"
  fi
  casbox_has_deb_src || casbox_die "apt still has no Sources index after adding $CASBOX_DEB_SRC_FILE"
}

# casbox_abs DIR: DIR made absolute relative to the repository root.
casbox_abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$CASBOX_ROOT/$1" ;; esac; }

# Test caches (docs/testing.md, "Caches and downloads").  Two kinds:
# - cheap ones, made again in seconds through apt and protoc (zlib sources,
#   generated Python protos): casbox_test_cache, $CASBOX_TEST_CACHE;
# - large fixtures, minutes to make (debootstrap roots and their .debs):
#   casbox_fixture_cache, $CASBOX_FIXTURE_CACHE, by default the same dir.
# `scripts/test --fresh-caches` (CI) points the first at an empty temporary
# dir and keeps the second; `scripts/test --fresh` empties both.
casbox_default_test_cache() {
  printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/casbox-test"
}
casbox_test_cache() {
  printf '%s\n' "${CASBOX_TEST_CACHE:-$(casbox_default_test_cache)}"
}
casbox_fixture_cache() {
  printf '%s\n' "${CASBOX_FIXTURE_CACHE:-$(casbox_test_cache)}"
}
