/*
 * bench_common.h - what cas_bench and exec_bench share: clocks and
 * statistics, a private casboxd (free port, fresh state dir, removed on exit
 * even when the benchmark is killed), and a small blocking gRPC client on
 * grpc core for protobuf-c messages.
 *
 * Benchmarks print figures and ratios; they never assert on time. A
 * benchmark exits non-zero only when an RPC or a check of its result failed,
 * because a figure measured over errors is worthless.
 */
#ifndef CASBOX_BENCH_COMMON_H
#define CASBOX_BENCH_COMMON_H

#include <grpc/grpc.h>
#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench_stats.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"

#define BENCH_HASH_HEX 64
#define BENCH_MAX_ARGS 32

typedef Build__Bazel__Remote__Execution__V2__Digest bench_pb_digest;

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
void bench_digest_to_proto(const struct bench_digest *d, bench_pb_digest *pd);
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
 * exits, unless keep. Call before grpc_init: it forks. */
int bench_workdir_create(const char *parent, bool keep, char *out, size_t out_len);
/* The casboxd to run: path if set, else $CASBOXD, else casboxd beside this
 * executable (build/bin/). */
const char *bench_casboxd_path(const char *path, char *buf, size_t len);
/* Starts casboxd --listen 127.0.0.1:<free port> --state-dir <workdir>/state
 * [extra...], stderr into <workdir>/casboxd.log, and waits for its
 * "casboxd: listening on" line. Call before grpc_init: it forks. The daemon
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

enum bench_method {
    BM_GET_CAPABILITIES,
    BM_FIND_MISSING,
    BM_BATCH_UPDATE,
    BM_BS_READ,
    BM_BS_WRITE,
    BM_EXECUTE,
    BM_COUNT,
};

struct bench_client {
    grpc_channel *channel;
    grpc_completion_queue *cq; /* pluck queue for blocking calls */
    void *method[BM_COUNT];    /* grpc_channel_register_call handles */
    const char *instance;      /* "" by default */
    double timeout_s;          /* deadline of each call */
};

/* Opens a plaintext channel (max receive message 64 MiB) and registers the
 * methods. grpc_init must have been called. */
int bench_client_open(struct bench_client *c, const char *target);
void bench_client_close(struct bench_client *c);
/* A deadline timeout_s from now. */
gpr_timespec bench_deadline(double timeout_s);

/* The outcome of a call: the gRPC status code and its message. */
struct bench_status {
    grpc_status_code code;
    char message[512];
};

/* Fills st from a call's status and details slice (unrefs details). */
void bench_status_set(struct bench_status *st, grpc_status_code code, grpc_slice details);
/* A blocking unary call: sends req, unpacks the response with resp_desc into
 * *resp (free with protobuf_c_message_free_unpacked). Returns st->code. */
grpc_status_code bench_unary(struct bench_client *c, enum bench_method m,
                             const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                             struct bench_status *st);
/* Unpacks a received byte buffer. NULL if it does not parse. */
ProtobufCMessage *bench_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc);

/* GetCapabilities, to check the server answers: 0 (and *exec_enabled), or -1
 * after printing why not. */
int bench_check_server(struct bench_client *c, const char *who, bool *exec_enabled);

/* Uploads n blobs with one BatchUpdateBlobs and checks every per-blob
 * status. 0, or -1 with the first problem in st. */
int bench_batch_update(struct bench_client *c, const struct bench_digest *digests,
                       const uint8_t *const *data, size_t n, struct bench_status *st);

#endif
