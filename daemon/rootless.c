/*
 * rootless.c - a user and mount namespace of casboxd's own, so that an
 * unprivileged casboxd can mount its FUSE input filesystem.
 *
 * An ordinary user may mount FUSE only through the setuid fusermount3, and
 * not at all where it cannot use that (a service whose bounding set is empty,
 * NoNewPrivileges=yes, a container). The kernel does allow a FUSE mount by
 * whoever holds CAP_SYS_ADMIN over the mount namespace, which includes the
 * owner of a fresh user namespace: so casboxd unshares one, mapping its own
 * uid and gid to themselves (files it creates keep their owner), and a mount
 * namespace owned by it. Done before the spawner is forked and before any
 * thread exists, so the spawner, the sandboxes it starts (nested user
 * namespaces) and the FUSE mount all live in that namespace; the mount goes
 * away with it, so a crashed casboxd leaves no stale mount behind.
 */
#include "rootless.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static int rootless_write(const char *path, const char *text)
{
    ssize_t len = (ssize_t)strlen(text), n;
    int fd, rc = 0;

    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = write(fd, text, (size_t)len);
    if (n != len)
        rc = n < 0 ? -errno : -EIO;
    close(fd);
    return rc;
}

int rootless_enter_namespace(int *unshare_errno)
{
    char map[64];
    uid_t uid = geteuid();
    gid_t gid = getegid();
    int rc;

    *unshare_errno = 0;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
        *unshare_errno = errno;
        return 0;
    }
    /* setgroups must be denied before an unprivileged gid_map write. */
    rc = rootless_write("/proc/self/setgroups", "deny");
    if (rc != 0 && rc != -ENOENT)
        return rc;
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    rc = rootless_write("/proc/self/uid_map", map);
    if (rc != 0)
        return rc;
    snprintf(map, sizeof(map), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    rc = rootless_write("/proc/self/gid_map", map);
    if (rc != 0)
        return rc;
    /* Mounts made here must not propagate anywhere (they cannot anyway:
     * the copied mounts are locked as less privileged). */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return -errno;
    return 0;
}
