/*
 * ingest_bench.c - output ingestion (cas/ingest_*.c) beside the baselines
 * that bound it, all measured in the same run, for four file sets:
 * 10,000 x 4 KiB, 1,000 x 64 KiB, 8 x 256 MiB and issue 19's output upload,
 * 5,000 x 4 KiB + one 256 MiB file (named last), each with a hot page cache
 * and a cold one (sync + drop_caches, as root; else skipped). Each engine
 * method's ratio to `openssl dgst -sha256` over the same files is printed
 * (the target: at or under 1.00x).
 *
 *   loop      one thread: open, fstat, read() into a page-aligned 1 MiB buffer
 *             to EOF, SHA-256 (OpenSSL EVP, context reused), close
 *   pool      the same loop on one thread per CPU, files handed out by an
 *             atomic counter
 *   engine    cas_ingest_run without a store (hash only, as the baselines):
 *             threads path, io_uring path, and auto (which path it took)
 *   +store    the engine committing into a fresh CAS (its shard directories
 *             made beforehand, as in a store in use): new files (written
 *             just before, as an action's outputs are) moved into the store
 *   sha256sum the coreutils tool over the same files (find | xargs)
 *   openssl   `openssl dgst -sha256` over the same files (find | xargs)
 *   limit     OpenSSL's single-core SHA-256 speed (EVP, 16 KiB updates)
 *             times the CPUs this process may use
 *
 * Hot figures are the best of --rounds rounds, methods interleaved (the
 * +store ones after the others); cold ones one round each. Every method's digests are compared with
 * the loop's; a mismatch fails the run (exit 1). Wall and CPU time (user + sys of the process, or
 * of the children for sha256sum) are printed, with the load average, because the machines this runs
 * on are shared: CPU time shows the cost even when other work steals the cores. Nothing asserts on
 * time.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cas/cas.h"

#define BUF_BYTES   (1024 * 1024)
#define MAX_METHODS 16

struct file_set {
    const char *label;
    size_t count;
    size_t size;
    size_t last_size; /* the last file's size (the mixed set's large one) */
    char dir[PATH_MAX];
    int dir_fd;
    char (*names)[16];
    uint8_t (*want)[CAS_HASH_BYTES]; /* the loop's digests */
};

struct result {
    const char *name;
    double wall, cpu;
    bool ran;
};

struct options {
    const char *base;
    int rounds;
    bool cold;
    unsigned threads;
    unsigned qd;
    double scale;        /* file counts and large sizes multiplied by this */
    const char *sets;    /* which sets: "small,medium,large" */
    const char *methods; /* which methods (the loop always runs), NULL: all */
};

static unsigned bench_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    return 1;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(int who)
{
    struct rusage ru;

    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double loadavg(void)
{
    double l[1];

    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;

    for (size_t i = 0; i + 8 <= len; i += 8) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        memcpy(buf + i, &z, 8);
    }
}

static size_t set_file_size(const struct file_set *s, size_t i)
{
    return i + 1 == s->count ? s->last_size : s->size;
}

static double set_bytes(const struct file_set *s)
{
    return (double)(s->count - 1) * (double)s->size + (double)s->last_size;
}

/* Writes the set's files with fresh content (seed). */
static int set_write(struct file_set *s, uint64_t seed)
{
    uint8_t *buf = aligned_alloc(4096, BUF_BYTES);

    if (buf == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < s->count; i++) {
        int fd = openat(s->dir_fd, s->names[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        size_t done = 0;

        if (fd < 0) {
            free(buf);
            return -errno;
        }
        size_t size = set_file_size(s, i);

        while (done < size) {
            size_t n = size - done < BUF_BYTES ? size - done : BUF_BYTES;

            fill(buf, n, seed * 1000003 + i * 7919 + done);
            if (write(fd, buf, n) != (ssize_t)n) {
                close(fd);
                free(buf);
                return -EIO;
            }
            done += n;
        }
        close(fd);
    }
    free(buf);
    return 0;
}

static int drop_caches(void)
{
    int fd;

    sync();
    fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (write(fd, "3\n", 2) != 2) {
        close(fd);
        return -EIO;
    }
    close(fd);
    return 0;
}

/* --- the baselines --- */

struct hash_ctx {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    uint8_t *buf;
};

static int hash_ctx_init(struct hash_ctx *h)
{
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    h->buf = aligned_alloc(4096, BUF_BYTES);
    return h->md && h->ctx && h->buf ? 0 : -ENOMEM;
}

static void hash_ctx_free(struct hash_ctx *h)
{
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h->buf);
}

/* The plain loop's body for one file. */
static int hash_file(struct hash_ctx *h, int dir_fd, const char *name, uint8_t out[32])
{
    struct stat st;
    unsigned len = 0;
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1) {
        close(fd);
        return -EIO;
    }
    for (;;) {
        ssize_t n = read(fd, h->buf, BUF_BYTES);

        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(h->ctx, h->buf, (size_t)n);
    }
    EVP_DigestFinal_ex(h->ctx, out, &len);
    close(fd);
    return rc;
}

