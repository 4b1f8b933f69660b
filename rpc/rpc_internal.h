/*
 * rpc_internal.h - what the server (server.c) and the client (client.c)
 * both do with a grpc call (call.c). Not a public header: rpc.h is.
 */
#ifndef CASBOX_RPC_INTERNAL_H
#define CASBOX_RPC_INTERNAL_H

#include <stdatomic.h>

#include "rpc.h"

/* msg packed into a new byte buffer (grpc owns the bytes), or NULL. */
grpc_byte_buffer *rpc_message_pack(const ProtobufCMessage *msg);
/* Starts a batch on call and plucks its completion from cq (tag must be
 * unique among the batches of cq in flight). 0, -EIO when the batch could
 * not start (nothing to pluck), -ECANCELED when it completed unsuccessfully
 * (the call ended: the peer went away, the deadline passed, a shutdown). */
int rpc_batch_run(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n,
                  void *tag);
/* Shuts a pluck queue down, drains it and destroys it. */
void rpc_queue_destroy(grpc_completion_queue *cq);

/* The server's metrics (server_metrics.c): requests by service, method and
 * code, latency by method, calls in flight. Series per method are looked up
 * once at start; NULL registry: nothing is recorded. */
struct metrics;
struct metrics_series;
struct rpc_server_metrics {
    struct metrics_family *requests;
    struct metrics_series **latency;  /* per method */
    struct metrics_series **inflight; /* per method */
    /* requests per method and code, looked up at first use then kept, so
     * that a call's end costs atomics only */
    _Atomic(struct metrics_series *) *by_code;
    size_t n_methods;
};
int rpc_server_metrics_init(struct rpc_server_metrics *sm, struct metrics *m,
                            const struct rpc_method *methods, size_t n_methods);
void rpc_server_metrics_free(struct rpc_server_metrics *sm);
/* A call of methods[i] (SIZE_MAX: an unregistered method) begins / ends with
 * code after started_us (clock_mono_us); begun: _begin was called for it (a
 * call rejected before a handler ran was never in flight). */
void rpc_server_metrics_begin(struct rpc_server_metrics *sm, size_t i);
void rpc_server_metrics_end(struct rpc_server_metrics *sm, const struct rpc_method *methods,
                            size_t i, grpc_status_code code, uint64_t started_us, bool begun);

#endif
