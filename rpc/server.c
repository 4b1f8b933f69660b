/*
 * server.c - the gRPC server: dispatcher, bounded thread pools and the
 * blocking call operations handlers use (see rpc.h for the model).
 *
 * Lifetimes. An rpc_call is allocated when a request is posted, with its own
 * pluck completion queue that the future call is bound to. The dispatcher
 * receives the notification, posts the next request for the method, and
 * queues the call to its pool; a pool thread runs the handler, which ends the
 * call with rpc_call_finish; then the call, its queue and its buffers are
 * freed. On shutdown the server cancels every call, so blocked handler
 * operations fail fast; requests never matched come back with success == 0
 * and are freed by the dispatcher. The notification queue is shut down only
 * after the server's shutdown tag arrived, every posted request came back and
 * every pool thread has been joined (grpc aborts if a batch is started on a
 * call whose queue is already shut down).
 *
 * The final batch can be started by another thread (rpc_call_finish_start)
 * while the handler's thread is blocked elsewhere; the handler's thread then
 * plucks its completion (rpc_call_finish_wait). Its buffers live in the call
 * until then.
 */
#include "server_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define STATUS_DETAILS_KEY "grpc-status-details-bin"

void rpc_call_free(struct rpc_call *c)
{
    if (c == NULL)
        return;
    rpc_call_auth_release(c);
    if (c->call != NULL)
        grpc_call_unref(c->call);
    if (c->fin.started && !c->async)
        rpc_call_finish_wait(c);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    grpc_metadata_array_destroy(&c->request_md);
    if (c->method == NULL)
        grpc_call_details_destroy(&c->details);
    if (c->cq != NULL && !c->async)
        rpc_queue_destroy(c->cq); /* the shared event queue is the server's */
    free(c);
}

/* Starts a batch and waits for it. 0 on success, -ECANCELED when the call
 * failed (client gone, deadline, server shutdown). */
static int rpc_call_run_batch(struct rpc_call *c, const grpc_op *ops, size_t n)
{
    gpr_timespec limit;
    grpc_event ev;
    int rc;

    if (c->async) {
        LOG_E("%s: a blocking operation on an event-driven call", rpc_call_method(c));
        return -EINVAL;
    }
    if (c->srv->stall_timeout_ms == 0) {
        rc = rpc_batch_run(c->call, c->cq, ops, n, c);
        goto out;
    }
    /* A client that neither reads nor writes must not keep the thread. */
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
        rc = -EIO;
        goto out;
    }
    limit = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis((int64_t)c->srv->stall_timeout_ms, GPR_TIMESPAN));
    ev = grpc_completion_queue_pluck(c->cq, c, limit, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        LOG_I("%s: the client made no progress for %" PRIu64 " ms: call cancelled "
              "(server.stream_stall_timeout)",
              rpc_call_method(c), c->srv->stall_timeout_ms);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "the stream made no progress within "
                                     "server.stream_stall_timeout: cancelled to free its thread",
                                     NULL);
        ev = grpc_completion_queue_pluck(c->cq, c, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        rc = -ECANCELED;
        goto out;
    }
    rc = ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -ECANCELED;
out:
    if (rc == -EIO)
        LOG_E("%s: grpc_call_start_batch failed", rpc_call_method(c));
    return rc;
}

static int rpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **out)
{
    *out = rpc_message_unpack(bb, desc);
    return *out != NULL ? 0 : -EINVAL;
}

int rpc_call_request(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out)
{
    *out = NULL;
    if (c->payload == NULL)
        return -EINVAL;
    return rpc_unpack(c->payload, desc, out);
}

grpc_byte_buffer *rpc_call_request_buffer(struct rpc_call *c)
{
    return c->payload;
}

int rpc_call_recv_buffer(struct rpc_call *c, grpc_byte_buffer **out)
{
    grpc_op ops[2];
    size_t n = 0;
    int rc;

    *out = NULL;
    memset(ops, 0, sizeof(ops));
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = out;
    n++;
    rc = rpc_call_run_batch(c, ops, n);
    c->sent_initial_md = true;
    if (rc != 0) {
        if (*out != NULL)
            grpc_byte_buffer_destroy(*out);
        *out = NULL;
        return rc;
    }
    return *out != NULL ? 1 : 0; /* NULL: the client half-closed */
}