static int run_loop(struct file_set *s, bool record)
{
    struct hash_ctx h;
    uint8_t d[32];
    int rc = hash_ctx_init(&h);

    for (size_t i = 0; rc == 0 && i < s->count; i++) {
        rc = hash_file(&h, s->dir_fd, s->names[i], d);
        if (rc == 0 && record)
            memcpy(s->want[i], d, 32);
        else if (rc == 0 && memcmp(d, s->want[i], 32) != 0)
            rc = -EBADMSG;
    }
    hash_ctx_free(&h);
    return rc;
}

struct pool_arg {
    struct file_set *s;
    atomic_size_t *next;
    atomic_int *error;
};

static void *pool_main(void *p)
{
    struct pool_arg *a = p;
    struct hash_ctx h;
    uint8_t d[32];

    if (hash_ctx_init(&h) != 0) {
        atomic_store(a->error, -ENOMEM);
        hash_ctx_free(&h);
        return NULL;
    }
    for (;;) {
        size_t i = atomic_fetch_add(a->next, 1);
        int rc;

        if (i >= a->s->count)
            break;
        rc = hash_file(&h, a->s->dir_fd, a->s->names[i], d);
        if (rc == 0 && memcmp(d, a->s->want[i], 32) != 0)
            rc = -EBADMSG;
        if (rc != 0)
            atomic_store(a->error, rc);
    }
    hash_ctx_free(&h);
    return NULL;
}

static int run_pool(struct file_set *s, unsigned threads)
{
    pthread_t th[CAS_INGEST_MAX_THREADS];
    atomic_size_t next;
    atomic_int error;
    struct pool_arg arg = {s, &next, &error};

    atomic_init(&next, 0);
    atomic_init(&error, 0);
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, pool_main, &arg);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&error);
}

/* `openssl dgst -sha256` over the set's files (one process; issue 19's
 * baseline for output upload). */
static int run_openssl(const struct file_set *s)
{
    char cmd[PATH_MAX + 128];
    int rc;

    snprintf(cmd, sizeof(cmd),
             "cd '%s' && find . -type f -print0 | xargs -0 openssl dgst -sha256 >/dev/null",
             s->dir);
    rc = system(cmd);
    return rc == 0 ? 0 : -EIO;
}

static int run_sha256sum(const struct file_set *s)
{
    char cmd[PATH_MAX + 128];
    int rc;

    snprintf(cmd, sizeof(cmd), "cd '%s' && find . -type f -print0 | xargs -0 sha256sum >/dev/null",
             s->dir);
    rc = system(cmd);
    return rc == 0 ? 0 : -EIO;
}

/* --- the engine --- */

static int run_engine(struct file_set *s, struct cas_store *store, enum cas_ingest_mode mode,
                      const struct options *o, struct cas_ingest_stats *stats)
{
    struct cas_ingest_options opt = {.mode = mode, .threads = o->threads, .queue_depth = o->qd};
    struct cas_ingest_file *files = calloc(s->count, sizeof(*files));
    struct cas_ingest *ing = NULL;
    int rc;

    if (files == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < s->count; i++)
        files[i] = (struct cas_ingest_file){
            .dir_fd = s->dir_fd,
            .name = s->names[i],
            .move = store != NULL,
            .size_hint = set_file_size(s, i)}; /* exec's collector knows it from its stat */
    rc = cas_ingest_new(store, &opt, &ing);
    if (rc == 0)
        rc = cas_ingest_run(ing, files, s->count, stats);
    cas_ingest_free(ing);
    for (size_t i = 0; rc == 0 && i < s->count && store == NULL; i++) {
        if (memcmp(files[i].digest.hash, s->want[i], 32) != 0)
            rc = -EBADMSG;
    }
    free(files);
    return rc;
}

