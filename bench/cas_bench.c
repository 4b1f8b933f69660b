/*
 * cas_bench.c - throughput of casboxd's CAS over gRPC on loopback, beside
 * the baselines that bound it, all measured in the same run:
 *
 *   ByteStream.Write of one large random blob (1 GiB, 1 MiB messages)
 *       vs SHA-256 over the same bytes (OpenSSL EVP, one core: the server
 *       must hash every byte it accepts) and write() of the same bytes to a
 *       file on the same filesystem as the daemon's state dir (no fsync; the
 *       CAS does not fsync either)
 *   ByteStream.Read of it back (every byte compared with the original)
 *       vs read() of that file into memory, compared the same way
 *   BatchUpdateBlobs of 10,000 small blobs (100 bytes) in batches
 *       vs creating the same number of small files the way a file-per-blob
 *       store must (temp file, write, chmod, close, rename into <aa>/<hash>)
 *   FindMissingBlobs of 100,000 digests, half of them present
 *       vs protobuf-c packing and unpacking the same requests and responses
 *       in this process (the serialization floor of the call)
 *
 * It starts its own casboxd (fresh state dir and free port; --casboxd PATH,
 * $CASBOXD, or casboxd beside this binary) unless --target names a running
 * server. Each figure is the median of --rounds rounds; every upload is a new
 * blob. Before each timed write phase the filesystem's dirty pages are
 * written back (syncfs, untimed), so no phase pays for the previous one's
 * writeback. Nothing here asserts on time: the exit status is non-zero only when
 * an RPC or a data check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grpc/byte_buffer_reader.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bench_common.h"
#include "google/bytestream/bytestream.pb-c.h"

#define MIB       (1024 * 1024)
#define MB        1e6
#define MAX_ROUND 64

struct options {
    const char *casboxd;
    const char *target;
    const char *dir;
    uint64_t size;  /* the large blob */
    uint64_t chunk; /* ByteStream message size */
    int rounds;
    size_t small; /* small blobs per round */
    uint64_t small_size;
    size_t batch;      /* blobs per BatchUpdateBlobs */
    size_t find;       /* digests per FindMissingBlobs round */
    size_t find_batch; /* digests per request */
    bool keep;
    char *daemon_args[BENCH_MAX_ARGS];
    int n_daemon_args;
};

struct cpu_mark {
    double daemon_s; /* user+system of the daemon (and its reaped children) */
    double self_s;   /* user+system of this process, grpc threads included */
};

static pid_t daemon_pid; /* 0 when --target */
static int failures;

/* --- small helpers --- */

static const char *settle_dir; /* the work dir */

/* Untimed: writes back the filesystem's dirty pages (syncfs), so that a
 * timed write phase does not pay for the writeback of the one before it. */
static void settle(void)
{
    int fd = settle_dir ? open(settle_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;

    if (fd >= 0) {
        if (syncfs(fd) != 0)
            fprintf(stderr, "cas_bench: syncfs: %s\n", strerror(errno));
        close(fd);
    }
}

static void fail(const char *what, const struct rpc_client_status *st)
{
    failures++;
    fprintf(stderr, "cas_bench: FAILED: %s: status %d: %s\n", what, st->code, st->message);
}

static void cpu_mark(struct cpu_mark *m)
{
    struct rusage ru;
    char path[64], buf[1024];
    FILE *f;

    m->daemon_s = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        m->self_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (daemon_pid <= 0)
        return;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)daemon_pid);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    if (fgets(buf, sizeof(buf), f) != NULL) {
        /* Fields after the ")" of the command name: state is field 3. */
        char *p = strrchr(buf, ')');
        unsigned long long ut, st;
        long long cut, cst;

        if (p != NULL &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &ut,
                   &st, &cut, &cst) == 4)
            m->daemon_s =
                (double)(ut + st + (unsigned long long)(cut + cst)) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
}

/* --- ByteStream --- */

/* Parser of a stream of ReadResponse messages, each one `bytes data = 10`:
 * every data byte is compared with expect at the running offset. */
struct read_check {
    const uint8_t *expect;
    size_t size;
    size_t off;
    bool bad;
};

/* One ReadResponse of the stream (an rpc_client_message_fn), read from
 * grpc's slices without a copy. */
