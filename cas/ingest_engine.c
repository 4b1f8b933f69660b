/*
 * ingest_engine.c - the batch ingestion engine's front: options, the
 * engine's life (its pool of hashing threads is ingest_pool.c), and
 * cas_ingest_run, which picks the I/O path for a batch and gathers the
 * results.
 *
 * The AUTO choice (figures in docs/ingestion.md): a handful of files stay on
 * the caller's thread (starting threads costs more than they save); io_uring
 * when a sample of the files is mostly not in the page cache and the files
 * are large (its queue depth is what wins on a cold disk); otherwise the
 * thread pool, where each worker does whole files itself (small ones batched
 * through its own ring), which costs less CPU than handing each file from
 * the ring's thread to a hasher, for any size, and keeps 32 small reads in
 * flight per worker.
 */
#include "ingest_internal.h"
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

/* The kernel's struct cachestat_range / struct cachestat (Linux 6.5). */
struct ingest_cachestat_range {
    uint64_t off;
    uint64_t len;
};

struct ingest_cachestat {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};

static uint64_t ingest_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static unsigned ingest_cpus(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int cas_ingest_mode_parse(const char *s, enum cas_ingest_mode *out)
{
    if (s == NULL)
        return -EINVAL;
    if (s[0] == '\0' || strcmp(s, "auto") == 0)
        *out = CAS_INGEST_AUTO;
    else if (strcmp(s, "uring") == 0)
        *out = CAS_INGEST_URING;
    else if (strcmp(s, "threads") == 0)
        *out = CAS_INGEST_THREADS;
    else
        return -EINVAL;
    return 0;
}

const char *cas_ingest_mode_name(enum cas_ingest_mode mode)
{
    switch (mode) {
    case CAS_INGEST_AUTO:
        return "auto";
    case CAS_INGEST_URING:
        return "uring";
    case CAS_INGEST_THREADS:
        return "threads";
    }
    return "?";
}

/* --- engine life --- */

int cas_ingest_new(struct cas_store *s, const struct cas_ingest_options *opt,
                   struct cas_ingest **out)
{
    struct cas_ingest *ing;
    int rc;

    *out = NULL;
    if (opt != NULL &&
        (opt->threads > CAS_INGEST_MAX_THREADS || opt->queue_depth > CAS_INGEST_MAX_QUEUE_DEPTH ||
         opt->mode > CAS_INGEST_THREADS))
        return -EINVAL;
    ing = calloc(1, sizeof(*ing));
    if (ing == NULL)
        return -ENOMEM;
    ing->s = s;
    ing->mode = opt ? opt->mode : CAS_INGEST_AUTO;
    ing->threads = opt && opt->threads ? opt->threads : ingest_cpus();
    if (ing->threads > CAS_INGEST_MAX_THREADS)
        ing->threads = CAS_INGEST_MAX_THREADS;
    ing->queue_depth = opt && opt->queue_depth ? opt->queue_depth : INGEST_DEFAULT_QD;
    ing->max_bytes = opt ? opt->max_bytes : 0;
    ing->pid = getpid();
    ing->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ing->workers = calloc(ing->threads + 1, sizeof(*ing->workers));
    if (ing->md == NULL || ing->workers == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i <= ing->threads; i++) {
        ing->workers[i].ctx = EVP_MD_CTX_new();
        if (ing->workers[i].ctx == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    rc = ingest_pool_init(&ing->pool, ing->threads);
    if (rc < 0)
        goto fail;
    *out = ing;
    return 0;
fail:
    if (ing->workers != NULL) {
        for (unsigned i = 0; i <= ing->threads; i++)
            EVP_MD_CTX_free(ing->workers[i].ctx);
    }
    free(ing->workers);
    EVP_MD_free(ing->md);
    free(ing);
    return rc;
}

void cas_ingest_free(struct cas_ingest *ing)
{
    if (ing == NULL)
        return;
    ingest_pool_destroy(&ing->pool);
    ingest_uring_free(ing->ring);
    for (unsigned i = 0; i <= ing->threads; i++) {
        EVP_MD_CTX_free(ing->workers[i].ctx);
        free(ing->workers[i].buf);
        ingest_batch_free(ing->workers[i].batch);
    }
    free(ing->workers);
    EVP_MD_free(ing->md);
    free(ing);
}

/* --- choosing a path --- */

/* What a sample of a batch looks like. */
struct ingest_sample {
    uint64_t cached; /* pages in the page cache */
    uint64_t pages;  /* pages sampled */
    uint64_t bytes;  /* sizes of the files sampled */
    unsigned files;
};

/* Adds one file to the sample: its size and how much of it is cached. */
static int ingest_sample_one(const struct cas_ingest_file *f, struct ingest_sample *sm)
{
    struct ingest_cachestat_range range = {0, 0};
    struct ingest_cachestat cs;
    struct stat st;
    int fd, rc = 0;

    fd = openat(f->dir_fd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto out;
    sm->files++;
    sm->bytes += (uint64_t)st.st_size;
    if (st.st_size == 0)
        goto out;
    if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0) {
        sm->cached += cs.nr_cache;
        sm->pages += ((uint64_t)st.st_size + INGEST_ALIGN - 1) / INGEST_ALIGN;
    } else {
        /* Before Linux 6.5: is the first page there? */
        char byte;
        struct iovec iov = {&byte, 1};
        ssize_t n = preadv2(fd, &iov, 1, 0, RWF_NOWAIT);

        sm->pages += 1;
        if (n >= 0)
            sm->cached += 1;
        else if (errno != EAGAIN)
            rc = -errno;
    }
out:
    close(fd);
    return rc;
}

/* io_uring for a batch whose sample is mostly out of the page cache and
 * whose files are large: its queue depth (statx and open on io-wq, up to 8
 * reads in flight per file) is what wins on a cold disk. Everything else
 * goes to the thread pool, whose workers batch small files through their
 * own rings with no hand-off between threads: 32 reads in flight per worker
 * on a cold disk, which beat the io_uring path for 4 KiB and 64 KiB files
 * (docs/ingestion.md). */
static bool ingest_batch_wants_uring(const struct cas_ingest_file *files, size_t n)
{
    struct ingest_sample sm = {0};
    size_t k = n < INGEST_SAMPLE_FILES ? n : INGEST_SAMPLE_FILES;

    for (size_t i = 0; i < k; i++)
        ingest_sample_one(&files[i * n / k], &sm);
    if (sm.pages == 0 || sm.cached * 2 >= sm.pages)
        return false; /* hot */
    return sm.bytes / sm.files >= INGEST_BATCH_CAP;
}

static enum cas_ingest_mode ingest_choose(struct cas_ingest *ing, struct cas_ingest_file *files,
                                          size_t n, unsigned *workers)
{
    enum cas_ingest_mode mode = ing->mode;

    *workers = ing->threads > 1 ? ing->threads - 1 : 0;
    if (mode == CAS_INGEST_AUTO) {
        if (n <= INGEST_INLINE_MAX_FILES) {
            *workers = 0;
            return CAS_INGEST_THREADS;
        }
        mode = CAS_INGEST_THREADS;
        if (n >= INGEST_URING_MIN_FILES && !ing->ring_failed && ingest_batch_wants_uring(files, n))
            mode = CAS_INGEST_URING;
    }
    if (mode == CAS_INGEST_THREADS && *workers + 1 > n)
        *workers = n > 0 ? (unsigned)n - 1 : 0;
    return mode;
}

struct ingest_large {
    uint64_t size;
    size_t index;
};

static int ingest_large_cmp(const void *a, const void *b)
{
    const struct ingest_large *x = a, *y = b;

    if (x->size != y->size)
        return x->size < y->size ? 1 : -1; /* largest first */
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The threads path's order: files hinted large first, largest first, then
 * the rest as given. *order NULL when there is nothing to move. 0, -ENOMEM. */
static int ingest_order(const struct cas_ingest_file *files, size_t n, size_t **order)
{
    struct ingest_large *large = NULL;
    size_t k = 0, at = 0;
    int rc = 0;

    *order = NULL;
    for (size_t i = 0; i < n; i++)
        k += files[i].size_hint >= INGEST_LARGE_FIRST;
    if (k == 0 || (k == 1 && files[0].size_hint >= INGEST_LARGE_FIRST))
        goto out;
    large = malloc(k * sizeof(*large));
    *order = malloc(n * sizeof(**order));
    if (large == NULL || *order == NULL) {
        free(*order);
        *order = NULL;
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0, j = 0; i < n; i++) {
        if (files[i].size_hint >= INGEST_LARGE_FIRST)
            large[j++] = (struct ingest_large){.size = files[i].size_hint, .index = i};
    }
    qsort(large, k, sizeof(*large), ingest_large_cmp);
    for (size_t j = 0; j < k; j++)
        (*order)[at++] = large[j].index;
    for (size_t i = 0; i < n; i++) {
        if (files[i].size_hint < INGEST_LARGE_FIRST)
            (*order)[at++] = i;
    }
out:
    free(large);
    return rc;
}

static void ingest_counts_add(struct cas_ingest_stats *st, const struct ingest_counts *c)
{
    st->files += c->files;
    st->bytes += c->bytes;
    st->renamed += c->renamed;
    st->copied += c->copied;
    st->present += c->present;
    st->retries += c->retries;
}

int cas_ingest_run(struct cas_ingest *ing, struct cas_ingest_file *files, size_t n,
                   struct cas_ingest_stats *stats)
{
    struct ingest_run run = {.files = files, .n = n};
    struct cas_ingest_stats st = {0};
    uint64_t start = ingest_now_us();
    enum cas_ingest_mode mode;
    unsigned workers;
    int rc = 0;

    atomic_init(&run.next, 0);
    atomic_init(&run.reserved, 0);
    atomic_init(&run.stop, false);
    for (size_t i = 0; i < n; i++) {
        files[i].error = -ECANCELED;
        files[i].mode = 0;
        memset(&files[i].digest, 0, sizeof(files[i].digest));
    }
    for (unsigned i = 0; i <= ing->threads; i++)
        memset(&ing->workers[i].counts, 0, sizeof(ing->workers[i].counts));
    ing->run = &run;
    mode = ingest_choose(ing, files, n, &workers);
    if (mode == CAS_INGEST_URING) {
        rc = ingest_uring_run(ing);
        if (rc == 0) {
            workers = ing->threads;
        } else {
            ing->ring_failed = true;
            mode = CAS_INGEST_THREADS;
            workers = ing->threads > 1 ? ing->threads - 1 : 0;
            if (workers + 1 > n)
                workers = n > 0 ? (unsigned)n - 1 : 0;
        }
    }
    if (mode == CAS_INGEST_THREADS) {
        /* Without memory for the order the files go as given: slower, the same result. */
        if (workers > 0 && ingest_order(files, n, &run.order) != 0)
            run.order = NULL;
        ingest_threads_run(ing, workers);
    }
    ing->run = NULL;
    free(run.order);

    st.mode = mode;
    st.threads = mode == CAS_INGEST_URING ? workers : workers + 1;
    for (unsigned i = 0; i <= ing->threads; i++)
        ingest_counts_add(&st, &ing->workers[i].counts);
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = files[i].error;
    st.micros = ingest_now_us() - start;
    if (stats != NULL)
        *stats = st;
    return rc;
}
