/*
 * compression_bench.c - what zstd compression of blobs on the wire buys and
 * costs against casboxd, beside the zstd command line on the same data, all
 * in the same run:
 *
 *   for each corpus (C headers from /usr/include; static libraries, i.e.
 *   object files, from *.a in /usr/lib/x86_64-linux-gnu):
 *     upload of every blob, plain and zstd-compressed by the client at
 *         level 1 (the time includes the client's compression)
 *     download of every blob, plain and compressed by casboxd (the time
 *         includes the client's decompression; every byte is compared)
 *     beside `zstd -1 -q -c` of the same blobs (one file each): its output
 *         size and wall time
 *
 * Blobs under --batch-max (256 KiB) go through BatchUpdateBlobs and
 * BatchReadBlobs in requests of up to 2 MiB, as Bazel sends them; larger
 * ones through ByteStream Write and Read in 1 MiB messages. Bytes on the
 * wire are the blob data the messages carry (gRPC and HTTP/2 framing not
 * counted). Every blob gets a 16-byte random tail per mode, so that each
 * upload is of new blobs. Each figure is the median of --rounds rounds,
 * after an untimed warm-up of a few blobs each way in both modes.
 *
 * It starts its own casboxd (fresh state dir and free port; --casboxd PATH,
 * $CASBOXD, or casboxd beside this binary) unless --target names a running
 * server. Nothing here asserts on time: the exit status is non-zero only
 * when an RPC or a data check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "google/bytestream/bytestream.pb-c.h"

#define MIB       (1024 * 1024)
#define MB        1e6
#define MAX_ROUND 16
#define TAIL      16 /* the random tail that makes every mode's blobs new */

extern char **environ;

struct options {
    const char *casboxd;
    const char *target;
    const char *dir;
    const char *sources; /* directory walked for *.h */
    const char *objects; /* directory of *.a */
    uint64_t corpus_bytes;
    uint64_t max_file;
    uint64_t batch_max; /* blobs up to this size go in batches */
    int rounds;
    bool keep;
    char *daemon_args[BENCH_MAX_ARGS];
    int n_daemon_args;
};

/* One corpus: blobs with room for the tail. */
struct corpus {
    const char *name;
    uint8_t **data;
    size_t *len; /* without the tail */
    size_t n, cap;
    uint64_t bytes;
    uint64_t limit, max_file;
    const char *suffix;
};

static int failures;

static void fail(const char *what, const struct rpc_client_status *st)
{
    failures++;
    fprintf(stderr, "compression_bench: FAILED: %s: status %d: %s\n", what, st->code, st->message);
}

/* --- the corpora --- */

static struct corpus *walk_corpus; /* nftw has no context argument */

static int corpus_add_file(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    struct corpus *c = walk_corpus;
    size_t len = strlen(path), want;
    uint8_t *buf;
    int fd;

    (void)ftw;
    if (c->bytes >= c->limit)
        return 1; /* enough */
    if (type != FTW_F || !S_ISREG(sb->st_mode) || sb->st_size == 0 || len < strlen(c->suffix) ||
        strcmp(path + len - strlen(c->suffix), c->suffix) != 0)
        return 0;
    want = (size_t)sb->st_size < c->max_file ? (size_t)sb->st_size : c->max_file;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        uint8_t **data = realloc(c->data, cap * sizeof(*data));
        size_t *lens = data ? realloc(c->len, cap * sizeof(*lens)) : NULL;

        if (data != NULL)
            c->data = data;
        if (lens == NULL)
            return -1;
        c->len = lens;
        c->cap = cap;
    }
    buf = malloc(want + TAIL);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (buf == NULL || fd < 0 || read(fd, buf, want) != (ssize_t)want) {
        free(buf);
        if (fd >= 0)
            close(fd);
        return 0; /* unreadable: skip it */
    }
    close(fd);
    bench_fill_random(buf + want, TAIL, bench_random_u64());
    c->data[c->n] = buf;
    c->len[c->n] = want;
    c->n++;
    c->bytes += want;
    return 0;
}

