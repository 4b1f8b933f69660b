/*
 * server_internal.h - what the server's files share: the call and server
 * structs, the blocking server (server.c), the event-driven calls
 * (server_async.c) and their timers (timer.c). Not a public header: rpc.h is.
 */
#ifndef CASBOX_RPC_SERVER_INTERNAL_H
#define CASBOX_RPC_SERVER_INTERNAL_H

#include "rpc_internal.h"

#include <stdatomic.h>

/* --- timers (timer.c) --- */

/* One timer, embedded in what it times; fire runs on the timer thread and
 * must not block. */
struct rpc_timer {
    uint64_t due_us;
    size_t slot; /* index in the heap; SIZE_MAX: not armed */
    void (*fire)(struct rpc_timer *t);
};

/* A bounded heap of armed timers and the one thread that fires them. */
struct rpc_timers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct rpc_timer **heap;
    size_t n, cap;
    bool stopping; /* the thread exits */
    bool expedite; /* shutdown: every timer is due now */
    pthread_t thread;
    bool started;
};

int rpc_timers_start(struct rpc_timers *ts, size_t cap);
/* Arms t to fire after delay_ms: 0, -EALREADY when it is armed, -ENOSPC
 * when cap timers are armed. */
int rpc_timer_arm(struct rpc_timers *ts, struct rpc_timer *t, uint64_t delay_ms);
/* true when t was armed and now will not fire; false when it has fired or
 * is firing (its fire runs or ran). */
bool rpc_timer_cancel(struct rpc_timers *ts, struct rpc_timer *t);
/* Makes an armed t due now: true, or false when it has fired already. */
bool rpc_timer_advance(struct rpc_timers *ts, struct rpc_timer *t);
/* From now on every timer fires at once (shutdown). */
void rpc_timers_expedite(struct rpc_timers *ts);
/* Fires what is left, stops the thread and frees the heap. */
void rpc_timers_stop(struct rpc_timers *ts);

/* --- the server --- */

/* What the final batch points to until it completes. */
struct rpc_finish_state {
    grpc_byte_buffer *bb;
    grpc_slice details;
    grpc_metadata trailer;
    uint8_t *packed;
    Google__Rpc__Status *proto;
    int cancelled;
    bool started;
};

enum rpc_async_op_kind { RPC_ASYNC_RECV, RPC_ASYNC_SEND, RPC_ASYNC_FINAL };

/* One batch of an event-driven call in flight: the completion queue's tag. */
struct rpc_async_op {
    struct rpc_call *call;
    enum rpc_async_op_kind kind;
    rpc_async_fn done;
    void *state;
    grpc_byte_buffer **out; /* RECV: where the message lands */
    grpc_byte_buffer *send; /* SEND: destroyed on completion */
    struct rpc_timer stall; /* RECV, SEND: server.stream_stall_timeout */
};

struct rpc_call {
    struct rpc_server *srv;
    const struct rpc_method *method; /* NULL: the generic (unregistered) request */
    grpc_call *call;
    grpc_completion_queue *cq; /* a pluck queue of its own, or the shared event queue */
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic requests only */
    bool sent_initial_md;
    bool finished;
    struct rpc_finish_state fin; /* the final batch, until it completes */
    struct rpc_call *next;       /* pool queue link */
    uint64_t arrived_us;         /* when the dispatcher got it (debug log, latency) */
    struct rpc_call_auth auth;   /* authorize.c */
    grpc_status_code status;     /* what the final batch sent (metrics) */

    /* Event-driven calls (RPC_POOL_EVENT, server_async.c). The call lives
     * while refs > 0: one for the handler until it finishes, one per batch
     * in flight, armed timer and queued offload. */
    bool async;
    bool begun; /* counted in flight (metrics) */
    atomic_uint refs;
    struct rpc_async_op recv_op, send_op, final_op;
    struct rpc_timer park_timer;
    rpc_async_fn park_done, offload_done;
    void *park_state, *offload_state;
    atomic_bool resumed;
};

struct rpc_pool_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct rpc_call *head, *tail;
    uint64_t queued;
    uint64_t max_queued;
    bool stopping;
    pthread_t *threads;
    uint64_t n_threads;
};

/* The event threads and the shared queue of every event-driven call. */
struct rpc_async_state {
    grpc_completion_queue *cq;
    pthread_t *threads;
    uint64_t n_threads;
    pthread_mutex_t lock;
    pthread_cond_t idle; /* open dropped to 0 */
    uint64_t open, max_open;
    struct rpc_timers timers;
    bool initialized;
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *notify_cq;
    const struct rpc_method *methods;
    void **handles; /* registered method handles, parallel to methods */
    size_t n_methods;
    void *ctx;
    pthread_t dispatcher;
    bool dispatcher_started;
    int shutdown_tag;
    uint64_t pending_requests; /* dispatcher thread only */
    bool shutting_down;        /* dispatcher thread only */
    struct rpc_pool_state pools[RPC_POOL_COUNT];
    struct rpc_server_auth auth;     /* authorize.c */
    struct rpc_server_tls_state tls; /* tls.c */
    struct rpc_server_metrics metrics;
    uint64_t stall_timeout_ms; /* rpc_server_options */
    struct rpc_async_state async;
};

/* server.c */
void rpc_call_free(struct rpc_call *c);
/* Starts the final batch with tag: 0, -ENOMEM (nothing started) or -EIO. */
int rpc_call_finish_begin(struct rpc_call *c, const ProtobufCMessage *msg,
                          const struct reapi_status *st, void *tag);
void rpc_finish_state_free(struct rpc_finish_state *f);
/* Queues c to pool p: false when it is full or stopping. */
bool rpc_pool_enqueue(struct rpc_pool_state *p, struct rpc_call *c);

/* server_async.c */
int rpc_async_start(struct rpc_server *srv, const struct rpc_server_options *opt);
/* Shutdown: wakes parked calls and waits until every event-driven call has
 * ended (the server's calls are cancelled and no request is posted). */
void rpc_async_drain(struct rpc_server *srv);
/* Then: stops the event threads and the timers. */
void rpc_async_stop(struct rpc_server *srv);
/* A new call of an RPC_POOL_EVENT method from the dispatcher: refused when
 * server.max_async_calls are open, else authenticated and its handler run. */
void rpc_async_accept(struct rpc_call *c);
/* rpc_call_finish of an event-driven call: starts the final batch and drops
 * the handler's reference (the call may be gone when it returns). */
int rpc_async_finish(struct rpc_call *c, const ProtobufCMessage *msg,
                     const struct reapi_status *st);
/* A pool thread runs an offloaded step of c. */
void rpc_async_run_offloaded(struct rpc_call *c);

#endif
