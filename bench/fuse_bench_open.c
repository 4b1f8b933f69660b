/*
 * fuse_bench_open.c - what opening and stat'ing an input costs through the
 * casfs mount, over /dev/fuse and over io_uring, against the same files
 * staged by hardlinks, all in one run (issue 19: first open within 2x of a
 * hardlinked file, repeated open and stat equal to it).
 *
 * Why a C program on the library: the daemon, gRPC and the sandbox would add
 * milliseconds around the microseconds measured here. It mounts casfs on a
 * private store (passthrough as the daemon would have it), makes a tree of
 * DIRS x FILES distinct small files, and for each staging measures, per file
 * in order: the first open+close (a tree never walked: LOOKUP of the directory
 * and the file, OPEN; a hardlinked file: its dentry is warm from linking),
 * then a repeated open+close, then stat; with 1 thread (median and p90 per
 * operation) and 8 threads (operations per second, a fresh tree each).
 * For io_uring it turns the fuse module's enable_uring on and puts it back.
 *
 *   fuse_bench_open [DIR] [DIRS FILES]     (root; default /tmp, 10 x 500)
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_stats.h"
#include "fuse/casfs.h"
#include "reapi/reapi.h"
#include "util/util.h"

#define THREADS 8

struct bench {
    struct cas_store *cas;
    char dir[512];
    unsigned dirs, files;
    struct cas_digest root, sub;
    struct cas_digest *blobs;
    char **paths; /* relative: dNN/fNNNN */
};

static const char uring_param[] = "/sys/module/fuse/parameters/enable_uring";

