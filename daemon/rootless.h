/*
 * rootless.h - casboxd's own user + mount namespace for a FUSE mount
 * without privileges (rootless.c).
 */
#ifndef CASBOX_ROOTLESS_H
#define CASBOX_ROOTLESS_H

/* Unshares a user namespace mapping the caller's uid and gid to themselves
 * and a mount namespace it owns; the caller keeps its uid and gains the
 * capabilities to mount (FUSE, tmpfs, binds) there, until it execs.
 * Call while single-threaded. Returns 0: entered, or, with *unshare_errno
 * set, the kernel refused the namespaces and nothing changed (user
 * namespaces disabled); a negative errno: it failed half-way, the process is
 * in a namespace without a usable map and must exit. */
int rootless_enter_namespace(int *unshare_errno);

#endif
