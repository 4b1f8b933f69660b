/*
 * file.c - file-system helpers every library needs one copy of: removing a
 * tree that an action may have made hostile, making parent directories,
 * writing a whole buffer.
 */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int util_mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int util_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Directory levels removed with open fds; deeper ones are moved up first. */
#define REMOVE_MAX_DEPTH 32

struct remove_ctx {
    int top_fd;
    dev_t dev;
    unsigned long spilled; /* directories moved up to top_fd */
};

static int remove_first(int rc, int next)
{
    return rc != 0 ? rc : next;
}

/* Opens a directory to empty it, making it readable (and writable, for the
 * unlinks) if the action took the permissions away. A directory of another
 * filesystem than dev (a mount point) is -EXDEV, found before anything is
 * changed: another filesystem's files are never removed, nor is the mode of
 * its root changed. */
static int remove_open_dir(int parent_fd, const char *name, dev_t dev)
{
    struct stat st;
    int fd, rc = 0;

    fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
        if (st.st_dev != dev)
            return -EXDEV;
        if (fchmodat(parent_fd, name, 0700, AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
        fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        rc = -errno;
    else if (st.st_dev != dev)
        rc = -EXDEV;
    else if ((st.st_mode & 0700) != 0700 && fchmod(fd, st.st_mode | 0700) < 0)
        rc = -errno;
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static int remove_contents(struct remove_ctx *r, int fd, int depth);

static int remove_entry(struct remove_ctx *r, int dir_fd, const char *name, unsigned char type,
                        int depth)
{
    struct stat st;
    int fd, rc;

    if (type == DT_UNKNOWN) {
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return errno == ENOENT ? 0 : -errno;
        type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
    }
    if (type != DT_DIR)
        return unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
    if (depth + 1 >= REMOVE_MAX_DEPTH) {
        /* Too deep to hold an fd per level: move it up, emptied later. */
        char spill[64];

        for (int tries = 0; tries < 1000; tries++) {
            snprintf(spill, sizeof(spill), ".casbox-rm-%lu", r->spilled++);
            if (renameat2(dir_fd, name, r->top_fd, spill, RENAME_NOREPLACE) == 0)
                return 0;
            /* Moving a directory rewrites its "..": it must be writable. */
            if (errno == EACCES && tries == 0 &&
                fchmodat(dir_fd, name, 0700, AT_SYMLINK_NOFOLLOW) == 0)
                continue;
            if (errno != EEXIST)
                return -errno;
        }
        return -EEXIST;
    }
    fd = remove_open_dir(dir_fd, name, r->dev);
    if (fd < 0)
        return fd == -ENOENT ? 0 : fd;
    rc = remove_contents(r, fd, depth + 1);
    close(fd);
    if (rc == 0 && unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}

static int remove_contents(struct remove_ctx *r, int fd, int depth)
{
    unsigned long spilled_before;
    int rc = 0;

    do {
        struct dirent *de;
        int dfd = dup(fd);
        DIR *dir;

        spilled_before = r->spilled;
        if (dfd < 0)
            return -errno;
        dir = fdopendir(dfd);
        if (dir == NULL) {
            rc = -errno;
            close(dfd);
            return rc;
        }
        rewinddir(dir);
        while ((errno = 0, de = readdir(dir)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            rc = remove_first(rc, remove_entry(r, fd, de->d_name, de->d_type, depth));
        }
        if (errno != 0)
            rc = remove_first(rc, -errno);
        closedir(dir);
        /* At the top, entries moved up during the pass need another one. */
    } while (rc == 0 && depth == 0 && r->spilled != spilled_before);
    return rc;
}

int util_remove_tree(const char *path)
{
    struct remove_ctx r = {.top_fd = -1};
    struct stat st;
    int rc;

    if (lstat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 ? -errno : 0;
    r.dev = st.st_dev;
    r.top_fd = remove_open_dir(AT_FDCWD, path, r.dev);
    if (r.top_fd < 0)
        return r.top_fd;
    rc = remove_contents(&r, r.top_fd, 0);
    close(r.top_fd);
    if (rc == 0 && rmdir(path) < 0)
        rc = -errno;
    return rc;
}
