/*
 * cli_util.c - small things both casbox programs need: a scratch directory,
 * sizes with suffixes, and removing a scratch tree whatever the command left
 * in it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define REMOVE_MAX_DEPTH 512 /* each level holds one fd */

int cli_scratch_create(const char *prefix, char **out, char *err, size_t err_len)
{
    const char *tmp = getenv("TMPDIR");
    char *path;

    if (tmp == NULL || tmp[0] != '/')
        tmp = "/tmp";
    if (asprintf(&path, "%s/%s.XXXXXX", tmp, prefix) < 0)
        return -ENOMEM;
    if (mkdtemp(path) == NULL) {
        int rc = -errno;

        snprintf(err, err_len, "cannot create a scratch directory in %s: %s (set TMPDIR)", tmp,
                 strerror(-rc));
        free(path);
        return rc;
    }
    *out = path;
    return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0, mult = 1;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1ull << 10;
        break;
    case 'm':
    case 'M':
        mult = 1ull << 20;
        break;
    case 'g':
    case 'G':
        mult = 1ull << 30;
        break;
    case 't':
    case 'T':
        mult = 1ull << 40;
        break;
    default:
        return -EINVAL;
    }
    if (*p != '\0' && p[1] != '\0')
        return -EINVAL;
    if (v > UINT64_MAX / mult)
        return -EINVAL;
    *out = v * mult;
    return 0;
}

/* Opens a directory entry for listing, making it readable first if need be. */
static int remove_open(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0 && errno == EACCES && fchmodat(parent, name, 0700, 0) == 0)
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Empties the directory dir (an fd this function takes over). */
static int remove_contents(int dir, dev_t dev, int depth)
{
    struct dirent *de;
    DIR *d;
    int rc = 0;

    if (depth > REMOVE_MAX_DEPTH) {
        close(dir);
        return -ELOOP;
    }
    /* A directory left read-only cannot lose its entries. */
    fchmod(dir, 0700);
    d = fdopendir(dir);
    if (d == NULL) {
        rc = -errno;
        close(dir);
        return rc;
    }
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        struct stat st;
        int sub;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = errno == ENOENT ? 0 : -errno;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev) {
                rc = -EXDEV; /* a mount point: never remove another filesystem's files */
                break;
            }
            sub = remove_open(dirfd(d), de->d_name);
            rc = sub < 0 ? sub : remove_contents(sub, dev, depth + 1);
            if (rc == 0 && unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) != 0)
                rc = -errno;
        } else if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT) {
            rc = -errno;
        }
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(d);
    return rc;
}

int cli_remove_tree(const char *path)
{
    struct stat st;
    int fd, rc;

    if (lstat(path, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? 0 : -errno;
    fd = remove_open(AT_FDCWD, path);
    if (fd < 0)
        return fd;
    rc = remove_contents(fd, st.st_dev, 0);
    if (rc == 0 && rmdir(path) != 0)
        rc = -errno;
    return rc;
}