static int param_get(void)
{
    char c = 0;
    int fd = open(uring_param, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    if (read(fd, &c, 1) != 1)
        c = 0;
    close(fd);
    return c == 'Y' || c == '1';
}

static int param_set(int on)
{
    int fd = open(uring_param, O_WRONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (write(fd, on ? "1" : "0", 1) != 1)
        rc = -errno;
    close(fd);
    return rc;
}

static int put_msg(struct cas_store *s, const ProtobufCMessage *m, struct cas_digest *d)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    int rc;

    if (buf == NULL)
        return -ENOMEM;
    protobuf_c_message_pack(m, buf);
    cas_digest_buffer(buf, len, d);
    rc = cas_store_put(s, d, buf, len);
    free(buf);
    return rc;
}

static Digest *digest_new(const struct cas_digest *d)
{
    Digest *pd = calloc(1, sizeof(*pd));

    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = malloc(CAS_HASH_HEX + 1);
    cas_digest_hex(d, pd->hash);
    pd->size_bytes = d->size;
    return pd;
}

/* DIRS directories named dNN, each FILES files fNNNN of distinct content:
 * directory i holds blobs i*FILES.. so every file is its own blob. */
static int make_tree(struct bench *b)
{
    Directory top;
    int rc = 0;

    build__bazel__remote__execution__v2__directory__init(&top);
    b->blobs = calloc((size_t)b->dirs * b->files, sizeof(*b->blobs));
    b->paths = calloc((size_t)b->dirs * b->files, sizeof(*b->paths));
    top.n_directories = b->dirs;
    top.directories = calloc(b->dirs, sizeof(*top.directories));
    for (unsigned i = 0; i < b->dirs && rc == 0; i++) {
        Directory d;
        struct cas_digest dd;
        char name[32];

        build__bazel__remote__execution__v2__directory__init(&d);
        d.n_files = b->files;
        d.files = calloc(b->files, sizeof(*d.files));
        for (unsigned j = 0; j < b->files && rc == 0; j++) {
            char text[64];
            size_t k = (size_t)i * b->files + j;
            FileNode *f = calloc(1, sizeof(*f));

            build__bazel__remote__execution__v2__file_node__init(f);
            snprintf(text, sizeof(text), "file %u/%u of the open benchmark\n", i, j);
            cas_digest_buffer(text, strlen(text), &b->blobs[k]);
            rc = cas_store_put(b->cas, &b->blobs[k], text, strlen(text));
            snprintf(name, sizeof(name), "f%04u", j);
            f->name = strdup(name);
            f->digest = digest_new(&b->blobs[k]);
            d.files[j] = f;
            snprintf(name, sizeof(name), "d%02u/f%04u", i, j);
            b->paths[k] = strdup(name);
        }
        if (rc == 0)
            rc = put_msg(b->cas, &d.base, &dd);
        for (unsigned j = 0; j < b->files; j++) {
            if (d.files[j] != NULL)
                build__bazel__remote__execution__v2__file_node__free_unpacked(d.files[j], NULL);
        }
        free(d.files);
        top.directories[i] = calloc(1, sizeof(*top.directories[i]));
        build__bazel__remote__execution__v2__directory_node__init(top.directories[i]);
        snprintf(name, sizeof(name), "d%02u", i);
        top.directories[i]->name = strdup(name);
        top.directories[i]->digest = digest_new(&dd);
    }
    if (rc == 0)
        rc = put_msg(b->cas, &top.base, &b->root);
    for (unsigned i = 0; i < b->dirs; i++) {
        if (top.directories[i] != NULL)
            build__bazel__remote__execution__v2__directory_node__free_unpacked(top.directories[i],
                                                                               NULL);
    }
    free(top.directories);
    return rc;
}

/* The same files as hardlinks of the blob files under base. */
static int make_links(struct bench *b, const char *base)
{
    char src[1024], dst[1024], hex[CAS_HASH_HEX + 1];

    if (mkdir(base, 0755) < 0)
        return -errno;
    for (unsigned i = 0; i < b->dirs; i++) {
        snprintf(dst, sizeof(dst), "%s/d%02u", base, i);
        if (mkdir(dst, 0755) < 0)
            return -errno;
    }
    for (size_t k = 0; k < (size_t)b->dirs * b->files; k++) {
        cas_digest_hex(&b->blobs[k], hex);
        snprintf(src, sizeof(src), "%s/cas/blobs/%.2s/%s", b->dir, hex, hex);
        snprintf(dst, sizeof(dst), "%s/%s", base, b->paths[k]);
        if (link(src, dst) < 0)
            return -errno;
    }
    return 0;
}

enum op { OP_OPEN, OP_STAT };

struct pass {
    struct bench *b;
    const char *base;
    enum op op;
    size_t from, to;
    double *lat; /* per op, us; NULL: none kept */
    int err;
};

static void *pass_run(void *arg)
{
    struct pass *p = arg;
    char path[1024];
    struct stat st;

    for (size_t k = p->from; k < p->to; k++) {
        double t0;

        snprintf(path, sizeof(path), "%s/%s", p->base, p->b->paths[k]);
        t0 = bench_now();
        if (p->op == OP_OPEN) {
            int fd = open(path, O_RDONLY | O_CLOEXEC);

            if (fd < 0) {
                p->err = -errno;
                return NULL;
            }
            close(fd);
        } else if (stat(path, &st) < 0) {
            p->err = -errno;
            return NULL;
        }
        if (p->lat != NULL)
            p->lat[k - p->from] = (bench_now() - t0) * 1e6;
    }
    return NULL;
}

struct figures {
    double first_med, first_p90, again_med, stat_med; /* us, 1 thread */
    double first8, again8, stat8;                     /* ops/s, 8 threads */
};

/* One pass over every file, 1 thread: median and p90 in us. */
static int one_thread(struct bench *b, const char *base, enum op op, double *med, double *p90)
{
    size_t n = (size_t)b->dirs * b->files;
    struct pass p = {.b = b, .base = base, .op = op, .to = n, .lat = calloc(n, sizeof(double))};

    if (p.lat == NULL)
        return -ENOMEM;
    pass_run(&p);
    if (p.err == 0) {
        *med = bench_percentile(p.lat, n, 50);
        if (p90 != NULL)
            *p90 = bench_percentile(p.lat, n, 90);
    }
    free(p.lat);
    return p.err;
}

/* One pass over every file, 8 threads: ops/s. */
static int eight_threads(struct bench *b, const char *base, enum op op, double *rate)
{
    size_t n = (size_t)b->dirs * b->files;
    struct pass p[THREADS];
    pthread_t th[THREADS];
    double t0 = bench_now();
    int err = 0;

    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct pass){.b = b, .base = base, .op = op};
        p[i].from = n * (size_t)i / THREADS;
        p[i].to = n * (size_t)(i + 1) / THREADS;
        if (pthread_create(&th[i], NULL, pass_run, &p[i]) != 0)
            return -EAGAIN;
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (p[i].err != 0)
            err = p[i].err;
    }
    *rate = (double)n / (bench_now() - t0);
    return err;
}

/* first (fresh base), again, stat: 1 thread on base1, 8 threads on base8. */
static int measure(struct bench *b, const char *base1, const char *base8, struct figures *f)
{
    int rc = one_thread(b, base1, OP_OPEN, &f->first_med, &f->first_p90);

    if (rc == 0)
        rc = one_thread(b, base1, OP_OPEN, &f->again_med, NULL);
    if (rc == 0)
        rc = one_thread(b, base1, OP_STAT, &f->stat_med, NULL);
    if (rc == 0)
        rc = eight_threads(b, base8, OP_OPEN, &f->first8);
    if (rc == 0)
        rc = eight_threads(b, base8, OP_OPEN, &f->again8);
    if (rc == 0)
        rc = eight_threads(b, base8, OP_STAT, &f->stat8);
    return rc;
}

static void quiet_log(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "  %s\n", line);
}