static int read_check_message(void *ctx, grpc_byte_buffer *bb)
{
    struct read_check *rc = ctx;
    grpc_byte_buffer_reader reader;
    grpc_slice s;
    uint8_t hdr[16];
    size_t hlen = 0, remaining = 0;
    bool in_data = false;

    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        rc->bad = true;
        return 0;
    }
    while (grpc_byte_buffer_reader_next(&reader, &s)) {
        const uint8_t *p = GRPC_SLICE_START_PTR(s);
        size_t n = GRPC_SLICE_LENGTH(s);

        while (n > 0 && !rc->bad) {
            if (!in_data) {
                if (hlen >= sizeof(hdr)) {
                    rc->bad = true;
                    break;
                }
                hdr[hlen++] = *p++;
                n--;
                if (hdr[0] != 0x52) {
                    rc->bad = true; /* not field 10 */
                } else if (hlen > 1 && !(hdr[hlen - 1] & 0x80)) {
                    remaining = 0;
                    for (size_t i = hlen - 1; i >= 1; i--)
                        remaining = (remaining << 7) | (hdr[i] & 0x7f);
                    in_data = true;
                    if (remaining > rc->size - rc->off)
                        rc->bad = true;
                }
                continue;
            }
            size_t take = n < remaining ? n : remaining;

            if (memcmp(p, rc->expect + rc->off, take) != 0)
                rc->bad = true;
            rc->off += take;
            remaining -= take;
            p += take;
            n -= take;
            if (remaining == 0 && n > 0)
                rc->bad = true; /* bytes after the data field */
        }
        grpc_slice_unref(s);
    }
    if (remaining > 0 || (hlen > 0 && !in_data))
        rc->bad = true;
    grpc_byte_buffer_reader_destroy(&reader);
    return 0;
}

/* Downloads the blob d with ByteStream.Read and compares it with expect. */
static int bs_read(struct bench_client *c, const uint8_t *expect, const struct bench_digest *d,
                   struct rpc_client_status *st)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
    struct read_check chk = {.expect = expect, .size = (size_t)d->size};
    char name[512];

    snprintf(name, sizeof(name), "%s%sblobs/%s/%" PRId64, c->instance, c->instance[0] ? "/" : "",
             d->hex, d->size);
    req.resource_name = name;
    if (rpc_client_server_stream(c->rpc, RPC_CLIENT_BYTESTREAM_READ, &req.base, read_check_message,
                                 &chk, st) != 0)
        return -1;
    if (chk.bad || chk.off != chk.size) {
        st->code = GRPC_STATUS_DATA_LOSS;
        snprintf(st->message, sizeof(st->message), "Read: %s after %zu of %zu bytes",
                 chk.bad ? "wrong bytes" : "stream ended", chk.off, chk.size);
        return -1;
    }
    return 0;
}

/* --- baselines on the filesystem --- */

static double baseline_failed(const char *what, const char *path)
{
    fprintf(stderr, "cas_bench: FAILED: baseline: %s %s: %s\n", what, path, strerror(errno));
    failures++;
    return -1;
}

/* write() of size bytes in chunk pieces to path; MB/s, or -1. */
static double disk_write(const char *path, const uint8_t *data, size_t size, size_t chunk)
{
    double t0 = bench_now();
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

    if (fd < 0)
        return baseline_failed("open", path);
    for (size_t off = 0; off < size;) {
        size_t n = size - off < chunk ? size - off : chunk;
        ssize_t w = write(fd, data + off, n);

        if (w <= 0) {
            close(fd);
            return baseline_failed("write", path);
        }
        off += (size_t)w;
    }
    if (close(fd) != 0)
        return baseline_failed("close", path);
    return (double)size / (bench_now() - t0) / MB;
}

/* read() of path in chunk pieces into an aligned buffer, each piece compared
 * with expect (as the download is); MB/s, or -1. */
