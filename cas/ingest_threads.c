/*
 * ingest_threads.c - the read() path: every worker (the caller and the
 * pool's threads) takes the next files of the run from one atomic counter
 * and does each whole file itself: statx, open, read into its own
 * page-aligned buffers, hash, commit, close. No queue, no lock, no hand-off
 * between threads, so both cores do useful work with nothing to wake.
 *
 * Files the caller says are large (INGEST_LARGE_FIRST) are taken first,
 * largest first: while one core hashes a 256 MiB file, the others do the
 * small ones, instead of idling at the end while it is hashed alone.
 *
 * Small files (below INGEST_BATCH_CAP) are taken INGEST_BATCH_FILES at a
 * time and go through the worker's own io_uring: after a statx each (the
 * snapshot, which must precede the reads and tells a FIFO from a file before
 * anything opens it), one submission opens the batch, one reads every file
 * whole into its own slot of the worker's arena, one closes them after the
 * commits. On this VM a system call costs 1-2 us, a quarter of what a 4 KiB
 * file costs to hash, so three calls per batch instead of three per file is
 * most of the gain (figures in docs/ingestion.md). Larger files are read
 * with pread in 256 KiB pieces. Without a ring (io_uring disabled, a seccomp
 * filter) every file is done with plain system calls.
 *
 * Reads ask for one byte more than the snapshot's size when that fits the
 * buffer, so a file that fits is read with one call and a file that grew is
 * noticed without a second one.
 */
#include "ingest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ingest_batch {
    struct io_uring ring;
    uint8_t *arena; /* INGEST_BATCH_FILES slots of INGEST_BATCH_CAP bytes */
    bool broken;    /* the ring failed: not used again */
};

/* One small file of a batch. */
struct batch_item {
    size_t index; /* in the run */
    struct ingest_snap snap;
    int fd;
    int rc;      /* 0 while all is well */
    int32_t got; /* bytes read */
};

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

/* Records a file's outcome in the worker's counts (bytes were reserved). */
static void threads_account(struct cas_ingest *ing, struct ingest_worker *w,
                            struct cas_ingest_file *f, const struct ingest_snap *snap,
                            const struct cas_digest *d, int rc)
{
    if (rc == 0) {
        f->digest = *d;
        w->counts.files++;
        w->counts.bytes += snap->size;
    } else {
        ingest_release(ing, snap->size);
    }
}

/* Takes a statx into a snapshot and admits its bytes; commits an empty file
 * at once (*done). */
static int threads_admit(struct cas_ingest *ing, struct ingest_worker *w, struct cas_ingest_file *f,
                         const struct statx *stx, struct ingest_snap *snap, bool *done)
{
    struct cas_digest d = *cas_digest_empty();
    int rc;

    *done = false;
    rc = ingest_snap_from_statx(stx, snap, f);
    if (rc == 0)
        rc = ingest_reserve(ing, snap->size);
    if (rc < 0 || snap->size != 0)
        return rc;
    *done = true;
    rc = ingest_commit(ing, w, f, -1, snap, &d, NULL);
    threads_account(ing, w, f, snap, &d, rc);
    return rc;
}

/* One attempt at one file with plain system calls; stx is its statx when
 * the caller already has one, else NULL. */
static int threads_try(struct cas_ingest *ing, struct ingest_worker *w, struct cas_ingest_file *f,
                       const struct statx *stx)
{
    struct ingest_snap snap;
    struct statx mine;
    struct cas_digest d;
    bool done;
    int fd, rc;

    if (stx == NULL) {
        if (statx(f->dir_fd, f->name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &mine) < 0)
            return -errno;
        stx = &mine;
    }
    rc = threads_admit(ing, w, f, stx, &snap, &done);
    if (rc < 0 || done)
        return rc;
    fd = openat(f->dir_fd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? -ESTALE : -errno;
        goto out;
    }
    rc = threads_read_hash(ing, w, fd, &snap, &d);
    if (rc == 0)
        rc = ingest_commit(ing, w, f, fd, &snap, &d, snap.size <= INGEST_CHUNK ? w->buf : NULL);
    close(fd);
out:
    threads_account(ing, w, f, &snap, &d, rc);
    return rc;
}

/* File i with plain system calls, from attempt `attempt` on. */
static void threads_file(struct cas_ingest *ing, struct ingest_worker *w, size_t i,
                         const struct statx *stx, int attempt)
{
    struct cas_ingest_file *f = &ing->run->files[i];
    int rc;

    for (;; attempt++) {
        rc = threads_try(ing, w, f, stx);
        stx = NULL; /* a retry takes a new snapshot */
        if (rc != -ESTALE || attempt >= INGEST_TRIES)
            break;
        w->counts.retries++;
    }
    f->error = rc;
}

/* --- batches through the worker's ring --- */

void ingest_batch_free(struct ingest_batch *b)
{
    if (b == NULL)
        return;
    io_uring_queue_exit(&b->ring);
    free(b->arena);
    free(b);
}

