/*
 * server_async.c - event-driven calls (RPC_POOL_EVENT; the model is in
 * rpc.h): a slow reader, a stalled writer or a long poll holds memory, not
 * a thread. A few event threads poll one shared completion queue that every
 * such call is bound to; each batch's tag is an rpc_async_op of the call,
 * whose done callback starts the call's next step. A call is freed when its
 * last reference goes: the handler's (dropped by rpc_call_finish), and one
 * per batch in flight, armed timer and queued offload, so a completion, a
 * timer and a resume may race without a lock of the call's own.
 */
#include "server_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define RPC_EVENT_THREADS   2
#define RPC_MAX_ASYNC_CALLS 10000
/* timers per call: a receive's and a send's stall timer, and a park's */
#define RPC_TIMERS_PER_CALL 3
/* a park past this wakes with -ETIMEDOUT (and may park again) */
#define RPC_MAX_PARK_MS (24u * 3600 * 1000)

static size_t rpc_method_index(const struct rpc_call *c)
{
    return (size_t)(c->method - c->srv->methods);
}

static void rpc_async_ref(struct rpc_call *c)
{
    atomic_fetch_add(&c->refs, 1);
}

/* Drops a reference; the last one ends the call's life. */
static void rpc_async_unref(struct rpc_call *c)
{
    struct rpc_server *srv = c->srv;
    struct rpc_async_state *a = &srv->async;
    bool begun = c->begun;

    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (!c->finished)
        LOG_E("%s: event-driven call dropped without a status", rpc_call_method(c));
    rpc_server_metrics_end(&srv->metrics, srv->methods, rpc_method_index(c), c->status,
                           c->arrived_us, begun);
    rpc_call_free(c);
    if (!begun)
        return; /* refused: never counted open */
    pthread_mutex_lock(&a->lock);
    if (--a->open == 0)
        pthread_cond_broadcast(&a->idle);
    pthread_mutex_unlock(&a->lock);
}

/* A batch waited server.stream_stall_timeout on its client. */
static void rpc_async_stall_fire(struct rpc_timer *t)
{
    struct rpc_async_op *op =
        (struct rpc_async_op *)((char *)t - offsetof(struct rpc_async_op, stall));
    struct rpc_call *c = op->call;

    LOG_I("%s: the client made no progress for %" PRIu64 " ms: call cancelled "
          "(server.stream_stall_timeout)",
          rpc_call_method(c), c->srv->stall_timeout_ms);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                 "the stream made no progress within "
                                 "server.stream_stall_timeout: cancelled",
                                 NULL);
    rpc_async_unref(c);
}

/* Starts ops with op as the tag, its stall timer armed: 0 or -EIO. */
static int rpc_async_batch(struct rpc_call *c, struct rpc_async_op *op, const grpc_op *ops,
                           size_t n)
{
    struct rpc_server *srv = c->srv;
    grpc_call_error e;

    rpc_async_ref(c); /* the batch's */
    if (srv->stall_timeout_ms > 0) {
        rpc_async_ref(c); /* the timer's */
        if (rpc_timer_arm(&srv->async.timers, &op->stall, srv->stall_timeout_ms) != 0)
            atomic_fetch_sub(&c->refs, 1); /* not armed: no stall limit this time */
    }
    e = grpc_call_start_batch(c->call, ops, n, op, NULL);
    if (e == GRPC_CALL_OK)
        return 0;
    LOG_E("%s: grpc_call_start_batch failed (%d)", rpc_call_method(c), e);
    if (rpc_timer_cancel(&srv->async.timers, &op->stall))
        atomic_fetch_sub(&c->refs, 1);
    atomic_fetch_sub(&c->refs, 1); /* the handler still holds one */
    return -EIO;
}

int rpc_call_async_recv(struct rpc_call *c, grpc_byte_buffer **out, rpc_async_fn done, void *state)
{
    grpc_op ops[2];
    size_t n = 0;
    int rc;

    *out = NULL;
    if (!c->async || c->finished)
        return -EINVAL;
    memset(ops, 0, sizeof(ops));
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = out;
    n++;
    c->recv_op.done = done;
    c->recv_op.state = state;
    c->recv_op.out = out;
    /* Before the start: the completion (and the next step) may run on
     * another thread before rpc_async_batch returns. */
    c->sent_initial_md = true;
    rc = rpc_async_batch(c, &c->recv_op, ops, n);
    if (rc != 0)
        c->sent_initial_md = n == 2 ? false : true;
    return rc;
}