int rpc_call_recv(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                  ProtobufCMessage **out)
{
    grpc_byte_buffer *bb = NULL;
    int rc;

    *out = NULL;
    rc = rpc_call_recv_buffer(c, &bb);
    if (rc <= 0)
        return rc;
    rc = rpc_unpack(bb, desc, out);
    grpc_byte_buffer_destroy(bb);
    return rc == 0 ? 1 : rc;
}

static int rpc_call_send_buffer(struct rpc_call *c, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    int rc;

    if (!rpc_call_auth_may_answer(c)) {
        grpc_byte_buffer_destroy(bb);
        return -EPERM;
    }
    memset(ops, 0, sizeof(ops));
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    rc = rpc_call_run_batch(c, ops, n);
    c->sent_initial_md = true;
    grpc_byte_buffer_destroy(bb);
    return rc;
}

int rpc_call_send(struct rpc_call *c, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = rpc_message_pack(msg);

    if (bb == NULL)
        return -ENOMEM;
    return rpc_call_send_buffer(c, bb);
}

int rpc_call_send_raw(struct rpc_call *c, void *data, size_t len, void (*destroy)(void *),
                      void *user_data)
{
    grpc_slice slice = grpc_slice_new_with_user_data(data, len, destroy, user_data);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);

    grpc_slice_unref(slice);
    return rpc_call_send_buffer(c, bb);
}

/* Frees what the final batch needed until its completion. */
void rpc_finish_state_free(struct rpc_finish_state *f)
{
    if (f->bb != NULL)
        grpc_byte_buffer_destroy(f->bb);
    grpc_slice_unref(f->details);
    if (f->packed != NULL) {
        grpc_slice_unref(f->trailer.key);
        grpc_slice_unref(f->trailer.value);
    }
    free(f->packed);
    reapi_status_proto_free(f->proto);
    memset(f, 0, sizeof(*f));
}