/* --- the limit --- */

/* Single-core OpenSSL SHA-256 in bytes per second of wall time (*wall) and
 * of this thread's CPU time (*cpu): 16 KiB updates over a 64 MiB buffer for
 * about a third of a second, best of three. */
static void sha256_core_speed(double *wall, double *cpu)
{
    size_t len = 64u << 20;
    uint8_t *buf = aligned_alloc(4096, len), out[32];
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    *wall = *cpu = 0;
    fill(buf, len, 1);
    for (int round = 0; round < 3; round++) {
        double t0 = now(), c0 = cpu_seconds(RUSAGE_THREAD), t, c;
        size_t bytes = 0;
        unsigned olen;

        EVP_DigestInit_ex(ctx, md, NULL);
        while ((t = now() - t0) < 0.35) {
            for (size_t off = 0; off < len; off += 16384)
                EVP_DigestUpdate(ctx, buf + off, 16384);
            bytes += len;
        }
        EVP_DigestFinal_ex(ctx, out, &olen);
        c = cpu_seconds(RUSAGE_THREAD) - c0;
        if (bytes / t > *wall)
            *wall = (double)bytes / t;
        if (c > 0 && bytes / c > *cpu)
            *cpu = (double)bytes / c;
    }
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    free(buf);
}

/* --- running and printing --- */

enum method {
    M_LOOP,
    M_POOL,
    M_THREADS,
    M_URING,
    M_AUTO,
    M_SHA256SUM,
    M_OPENSSL,
    M_STORE_THREADS,
    M_STORE_URING,
    M_STORE_AUTO,
    M_COUNT
};

/* Names for --methods. */
static const char *const method_keys[M_COUNT] = {
    "loop",      "pool",    "threads",       "uring",       "auto",
    "sha256sum", "openssl", "store-threads", "store-uring", "store-auto",
};

static const char *const method_names[M_COUNT] = {
    "read()+SHA-256 loop, 1 thread",
    "read() pool",
    "engine, threads path",
    "engine, io_uring path",
    "engine, auto",
    "sha256sum (find | xargs)",
    "openssl dgst -sha256 (xargs)",
    "engine+store, threads (moved)",
    "engine+store, io_uring (moved)",
    "engine+store, auto (moved)",
};

struct bench {
    struct options o;
    unsigned cpus;
    double limit;    /* bytes/s: one core's wall speed x CPUs */
    double hash_cpu; /* bytes per CPU second of SHA-256 alone */
    char cas_base[PATH_MAX];
    int store_seq;
    const char *auto_path[2]; /* what auto took: hash only, with store */
};