static int rpc_async_send_buffer(struct rpc_call *c, grpc_byte_buffer *bb, rpc_async_fn done,
                                 void *state)
{
    grpc_op ops[2];
    size_t n = 0;
    int rc;

    if (!c->async || c->finished || !rpc_call_auth_may_answer(c)) {
        grpc_byte_buffer_destroy(bb);
        return c->async && !c->finished ? -EPERM : -EINVAL;
    }
    memset(ops, 0, sizeof(ops));
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->send_op.done = done;
    c->send_op.state = state;
    c->send_op.send = bb;
    c->sent_initial_md = true; /* before the start, as in rpc_call_async_recv */
    rc = rpc_async_batch(c, &c->send_op, ops, n);
    if (rc != 0) {
        c->sent_initial_md = n == 2 ? false : true;
        c->send_op.send = NULL;
        grpc_byte_buffer_destroy(bb);
    }
    return rc;
}

int rpc_call_async_send_raw(struct rpc_call *c, void *data, size_t len, void (*destroy)(void *),
                            void *user_data, rpc_async_fn done, void *state)
{
    grpc_slice slice = grpc_slice_new_with_user_data(data, len, destroy, user_data);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);

    grpc_slice_unref(slice);
    return rpc_async_send_buffer(c, bb, done, state);
}

int rpc_call_async_send(struct rpc_call *c, const ProtobufCMessage *msg, rpc_async_fn done,
                        void *state)
{
    grpc_byte_buffer *bb = rpc_message_pack(msg);

    if (bb == NULL)
        return -ENOMEM;
    return rpc_async_send_buffer(c, bb, done, state);
}

/* The park timer fired: resumed (advanced to now) or timed out. */
static void rpc_async_park_fire(struct rpc_timer *t)
{
    struct rpc_call *c = (struct rpc_call *)((char *)t - offsetof(struct rpc_call, park_timer));
    rpc_async_fn done = c->park_done;

    c->park_done = NULL;
    done(c->park_state, atomic_load(&c->resumed) ? 0 : -ETIMEDOUT);
    rpc_async_unref(c);
}

int rpc_call_park(struct rpc_call *c, uint64_t timeout_ms, rpc_async_fn done, void *state)
{
    int rc;

    if (!c->async || c->finished || c->park_done != NULL)
        return -EINVAL;
    if (timeout_ms == 0) {
        gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC),
                                         gpr_now(GPR_CLOCK_MONOTONIC));
        int64_t ms = gpr_time_to_millis(left);

        timeout_ms = ms <= 0 ? 1 : (uint64_t)ms;
    }
    if (timeout_ms > RPC_MAX_PARK_MS)
        timeout_ms = RPC_MAX_PARK_MS;
    c->park_done = done;
    c->park_state = state;
    atomic_store(&c->resumed, false);
    rpc_async_ref(c);
    rc = rpc_timer_arm(&c->srv->async.timers, &c->park_timer, timeout_ms);
    if (rc != 0) {
        c->park_done = NULL;
        atomic_fetch_sub(&c->refs, 1);
    }
    return rc;
}

bool rpc_call_resume(struct rpc_call *c)
{
    atomic_store(&c->resumed, true);
    return rpc_timer_advance(&c->srv->async.timers, &c->park_timer);
}

int rpc_call_offload(struct rpc_call *c, enum rpc_pool pool, rpc_async_fn done, void *state)
{
    if (!c->async || c->finished || pool >= RPC_POOL_COUNT || c->offload_done != NULL)
        return -EINVAL;
    c->offload_done = done;
    c->offload_state = state;
    rpc_async_ref(c);
    if (!rpc_pool_enqueue(&c->srv->pools[pool], c)) {
        c->offload_done = NULL;
        atomic_fetch_sub(&c->refs, 1);
        return -EAGAIN;
    }
    return 0;
}

void rpc_async_run_offloaded(struct rpc_call *c)
{
    rpc_async_fn done = c->offload_done;

    c->offload_done = NULL;
    done(c->offload_state, 0);
    rpc_async_unref(c);
}

int rpc_async_finish(struct rpc_call *c, const ProtobufCMessage *msg, const struct reapi_status *st)
{
    int rc;

    if (c->finished) {
        LOG_E("%s: finished twice", rpc_call_method(c));
        return -EALREADY;
    }
    c->finished = true;
    rpc_async_ref(c); /* the final batch's */
    rc = rpc_call_finish_begin(c, msg, st, &c->final_op);
    if (rc == -ENOMEM) {
        struct reapi_status oom;

        reapi_status_init(&oom);
        oom.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(oom.message, sizeof(oom.message), "out of memory");
        rc = rpc_call_finish_begin(c, NULL, &oom, &c->final_op);
    }
    if (rc != 0) {
        grpc_call_cancel(c->call, NULL);
        atomic_fetch_sub(&c->refs, 1); /* no final batch */
    }
    rpc_async_unref(c); /* the handler's: c may be gone now */
    return rc;
}