/* Fills the ops of the final batch; n set to their count. */
static int rpc_finish_ops(struct rpc_call *c, const ProtobufCMessage *msg,
                          const struct reapi_status *st, grpc_op *ops, size_t *n)
{
    struct rpc_finish_state *f = &c->fin;

    memset(f, 0, sizeof(*f));
    *n = 0;
    if (!c->sent_initial_md) {
        ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
        (*n)++;
    }
    if (msg != NULL && (st == NULL || reapi_status_ok(st))) {
        f->bb = rpc_message_pack(msg);
        if (f->bb == NULL)
            return -ENOMEM;
        ops[*n].op = GRPC_OP_SEND_MESSAGE;
        ops[*n].data.send_message.send_message = f->bb;
        (*n)++;
    }
    ops[*n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[*n].data.send_status_from_server.status = st ? st->code : GRPC_STATUS_OK;
    c->status = st ? st->code : GRPC_STATUS_OK;
    f->details = grpc_slice_from_copied_string(st ? st->message : "");
    ops[*n].data.send_status_from_server.status_details = &f->details;
    if (st != NULL && !reapi_status_ok(st)) {
        f->proto = reapi_status_to_proto(st);
        if (f->proto != NULL) {
            size_t len = google__rpc__status__get_packed_size(f->proto);

            f->packed = malloc(len ? len : 1);
            if (f->packed != NULL) {
                google__rpc__status__pack(f->proto, f->packed);
                f->trailer.key = grpc_slice_from_static_string(STATUS_DETAILS_KEY);
                f->trailer.value = grpc_slice_from_copied_buffer((const char *)f->packed, len);
                ops[*n].data.send_status_from_server.trailing_metadata_count = 1;
                ops[*n].data.send_status_from_server.trailing_metadata = &f->trailer;
            }
        }
    }
    (*n)++;
    ops[*n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[*n].data.recv_close_on_server.cancelled = &f->cancelled;
    (*n)++;
    return 0;
}

int rpc_call_finish_begin(struct rpc_call *c, const ProtobufCMessage *msg,
                          const struct reapi_status *st, void *tag)
{
    grpc_op ops[4];
    size_t n;
    grpc_call_error e;
    int rc;

    if ((st == NULL || reapi_status_ok(st)) && !rpc_call_auth_may_answer(c)) {
        struct reapi_status refused;

        reapi_status_init(&refused);
        refused.code = GRPC_STATUS_INTERNAL;
        snprintf(refused.message, sizeof(refused.message),
                 "internal error: %s answered without an authorization check", rpc_call_method(c));
        return rpc_call_finish_begin(c, NULL, &refused, tag);
    }
    memset(ops, 0, sizeof(ops));
    rc = rpc_finish_ops(c, msg, st, ops, &n);
    if (rc != 0) {
        rpc_finish_state_free(&c->fin);
        return rc;
    }
    c->sent_initial_md = true;
    e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        LOG_E("%s: grpc_call_start_batch failed (%d)", rpc_call_method(c), e);
        rpc_finish_state_free(&c->fin);
        return -EIO;
    }
    c->fin.started = true;
    return 0;
}

int rpc_call_finish_start(struct rpc_call *c, const ProtobufCMessage *msg)
{
    int rc;

    if (c->finished) {
        LOG_E("%s: finished twice", rpc_call_method(c));
        return -EALREADY;
    }
    rc = c->async ? -EINVAL : rpc_call_finish_begin(c, msg, NULL, &c->fin);
    if (rc == 0)
        c->finished = true;
    return rc;
}

int rpc_call_finish_wait(struct rpc_call *c)
{
    grpc_event ev;
    int rc = 0;

    if (!c->fin.started)
        return -EINVAL;
    ev = grpc_completion_queue_pluck(c->cq, &c->fin, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE || !ev.success)
        rc = -ECANCELED;
    rpc_finish_state_free(&c->fin);
    return rc;
}

/* Ends an already marked-finished call with a status and no message (the
 * out-of-memory path of rpc_call_finish). */
static int rpc_call_fail_now(struct rpc_call *c, grpc_status_code code, const char *message)
{
    struct reapi_status st;
    int rc;

    reapi_status_init(&st);
    st.code = code;
    snprintf(st.message, sizeof(st.message), "%s", message);
    rc = rpc_call_finish_begin(c, NULL, &st, &c->fin);
    return rc != 0 ? rc : rpc_call_finish_wait(c);
}

int rpc_call_finish(struct rpc_call *c, const ProtobufCMessage *msg, const struct reapi_status *st)
{
    int rc;

    if (c->async)
        return rpc_async_finish(c, msg, st);
    if (c->finished) {
        LOG_E("%s: finished twice", rpc_call_method(c));
        return -EALREADY;
    }
    c->finished = true;
    rc = rpc_call_finish_begin(c, msg, st, &c->fin);
    if (rc == -ENOMEM)
        return rpc_call_fail_now(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (rc != 0)
        return rc;
    return rpc_call_finish_wait(c);
}

int rpc_call_fail(struct rpc_call *c, grpc_status_code code, const char *fmt, ...)
{
    struct reapi_status st;
    va_list ap;

    reapi_status_init(&st);
    st.code = code;
    va_start(ap, fmt);
    vsnprintf(st.message, sizeof(st.message), fmt, ap);
    va_end(ap);
    return rpc_call_finish(c, NULL, &st);
}

gpr_timespec rpc_call_deadline(const struct rpc_call *c)
{
    return c->deadline;
}

const char *rpc_call_method(const struct rpc_call *c)
{
    return c->method ? c->method->path : "(unregistered)";
}

const char *rpc_call_metadata(const struct rpc_call *c, const char *key, size_t *len)
{
    size_t klen = strlen(key);

    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *m = &c->request_md.metadata[i];

        if (GRPC_SLICE_LENGTH(m->key) == klen &&
            memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) == 0) {
            *len = GRPC_SLICE_LENGTH(m->value);
            return (const char *)GRPC_SLICE_START_PTR(m->value);
        }
    }
    return NULL;
}

/* Answers a call without running a handler and without waiting for the client
 * to half-close (the dispatcher must never block on a client). */