static double disk_read(const char *path, const uint8_t *expect, size_t size, size_t chunk)
{
    uint8_t *buf = aligned_alloc(4096, (chunk + 4095) & ~(size_t)4095);
    double t0 = bench_now(), rate = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t off = 0;

    if (buf == NULL || fd < 0) {
        baseline_failed("open", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, chunk);

        if (r < 0) {
            baseline_failed("read", path);
            goto out;
        }
        if (r == 0)
            break;
        if (off + (size_t)r > size || memcmp(buf, expect + off, (size_t)r) != 0)
            break;
        off += (size_t)r;
    }
    if (off == size) {
        rate = (double)size / (bench_now() - t0) / MB;
    } else {
        errno = EIO;
        baseline_failed("reading back what was written to", path);
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rate;
}

/* Makes <root>/tmp and the 256 shard directories <root>/<aa>, once, as a
 * store has them before its first blob. 0 or -1. */
static int files_prepare(const char *root)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/tmp", root);
    if (mkdir(root, 0755) != 0 || mkdir(path, 0755) != 0)
        return (int)baseline_failed("mkdir", path);
    for (int i = 0; i < 256; i++) {
        snprintf(path, sizeof(path), "%s/%02x", root, i);
        if (mkdir(path, 0755) != 0)
            return (int)baseline_failed("mkdir", path);
    }
    return 0;
}

/* Creates n small files as a file-per-blob store does: a temp file, write,
 * fchmod 0444, close, rename to <root>/<aa>/<hash>. The files stay (as blobs
 * stay in the store): deleting them would slow the next round's inode
 * allocation (ext4 skips recently deleted inodes). Files per second, or -1. */
static double files_create(const char *root, int round, const struct bench_digest *dg,
                           const uint8_t *const *data, size_t n)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    double t0 = bench_now();

    for (size_t i = 0; i < n; i++) {
        int fd;

        snprintf(tmp, sizeof(tmp), "%s/tmp/put.%d.%zu", root, round, i);
        snprintf(path, sizeof(path), "%s/%.2s/%s", root, dg[i].hex, dg[i].hex);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return baseline_failed("open", tmp);
        if (write(fd, data[i], (size_t)dg[i].size) != (ssize_t)dg[i].size ||
            fchmod(fd, 0444) != 0) {
            close(fd);
            return baseline_failed("write", tmp);
        }
        if (close(fd) != 0 || rename(tmp, path) != 0)
            return baseline_failed("close+rename", tmp);
    }
    return (double)n / (bench_now() - t0);
}

/* --- the benchmark sections --- */

struct figure {
    double v[MAX_ROUND];
    int n;
};

/* Records one figure; a negative one is a failed measurement, which the
 * function that measured it reported and counted. */
static void fig_add(struct figure *f, double v)
{
    if (v >= 0 && f->n < MAX_ROUND)
        f->v[f->n++] = v;
}

static double fig_median(struct figure *f)
{
    return bench_percentile(f->v, (size_t)f->n, 50);
}

static double fig_min(const struct figure *f)
{
    double m = f->n ? f->v[0] : 0;

    for (int i = 1; i < f->n; i++)
        m = f->v[i] < m ? f->v[i] : m;
    return m;
}

static double fig_max(const struct figure *f)
{
    double m = f->n ? f->v[0] : 0;

    for (int i = 1; i < f->n; i++)
        m = f->v[i] > m ? f->v[i] : m;
    return m;
}

/* One row: name, median, [min-max], unit. Returns the median. */
static double row(const char *name, struct figure *f, const char *unit)
{
    double lo = fig_min(f), hi = fig_max(f), med = fig_median(f);

    if (f->n == 0) {
        printf("  %-44s %12s\n", name, "(failed)");
        return 0;
    }
    if (f->n > 1)
        printf("  %-44s %12.0f %-8s [%.0f-%.0f]\n", name, med, unit, lo, hi);
    else
        printf("  %-44s %12.0f %s\n", name, med, unit);
    return med;
}

static void human_size(uint64_t n, char *out, size_t len)
{
    if (n >= 1024ULL * 1024 * 1024 && n % (1024ULL * 1024 * 1024) == 0)
        snprintf(out, len, "%" PRIu64 " GiB", n >> 30);
    else if (n >= MIB && n % MIB == 0)
        snprintf(out, len, "%" PRIu64 " MiB", n >> 20);
    else if (n >= 1024 && n % 1024 == 0)
        snprintf(out, len, "%" PRIu64 " KiB", n >> 10);
    else
        snprintf(out, len, "%" PRIu64 " B", n);
}