static int measure_fuse(struct bench *b, enum casfs_uring_mode mode, struct figures *f,
                        uint64_t *ring)
{
    struct casfs_options opt = {.threads = 8, .uring = mode, .log = quiet_log};
    struct casfs_stats st;
    char mnt[600], b1[700], b8[700];
    struct casfs *fs;
    int rc;

    snprintf(mnt, sizeof(mnt), "%s/mnt", b->dir);
    opt.mountpoint = mnt;
    rc = casfs_mount(b->cas, &opt, &fs);
    if (rc != 0)
        return rc;
    rc = casfs_tree_add(fs, "one", &b->root);
    if (rc == 0)
        rc = casfs_tree_add(fs, "eight", &b->root);
    snprintf(b1, sizeof(b1), "%s/one", mnt);
    snprintf(b8, sizeof(b8), "%s/eight", mnt);
    if (rc == 0)
        rc = measure(b, b1, b8, f);
    casfs_get_stats(fs, &st);
    *ring = st.ring_requests;
    casfs_unmount(fs);
    return rc;
}

static void print_row(const char *name, const struct figures *f, const struct figures *hl)
{
    printf("%-18s %8.1f %8.1f %8.1f %8.1f | %9.0f %9.0f %9.0f | first %.2fx again %.2fx stat "
           "%.2fx (1 thread); 8 threads: %.2fx %.2fx %.2fx\n",
           name, f->first_med, f->first_p90, f->again_med, f->stat_med, f->first8, f->again8,
           f->stat8, f->first_med / hl->first_med, f->again_med / hl->again_med,
           f->stat_med / hl->stat_med, hl->first8 / f->first8, hl->again8 / f->again8,
           hl->stat8 / f->stat8);
}

int main(int argc, char **argv)
{
    struct bench b = {.dirs = 10, .files = 500};
    struct figures hl = {0}, dev = {0}, ring = {0};
    char links1[700], links8[700];
    int param, rc, uring_rc;
    uint64_t ring_dev = 0, ring_ring = 0;

    snprintf(b.dir, sizeof(b.dir), "%s/casbox-fuse-open.XXXXXX", argc > 1 ? argv[1] : "/tmp");
    if (argc > 3) {
        b.dirs = (unsigned)atoi(argv[2]);
        b.files = (unsigned)atoi(argv[3]);
    }
    if (mkdtemp(b.dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    {
        char cas[700];

        snprintf(cas, sizeof(cas), "%s/cas", b.dir);
        rc = cas_store_open(cas, &(struct cas_store_options){0}, &b.cas);
    }
    if (rc == 0)
        rc = make_tree(&b);
    snprintf(links1, sizeof(links1), "%s/links1", b.dir);
    snprintf(links8, sizeof(links8), "%s/links8", b.dir);
    if (rc == 0)
        rc = make_links(&b, links1);
    if (rc == 0)
        rc = make_links(&b, links8);
    if (rc != 0) {
        fprintf(stderr, "fuse_bench_open: setting up: %s\n", strerror(-rc));
        return 1;
    }
    printf("fuse_bench_open: %u files (%u dirs x %u), load %.2f\n", b.dirs * b.files, b.dirs,
           b.files, bench_loadavg());
    rc = measure(&b, links1, links8, &hl);
    if (rc == 0)
        rc = measure_fuse(&b, CASFS_URING_OFF, &dev, &ring_dev);
    param = param_get();
    uring_rc = param < 0 ? -EOPNOTSUPP : param ? 0 : param_set(1);
    if (rc == 0 && uring_rc == 0)
        uring_rc = measure_fuse(&b, CASFS_URING_ON, &ring, &ring_ring);
    if (param == 0)
        param_set(0);
    if (rc != 0) {
        fprintf(stderr, "fuse_bench_open: %s\n", strerror(-rc));
        return 1;
    }
    printf("%-18s %8s %8s %8s %8s | %9s %9s %9s | ratios to hardlinks\n", "us / op (1 thr)",
           "first", "p90", "again", "stat", "first/s", "again/s", "stat/s");
    print_row("hardlinks", &hl, &hl);
    print_row("fuse /dev/fuse", &dev, &hl);
    if (uring_rc == 0)
        print_row("fuse io_uring", &ring, &hl);
    else
        printf("fuse io_uring: not measured: %s\n", strerror(-uring_rc));
    printf("requests over io_uring: %llu in the /dev/fuse run, %llu in the io_uring run; load "
           "%.2f\n",
           (unsigned long long)ring_dev, (unsigned long long)ring_ring, bench_loadavg());
    cas_store_close(b.cas);
    rc = util_remove_tree(b.dir);
    if (rc != 0)
        fprintf(stderr, "fuse_bench_open: removing %s: %s\n", b.dir, strerror(-rc));
    return 0;
}