static void rpc_call_reject(struct rpc_call *c, grpc_status_code code, const char *message)
{
    grpc_op ops[2];
    grpc_slice details = grpc_slice_from_copied_string(message);
    gpr_timespec limit =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(5, GPR_TIMESPAN));
    grpc_event ev;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = code;
    ops[1].data.send_status_from_server.status_details = &details;
    if (grpc_call_start_batch(c->call, ops, 2, c, NULL) == GRPC_CALL_OK) {
        ev = grpc_completion_queue_pluck(c->cq, c, limit, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            grpc_call_cancel(c->call, NULL);
            grpc_completion_queue_pluck(c->cq, c, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
    }
    grpc_slice_unref(details);
    rpc_server_metrics_end(&c->srv->metrics, c->srv->methods,
                           c->method ? (size_t)(c->method - c->srv->methods) : SIZE_MAX, code,
                           c->arrived_us, false);
    rpc_call_free(c);
}

static int rpc_server_post(struct rpc_server *srv, size_t method_index)
{
    struct rpc_call *c = calloc(1, sizeof(*c));
    grpc_call_error e;

    if (c == NULL)
        return -ENOMEM;
    c->srv = srv;
    grpc_metadata_array_init(&c->request_md);
    if (method_index != SIZE_MAX && srv->methods[method_index].pool == RPC_POOL_EVENT) {
        c->async = true;
        c->cq = srv->async.cq;
    } else {
        c->cq = grpc_completion_queue_create_for_pluck(NULL);
    }
    if (method_index == SIZE_MAX) {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->request_md, c->cq,
                                     srv->notify_cq, c);
    } else {
        const struct rpc_method *m = &srv->methods[method_index];

        c->method = m;
        e = grpc_server_request_registered_call(
            srv->server, srv->handles[method_index], &c->call, &c->deadline, &c->request_md,
            m->kind == RPC_CLIENT_STREAM ? NULL : &c->payload, c->cq, srv->notify_cq, c);
    }
    if (e != GRPC_CALL_OK) {
        LOG_E("posting a request failed (%d)", e);
        rpc_call_free(c);
        return -EIO;
    }
    srv->pending_requests++;
    return 0;
}

static size_t rpc_server_method_index(const struct rpc_server *srv, const struct rpc_call *c)
{
    return c->method == NULL ? SIZE_MAX : (size_t)(c->method - srv->methods);
}

bool rpc_pool_enqueue(struct rpc_pool_state *p, struct rpc_call *c)
{
    bool full;

    pthread_mutex_lock(&p->lock);
    full = p->queued >= p->max_queued || p->stopping;
    if (!full) {
        c->next = NULL;
        if (p->tail != NULL)
            p->tail->next = c;
        else
            p->head = c;
        p->tail = c;
        p->queued++;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return !full;
}

static void rpc_pool_push(struct rpc_server *srv, struct rpc_call *c)
{
    struct rpc_pool_state *p = &srv->pools[c->method->pool];

    if (!rpc_pool_enqueue(p, c)) {
        LOG_W("%s: rejected, %" PRIu64 " calls already queued", c->method->path, p->max_queued);
        rpc_call_reject(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "server busy: too many calls in flight (server.max_inflight_calls)");
    }
}

static void *rpc_dispatcher_main(void *arg)
{
    struct rpc_server *srv = arg;
    bool shutdown_seen = false;

    while (!shutdown_seen || srv->pending_requests > 0) {
        grpc_event ev =
            grpc_completion_queue_next(srv->notify_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        struct rpc_call *c;

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (ev.tag == &srv->shutdown_tag) {
            shutdown_seen = true;
            continue;
        }
        c = ev.tag;
        c->arrived_us = clock_mono_us();
        srv->pending_requests--;
        if (!ev.success) {
            rpc_call_free(c); /* a posted request cancelled by shutdown */
            continue;
        }
        if (!srv->shutting_down && rpc_server_post(srv, rpc_server_method_index(srv, c)) != 0)
            LOG_E("could not re-post a request; that method may stop being served");
        if (c->method == NULL) {
            char method[256];
            size_t len = GRPC_SLICE_LENGTH(c->details.method);

            if (len >= sizeof(method))
                len = sizeof(method) - 1;
            memcpy(method, GRPC_SLICE_START_PTR(c->details.method), len);
            method[len] = '\0';
            LOG_D("unimplemented method %s", method);
            char msg[320];
            snprintf(msg, sizeof(msg), "method %s is not implemented by casboxd", method);
            rpc_call_reject(c, GRPC_STATUS_UNIMPLEMENTED, msg);
            continue;
        }
        if (c->method->pool == RPC_POOL_EVENT)
            rpc_async_accept(c);
        else
            rpc_pool_push(srv, c);
    }
    return NULL;
}

static void *rpc_pool_main(void *arg)
{
    struct rpc_call *c;
    struct rpc_server *srv;
    struct rpc_pool_state *p = arg;
    uint64_t start_us;

    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        c = p->head;
        if (c == NULL) {
            pthread_mutex_unlock(&p->lock);
            break; /* stopping and drained */
        }
        p->head = c->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);

        if (c->async) {
            rpc_async_run_offloaded(c); /* a step of an event-driven call */
            continue;
        }
        srv = c->srv;
        start_us = log_enabled(LOG_LEVEL_DEBUG) ? clock_mono_us() : 0;
        rpc_server_metrics_begin(&srv->metrics, (size_t)(c->method - srv->methods));
        if (rpc_call_authenticate(c) == 0)
            c->method->handler(srv->ctx, c);
        if (start_us != 0)
            LOG_D("%s: %.2f ms in the handler after %.2f ms queued", c->method->path,
                  (double)(clock_mono_us() - start_us) / 1e3,
                  (double)(start_us - c->arrived_us) / 1e3);
        if (!c->finished) {
            LOG_E("%s: handler returned without a status", c->method->path);
            rpc_call_fail(c, GRPC_STATUS_INTERNAL, "internal error: no response");
        }
        rpc_server_metrics_end(&srv->metrics, srv->methods, (size_t)(c->method - srv->methods),
                               c->status, c->arrived_us, true);
        rpc_call_free(c);
    }
    return NULL;
}

