/*
 * ingest_threads.c - the plain read() path: every worker (the caller and
 * the pool's threads) takes the next file of the run, statx, open, pread in
 * page-aligned 256 KiB pieces into its own buffer, hashes, commits and closes
 * it. No queue, no lock: one atomic counter hands out the files.
 *
 * Reads ask for one byte more than the snapshot's size when that fits the
 * buffer, so a file that fits is read with one call and a file that grew is
 * noticed without a second one.
 */
#include "ingest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads the open file fd of snapshot snap into the worker's buffer and
 * hashes it. -ESTALE when it is not snap->size bytes long. */
static int threads_read_hash(struct cas_ingest *ing, struct ingest_worker *w, int fd,
                             const struct ingest_snap *snap, struct cas_digest *d)
{
    uint8_t *buf = ingest_worker_buffer(w);
    uint64_t off = 0;
    int rc;

    if (buf == NULL)
        return -ENOMEM;
    rc = ingest_hash_begin(ing, w->ctx);
    while (rc == 0 && off < snap->size) {
        uint64_t left = snap->size - off;
        size_t want = left < INGEST_CHUNK ? (size_t)left + 1 : INGEST_CHUNK;
        ssize_t n = pread(fd, buf, want, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0 || (uint64_t)n > left)
            return -ESTALE; /* shrank or grew */
        rc = ingest_hash_update(w->ctx, buf, (size_t)n);
        off += (uint64_t)n;
    }
    if (rc == 0)
        rc = ingest_hash_end(w->ctx, off, d);
    return rc;
}

/* One attempt at one file. */
static int threads_try(struct cas_ingest *ing, struct ingest_worker *w, struct cas_ingest_file *f)
{
    struct ingest_snap snap;
    struct statx stx;
    struct cas_digest d;
    int fd = -1, rc;

    if (statx(f->dir_fd, f->name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
        return -errno;
    rc = ingest_snap_from_statx(&stx, &snap, f);
    if (rc < 0)
        return rc;
    rc = ingest_reserve(ing, snap.size);
    if (rc < 0)
        return rc;
    if (snap.size == 0) {
        d = *cas_digest_empty();
        rc = ingest_commit(ing, w, f, -1, &snap, &d, NULL);
        goto out;
    }
    fd = openat(f->dir_fd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? -ESTALE : -errno;
        goto out;
    }
    rc = threads_read_hash(ing, w, fd, &snap, &d);
    if (rc == 0)
        rc = ingest_commit(ing, w, f, fd, &snap, &d, snap.size <= INGEST_CHUNK ? w->buf : NULL);
out:
    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        f->digest = d;
        w->counts.files++;
        w->counts.bytes += snap.size;
    } else {
        ingest_release(ing, snap.size);
    }
    return rc;
}

static void threads_job(struct cas_ingest *ing, unsigned worker)
{
    struct ingest_run *run = ing->run;
    struct ingest_worker *w = &ing->workers[worker];

    while (!atomic_load(&run->stop)) {
        size_t i = atomic_fetch_add(&run->next, 1);
        int rc;

        if (i >= run->n)
            break;
        for (int attempt = 1;; attempt++) {
            rc = threads_try(ing, w, &run->files[i]);
            if (rc != -ESTALE || attempt == INGEST_TRIES)
                break;
            w->counts.retries++;
        }
        run->files[i].error = rc;
    }
}

void ingest_threads_run(struct cas_ingest *ing, unsigned workers)
{
    if (workers > 0 && ingest_pool_start(ing, threads_job, &workers) < 0)
        workers = 0;
    threads_job(ing, 0);
    if (workers > 0)
        ingest_pool_wait(ing);
}