static void bench_large(struct bench_client *c, const struct options *o, const char *workdir,
                        uint64_t nonce)
{
    struct figure sha = {0}, dw = {0}, dr = {0}, up = {0}, down = {0}, up_cpu_d = {0},
                  up_cpu_c = {0}, down_cpu_d = {0}, down_cpu_c = {0};
    size_t size = (size_t)o->size;
    uint8_t *data = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    char path[PATH_MAX], hs[32], cs[32];
    double gib = (double)size / (1024.0 * 1024 * 1024);

    human_size(o->size, hs, sizeof(hs));
    human_size(o->chunk, cs, sizeof(cs));
    if (data == NULL) {
        fprintf(stderr, "cas_bench: cannot allocate %s\n", hs);
        failures++;
        return;
    }
    fprintf(stderr, "cas_bench: ByteStream, %s blob, %d round(s)...\n", hs, o->rounds);
    bench_fill_random(data, size, nonce);
    snprintf(path, sizeof(path), "%s/baseline.bin", workdir);
    for (int r = 0; r < o->rounds; r++) {
        struct bench_digest d;
        struct rpc_client_status st;
        struct cpu_mark m0, m1;
        double t0;

        /* A new blob each round: the daemon would skip a blob it has. */
        {
            uint64_t v = nonce + (uint64_t)(r + 1) * 0x0101010101010101ULL;

            memcpy(data, &v, size < sizeof(v) ? size : sizeof(v));
        }
        t0 = bench_now();
        bench_sha256(data, size, &d);
        fig_add(&sha, (double)size / (bench_now() - t0) / MB);

        unlink(path);
        settle();
        fig_add(&dw, disk_write(path, data, size, o->chunk));

        settle();
        cpu_mark(&m0);
        t0 = bench_now();
        if (bench_bytestream_write(c, &d, false, data, (size_t)d.size, o->chunk, &st) == 0) {
            fig_add(&up, (double)size / (bench_now() - t0) / MB);
            cpu_mark(&m1);
            fig_add(&up_cpu_d, (m1.daemon_s - m0.daemon_s) / gib);
            fig_add(&up_cpu_c, (m1.self_s - m0.self_s) / gib);
        } else {
            fail("ByteStream.Write", &st);
        }

        fig_add(&dr, disk_read(path, data, size, o->chunk));
        unlink(path);

        cpu_mark(&m0);
        t0 = bench_now();
        if (bs_read(c, data, &d, &st) == 0) {
            fig_add(&down, (double)size / (bench_now() - t0) / MB);
            cpu_mark(&m1);
            fig_add(&down_cpu_d, (m1.daemon_s - m0.daemon_s) / gib);
            fig_add(&down_cpu_c, (m1.self_s - m0.self_s) / gib);
        } else {
            fail("ByteStream.Read", &st);
        }
    }
    free(data);

    printf("\nByteStream: one %s random blob, %s messages, median of %d round(s) "
           "[min-max]\n",
           hs, cs, o->rounds);
    double m_sha = row("SHA-256 (OpenSSL EVP, one core)", &sha, "MB/s");
    double m_dw = row("write() to a file, same fs, no fsync", &dw, "MB/s");
    double m_up = row("upload: ByteStream.Write", &up, "MB/s");
    if (m_up > 0 && m_sha > 0 && m_dw > 0) {
        double serial = 1.0 / (1.0 / m_sha + 1.0 / m_dw);

        printf("    = %.2fx disk write, %.2fx sha256, %.2fx hash-then-write in one thread "
               "(%.0f MB/s)\n",
               m_up / m_dw, m_up / m_sha, m_up / serial, serial);
    }
    if (daemon_pid > 0 && up_cpu_d.n > 0)
        printf("    cpu per GiB: casboxd %.2f s, this client %.2f s\n", fig_median(&up_cpu_d),
               fig_median(&up_cpu_c));
    double m_dr = row("read() of that file, compared (page cache)", &dr, "MB/s");
    double m_down = row("download: ByteStream.Read, compared", &down, "MB/s");
    if (m_down > 0 && m_dr > 0)
        printf("    = %.2fx disk read\n", m_down / m_dr);
    if (daemon_pid > 0 && down_cpu_d.n > 0)
        printf("    cpu per GiB: casboxd %.2f s, this client %.2f s\n", fig_median(&down_cpu_d),
               fig_median(&down_cpu_c));
    fflush(stdout);
}

