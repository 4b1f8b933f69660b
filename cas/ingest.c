/*
 * ingest.c - cas_store_put_file: taking one existing file into the store
 * without copying it when possible. Batches of files (action outputs) go
 * through the engine in ingest_engine.c, which shares cas_ingest_present.
 *
 * The source is hashed through an fd, then renamed (unlink_source) or hard
 * linked to a private name in tmp/ and checked to still be the same,
 * unmodified inode before it is committed, so a name swapped under us is
 * never stored. Another filesystem (or links refused) means a copy through a
 * writer, which re-hashes what it copies. A source that is already the
 * store's file for its digest (a staged input hard link) needs nothing.
 *
 * What this cannot see is a process that still holds the file open for
 * writing and writes after the check: callers ingest outputs of finished
 * actions only. A file that keeps other names (link mode, or a source with
 * several links) is stored unverified and re-hashed on its first read.
 */
#include "cas.h"
#include "ingest_internal.h"
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INGEST_NAME_TRIES 8

/* 1 when blob d is already in the store in a form that needs nothing more:
 * a verified entry, or the store's file is the very inode we just hashed
 * (the source is a hardlink of the blob; it is then verified). Shared with
 * the batch engine (ingest_commit.c). */
int cas_ingest_present(struct cas_store *s, const struct cas_digest *d, dev_t dev, ino_t ino)
{
    struct store_entry *e;
    int present = 0;

    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    if (e != NULL && e->size == d->size &&
        (e->verified || (e->ino == (uint64_t)ino && dev == s->dev))) {
        if (!e->verified)
            store_index_update(&s->index, e, e->size, e->ino, true);
        store_index_touch(&s->index, e);
        present = 1;
    }
    pthread_mutex_unlock(&s->index_lock);
    return present;
}

/* Copies the (already opened) source into the store through a writer, which
 * hashes the bytes it copies and commits only if they are `expected`. A
 * mismatch means the file changed under us: -ESTALE. */
static int ingest_copy(struct cas_store *s, int src_fd, const struct cas_digest *expected)
{
    size_t cap = cas_io_buffer_size(expected->size);
    uint8_t *buf = aligned_alloc(CAS_IO_ALIGN, cap);
    int ret;

    if (buf == NULL)
        return -ENOMEM;
    ret = cas_writer_copy_fd(s, src_fd, expected, buf, cap);
    free(buf);
    return ret;
}

/* Gives the source a unique name in tmp/: moves it there (unlink_source) or
 * adds a hard link. The name goes to tmp. */
static int ingest_name(struct cas_store *s, const char *path, bool unlink_source,
                       char tmp[PATH_MAX])
{
    int ret = -EEXIST;

    for (int attempt = 0; attempt < INGEST_NAME_TRIES && ret == -EEXIST; attempt++) {
        unsigned long long n = atomic_fetch_add(&s->name_counter, 1);
        int len = snprintf(tmp, PATH_MAX, "%s/ingest-%ld-%llu", s->tmp_dir, (long)getpid(), n);

        if (len < 0 || len >= PATH_MAX)
            return -ENAMETOOLONG;
        if (unlink_source) {
            ret = renameat2(AT_FDCWD, path, AT_FDCWD, tmp, RENAME_NOREPLACE);
            if (ret < 0 && errno == EINVAL) /* no RENAME_NOREPLACE here; names are unique */
                ret = rename(path, tmp);
        } else
            ret = linkat(AT_FDCWD, path, AT_FDCWD, tmp, 0);
        ret = ret < 0 ? -errno : 0;
    }
    if (ret < 0)
        tmp[0] = '\0';
    return ret;
}

static bool same_timespec(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

int cas_store_put_file(struct cas_store *s, const char *path, bool unlink_source,
                       struct cas_digest *out)
{
    struct cas_digest d;
    struct stat st, now;
    char tmp[PATH_MAX] = "";
    int fd, ret;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        ret = -EINVAL;
        goto out;
    }
    ret = cas_digest_fd(fd, &d);
    if (ret < 0)
        goto out;
    if (d.size == 0 || cas_ingest_present(s, &d, st.st_dev, st.st_ino) == 1)
        goto done;
    if (st.st_dev != s->dev) {
        ret = ingest_copy(s, fd, &d);
        if (ret < 0)
            goto out;
        goto done;
    }
    ret = ingest_name(s, path, unlink_source, tmp);
    if (ret == -EXDEV || (!unlink_source && (ret == -EPERM || ret == -EMLINK))) {
        /* Another mount of the same filesystem, or links refused. */
        ret = ingest_copy(s, fd, &d);
        if (ret < 0)
            goto out;
        goto done;
    }
    if (ret < 0)
        goto out;
    if (lstat(tmp, &now) < 0) { /* lstat: a symlink swapped in is not the file */
        ret = -errno;
        goto out;
    }
    if (now.st_dev != st.st_dev || now.st_ino != st.st_ino || now.st_size != d.size ||
        !same_timespec(&now.st_mtim, &st.st_mtim)) {
        ret = -ESTALE; /* replaced or written since it was hashed */
        goto out;
    }
    if (fchmod(fd, 0444) < 0) {
        ret = -errno;
        goto out;
    }
    ret = cas_store_commit(s, tmp, &d, (uint64_t)st.st_ino, now.st_nlink == 1);
    tmp[0] = '\0'; /* consumed */
    if (ret < 0)
        goto out;
    *out = d;
    goto out; /* the source name is already gone (renamed) or kept (linked) */
done:
    if (unlink_source && unlink(path) < 0 && errno != ENOENT) {
        ret = -errno;
        goto out;
    }
    *out = d;
out:
    if (tmp[0] != '\0') {
        /* Not committed: give a moved source back its name, drop a link. */
        if (!unlink_source || rename(tmp, path) < 0)
            unlink(tmp);
    }
    close(fd);
    return ret;
}
