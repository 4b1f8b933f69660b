/*
 * file.c - reads a credentials or key file whole, refusing one that other
 * users can read: a token or key that every local user can copy is no
 * secret (o+r refused, g+r a warning, as ssh does for its keys).
 */
#include "auth_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int auth_file_read(const char *path, bool secret, char **out, size_t *len,
                   void (*warn)(const char *line), char *err, size_t err_len)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int fd, rc;

    *out = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, err_len, "%s: not a regular file", path);
        goto out;
    }
    if (secret && (st.st_mode & S_IROTH)) {
        rc = -EPERM;
        snprintf(err, err_len,
                 "%s: readable by other users (mode %04o); it holds secrets: chmod o-r %s", path,
                 (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if (secret && (st.st_mode & S_IRGRP) && warn != NULL) {
        char line[1200];

        snprintf(line, sizeof(line), "%s: readable by its group (mode %04o); consider chmod 600",
                 path, (unsigned)(st.st_mode & 07777));
        warn(line);
    }
    if ((uint64_t)st.st_size > AUTH_MAX_FILE_SIZE) {
        rc = -EFBIG;
        snprintf(err, err_len, "%s: larger than %u bytes", path, AUTH_MAX_FILE_SIZE);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        snprintf(err, err_len, "%s: out of memory", path);
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(err, err_len, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

int auth_secret_file_read(const char *path, char **out, size_t *len, void (*warn)(const char *line),
                          char *err, size_t err_len)
{
    return auth_file_read(path, true, out, len, warn, err, err_len);
}