/* The worker's ring and arena, made on first use; NULL (and never tried
 * again for this worker) when io_uring cannot be set up. */
static struct ingest_batch *threads_batch_get(struct ingest_worker *w)
{
    struct ingest_batch *b;

    if (w->batch != NULL || w->batch_failed)
        return w->batch != NULL && !w->batch->broken ? w->batch : NULL;
    b = calloc(1, sizeof(*b));
    if (b != NULL)
        b->arena = aligned_alloc(INGEST_ALIGN, (size_t)INGEST_BATCH_FILES * INGEST_BATCH_CAP);
    if (b == NULL || b->arena == NULL ||
        io_uring_queue_init(INGEST_BATCH_FILES, &b->ring, IORING_SETUP_COOP_TASKRUN) < 0) {
        if (b != NULL)
            free(b->arena);
        free(b);
        w->batch_failed = true;
        return NULL;
    }
    w->batch = b;
    return b;
}

enum batch_stage { STAGE_OPEN, STAGE_READ, STAGE_CLOSE };

/* Submits what is queued and reaps one completion per queued entry into
 * it[user_data]: the fd of an open, the length of a read; a close's is
 * dropped. On an error of the ring itself, items [0, m) without an error
 * yet get it. */
static void threads_batch_reap(struct ingest_batch *b, struct batch_item *it, unsigned m,
                               unsigned queued, enum batch_stage stage)
{
    unsigned seen = 0;
    int rc;

    do {
        rc = io_uring_submit_and_wait(&b->ring, queued);
    } while (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY);
    while (rc >= 0 && seen < queued) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;

        io_uring_for_each_cqe(&b->ring, head, cqe)
        {
            if (stage == STAGE_OPEN)
                it[cqe->user_data].fd = cqe->res;
            else if (stage == STAGE_READ)
                it[cqe->user_data].got = cqe->res;
            n++;
        }
        io_uring_cq_advance(&b->ring, n);
        seen += n;
        if (seen < queued) {
            /* Submits again too: the kernel stops a submission at an entry
             * it refuses (that one completes with the error), and the rest
             * would never complete if we only waited. */
            rc = io_uring_submit_and_wait(&b->ring, queued - seen);
            if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc > 0)
                rc = 0;
        }
    }
    /* Not seen on Linux; what the ring still holds is reaped when it is
     * torn down, and this worker's ring is not used again. */
    if (rc < 0)
        b->broken = true;
    for (unsigned k = 0; rc < 0 && stage != STAGE_CLOSE && k < m; k++) {
        if (it[k].rc == 0)
            it[k].rc = rc;
    }
}

/* Reads the batch's items [0, m): opens all, then reads each whole. */
static void threads_batch_read(struct cas_ingest *ing, struct ingest_batch *b,
                               struct batch_item *it, unsigned m)
{
    unsigned queued = 0;

    for (unsigned k = 0; k < m; k++) {
        const struct cas_ingest_file *f = &ing->run->files[it[k].index];
        struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

        io_uring_prep_openat(sqe, f->dir_fd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
        io_uring_sqe_set_data64(sqe, k);
    }
    threads_batch_reap(b, it, m, m, STAGE_OPEN);
    for (unsigned k = 0; k < m; k++) {
        struct batch_item *x = &it[k];
        struct io_uring_sqe *sqe;

        if (x->rc == 0 && x->fd < 0)
            x->rc = x->fd == -ENOENT ? -ESTALE : x->fd;
        if (x->rc != 0)
            continue;
        sqe = io_uring_get_sqe(&b->ring);
        io_uring_prep_read(sqe, x->fd, b->arena + (size_t)k * INGEST_BATCH_CAP,
                           (unsigned)x->snap.size + 1, 0);
        io_uring_sqe_set_data64(sqe, k);
        queued++;
    }
    threads_batch_reap(b, it, m, queued, STAGE_READ);
}

/* Closes the batch's open files through the ring, in one submission. */
static void threads_batch_close(struct ingest_batch *b, struct batch_item *it, unsigned m)
{
    unsigned queued = 0;

    for (unsigned k = 0; k < m; k++) {
        struct io_uring_sqe *sqe;

        if (it[k].fd < 0)
            continue;
        sqe = io_uring_get_sqe(&b->ring);
        io_uring_prep_close(sqe, it[k].fd);
        io_uring_sqe_set_data64(sqe, k);
        queued++;
    }
    if (queued > 0)
        threads_batch_reap(b, it, m, queued, STAGE_CLOSE);
}

/* Hashes and commits a read item; -ESTALE when the read shows a change. */
static int threads_batch_finish(struct cas_ingest *ing, struct ingest_worker *w,
                                struct ingest_batch *b, struct batch_item *x, unsigned k)
{
    const uint8_t *buf = b->arena + (size_t)k * INGEST_BATCH_CAP;
    struct cas_ingest_file *f = &ing->run->files[x->index];
    struct cas_digest d;
    int rc = x->rc;