/* One completion of the shared queue. */
static void rpc_async_complete(struct rpc_async_op *op, bool success)
{
    struct rpc_call *c = op->call;
    rpc_async_fn done = op->done;
    int rc;

    if (op->kind == RPC_ASYNC_FINAL) {
        rpc_finish_state_free(&c->fin);
        rpc_async_unref(c);
        return;
    }
    if (rpc_timer_cancel(&c->srv->async.timers, &op->stall))
        atomic_fetch_sub(&c->refs, 1); /* the batch still holds one */
    op->done = NULL;
    if (op->kind == RPC_ASYNC_SEND) {
        grpc_byte_buffer_destroy(op->send);
        op->send = NULL;
        rc = success ? 0 : -ECANCELED;
    } else if (!success) {
        if (*op->out != NULL)
            grpc_byte_buffer_destroy(*op->out);
        *op->out = NULL;
        rc = -ECANCELED;
    } else {
        rc = *op->out != NULL ? 1 : 0; /* NULL: the client half-closed */
    }
    done(op->state, rc);
    rpc_async_unref(c);
}

static void *rpc_event_main(void *arg)
{
    struct rpc_server *srv = arg;

    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->async.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            rpc_async_complete(ev.tag, ev.success != 0);
    }
    return NULL;
}

static void rpc_async_op_init(struct rpc_call *c, struct rpc_async_op *op,
                              enum rpc_async_op_kind kind)
{
    op->call = c;
    op->kind = kind;
    op->stall.slot = SIZE_MAX;
    op->stall.fire = rpc_async_stall_fire;
}

void rpc_async_accept(struct rpc_call *c)
{
    struct rpc_server *srv = c->srv;
    struct rpc_async_state *a = &srv->async;
    bool full;

    rpc_async_op_init(c, &c->recv_op, RPC_ASYNC_RECV);
    rpc_async_op_init(c, &c->send_op, RPC_ASYNC_SEND);
    rpc_async_op_init(c, &c->final_op, RPC_ASYNC_FINAL);
    c->park_timer.slot = SIZE_MAX;
    c->park_timer.fire = rpc_async_park_fire;
    atomic_store(&c->refs, 1); /* the handler's */
    pthread_mutex_lock(&a->lock);
    full = a->open >= a->max_open;
    if (!full)
        a->open++;
    pthread_mutex_unlock(&a->lock);
    if (full) {
        LOG_W("%s: rejected, %" PRIu64 " event-driven calls open", c->method->path, a->max_open);
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "server busy: too many streams open (server.max_async_calls)");
        return;
    }
    c->begun = true;
    rpc_server_metrics_begin(&srv->metrics, rpc_method_index(c));
    if (rpc_call_authenticate(c) != 0)
        return; /* answered, and maybe freed already */
    c->method->handler(srv->ctx, c);
}

int rpc_async_start(struct rpc_server *srv, const struct rpc_server_options *opt)
{
    struct rpc_async_state *a = &srv->async;
    uint64_t threads = opt->event_threads ? opt->event_threads : RPC_EVENT_THREADS;
    int rc;

    a->max_open = opt->max_async_calls ? opt->max_async_calls : RPC_MAX_ASYNC_CALLS;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->idle, NULL);
    a->initialized = true;
    rc = rpc_timers_start(&a->timers, (size_t)a->max_open * RPC_TIMERS_PER_CALL);
    if (rc != 0)
        return rc;
    a->threads = calloc(threads, sizeof(*a->threads));
    if (a->threads == NULL)
        return -ENOMEM;
    for (uint64_t i = 0; i < threads; i++) {
        rc = -pthread_create(&a->threads[i], NULL, rpc_event_main, srv);
        if (rc != 0)
            return rc;
        a->n_threads++;
    }
    return 0;
}

void rpc_async_drain(struct rpc_server *srv)
{
    struct rpc_async_state *a = &srv->async;

    if (!a->initialized)
        return;
    rpc_timers_expedite(&a->timers);
    pthread_mutex_lock(&a->lock);
    while (a->open > 0 && a->n_threads > 0)
        pthread_cond_wait(&a->idle, &a->lock);
    pthread_mutex_unlock(&a->lock);
}

void rpc_async_stop(struct rpc_server *srv)
{
    struct rpc_async_state *a = &srv->async;

    /* The posted requests have all come back (the dispatcher has exited),
     * and no call is open: nothing can start a batch on the queue now. */
    grpc_completion_queue_shutdown(a->cq);
    for (uint64_t i = 0; i < a->n_threads; i++)
        pthread_join(a->threads[i], NULL);
    if (a->n_threads == 0) {
        while (grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
    }
    grpc_completion_queue_destroy(a->cq);
    a->cq = NULL;
    free(a->threads);
    a->threads = NULL;
    a->n_threads = 0;
    if (a->initialized) {
        rpc_timers_stop(&a->timers);
        pthread_cond_destroy(&a->idle);
        pthread_mutex_destroy(&a->lock);
        a->initialized = false;
    }
}