static int rpc_pool_start(struct rpc_pool_state *p, uint64_t threads, uint64_t queue_length)
{
    int rc;

    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->max_queued = queue_length;
    p->threads = calloc(threads, sizeof(*p->threads));
    if (p->threads == NULL)
        return -ENOMEM;
    for (uint64_t i = 0; i < threads; i++) {
        rc = pthread_create(&p->threads[i], NULL, rpc_pool_main, p);
        if (rc != 0)
            return -rc;
        p->n_threads++;
    }
    return 0;
}

static void rpc_pool_stop(struct rpc_pool_state *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (uint64_t i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    p->n_threads = 0;
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}

int rpc_server_start(const struct rpc_server_options *opt, const struct rpc_method *methods,
                     size_t n_methods, void *ctx, struct rpc_server **out)
{
    struct rpc_server *srv = calloc(1, sizeof(*srv));
    grpc_arg args[3];
    grpc_channel_args channel_args = {3, args};
    grpc_server_credentials *creds;
    int rc = -ENOMEM;
    int port;

    if (srv == NULL)
        return -ENOMEM;
    srv->methods = methods;
    srv->n_methods = n_methods;
    srv->ctx = ctx;
    rpc_server_auth_init(&srv->auth, opt);
    srv->stall_timeout_ms = opt->stall_timeout_ms;
    srv->handles = calloc(n_methods, sizeof(*srv->handles));
    if (srv->handles == NULL)
        goto fail;
    rc = rpc_server_metrics_init(&srv->metrics, opt->metrics, methods, n_methods);
    if (rc != 0)
        goto fail;
    rc = -ENOMEM;

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)opt->max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)opt->max_message_bytes;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[2].value.integer = 1000;
    srv->notify_cq = grpc_completion_queue_create_for_next(NULL);
    srv->server = grpc_server_create(&channel_args, NULL);
    grpc_server_register_completion_queue(srv->server, srv->notify_cq, NULL);
    srv->async.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->async.cq, NULL);
    for (size_t i = 0; i < n_methods; i++) {
        grpc_server_register_method_payload_handling payload =
            methods[i].kind == RPC_CLIENT_STREAM ? GRPC_SRM_PAYLOAD_NONE
                                                 : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;

        srv->handles[i] =
            grpc_server_register_method(srv->server, methods[i].path, NULL, payload, 0);
        if (srv->handles[i] == NULL) {
            LOG_E("cannot register %s", methods[i].path);
            rc = -EINVAL;
            goto fail_server;
        }
    }
    creds = rpc_tls_server_credentials(opt, &srv->tls);
    port = grpc_server_add_http2_port(srv->server, opt->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        LOG_E("cannot listen on %s (address in use or invalid)", opt->listen);
        rc = -EADDRINUSE;
        goto fail_server;
    }
    grpc_server_start(srv->server);

    rc = rpc_async_start(srv, opt);
    if (rc != 0)
        goto fail_started;
    for (int p = 0; p < RPC_POOL_COUNT; p++) {
        rc = rpc_pool_start(&srv->pools[p], opt->threads[p], opt->queue_length[p]);
        if (rc != 0)
            goto fail_started;
    }
    for (size_t i = 0; i < n_methods; i++) {
        rc = rpc_server_post(srv, i);
        if (rc != 0)
            goto fail_started;
    }
    rc = rpc_server_post(srv, SIZE_MAX);
    if (rc != 0)
        goto fail_started;
    rc = -pthread_create(&srv->dispatcher, NULL, rpc_dispatcher_main, srv);
    if (rc != 0)
        goto fail_started;
    srv->dispatcher_started = true;
    *out = srv;
    return 0;

