/*
 * ingest_internal.h - what the batch ingestion files share: the engine, its
 * worker pool, one run's state, the per-file snapshot and checks, hashing
 * and committing (ingest_commit.c), and the two I/O paths
 * (ingest_threads.c, ingest_uring.c). Nobody outside cas/ingest*.c sees it.
 *
 * Threads. An engine owns a pool of hashing threads (ingest_pool.h), started
 * on first use. A run hands the pool one function (ingest_pool_start) and
 * waits for it (ingest_pool_wait); the caller's thread takes part as worker
 * 0 in the threads path and drives the ring in the io_uring path. Per-thread state
 * (an EVP context, a read buffer, counters) lives in ing->workers[i], so the
 * hot loop shares nothing but the run's atomic counters and, for io_uring,
 * the run's queue lock.
 */
#ifndef CASBOX_CAS_INGEST_INTERNAL_H
#define CASBOX_CAS_INGEST_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "cas.h"
#include "ingest_pool.h"

/* Reads of one file: 256 KiB pieces into page-aligned buffers. Aligned
 * buffers of at most 1 MiB are 2-3x faster than malloc'd ones (PLATFORM.md
 * §4); 256 KiB, which stays in a Zen 3 core's 512 KiB L2 between the copy and
 * the hash, cost 10-17% less CPU than 1 MiB here (docs/ingestion.md). */
#define INGEST_CHUNK            (256 * 1024)
#define INGEST_ALIGN            4096
#define INGEST_TRIES            3  /* reads of a file that keeps changing */
#define INGEST_DEFAULT_QD       64 /* io_uring files in flight */
#define INGEST_INLINE_MAX_FILES 4  /* AUTO: this few files stay on the caller's thread */
#define INGEST_URING_MIN_FILES  8  /* AUTO: fewer files never use the ring (nor sample) */
#define INGEST_SAMPLE_FILES     4  /* AUTO: files whose page-cache residency is sampled */
/* Threads path: small files go through the worker's own ring in batches of
 * INGEST_BATCH_FILES (one submission opens them all, one reads them all,
 * one closes them all), each read into its own INGEST_BATCH_CAP slot of the
 * worker's arena; a file must be smaller than that (the read asks one byte
 * more) to be batched. Runs of fewer than INGEST_BATCH_MIN_FILES files do
 * not batch (the ring's set-up would cost more). */
#define INGEST_BATCH_FILES     32
#define INGEST_BATCH_CAP       (128 * 1024)
#define INGEST_BATCH_MIN_FILES 8
/* Threads path: files whose size_hint is at least this are taken first,
 * largest first (one SHA-256 cannot be split across cores, so a large file
 * taken last would leave the other cores idle while it is hashed). */
#define INGEST_LARGE_FIRST (4u * 1024 * 1024)

/* What a file looked like at its first statx; compared after reading. */
struct ingest_snap {
    dev_t dev;
    ino_t ino;
    uint64_t size;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    uint32_t nlink;
    uint32_t mode;
};

struct ingest_counts {
    uint64_t files, bytes, renamed, copied, present, retries;
};

struct ingest_batch; /* ingest_threads.c */

struct ingest_worker {
    EVP_MD_CTX *ctx;
    uint8_t *buf;               /* INGEST_CHUNK bytes, page-aligned; made on first use */
    struct ingest_batch *batch; /* the threads path's ring; made on first use */
    bool batch_failed;          /* no ring for this worker: file by file */
    struct ingest_counts counts;
};

struct ingest_run {
    struct cas_ingest_file *files;
    size_t n;
    size_t *order;                 /* threads path: the files in the order taken; NULL: as given */
    atomic_size_t next;            /* threads path: next position in order to take */
    atomic_uint_fast64_t reserved; /* bytes admitted against max_bytes */
    atomic_bool stop;              /* a run-stopping error: start no more files */
    unsigned workers;              /* pool threads taking part (not the caller) */
};

/* The file taken at position pos of the run. */
static inline size_t ingest_run_index(const struct ingest_run *run, size_t pos)
{
    return run->order != NULL ? run->order[pos] : pos;
}

struct ingest_ring; /* ingest_uring.c */

struct cas_ingest {
    struct cas_store *s; /* NULL: hash only */
    enum cas_ingest_mode mode;
    unsigned threads;     /* hashing threads, the caller counted */
    unsigned queue_depth; /* io_uring files in flight */
    uint64_t max_bytes;
    pid_t pid;  /* for temp names */
    EVP_MD *md; /* SHA-256, fetched once: an implicit fetch per file costs */

    /* the pool runs workers 1..threads; workers[0] is the caller */
    struct ingest_pool pool;
    struct ingest_worker *workers; /* threads + 1 entries */

    struct ingest_run *run;   /* the current run */
    struct ingest_ring *ring; /* made on the first io_uring run */
    bool ring_failed;         /* io_uring could not be set up: threads from now on */
};

/* --- ingest_commit.c: checks, hashing, commit --- */

/* Fills snap and f->mode from a statx; -ELOOP for a symlink, -EINVAL for
 * anything else that is not a regular file. */
struct statx;
int ingest_snap_from_statx(const struct statx *stx, struct ingest_snap *snap,
                           struct cas_ingest_file *f);
/* Admits size more bytes against max_bytes: -EFBIG (and stops the run) when
 * over; ingest_release gives bytes back (a failed or repeated file). */
int ingest_reserve(struct cas_ingest *ing, uint64_t size);
void ingest_release(struct cas_ingest *ing, uint64_t size);

/* Per-thread SHA-256 over a reusable context. */
int ingest_hash_begin(struct cas_ingest *ing, EVP_MD_CTX *ctx);
int ingest_hash_update(EVP_MD_CTX *ctx, const void *buf, size_t len);
int ingest_hash_end(EVP_MD_CTX *ctx, uint64_t size, struct cas_digest *out);

/* The worker's INGEST_CHUNK read buffer, allocated on first use. */
uint8_t *ingest_worker_buffer(struct ingest_worker *w);

/* After the whole file (fd, snapshot snap) was read and hashed to d: makes d
 * present in the store (see cas.h for the rules). whole holds the file's
 * bytes when they fit one buffer, else NULL. 0, -ESTALE when the file
 * changed (the caller reads it again), or another negative errno. Counts
 * into w. Nothing to do without a store. */
int ingest_commit(struct cas_ingest *ing, struct ingest_worker *w, struct cas_ingest_file *f,
                  int fd, const struct ingest_snap *snap, const struct cas_digest *d,
                  const void *whole);

/* 1 when d needs nothing more: verified in the store, or the store's file
 * is this very inode (ingest.c). */
int cas_ingest_present(struct cas_store *s, const struct cas_digest *d, dev_t dev, ino_t ino);

/* --- the two paths --- */

/* Runs ing->run with `workers` pool threads besides the caller (0: the
 * caller alone). */
void ingest_threads_run(struct cas_ingest *ing, unsigned workers);
void ingest_batch_free(struct ingest_batch *b);
/* -ENOSYS (or another errno) when the ring cannot be set up: nothing was
 * done, and the caller falls back to the threads path. */
int ingest_uring_run(struct cas_ingest *ing);
void ingest_uring_free(struct ingest_ring *ring);

#endif