static int corpus_load(struct corpus *c, const char *dir)
{
    walk_corpus = c;
    if (nftw(dir, corpus_add_file, 32, FTW_PHYS) < 0 || c->n == 0) {
        fprintf(stderr, "compression_bench: no %s files under %s\n", c->suffix, dir);
        return -1;
    }
    return 0;
}

static void corpus_free(struct corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->data[i]);
    free(c->data);
    free(c->len);
}

/* A new random tail on every blob, and their digests (with the tail). */
static void corpus_retail(struct corpus *c, struct bench_digest *dg)
{
    for (size_t i = 0; i < c->n; i++) {
        bench_fill_random(c->data[i] + c->len[i], TAIL, bench_random_u64());
        bench_sha256(c->data[i], c->len[i] + TAIL, &dg[i]);
    }
}

/* --- the zstd command line --- */

/* Writes the blobs as files under dir, runs `zstd -1 -q -c` on all of them
 * into one output file: its size in *out_bytes and the wall time, or -1. */
static double zstd_cli(const struct corpus *c, const char *workdir, uint64_t *out_bytes)
{
    char dir[PATH_MAX], out[PATH_MAX];
    char **argv = calloc(c->n + 8, sizeof(*argv));
    posix_spawn_file_actions_t fa;
    double t0, t = -1;
    bool spawned;
    struct stat st;
    pid_t pid;
    int status, fd;
    size_t a = 0;

    snprintf(dir, sizeof(dir), "%s/cli-%s", workdir, c->name);
    snprintf(out, sizeof(out), "%s.zst", dir);
    if (argv == NULL || mkdir(dir, 0755) != 0)
        goto out;
    argv[a++] = "zstd";
    argv[a++] = "-1";
    argv[a++] = "-q";
    argv[a++] = "-c";
    argv[a++] = "--";
    for (size_t i = 0; i < c->n; i++) {
        char path[PATH_MAX];

        snprintf(path, sizeof(path), "%s/%zu", dir, i);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, c->data[i], c->len[i] + TAIL) != (ssize_t)(c->len[i] + TAIL)) {
            if (fd >= 0)
                close(fd);
            goto out;
        }
        close(fd);
        argv[a++] = strdup(path);
    }
    /* posix_spawn, not fork: grpc's threads are running. */
    if (posix_spawn_file_actions_init(&fa) != 0)
        goto out;
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    t0 = bench_now();
    spawned = posix_spawnp(&pid, "zstd", &fa, NULL, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    if (!spawned || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        goto out;
    t = bench_now() - t0;
    if (stat(out, &st) == 0)
        *out_bytes = (uint64_t)st.st_size;
    else
        t = -1;
out:
    for (size_t i = 5; argv != NULL && i < a; i++)
        free(argv[i]);
    free(argv);
    bench_rm_rf(dir);
    unlink(out);
    return t;
}

/* --- ByteStream --- */

struct read_buf {
    uint8_t *p;
    size_t len, cap;
    bool bad;
};

static int read_collect(void *ctx, grpc_byte_buffer *bb)
{
    struct read_buf *b = ctx;
    Google__Bytestream__ReadResponse *r = (Google__Bytestream__ReadResponse *)rpc_message_unpack(
        bb, &google__bytestream__read_response__descriptor);

    if (r == NULL || r->data.len > b->cap - b->len) {
        b->bad = true;
    } else {
        memcpy(b->p + b->len, r->data.data, r->data.len);
        b->len += r->data.len;
    }
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

/* ByteStream.Read of blob i, plain or compressed; compared with the blob.
 * The bytes received are added to *wire. */
static int bs_read(struct bench_client *c, const struct bench_digest *d, bool zstd,
                   const uint8_t *expect, struct reapi_zstd_decoder *dec, uint64_t *wire,
                   struct rpc_client_status *st)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
    struct read_buf b = {.cap = (size_t)reapi_zstd_max_compressed(d->size)};
    uint8_t *plain = NULL;
    char name[512];
    int rc = -1;

    snprintf(name, sizeof(name), "%s/%s/%" PRId64, zstd ? "compressed-blobs/zstd" : "blobs", d->hex,
             d->size);
    req.resource_name = name;
    b.p = malloc(b.cap);
    if (b.p == NULL || rpc_client_server_stream(c->rpc, RPC_CLIENT_BYTESTREAM_READ, &req.base,
                                                read_collect, &b, st) != 0)
        goto out;
    *wire += b.len;
    if (zstd) {
        plain = malloc((size_t)d->size + 1);
        if (plain == NULL ||
            reapi_zstd_decoder_buffer(dec, b.p, b.len, plain, (size_t)d->size) != 0)
            b.bad = true;
    }
    if (b.bad || (zstd ? memcmp(plain, expect, (size_t)d->size) != 0
                       : b.len != (size_t)d->size || memcmp(b.p, expect, b.len) != 0)) {
        st->code = GRPC_STATUS_DATA_LOSS;
        snprintf(st->message, sizeof(st->message), "Read of %s: other bytes than uploaded", name);
        goto out;
    }
    rc = 0;
out:
    free(plain);
    free(b.p);
    return rc;
}

/* --- batches --- */

/* BatchUpdateBlobs of blobs [from, to), compressed or not; wire bytes added. */
static int batch_update(struct bench_client *c, struct corpus *cp, const struct bench_digest *dg,
                        size_t from, size_t to, bool zstd, uint64_t *wire,
                        struct rpc_client_status *st)
{
    size_t n = to - from;
    BatchUpdateBlobsRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__INIT;
    BatchUpdateBlobsRequest_Request *entries = calloc(n, sizeof(*entries));
    BatchUpdateBlobsRequest_Request **ptrs = calloc(n, sizeof(*ptrs));
    struct reapi_unknown_out *extra = calloc(n, sizeof(*extra));
    void **packed = calloc(n, sizeof(*packed));
    Digest *pds = calloc(n, sizeof(*pds));
    BatchUpdateBlobsResponse *resp = NULL;
    int rc = -1;

    if (entries == NULL || ptrs == NULL || extra == NULL || packed == NULL || pds == NULL)
        goto out;
    for (size_t k = 0; k < n; k++) {
        size_t i = from + k;

        build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(&entries[k]);
        bench_digest_to_proto(&dg[i], &pds[k]);
        entries[k].digest = &pds[k];
        entries[k].data.data = cp->data[i];
        entries[k].data.len = cp->len[i] + TAIL;
        if (zstd) {
            size_t len;

            if (reapi_zstd_compress_buffer(cp->data[i], cp->len[i] + TAIL, 1, &packed[k], &len) !=
                0)
                goto out;
            entries[k].data.data = packed[k];
            entries[k].data.len = len;
            reapi_unknown_out_init(&extra[k]);
            reapi_unknown_out_varint(&extra[k], REAPI_FIELD_BATCH_UPDATE_REQUEST_COMPRESSOR,
                                     REAPI_COMPRESSOR_ZSTD);
            reapi_unknown_out_attach(&extra[k], &entries[k].base);
        }
        *wire += entries[k].data.len;
        ptrs[k] = &entries[k];
    }
    req.instance_name = "";
    req.n_requests = n;
    req.requests = ptrs;
    if (rpc_client_unary(
            c->rpc, RPC_CLIENT_BATCH_UPDATE_BLOBS, &req.base,
            &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
            (ProtobufCMessage **)&resp, st) != 0)
        goto out;
    for (size_t k = 0; k < resp->n_responses; k++) {
        const Google__Rpc__Status *s = resp->responses[k]->status;

        if (s != NULL && s->code != 0) {
            st->code = (grpc_status_code)s->code;
            snprintf(st->message, sizeof(st->message), "BatchUpdateBlobs: %s",
                     s->message ? s->message : "");
            goto out;
        }
    }
    rc = resp->n_responses == n ? 0 : -1;
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    for (size_t k = 0; packed != NULL && k < n; k++)
        free(packed[k]);
    free(packed);
    free(entries);
    free(ptrs);
    free(extra);
    free(pds);
    return rc;
}

/* BatchReadBlobs of blobs [from, to), accepting zstd or not; compared. */
static int batch_read(struct bench_client *c, struct corpus *cp, const struct bench_digest *dg,
                      size_t from, size_t to, bool zstd, struct reapi_zstd_decoder *dec,
                      uint64_t *wire, struct rpc_client_status *st)
{
    size_t n = to - from;
    BatchReadBlobsRequest req = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_REQUEST__INIT;
    Digest *pds = calloc(n, sizeof(*pds));
    Digest **ptrs = calloc(n, sizeof(*ptrs));
    const uint64_t accept[] = {REAPI_COMPRESSOR_ZSTD};
    BatchReadBlobsResponse *resp = NULL;
    struct reapi_unknown_out extra;
    uint8_t *plain = NULL;
    int rc = -1;

    if (pds == NULL || ptrs == NULL)
        goto out;
    for (size_t k = 0; k < n; k++) {
        bench_digest_to_proto(&dg[from + k], &pds[k]);
        ptrs[k] = &pds[k];
    }
    req.instance_name = "";
    req.n_digests = n;
    req.digests = ptrs;
    if (zstd) {
        reapi_unknown_out_init(&extra);
        reapi_unknown_out_packed(&extra, REAPI_FIELD_BATCH_READ_ACCEPTABLE_COMPRESSORS, accept, 1);
        reapi_unknown_out_attach(&extra, &req.base);
    }
    if (rpc_client_unary(
            c->rpc, RPC_CLIENT_BATCH_READ_BLOBS, &req.base,
            &build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
            (ProtobufCMessage **)&resp, st) != 0)
        goto out;
    if (resp->n_responses != n)
        goto bad;
    for (size_t k = 0; k < n; k++) {
        const BatchReadBlobsResponse_Response *e = resp->responses[k];
        size_t i = from + k, size = cp->len[i] + TAIL;
        uint64_t comp = REAPI_COMPRESSOR_IDENTITY;
        const uint8_t *got = e->data.data;

        *wire += e->data.len;
        if (e->status != NULL && e->status->code != 0)
            goto bad;
        reapi_unknown_varint(&e->base, REAPI_FIELD_BATCH_READ_RESPONSE_COMPRESSOR, &comp);
        if (comp == REAPI_COMPRESSOR_ZSTD) {
            free(plain);
            plain = malloc(size);
            if (plain == NULL ||
                reapi_zstd_decoder_buffer(dec, e->data.data, e->data.len, plain, size) != 0)
                goto bad;
            got = plain;
        } else if (comp != REAPI_COMPRESSOR_IDENTITY || e->data.len != size) {
            goto bad;
        }
        if (memcmp(got, cp->data[i], size) != 0)
            goto bad;
    }
    rc = 0;
    goto out;
bad:
    st->code = GRPC_STATUS_DATA_LOSS;
    snprintf(st->message, sizeof(st->message), "BatchReadBlobs: other bytes than uploaded");
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(plain);
    free(pds);
    free(ptrs);
    return rc;
}

/* --- one round --- */

struct transfer {
    double up_s, down_s;
    uint64_t up_wire, down_wire;
};

/* Uploads then downloads the corpus (with fresh tails), plain or zstd. */
static int transfer_round(struct bench_client *c, struct corpus *cp, const struct options *o,
                          bool zstd, struct transfer *t)
{
    struct bench_digest *dg = calloc(cp->n, sizeof(*dg));
    struct reapi_zstd_decoder *dec = NULL;
    struct rpc_client_status st = {0};
    const size_t batch_bytes = 2 * MIB;
    double t0;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    if (dg == NULL || reapi_zstd_decoder_new(1, &dec) != 0)
        goto out;
    corpus_retail(cp, dg);
    for (int pass = 0; pass < 2; pass++) {
        t0 = bench_now();
        for (size_t i = 0; i < cp->n;) {
            size_t j = i, bytes = 0;

            if (cp->len[i] + TAIL > o->batch_max) {
                if (pass == 0) {
                    void *packed = NULL;
                    const void *data = cp->data[i];
                    size_t len = cp->len[i] + TAIL;

                    if (zstd && reapi_zstd_compress_buffer(data, len, 1, &packed, &len) != 0)
                        goto out;
                    t->up_wire += len;
                    rc = bench_bytestream_write(c, &dg[i], zstd, packed ? packed : data, len, MIB,
                                                &st);
                    free(packed);
                } else {
                    rc = bs_read(c, &dg[i], zstd, cp->data[i], dec, &t->down_wire, &st);
                }
                if (rc != 0) {
                    fail(pass == 0 ? "ByteStream.Write" : "ByteStream.Read", &st);
                    goto out;
                }
                i++;
                continue;
            }
            while (j < cp->n && cp->len[j] + TAIL <= o->batch_max &&
                   bytes + cp->len[j] + TAIL <= batch_bytes) {
                bytes += cp->len[j] + TAIL;
                j++;
            }
            rc = pass == 0 ? batch_update(c, cp, dg, i, j, zstd, &t->up_wire, &st)
                           : batch_read(c, cp, dg, i, j, zstd, dec, &t->down_wire, &st);
            if (rc != 0) {
                fail(pass == 0 ? "BatchUpdateBlobs" : "BatchReadBlobs", &st);
                goto out;
            }
            i = j;
        }
        if (pass == 0)
            t->up_s = bench_now() - t0;
        else
            t->down_s = bench_now() - t0;
    }
    rc = 0;
out:
    reapi_zstd_decoder_free(dec);
    free(dg);
    return rc;
}

static double median(double *v, int n)
{
    return bench_percentile(v, (size_t)n, 50);
}

static void bench_corpus(struct bench_client *c, struct corpus *cp, const struct options *o,
                         const char *workdir)
{
    double up[2][MAX_ROUND], down[2][MAX_ROUND], cli_s;
    uint64_t wire_up[2] = {0}, wire_down[2] = {0}, total = cp->bytes + cp->n * TAIL, cli = 0;
    size_t big = 0;
    struct transfer t;

    for (size_t i = 0; i < cp->n; i++)
        big += cp->len[i] + TAIL > o->batch_max;
    printf("\n%s: %zu blobs (%zu by ByteStream, %zu in batches), %.1f MB\n", cp->name, cp->n, big,
           cp->n - big, (double)total / MB);
    cli_s = zstd_cli(cp, workdir, &cli);
    if (cli_s < 0)
        printf("  zstd -1 (command line)   did not run: is zstd installed? (scripts/setup)\n");
    else
        printf("  zstd -1 (command line)   %.1f MB -> %.2f MB (%.2fx smaller) in %.2f s "
               "(%.0f MB/s of input)\n",
               (double)total / MB, (double)cli / MB, (double)total / (double)cli, cli_s,
               (double)total / cli_s / MB);
    for (int r = 0; r < o->rounds; r++) {
        for (int z = 0; z < 2; z++) {
            if (transfer_round(c, cp, o, z == 1, &t) != 0)
                return;
            up[z][r] = t.up_s;
            down[z][r] = t.down_s;
            wire_up[z] = t.up_wire;
            wire_down[z] = t.down_wire;
        }
    }
    for (int z = 0; z < 2; z++) {
        double u = median(up[z], o->rounds), d = median(down[z], o->rounds);

        printf("  upload   %-8s  %8.2f MB on the wire  %6.2f s  %6.0f MB/s of blobs\n",
               z ? "zstd" : "identity", (double)wire_up[z] / MB, u, (double)total / u / MB);
        printf("  download %-8s  %8.2f MB on the wire  %6.2f s  %6.0f MB/s of blobs\n",
               z ? "zstd" : "identity", (double)wire_down[z] / MB, d, (double)total / d / MB);
        up[z][0] = u;
        down[z][0] = d;
    }
    printf("    = zstd on the wire: upload %.2fx the bytes and %.2fx the time of identity; "
           "download %.2fx the bytes and %.2fx the time\n",
           (double)wire_up[1] / (double)wire_up[0], up[1][0] / up[0][0],
           (double)wire_down[1] / (double)wire_down[0], down[1][0] / down[0][0]);
    if (cli_s >= 0)
        printf("    = bytes against zstd -1 of the same blobs: upload %.2fx, download %.2fx\n",
               (double)wire_up[1] / (double)cli, (double)wire_down[1] / (double)cli);
    fflush(stdout);
}

/* --- command line --- */

enum {
    O_CASBOXD = 256,
    O_TARGET,
    O_DIR,
    O_SOURCES,
    O_OBJECTS,
    O_BYTES,
    O_MAX_FILE,
    O_BATCH_MAX,
    O_ROUNDS,
    O_KEEP,
    O_QUICK,
    O_DAEMON_ARG,
    O_HELP
};

static void usage(FILE *f)
{
    fprintf(f, "usage: compression_bench [options]\n"
               "  --casboxd PATH      casboxd to start (default: beside this binary, or $CASBOXD)\n"
               "  --target HOST:PORT  measure a running server instead\n"
               "  --dir DIR           work directory parent (default $TMPDIR or /tmp)\n"
               "  --sources DIR       C headers (*.h) under DIR (default /usr/include)\n"
               "  --objects DIR       static libraries (*.a) in DIR (default "
               "/usr/lib/x86_64-linux-gnu)\n"
               "  --bytes N           bytes of each corpus (default 64M)\n"
               "  --max-file N        at most this much of one file (default 16M)\n"
               "  --batch-max N       blobs up to N go in batches (default 256K)\n"
               "  --rounds N          rounds, median printed (default 3)\n"
               "  --quick             --bytes 8M --rounds 1 (a smoke run of seconds)\n"
               "  --keep              keep the work directory\n"
               "  --daemon-arg ARG    pass ARG to casboxd (repeatable)\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"casboxd", required_argument, NULL, O_CASBOXD},
        {"target", required_argument, NULL, O_TARGET},
        {"dir", required_argument, NULL, O_DIR},
        {"sources", required_argument, NULL, O_SOURCES},
        {"objects", required_argument, NULL, O_OBJECTS},
        {"bytes", required_argument, NULL, O_BYTES},
        {"max-file", required_argument, NULL, O_MAX_FILE},
        {"batch-max", required_argument, NULL, O_BATCH_MAX},
        {"rounds", required_argument, NULL, O_ROUNDS},
        {"keep", no_argument, NULL, O_KEEP},
        {"quick", no_argument, NULL, O_QUICK},
        {"daemon-arg", required_argument, NULL, O_DAEMON_ARG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int ch;

    memset(o, 0, sizeof(*o));
    o->dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    o->sources = "/usr/include";
    o->objects = "/usr/lib/x86_64-linux-gnu";
    o->corpus_bytes = 64 * MIB;
    o->max_file = 16 * MIB;
    o->batch_max = 256 * 1024;
    o->rounds = 3;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_CASBOXD:
            o->casboxd = optarg;
            break;
        case O_TARGET:
            o->target = optarg;
            break;
        case O_DIR:
            o->dir = optarg;
            break;
        case O_SOURCES:
            o->sources = optarg;
            break;
        case O_OBJECTS:
            o->objects = optarg;
            break;
        case O_BYTES:
        case O_MAX_FILE:
        case O_BATCH_MAX: {
            uint64_t *v = ch == O_BYTES      ? &o->corpus_bytes
                          : ch == O_MAX_FILE ? &o->max_file
                                             : &o->batch_max;

            if (bench_parse_size(optarg, v) != 0 || *v == 0) {
                fprintf(stderr, "compression_bench: bad size '%s'\n", optarg);
                return -1;
            }
            break;
        }
        case O_ROUNDS:
            o->rounds = atoi(optarg);
            break;
        case O_KEEP:
            o->keep = true;
            break;
        case O_QUICK:
            o->corpus_bytes = 8 * MIB;
            o->rounds = 1;
            break;
        case O_DAEMON_ARG:
            if (o->n_daemon_args == BENCH_MAX_ARGS) {
                fprintf(stderr, "compression_bench: too many --daemon-arg\n");
                return -1;
            }
            o->daemon_args[o->n_daemon_args++] = optarg;
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
    if (optind < argc || o->rounds < 1 || o->rounds > MAX_ROUND) {
        fprintf(stderr, "compression_bench: --rounds must be 1..%d, and no other arguments\n",
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
    struct corpus corpora[2] = {
        {.name = "sources (C headers)", .suffix = ".h"},
        {.name = "objects (static libraries)", .suffix = ".a"},
    };
    const char *dirs[2];
    char workdir[PATH_MAX], exe[PATH_MAX];
    double load0 = bench_loadavg(), t_start = bench_now();
    bool exec_enabled;
    int rc;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    dirs[0] = o.sources;
    dirs[1] = o.objects;
    for (int k = 0; k < 2; k++) {
        corpora[k].limit = o.corpus_bytes;
        corpora[k].max_file = o.max_file;
        if (corpus_load(&corpora[k], dirs[k]) != 0)
            return 1;
    }
    bench_tune_malloc();
    if (bench_workdir_create(o.dir, o.keep, workdir, sizeof(workdir)) != 0)
        return 1;
    if (o.target == NULL) {
        const char *casboxd = bench_casboxd_path(o.casboxd, exe, sizeof(exe));

        if (bench_daemon_start(&daemon, casboxd, workdir, o.daemon_args, o.n_daemon_args) != 0)
            return 1;
    }
    if (bench_client_open(&client, o.target ? o.target : daemon.target, 600) != 0 ||
        bench_check_server(&client, "compression_bench", &exec_enabled) != 0) {
        failures++;
        goto out;
    }
    printf("compression_bench: server %s%s, %ld CPUs, load %.2f at start\n",
           o.target ? o.target : daemon.target, o.target ? "" : " (private casboxd)",
           sysconf(_SC_NPROCESSORS_ONLN), load0);
    printf("MB = 10^6 bytes; level 1 both ways (client and casboxd); %d round(s), medians.\n",
           o.rounds);
    /* Untimed: a few blobs each way in both modes, so that the first
     * figure does not pay for the connection and the first calls. */
    for (int k = 0; k < 2 && failures == 0; k++) {
        struct corpus few = corpora[k];
        struct transfer t;

        few.n = few.n < 32 ? few.n : 32;
        for (int z = 0; z < 2 && failures == 0; z++)
            transfer_round(&client, &few, &o, z == 1, &t);
    }
    for (int k = 0; k < 2 && failures == 0; k++)
        bench_corpus(&client, &corpora[k], &o, workdir);
    printf("\nload %.2f at the end; %.0f s in all; %d failure(s)\n", bench_loadavg(),
           bench_now() - t_start, failures);
out:
    bench_client_close(&client);
    if (daemon.pid > 0) {
        rc = bench_daemon_stop(&daemon);
        if (rc != 0) {
            fprintf(stderr, "compression_bench: casboxd exited with status %d on SIGTERM\n", rc);
            failures++;
        }
    }
    if (failures > 0 && daemon.log[0] != '\0')
        bench_daemon_log_tail(&daemon, 15);
    for (int k = 0; k < 2; k++)
        corpus_free(&corpora[k]);
    if (o.keep)
        printf("kept %s\n", workdir);
    else
        bench_rm_rf(workdir);
    return failures > 0 ? 1 : 0;
}
