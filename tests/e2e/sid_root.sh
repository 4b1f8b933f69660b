#!/bin/bash
# Make, once, the Debian sid root that test_bazel7_env.sh runs today's REAPI
# clients from (Bazel 7.7.1 from bazel-bootstrap, buildbox's recc, trexe,
# casupload, casdownload, rexplorer, buildbox-casd), and print its path.
#
#   tests/e2e/sid_root.sh MIRROR DIR LOG
#       debootstrap_root.sh sid, with $SID_ROOT_PACKAGES installed (default
#       bazel-bootstrap buildbox build-essential ca-certificates) and the
#       root's apt told Acquire::Check-Valid-Until=false (sid's Release file
#       may be past its Valid-Until on the mirror) and
#       APT::Install-Recommends=false.  DIR is normally
#       $(casbox_fixture_cache)/debootstrap-sid-clients.
#
# Only the sid root's recipe: how it is made (lock, DIR/.casbox-complete,
# DIR.tmp.PID renamed when done, exit 77 when the mirror cannot be reached)
# is debootstrap_root.sh's.  Needs root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

[ $# = 3 ] || casbox_die "usage: tests/e2e/sid_root.sh MIRROR DIR LOG"
# shellcheck disable=SC2206 # a space-separated list of package names
packages=(${SID_ROOT_PACKAGES:-bazel-bootstrap buildbox build-essential ca-certificates})
exec "$(dirname "${BASH_SOURCE[0]}")/debootstrap_root.sh" \
  -o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false \
  sid "$1" "$2" "$3" "${packages[@]}"
