#!/bin/bash
# Run a command inside a Debian root (the sid root of sid_root.sh) entered
# with pivot_root in a private mount namespace, not chroot: the kernel
# refuses user namespaces to a chrooted process, so Bazel's linux-sandbox
# (and a casboxd run there) would fail inside a chroot.
#
#   tests/e2e/sid_enter.sh ROOT SHARED_DIR WORKDIR CMD...
#
# ROOT is bound read-only (the cached root is never written); /proc is
# fresh, /dev the host's (rbind), /tmp a tmpfs, and SHARED_DIR (a host
# directory under /tmp, e.g. the test's temp dir) is bound read-write at the
# same path inside, so paths mean the same inside and out.  The network
# namespace is the host's: clients inside reach casboxd on 127.0.0.1.  CMD
# runs in WORKDIR with a clean environment (HOME=SHARED_DIR/home, PATH of
# the root, LANG=C.UTF-8) plus the variables named in SID_ENTER_ENV.
# Needs root (unshare -m, mount, pivot_root).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: sid_enter.sh ROOT SHARED_DIR WORKDIR CMD..." >&2; exit 2; }
root="$1" shared="$2" workdir="$3"; shift 3
envs=(HOME="$shared/home" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 USER=root)
for v in ${SID_ENTER_ENV:-}; do envs+=("$v=${!v-}"); done
mkdir -p "$shared/home"
# shellcheck disable=SC2016
exec unshare -m --propagation private bash -ec '
root="$1" shared="$2" workdir="$3"; shift 3
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mkdir -p "$root$shared"
mount --bind "$shared" "$root$shared"
cd "$root"
pivot_root . .
umount -l .
cd "$workdir"
exec env -i "$@"' sid-enter "$root" "$shared" "$workdir" "${envs[@]}" "$@"
