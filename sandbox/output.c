/*
 * output.c - the command's stdout/stderr on their way to host files.
 *
 * Without a cap the command writes the file itself (its fd is passed down).
 * With a cap it writes into a pipe that the supervisor drains: up to the cap
 * into the file, the rest read and dropped, so a chatty command is neither
 * killed (as RLIMIT_FSIZE would) nor blocked, and the result says it was
 * truncated.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "util/util.h"

#define OUTPUT_CHUNK  (64 * 1024)
#define OUTPUT_ROUNDS 16 /* chunks per call, so one busy pipe cannot starve the rest */

int sandbox_output_open(struct sandbox_output *out, const char *path, uint64_t cap, char *err,
                        size_t err_len)
{
    int p[2];
    int rc;

    memset(out, 0, sizeof(*out));
    out->file_fd = out->pipe_rd = out->child_fd = -1;
    out->cap = cap;
    if (path == NULL)
        return 0;
    out->file_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out->file_fd < 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "open %s: %s", path, strerror(errno));
        return rc;
    }
    if (cap == 0) {
        out->child_fd = out->file_fd;
        return 0;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "pipe: %s", strerror(errno));
        return rc;
    }
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "pipe: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return rc;
    }
    out->pipe_rd = p[0];
    out->child_fd = p[1];
    return 0;
}

int sandbox_output_drain(struct sandbox_output *out)
{
    char buf[OUTPUT_CHUNK];

    for (int round = 0; round < OUTPUT_ROUNDS; round++) {
        ssize_t n = read(out->pipe_rd, buf, sizeof(buf));
        uint64_t keep;

        if (n == 0)
            return 1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -errno;
        }
        keep = out->cap - out->written;
        if (keep > (uint64_t)n)
            keep = (uint64_t)n;
        if (keep > 0) {
            int rc = util_write_all(out->file_fd, buf, (size_t)keep);

            if (rc != 0)
                return rc;
            out->written += keep;
        }
        if (keep < (uint64_t)n)
            out->truncated = true;
    }
    return 0;
}

void sandbox_output_close_child(struct sandbox_output *out)
{
    if (out->pipe_rd >= 0 && out->child_fd >= 0)
        close(out->child_fd);
    out->child_fd = -1;
}

void sandbox_output_close(struct sandbox_output *out)
{
    sandbox_output_close_child(out);
    if (out->pipe_rd >= 0)
        close(out->pipe_rd);
    if (out->file_fd >= 0)
        close(out->file_fd);
    out->pipe_rd = out->file_fd = -1;
}
