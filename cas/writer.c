/*
 * writer.c - streaming uploads into the store (ByteStream.Write, copies of
 * files from other filesystems).
 *
 * Bytes are hashed as they arrive and gathered in a page-aligned buffer of up
 * to 1 MiB that is written to a temp file in <dir>/tmp when full (large
 * appends bypass it). Commit checks the total size and the hash against the
 * expected digest and only then renames the file into blobs/; anything else
 * removes the temp file, so an unfinished or wrong upload is never visible.
 * Writes go through store_space_pwrite at explicit offsets, so that a full
 * disk gets one eviction and a retry of the same bytes (store_space.c).
 */
#include "cas.h"
#include "store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cas_writer {
    struct cas_store *s;
    struct cas_digest expected;
    struct cas_hasher *hasher;
    int fd;
    int64_t offset; /* bytes accepted so far */
    off_t file_off; /* bytes written to the temp file */
    uint8_t *buf;
    size_t cap;
    size_t used;
    int error; /* first write error; the temp file's content is then unknown */
    char path[PATH_MAX];
};

static void writer_free(struct cas_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->path[0] != '\0')
        unlink(w->path);
    cas_hasher_free(w->hasher);
    free(w->buf);
    free(w);
}

int cas_writer_begin(struct cas_store *s, const struct cas_digest *expected,
                     struct cas_writer **out)
{
    struct cas_writer *w;
    int ret;

    *out = NULL;
    if (expected->size < 0)
        return -EINVAL;
    ret = cas_store_space_check(s, (uint64_t)expected->size);
    if (ret < 0)
        return ret; /* could never fit: do not evict everything trying */
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->fd = -1;
    w->s = s;
    w->expected = *expected;
    w->cap = cas_io_buffer_size(expected->size);
    w->buf = aligned_alloc(CAS_IO_ALIGN, w->cap);
    w->hasher = cas_hasher_new();
    if (w->buf == NULL || w->hasher == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    ret = cas_store_temp_create(s, "upload", w->path);
    if (ret < 0)
        goto out;
    w->fd = ret;
    *out = w;
    w = NULL;
    ret = 0;
out:
    if (w != NULL)
        writer_free(w);
    return ret;
}

/* Appends len bytes to the temp file. */
static int writer_put(struct cas_writer *w, const void *buf, size_t len)
{
    int ret = store_space_pwrite(w->s, w->fd, buf, len, w->file_off);

    if (ret == 0)
        w->file_off += (off_t)len;
    return ret;
}

static int writer_flush(struct cas_writer *w)
{
    int ret = writer_put(w, w->buf, w->used);

    w->used = 0;
    return ret;
}

int cas_writer_append(struct cas_writer *w, const void *buf, size_t len)
{
    int ret = 0;

    if (w->error != 0)
        return w->error;
    if (len > (uint64_t)(w->expected.size - w->offset))
        return -EFBIG; /* nothing accepted; the writer is unchanged */
    if (len == 0)
        return 0;
    cas_hasher_update(w->hasher, buf, len);
    /* A chunk of a whole buffer or more goes straight to the file: copying
     * it into the buffer first would only add a memcpy. */
    if (w->used + len <= w->cap && !(w->used == 0 && len >= w->cap)) {
        memcpy(w->buf + w->used, buf, len);
        w->used += len;
        goto out;
    }
    ret = writer_flush(w);
    if (ret < 0)
        goto out;
    if (len >= w->cap) {
        ret = writer_put(w, buf, len);
    } else {
        memcpy(w->buf, buf, len);
        w->used = len;
    }
out:
    if (ret < 0)
        w->error = ret;
    else
        w->offset += (int64_t)len;
    return ret;
}

int64_t cas_writer_offset(const struct cas_writer *w)
{
    return w->offset;
}

int cas_writer_commit(struct cas_writer *w)
{
    struct cas_digest actual;
    int ret = w->error;

    if (ret < 0)
        goto out;
    if (w->offset != w->expected.size) {
        ret = -EINVAL;
        goto out;
    }
    ret = writer_flush(w);
    if (ret < 0)
        goto out;
    cas_hasher_finish(w->hasher, &actual);
    w->hasher = NULL;
    if (actual.size < 0) {
        ret = -ENOMEM; /* hashing failed, see digest.c */
        goto out;
    }
    if (!cas_digest_equal(&actual, &w->expected)) {
        ret = -EINVAL;
        goto out;
    }
    ret = cas_store_temp_commit(w->s, w->fd, w->path,
                                &(struct cas_commit_target){.blob = &w->expected});
    w->fd = -1;
    w->path[0] = '\0'; /* closed and consumed by the commit in every case */
out:
    writer_free(w);
    return ret;
}

void cas_writer_abort(struct cas_writer *w)
{
    if (w != NULL)
        writer_free(w);
}

int cas_writer_copy_fd(struct cas_store *s, int fd, const struct cas_digest *expected, void *buf,
                       size_t cap)
{
    struct cas_writer *w;
    off_t off = 0;
    int rc;

    rc = cas_writer_begin(s, expected, &w);
    if (rc < 0)
        return rc;
    for (;;) {
        size_t got = 0;

        rc = cas_io_pread_all(fd, buf, cap, off, &got);
        if (rc < 0 || got == 0)
            break;
        rc = cas_writer_append(w, buf, got);
        if (rc < 0)
            break;
        off += (off_t)got;
    }
    if (rc < 0) {
        cas_writer_abort(w);
        return rc == -EFBIG ? -ESTALE : rc;
    }
    rc = cas_writer_commit(w);
    return rc == -EINVAL ? -ESTALE : rc;
}
