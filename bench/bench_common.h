/*
 * bench_common.h - what cas_bench and exec_bench share: clocks and
 * statistics, a private casboxd (free port, fresh state dir, removed on exit
 * even when the benchmark is killed), and the gRPC client (rpc/rpc.h) with
 * the instance name the benchmarks use.
 *
 * Benchmarks print figures and ratios; they never assert on time. A
 * benchmark exits non-zero only when an RPC or a check of its result failed,
 * because a figure measured over errors is worthless.
 */
#ifndef CASBOX_BENCH_COMMON_H
#define CASBOX_BENCH_COMMON_H

#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench_stats.h"
#include "reapi/reapi.h"
#include "rpc/rpc.h"

#define BENCH_HASH_HEX 64
#define BENCH_MAX_ARGS 32

/* --- clocks, sizes, statistics --- */

/* "100", "4K", "64M", "1G" (powers of 1024); -1 on garbage. */
int bench_parse_size(const char *s, uint64_t *out);
/* Fills buf with fast pseudo-random bytes (splitmix64 from seed). */
void bench_fill_random(void *buf, size_t len, uint64_t seed);
/* A random 64-bit value from the kernel. */
uint64_t bench_random_u64(void);
/* Keeps this process's large buffers in the heap (no mmap/munmap and fresh
 * page faults per 1 MiB message), so that the client measures the server,
 * not its own allocator. The daemon it starts is not affected. */
void bench_tune_malloc(void);

/* --- digests --- */

struct bench_digest {
    char hex[BENCH_HASH_HEX + 1];
    int64_t size;
};

void bench_sha256(const void *buf, size_t len, struct bench_digest *out);
/* Points pd at d (no copy: d must outlive pd). */
void bench_digest_to_proto(const struct bench_digest *d, Digest *pd);
/* Packs msg into a malloc'd buffer (*out, *len) and computes its digest. */
int bench_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len, struct bench_digest *d);

/* --- the private casboxd --- */

struct bench_daemon {
    pid_t pid;
    int port;
    char target[64]; /* 127.0.0.1:PORT */
    char workdir[PATH_MAX];
    char state[PATH_MAX];
    char log[PATH_MAX];
};

/* Makes <parent>/casbox-bench.XXXXXX and starts a watcher process that
 * removes it (after the daemon has gone) once this process exits, however it
 * exits, unless keep. Call before bench_client_open (grpc_init): it forks. */
int bench_workdir_create(const char *parent, bool keep, char *out, size_t out_len);
/* The casboxd to run: path if set, else $CASBOXD, else casboxd beside this
 * executable (build/bin/). */
const char *bench_casboxd_path(const char *path, char *buf, size_t len);
/* Starts casboxd --listen 127.0.0.1:<free port> --state-dir <workdir>/state
 * [extra...], stderr into <workdir>/casboxd.log, and waits for its
 * "casboxd: listening on" line. Call before bench_client_open: it forks. The daemon
 * gets SIGTERM if this process dies. */
int bench_daemon_start(struct bench_daemon *d, const char *casboxd, const char *workdir,
                       char *const *extra, int n_extra);
/* SIGTERM, then waits up to 30 s (SIGKILL after that). Returns the exit
 * status (0 is a clean shutdown), or -1. */
int bench_daemon_stop(struct bench_daemon *d);
/* Prints the last lines of the daemon's log to stderr. */
void bench_daemon_log_tail(const struct bench_daemon *d, int lines);
/* rm -rf. */
int bench_rm_rf(const char *path);

/* --- the gRPC client --- */

struct bench_client {
    struct rpc_client *rpc;
    const char *instance; /* "" */
};

/* Opens a plaintext channel to target (HOST:PORT) whose calls each have
 * timeout_s to complete; grpc_init. 0 or -1 after printing why. */
int bench_client_open(struct bench_client *c, const char *target, double timeout_s);
void bench_client_close(struct bench_client *c);

/* GetCapabilities, to check the server answers: 0 (and *exec_enabled), or -1
 * after printing why not. */
int bench_check_server(struct bench_client *c, const char *who, bool *exec_enabled);

/* Uploads len bytes of data to the blob d with ByteStream.Write in
 * chunk-byte messages: the blob itself, or (zstd) its zstd frame to
 * compressed-blobs/zstd. The WriteRequest is encoded by hand so that the data
 * is sent from the source buffer without a copy: a header slice, then the
 * data slice. The server must commit len bytes. 0, or -1 with st set. */
int bench_bytestream_write(struct bench_client *c, const struct bench_digest *d, bool zstd,
                           const uint8_t *data, size_t len, size_t chunk,
                           struct rpc_client_status *st);

/* Uploads n blobs with one BatchUpdateBlobs and checks every per-blob
 * status. 0, or -1 with the first problem in st. */
int bench_batch_update(struct bench_client *c, const struct bench_digest *digests,
                       const uint8_t *const *data, size_t n, struct rpc_client_status *st);

#endif