/* Makes n small blobs of size bytes, content from seed + i. */
static int make_small(size_t n, size_t size, uint64_t seed, uint8_t **store, const uint8_t ***ptrs,
                      struct bench_digest **dg)
{
    *store = malloc(n * size + 1);
    *ptrs = calloc(n + 1, sizeof(**ptrs));
    *dg = calloc(n + 1, sizeof(**dg));
    if (*store == NULL || *ptrs == NULL || *dg == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = *store + i * size;

        bench_fill_random(p, size, seed * 0x100000001b3ULL + i);
        if (size >= 8)
            memcpy(p, &i, sizeof(i) < size ? sizeof(i) : size); /* distinct even if seeds meet */
        (*ptrs)[i] = p;
        bench_sha256(p, size, &(*dg)[i]);
    }
    return 0;
}

static void free_small(uint8_t *store, const uint8_t **ptrs, struct bench_digest *dg)
{
    free(store);
    free(ptrs);
    free(dg);
}

/* Uploads n blobs in requests of batch; returns blobs per second, or -1. */
static double upload_batches(struct bench_client *c, const struct bench_digest *dg,
                             const uint8_t *const *ptrs, size_t n, size_t batch)
{
    double t0 = bench_now();

    for (size_t i = 0; i < n; i += batch) {
        size_t k = n - i < batch ? n - i : batch;
        struct rpc_client_status st;

        if (bench_batch_update(c, dg + i, ptrs + i, k, &st) != 0) {
            fail("BatchUpdateBlobs", &st);
            return -1;
        }
    }
    return (double)n / (bench_now() - t0);
}

static void bench_small(struct bench_client *c, const struct options *o, const char *workdir,
                        uint64_t nonce)
{
    struct figure files = {0}, rpc = {0};
    char root[PATH_MAX];

    fprintf(stderr, "cas_bench: BatchUpdateBlobs, %zu x %" PRIu64 " B, %d round(s)...\n", o->small,
            o->small_size, o->rounds);
    if (o->batch * o->small_size > 4 * MIB - 64 * 1024)
        fprintf(stderr,
                "cas_bench: warning: %zu x %" PRIu64 " B per batch is over the usual 4 MiB "
                "limit\n",
                o->batch, o->small_size);
    snprintf(root, sizeof(root), "%s/files", workdir);
    if (files_prepare(root) != 0)
        return;
    for (int r = 0; r < o->rounds; r++) {
        uint8_t *store;
        const uint8_t **ptrs;
        struct bench_digest *dg;

        if (make_small(o->small, o->small_size, nonce + 1000 + (uint64_t)r, &store, &ptrs, &dg) !=
            0) {
            fprintf(stderr, "cas_bench: out of memory\n");
            failures++;
            return;
        }
        settle();
        fig_add(&files, files_create(root, r, dg, ptrs, o->small));
        settle();
        fig_add(&rpc, upload_batches(c, dg, ptrs, o->small, o->batch));
        free_small(store, ptrs, dg);
    }
    printf("\nSmall blobs: %zu x %" PRIu64 " B per round, BatchUpdateBlobs of %zu blobs, "
           "median of %d round(s)\n",
           o->small, o->small_size, o->batch, o->rounds);
    double m_files = row("files: temp+write+chmod+close+rename", &files, "files/s");
    double m_rpc = row("BatchUpdateBlobs", &rpc, "blobs/s");
    if (m_files > 0 && m_rpc > 0)
        printf("    = %.2fx file creation\n", m_rpc / m_files);
    fflush(stdout);
}

/* pack request, unpack it, pack a response listing missing, unpack it: the
 * serialization work of one FindMissingBlobs call. */