    if (rc == 0 && x->got < 0)
        rc = x->got;
    else if (rc == 0 && (uint64_t)x->got != x->snap.size)
        rc = -ESTALE; /* shrank or grew */
    if (rc == 0)
        rc = ingest_hash_begin(ing, w->ctx);
    if (rc == 0)
        rc = ingest_hash_update(w->ctx, buf, x->snap.size);
    if (rc == 0)
        rc = ingest_hash_end(w->ctx, x->snap.size, &d);
    if (rc == 0)
        rc = ingest_commit(ing, w, f, x->fd, &x->snap, &d, buf);
    threads_account(ing, w, f, &x->snap, &d, rc);
    return rc;
}

/* Reads, hashes, commits and closes the batch's items [0, m); a file that
 * changed is read again on its own. */
static void threads_batch_flush(struct cas_ingest *ing, struct ingest_worker *w,
                                struct ingest_batch *b, struct batch_item *it, unsigned m)
{
    threads_batch_read(ing, b, it, m);
    for (unsigned k = 0; k < m; k++)
        it[k].rc = threads_batch_finish(ing, w, b, &it[k], k);
    threads_batch_close(b, it, m);
    for (unsigned k = 0; k < m; k++) {
        size_t i = it[k].index;

        if (it[k].rc == -ESTALE && !atomic_load(&ing->run->stop)) {
            w->counts.retries++;
            threads_file(ing, w, i, NULL, 2);
        } else {
            ing->run->files[i].error = it[k].rc;
        }
    }
}

/* Files [first, last) of the run (at most INGEST_BATCH_FILES): small ones
 * through the ring together, others one by one. A batch of 64 KiB files (2
 * MiB) no longer fits the core's L2 when it is hashed, but capping it at
 * 256 KiB measured no better (one thread: 59-65 ms of CPU per 1,000 x
 * 64 KiB capped, 58-63 uncapped) and costs queue depth on a cold disk. */
static void threads_batch(struct cas_ingest *ing, struct ingest_worker *w, struct ingest_batch *b,
                          size_t first, size_t last)
{
    struct batch_item it[INGEST_BATCH_FILES];
    struct statx stx;
    unsigned m = 0;

    for (size_t pos = first; pos < last && !atomic_load(&ing->run->stop); pos++) {
        size_t i = ingest_run_index(ing->run, pos);
        struct cas_ingest_file *f = &ing->run->files[i];
        struct batch_item *x = &it[m];
        bool done;

        if (statx(f->dir_fd, f->name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0) {
            f->error = -errno;
            continue;
        }
        if (stx.stx_size >= INGEST_BATCH_CAP && S_ISREG(stx.stx_mode)) {
            threads_file(ing, w, i, &stx, 1);
            continue;
        }
        f->error = threads_admit(ing, w, f, &stx, &x->snap, &done);
        if (f->error < 0 || done)
            continue;
        x->index = i;
        x->fd = -1;
        x->rc = 0;
        x->got = 0;
        m++;
    }
    if (m > 0)
        threads_batch_flush(ing, w, b, it, m);
}

/* How many files a worker takes at a time: a batch, but no more than a
 * quarter of each worker's share, so that the workers finish together. */
static size_t threads_take(const struct ingest_run *run)
{
    size_t take = run->n / (4 * ((size_t)run->workers + 1));

    if (run->n < INGEST_BATCH_MIN_FILES || take < 1)
        return 1;
    return take < INGEST_BATCH_FILES ? take : INGEST_BATCH_FILES;
}

static void threads_job(void *arg, unsigned worker)
{
    struct cas_ingest *ing = arg;
    struct ingest_run *run = ing->run;
    struct ingest_worker *w = &ing->workers[worker];
    size_t take = threads_take(run);
    struct ingest_batch *b = take > 1 ? threads_batch_get(w) : NULL;

    while (!atomic_load(&run->stop)) {
        size_t first = atomic_fetch_add(&run->next, take);
        size_t last = first + take < run->n ? first + take : run->n;

        if (first >= run->n)
            break;
        if (b != NULL) {
            threads_batch(ing, w, b, first, last);
        } else {
            for (size_t pos = first; pos < last && !atomic_load(&run->stop); pos++)
                threads_file(ing, w, ingest_run_index(run, pos), NULL, 1);
        }
        if (b != NULL && b->broken)
            b = NULL;
    }
}

void ingest_threads_run(struct cas_ingest *ing, unsigned workers)
{
    ing->run->workers = workers; /* before any thread reads it (threads_take) */
    if (workers > 0 && ingest_pool_start(&ing->pool, threads_job, ing, &workers) < 0)
        workers = 0;
    threads_job(ing, 0);
    if (workers > 0)
        ingest_pool_wait(&ing->pool);
}