fail_started:
    rpc_server_stop(srv);
    return rc;
fail_server:
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->notify_cq);
    grpc_completion_queue_destroy(srv->notify_cq);
    grpc_completion_queue_shutdown(srv->async.cq);
    grpc_completion_queue_destroy(srv->async.cq);
fail:
    rpc_tls_state_destroy(&srv->tls);
    rpc_server_auth_destroy(&srv->auth);
    rpc_server_metrics_free(&srv->metrics);
    free(srv->handles);
    free(srv);
    return rc;
}

void rpc_server_stop(struct rpc_server *srv)
{
    if (srv == NULL)
        return;
    srv->shutting_down = true;
    grpc_server_shutdown_and_notify(srv->server, srv->notify_cq, &srv->shutdown_tag);
    grpc_server_cancel_all_calls(srv->server);
    /* A parked event-driven call has no batch to fail: wake it (its step
     * then fails on the cancelled call), so that grpc's shutdown, which
     * waits for every call, can end. */
    if (srv->async.initialized)
        rpc_timers_expedite(&srv->async.timers);
    if (srv->dispatcher_started) {
        pthread_join(srv->dispatcher, NULL);
    } else {
        /* Started pools but no dispatcher: drain the notifications here. */
        bool seen = false;

        while (!seen || srv->pending_requests > 0) {
            grpc_event ev = grpc_completion_queue_next(srv->notify_cq,
                                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE)
                break;
            if (ev.tag == &srv->shutdown_tag) {
                seen = true;
                continue;
            }
            srv->pending_requests--;
            rpc_call_free(ev.tag);
        }
    }
    /* Parked event-driven calls wake now, and every one ends (their
     * offloaded steps need the pools); then the pools stop, then the event
     * threads. */
    rpc_async_drain(srv);
    for (int p = 0; p < RPC_POOL_COUNT; p++) {
        if (srv->pools[p].threads != NULL)
            rpc_pool_stop(&srv->pools[p]);
    }
    rpc_async_stop(srv);
    grpc_completion_queue_shutdown(srv->notify_cq);
    while (
        grpc_completion_queue_next(srv->notify_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
        GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->notify_cq);
    rpc_tls_state_destroy(&srv->tls);
    rpc_server_auth_destroy(&srv->auth);
    rpc_server_metrics_free(&srv->metrics);
    free(srv->handles);
    free(srv);
}

int rpc_server_tls_replace(struct rpc_server *srv, const struct rpc_server_tls *tls)
{
    return rpc_tls_state_replace(&srv->tls, tls);
}

/* --- what authorize.c reads of a call --- */

struct rpc_call_auth *rpc_call_auth_state(struct rpc_call *c)
{
    return &c->auth;
}

struct rpc_server_auth *rpc_call_server_auth(struct rpc_call *c)
{
    return &c->srv->auth;
}

grpc_call *rpc_call_grpc(struct rpc_call *c)
{
    return c->call;
}

unsigned rpc_call_method_perm(const struct rpc_call *c)
{
    return c->method != NULL ? c->method->perm : AUTH_PERM_ALL;
}