static int serialize_roundtrip(const FindMissingBlobsRequest *req, Digest **missing,
                               size_t n_missing)
{
    FindMissingBlobsResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_RESPONSE__INIT;
    uint8_t *buf;
    size_t len;
    ProtobufCMessage *m;

    if (bench_pack(&req->base, &buf, &len, NULL) != 0)
        return -1;
    m = protobuf_c_message_unpack(
        &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor, NULL, len,
        buf);
    free(buf);
    if (m == NULL)
        return -1;
    protobuf_c_message_free_unpacked(m, NULL);
    resp.n_missing_blob_digests = n_missing;
    resp.missing_blob_digests = missing;
    if (bench_pack(&resp.base, &buf, &len, NULL) != 0)
        return -1;
    m = protobuf_c_message_unpack(
        &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor, NULL, len,
        buf);
    free(buf);
    if (m == NULL)
        return -1;
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static void bench_find(struct bench_client *c, const struct options *o, uint64_t nonce)
{
    size_t n = o->find, n_present = n / 2;
    struct figure ser = {0}, rpc = {0};
    struct bench_digest *all = calloc(n + 1, sizeof(*all));
    Digest *pds = calloc(n + 1, sizeof(*pds));
    Digest **ptrs = calloc(n + 1, sizeof(*ptrs));
    Digest **missing = calloc(o->find_batch + 1, sizeof(*missing));
    uint8_t *store = NULL;
    const uint8_t **bptrs = NULL;
    struct bench_digest *present = NULL;

    if (all == NULL || pds == NULL || ptrs == NULL || missing == NULL ||
        make_small(n_present, o->small_size ? o->small_size : 100, nonce + 7777, &store, &bptrs,
                   &present) != 0) {
        fprintf(stderr, "cas_bench: out of memory\n");
        failures++;
        goto out;
    }
    fprintf(stderr, "cas_bench: FindMissingBlobs: uploading %zu blobs first...\n", n_present);
    if (upload_batches(c, present, bptrs, n_present, o->batch ? o->batch : 1000) < 0)
        goto out;
    /* Present and absent digests alternate; absent ones are random hashes. */
    for (size_t i = 0, p = 0; i < n; i++) {
        if (i % 2 == 0 && p < n_present) {
            all[i] = present[p++];
        } else {
            uint8_t junk[32];

            bench_fill_random(junk, sizeof(junk), nonce ^ (0xabcdefULL + i));
            bench_sha256(junk, sizeof(junk), &all[i]);
            all[i].size = 100;
        }
        bench_digest_to_proto(&all[i], &pds[i]);
        ptrs[i] = &pds[i];
    }
    fprintf(stderr, "cas_bench: FindMissingBlobs, %zu digests, %d round(s)...\n", n, o->rounds);
    for (int r = 0; r < o->rounds; r++) {
        double t0 = bench_now();
        bool ok = true;

        for (size_t i = 0; i < n && ok; i += o->find_batch) {
            FindMissingBlobsRequest req =
                BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
            size_t k = n - i < o->find_batch ? n - i : o->find_batch, n_missing = 0;

            req.instance_name = (char *)c->instance;
            req.n_blob_digests = k;
            req.blob_digests = ptrs + i;
            for (size_t j = i; j < i + k; j++) {
                if (!(j % 2 == 0 && j / 2 < n_present))
                    missing[n_missing++] = ptrs[j];
            }
            ok = serialize_roundtrip(&req, missing, n_missing) == 0;
        }
        if (ok)
            fig_add(&ser, (double)n / (bench_now() - t0));

        t0 = bench_now();
        for (size_t i = 0; i < n && ok; i += o->find_batch) {
            FindMissingBlobsRequest req =
                BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
            FindMissingBlobsResponse *resp = NULL;
            size_t k = n - i < o->find_batch ? n - i : o->find_batch, want = 0;
            struct rpc_client_status st;

            req.instance_name = (char *)c->instance;
            req.n_blob_digests = k;
            req.blob_digests = ptrs + i;
            for (size_t j = i; j < i + k; j++)
                want += !(j % 2 == 0 && j / 2 < n_present);
            if (rpc_client_unary(
                    c->rpc, RPC_CLIENT_FIND_MISSING_BLOBS, &req.base,
                    &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
                    (ProtobufCMessage **)&resp, &st) != 0) {
                fail("FindMissingBlobs", &st);
                ok = false;
                break;
            }
            if (resp->n_missing_blob_digests != want) {
                st.code = GRPC_STATUS_INTERNAL;
                snprintf(st.message, sizeof(st.message),
                         "%zu of %zu digests reported missing, "
                         "want %zu",
                         resp->n_missing_blob_digests, k, want);
                fail("FindMissingBlobs", &st);
                ok = false;
            }
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        if (ok)
            fig_add(&rpc, (double)n / (bench_now() - t0));
    }
    printf("\nFindMissingBlobs: %zu digests (%zu present), requests of %zu, median of %d "
           "round(s)\n",
           n, n_present, o->find_batch, o->rounds);
    double m_ser = row("protobuf-c pack+unpack only, in process", &ser, "digests/s");
    double m_rpc = row("FindMissingBlobs", &rpc, "digests/s");
    if (m_ser > 0 && m_rpc > 0)
        printf("    = %.2fx serialization alone\n", m_rpc / m_ser);
    fflush(stdout);
out:
    free(all);
    free(pds);
    free(ptrs);
    free(missing);
    free_small(store, bptrs, present);
}

/* --- main --- */

static void usage(FILE *f)
{
    fprintf(f, "usage: cas_bench [options]\n"
               "\n"
               "Throughput of casboxd's CAS over gRPC (ByteStream, BatchUpdateBlobs,\n"
               "FindMissingBlobs) beside SHA-256, disk and serialization baselines.\n"
               "\n"
               "  --casboxd PATH      daemon to start (default $CASBOXD, else beside this binary)\n"
               "  --target HOST:PORT  use a running server instead (baselines still local)\n"
               "  --dir DIR           where the work dir goes (default $TMPDIR or /tmp)\n"
               "  --size N            large blob size, K/M/G suffixes (default 1G; 0 skips)\n"
               "  --chunk N           ByteStream message size (default 1M)\n"
               "  --rounds N          rounds, medians are printed (default 3)\n"
               "  --small N           small blobs per round (default 10000; 0 skips)\n"
               "  --small-size N      their size (default 100)\n"
               "  --batch N           blobs per BatchUpdateBlobs (default 1000)\n"
               "  --find N            digests for FindMissingBlobs (default 100000; 0 skips)\n"
               "  --find-batch N      digests per request (default 10000)\n"
               "  --quick             --size 128M --rounds 1 --small 2000 --find 20000\n"
               "  --daemon-arg ARG    extra casboxd argument (repeatable)\n"
               "  --keep              keep the work dir (state, daemon log)\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum {
        O_CASBOXD = 256,
        O_TARGET,
        O_DIR,
        O_SIZE,
        O_CHUNK,
        O_ROUNDS,
        O_SMALL,
        O_SMALL_SIZE,
        O_BATCH,
        O_FIND,
        O_FIND_BATCH,
        O_QUICK,
        O_DARG,
        O_KEEP,
        O_HELP,
    };
    static const struct option opts[] = {
        {"casboxd", required_argument, NULL, O_CASBOXD},
        {"target", required_argument, NULL, O_TARGET},
        {"dir", required_argument, NULL, O_DIR},
        {"size", required_argument, NULL, O_SIZE},
        {"chunk", required_argument, NULL, O_CHUNK},
        {"rounds", required_argument, NULL, O_ROUNDS},
        {"small", required_argument, NULL, O_SMALL},
        {"small-size", required_argument, NULL, O_SMALL_SIZE},
        {"batch", required_argument, NULL, O_BATCH},
        {"find", required_argument, NULL, O_FIND},
        {"find-batch", required_argument, NULL, O_FIND_BATCH},
        {"quick", no_argument, NULL, O_QUICK},
        {"daemon-arg", required_argument, NULL, O_DARG},
        {"keep", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *tmp = getenv("TMPDIR");
    int opt;

    memset(o, 0, sizeof(*o));
    o->dir = tmp && tmp[0] ? tmp : "/tmp";
    o->size = 1024ULL * 1024 * 1024;
    o->chunk = MIB;
    o->rounds = 3;
    o->small = 10000;
    o->small_size = 100;
    o->batch = 1000;
    o->find = 100000;
    o->find_batch = 10000;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        uint64_t v = 0;
        bool num = opt >= O_SIZE && opt <= O_FIND_BATCH;

        if (num && bench_parse_size(optarg, &v) != 0) {
            fprintf(stderr, "cas_bench: bad number '%s'\n", optarg);
            return -1;
        }
        switch (opt) {
        case O_CASBOXD:
            o->casboxd = optarg;
            break;
        case O_TARGET:
            o->target = optarg;
            break;
        case O_DIR:
            o->dir = optarg;
            break;
        case O_SIZE:
            o->size = v;
            break;
        case O_CHUNK:
            o->chunk = v;
            break;
        case O_ROUNDS:
            o->rounds = (int)v;
            break;
        case O_SMALL:
            o->small = v;
            break;
        case O_SMALL_SIZE:
            o->small_size = v;
            break;
        case O_BATCH:
            o->batch = v;
            break;
        case O_FIND:
            o->find = v;
            break;
        case O_FIND_BATCH:
            o->find_batch = v;
            break;
        case O_QUICK:
            o->size = 128 * MIB;
            o->rounds = 1;
            o->small = 2000;
            o->find = 20000;
            break;
        case O_DARG:
            if (o->n_daemon_args >= BENCH_MAX_ARGS) {
                fprintf(stderr, "cas_bench: too many --daemon-arg\n");
                return -1;
            }
            o->daemon_args[o->n_daemon_args++] = optarg;
            break;
        case O_KEEP:
            o->keep = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cas_bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->rounds < 1 || o->rounds > MAX_ROUND || o->chunk < 1 || o->chunk > 16 * MIB ||
        o->batch < 1 || o->find_batch < 1 || o->small_size < 1) {
        fprintf(stderr,
                "cas_bench: --rounds must be 1..%d, --chunk 1..16M, --batch, "
                "--find-batch and --small-size at least 1\n",
                MAX_ROUND);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    struct bench_daemon daemon = {0};
    struct bench_client client = {0};
    char workdir[PATH_MAX], exe[PATH_MAX];
    const char *target;
    struct statfs sfs;
    uint64_t nonce = bench_random_u64();
    double load0 = bench_loadavg(), t_start = bench_now();
    bool exec_enabled;
    int rc;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    bench_tune_malloc();
    if (bench_workdir_create(o.dir, o.keep, workdir, sizeof(workdir)) != 0)
        return 1;
    settle_dir = workdir;
    if (o.target == NULL) {
        const char *casboxd = bench_casboxd_path(o.casboxd, exe, sizeof(exe));

        if (bench_daemon_start(&daemon, casboxd, workdir, o.daemon_args, o.n_daemon_args) != 0)
            return 1;
        daemon_pid = daemon.pid;
        target = daemon.target;
    } else {
        target = o.target;
    }
    if (bench_client_open(&client, target, 600) != 0 ||
        bench_check_server(&client, "cas_bench", &exec_enabled) != 0) {
        failures++;
        goto out;
    }
    printf("cas_bench: server %s%s, work dir %s (%s), %ld CPUs, load %.2f at start\n", target,
           o.target ? "" : " (private casboxd)", workdir,
           statfs(workdir, &sfs) == 0 && sfs.f_type == 0xEF53 ? "ext4" : "same fs",
           sysconf(_SC_NPROCESSORS_ONLN), load0);
    printf("MB = 10^6 bytes. Each figure is the median of the rounds; every upload is a new "
           "blob.\n");
    fflush(stdout);
    if (o.size > 0)
        bench_large(&client, &o, workdir, nonce);
    if (o.small > 0)
        bench_small(&client, &o, workdir, nonce);
    if (o.find > 0)
        bench_find(&client, &o, nonce);
    printf("\nload %.2f at the end; %.0f s in all; %d failure(s)\n", bench_loadavg(),
           bench_now() - t_start, failures);
out:
    bench_client_close(&client);
    if (daemon.pid > 0) {
        rc = bench_daemon_stop(&daemon);
        if (rc != 0) {
            fprintf(stderr, "cas_bench: casboxd exited with status %d on SIGTERM\n", rc);
            failures++;
        }
    }
    if (failures > 0 && daemon.log[0] != '\0') {
        fprintf(stderr, "cas_bench: %d failure(s); the end of casboxd's log:\n", failures);
        bench_daemon_log_tail(&daemon, 15);
    }
    if (o.keep)
        printf("kept %s\n", workdir);
    else
        bench_rm_rf(workdir);
    return failures > 0 ? 1 : 0;
}