/* Whether --methods asks for m: a comma-separated list of method_keys. */
static bool method_wanted(const struct options *o, enum method m)
{
    size_t len = strlen(method_keys[m]);

    if (m == M_LOOP || o->methods == NULL)
        return true;
    for (const char *p = o->methods; *p != '\0';) {
        size_t n = strcspn(p, ",");

        if (n == len && strncmp(p, method_keys[m], n) == 0)
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* One timed run of method m on s. */
static int run_method(struct bench *b, struct file_set *s, enum method m, bool cold,
                      struct result *r)
{
    struct cas_ingest_stats stats = {0};
    struct cas_store *store = NULL;
    bool children = m == M_SHA256SUM || m == M_OPENSSL;
    double t0, c0;
    int rc = 0;

    if (m >= M_STORE_THREADS) {
        char dir[PATH_MAX + 32];

        /* New files, as an action leaves them; a new store each time. */
        rc = set_write(s, 1000 + (uint64_t)b->store_seq);
        snprintf(dir, sizeof(dir), "%s/cas-%d", b->cas_base, b->store_seq++);
        if (rc == 0)
            rc = cas_store_open(dir, &(struct cas_store_options){0}, &store);
        /* A store in use has its 256 shard directories; a new one makes each
         * on its first blob (a failed rename, a mkdir, a rename: ~150 ms
         * for 256 here), which is not what an action's upload costs. */
        for (int shard = 0; rc == 0 && shard < 256; shard++) {
            char sd[PATH_MAX + 64];

            snprintf(sd, sizeof(sd), "%s/blobs/%02x", dir, shard);
            if (mkdir(sd, 0755) < 0 && errno != EEXIST)
                rc = -errno;
        }
        if (rc != 0)
            return rc;
    }
    if (cold && drop_caches() != 0)
        return -EPERM;
    c0 = cpu_seconds(children ? RUSAGE_CHILDREN : RUSAGE_SELF);
    t0 = now();
    switch (m) {
    case M_LOOP:
        rc = run_loop(s, false);
        break;
    case M_POOL:
        rc = run_pool(s, b->cpus);
        break;
    case M_THREADS:
        rc = run_engine(s, NULL, CAS_INGEST_THREADS, &b->o, &stats);
        break;
    case M_URING:
        rc = run_engine(s, NULL, CAS_INGEST_URING, &b->o, &stats);
        break;
    case M_AUTO:
        rc = run_engine(s, NULL, CAS_INGEST_AUTO, &b->o, &stats);
        b->auto_path[0] = cas_ingest_mode_name(stats.mode);
        break;
    case M_SHA256SUM:
        rc = run_sha256sum(s);
        break;
    case M_OPENSSL:
        rc = run_openssl(s);
        break;
    case M_STORE_THREADS:
        rc = run_engine(s, store, CAS_INGEST_THREADS, &b->o, &stats);
        break;
    case M_STORE_URING:
        rc = run_engine(s, store, CAS_INGEST_URING, &b->o, &stats);
        break;
    case M_STORE_AUTO:
        rc = run_engine(s, store, CAS_INGEST_AUTO, &b->o, &stats);
        b->auto_path[1] = cas_ingest_mode_name(stats.mode);
        break;
    case M_COUNT:
        break;
    }
    r->wall = now() - t0;
    r->cpu = cpu_seconds(children ? RUSAGE_CHILDREN : RUSAGE_SELF) - c0;
    r->ran = true;
    if (store != NULL) {
        char dir[PATH_MAX + 32];

        if (rc == 0 && stats.renamed + stats.present != s->count)
            fprintf(stderr, "  note: %s: %" PRIu64 " files copied, not moved\n", method_names[m],
                    stats.copied);
        cas_store_close(store);
        snprintf(dir, sizeof(dir), "%s/cas-%d", b->cas_base, b->store_seq - 1);
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return rc;
}

static void print_table(struct bench *b, struct file_set *s, bool cold, struct result *res,
                        double load0)
{
    double bytes = set_bytes(s);
    double loop = res[M_LOOP].wall;

    printf("\n%s, %s cache (%.1f MB), load average %.1f -> %.1f\n", s->label, cold ? "cold" : "hot",
           bytes / 1e6, load0, loadavg());
    printf("  %-34s %9s %8s %9s %9s %7s %7s %7s\n", "method", "wall ms", "MB/s", "files/s",
           "cpu ms", "x loop", "x limit", "cpu eff");
    for (int m = 0; m < M_COUNT; m++) {
        const struct result *r = &res[m];
        char name[64];

        if (!r->ran)
            continue;
        if (m == M_AUTO || m == M_STORE_AUTO)
            snprintf(name, sizeof(name), "%s (%s)", method_names[m],
                     b->auto_path[m == M_STORE_AUTO] ? b->auto_path[m == M_STORE_AUTO] : "?");
        else if (m == M_POOL)
            snprintf(name, sizeof(name), "%s, %u threads", method_names[m], b->cpus);
        else
            snprintf(name, sizeof(name), "%s", method_names[m]);
        printf("  %-34s %9.1f %8.0f %9.0f %9.1f %7.2f %7.2f %7.2f\n", name, r->wall * 1e3,
               bytes / r->wall / 1e6, (double)s->count / r->wall, r->cpu * 1e3, loop / r->wall,
               bytes / r->wall / b->limit, bytes / b->hash_cpu / r->cpu);
    }
    printf("  %-34s %9s %8.0f %9s %9.1f %7s %7.2f %7.2f\n", "limit: SHA-256 1 core x CPUs", "",
           b->limit / 1e6, "", bytes / b->hash_cpu * 1e3, "", 1.0, 1.0);
    printf("  (x limit: throughput / limit; cpu eff: CPU time SHA-256 alone needs for these bytes"
           " / CPU time used)\n");
    if (res[M_OPENSSL].ran) {
        /* Issue 19's target: output upload at or under openssl over the same files. */
        for (int m = M_THREADS; m < M_COUNT; m++) {
            if (res[m].ran && m != M_SHA256SUM && m != M_OPENSSL)
                printf("  ratio %-34s / openssl dgst: %.2fx\n", method_names[m],
                       res[m].wall / res[M_OPENSSL].wall);
        }
    }
}

static int bench_set(struct bench *b, struct file_set *s)
{
    static const enum method hot_order[] = {M_LOOP, M_POOL,      M_THREADS, M_URING,
                                            M_AUTO, M_SHA256SUM, M_OPENSSL};
    static const enum method store_order[] = {M_STORE_THREADS, M_STORE_URING, M_STORE_AUTO};
    struct result hot[M_COUNT] = {0}, cold[M_COUNT] = {0};
    double load0 = loadavg();
    int rc;

    rc = set_write(s, 1);
    if (rc == 0)
        rc = run_loop(s, true); /* the reference digests; also warms the cache */
    if (rc != 0)
        return rc;
    for (int round = 0; round < b->o.rounds; round++) {
        for (size_t i = 0; i < sizeof(hot_order) / sizeof(hot_order[0]); i++) {
            struct result r;

            if (!method_wanted(&b->o, hot_order[i]))
                continue;
            rc = run_method(b, s, hot_order[i], false, &r);
            if (rc != 0) {
                fprintf(stderr, "%s, %s: %s\n", s->label, method_names[hot_order[i]],
                        strerror(-rc));
                return rc;
            }
            if (!hot[hot_order[i]].ran || r.wall < hot[hot_order[i]].wall)
                hot[hot_order[i]] = r;
        }
    }
    /* Best of the rounds too, as the baselines it is compared with. */
    for (int round = 0; round < b->o.rounds; round++) {
        for (size_t i = 0; i < sizeof(store_order) / sizeof(store_order[0]); i++) {
            struct result r;

            if (!method_wanted(&b->o, store_order[i]))
                continue;
            rc = run_method(b, s, store_order[i], false, &r);
            if (rc != 0)
                return rc;
            if (!hot[store_order[i]].ran || r.wall < hot[store_order[i]].wall)
                hot[store_order[i]] = r;
        }
    }
    print_table(b, s, false, hot, load0);
    fflush(stdout);
    if (!b->o.cold)
        return 0;
    load0 = loadavg();
    rc = set_write(s, 1); /* the store runs moved the files away */
    for (size_t i = 0; rc == 0 && i < sizeof(hot_order) / sizeof(hot_order[0]); i++) {
        if (method_wanted(&b->o, hot_order[i]))
            rc = run_method(b, s, hot_order[i], true, &cold[hot_order[i]]);
    }
    for (size_t i = 0; rc == 0 && i < sizeof(store_order) / sizeof(store_order[0]); i++) {
        if (method_wanted(&b->o, store_order[i]))
            rc = run_method(b, s, store_order[i], true, &cold[store_order[i]]);
    }
    if (rc == -EPERM) {
        printf("\n%s, cold cache: skipped (drop_caches needs root)\n", s->label);
        return 0;
    }
    if (rc != 0)
        return rc;
    print_table(b, s, true, cold, load0);
    fflush(stdout);
    return 0;
}

static int set_init(struct file_set *s, const char *base, const char *label, size_t count,
                    size_t size)
{
    s->label = label;
    s->count = count;
    s->size = size;
    s->last_size = size;
    snprintf(s->dir, sizeof(s->dir), "%s/%zux%zu", base, count, size);
    if (mkdir(s->dir, 0755) < 0)
        return -errno;
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s->names = calloc(count, sizeof(*s->names));
    s->want = calloc(count, sizeof(*s->want));
    if (s->dir_fd < 0 || s->names == NULL || s->want == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++)
        snprintf(s->names[i], sizeof(s->names[i]), "f%06zu", i);
    return 0;
}

static void set_free(struct file_set *s)
{
    if (s->dir_fd > 0)
        close(s->dir_fd);
    free(s->names);
    free(s->want);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--dir DIR] [--rounds N] [--no-cold] [--threads N] [--queue-depth N]\n"
            "          [--scale F] [--sets small,medium,large] [--methods LIST]\n"
            "  --dir DIR          where the files and stores go (default /var/tmp)\n"
            "  --rounds N         hot rounds, best kept (default 3)\n"
            "  --no-cold          skip the cold-cache runs (drop_caches, root only)\n"
            "  --threads N        engine hashing threads (default: CPUs)\n"
            "  --queue-depth N    engine io_uring files in flight (default 64)\n"
            "  --scale F          multiply file counts and the large size (default 1)\n"
            "  --sets LIST        which of small (4 KiB), medium (64 KiB), large (256 MiB),\n"
            "                     mixed (5,000 x 4 KiB + 256 MiB; ratios against openssl)\n"
            "  --methods LIST     which of loop (always run), pool, threads, uring, auto,\n"
            "                     sha256sum, openssl, store-threads, store-uring, store-auto\n"
            "                     (default all)\n",
            argv0);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"rounds", required_argument, NULL, 'r'},
        {"no-cold", no_argument, NULL, 'C'},
        {"threads", required_argument, NULL, 't'},
        {"queue-depth", required_argument, NULL, 'q'},
        {"scale", required_argument, NULL, 's'},
        {"sets", required_argument, NULL, 'S'},
        {"methods", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct bench b = {.o = {.base = "/var/tmp",
                            .rounds = 3,
                            .cold = true,
                            .scale = 1,
                            .sets = "small,medium,large,mixed"}};
    struct file_set sets[4];
    char base[PATH_MAX];
    int opt, rc = 0;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            b.o.base = optarg;
            break;
        case 'r':
            b.o.rounds = atoi(optarg) > 0 ? atoi(optarg) : 1;
            break;
        case 'C':
            b.o.cold = false;
            break;
        case 't':
            b.o.threads = (unsigned)atoi(optarg);
            break;
        case 'q':
            b.o.qd = (unsigned)atoi(optarg);
            break;
        case 's':
            b.o.scale = atof(optarg) > 0 ? atof(optarg) : 1;
            break;
        case 'S':
            b.o.sets = optarg;
            break;
        case 'M':
            b.o.methods = optarg;
            break;
        default:
            usage(argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (b.o.cold && geteuid() != 0) {
        printf("not root: cold-cache runs skipped (drop_caches)\n");
        b.o.cold = false;
    }
    b.cpus = b.o.threads ? b.o.threads : bench_cpus();
    snprintf(base, sizeof(base), "%s/casbox-ingest-bench-XXXXXX", b.o.base);
    if (mkdtemp(base) == NULL) {
        perror(base);
        return 1;
    }
    snprintf(b.cas_base, sizeof(b.cas_base), "%s", base);
    memset(sets, 0, sizeof(sets));
    rc = set_init(&sets[0], base, "10,000 x 4 KiB", (size_t)(10000 * b.o.scale), 4096);
    if (rc == 0)
        rc = set_init(&sets[1], base, "1,000 x 64 KiB", (size_t)(1000 * b.o.scale), 65536);
    if (rc == 0)
        rc = set_init(&sets[2], base, "8 x 256 MiB", 8, (size_t)((256u << 20) * b.o.scale));
    /* Issue 19's output upload: 5,000 x 4 KiB and one 256 MiB file, named
     * last (the order a naive schedule handles worst). */
    if (rc == 0)
        rc = set_init(&sets[3], base, "5,000 x 4 KiB + 256 MiB", (size_t)(5000 * b.o.scale) + 1,
                      4096);
    sets[3].last_size = (size_t)((256u << 20) * b.o.scale);
    if (rc != 0) {
        fprintf(stderr, "setting up %s: %s\n", base, strerror(-rc));
        goto out;
    }
    printf("ingest_bench: %u CPUs, engine threads %u, queue depth %u, files under %s\n",
           bench_cpus(), b.cpus, b.o.qd ? b.o.qd : 64, base);
    sha256_core_speed(&b.limit, &b.hash_cpu);
    b.limit *= bench_cpus();
    printf("limit: OpenSSL SHA-256 %.0f MB/s on one core x %u CPUs = %.0f MB/s; %.0f MB per CPU "
           "second (load %.1f)\n",
           b.limit / bench_cpus() / 1e6, bench_cpus(), b.limit / 1e6, b.hash_cpu / 1e6, loadavg());
    for (int i = 0; i < 4 && rc == 0; i++) {
        static const char *const set_names[4] = {"small", "medium", "large", "mixed"};

        if (strstr(b.o.sets, set_names[i]) == NULL)
            continue;
        rc = bench_set(&b, &sets[i]);
        if (rc != 0)
            fprintf(stderr, "%s: %s\n", sets[i].label, strerror(-rc));
        /* Free the disk as we go: the large set is 2 GiB. */
        nftw(sets[i].dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
out:
    for (int i = 0; i < 4; i++)
        set_free(&sets[i]);
    nftw(base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc == 0 ? 0 : 1;
}
