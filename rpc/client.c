/*
 * client.c - the gRPC client: one channel, blocking unary, server-streaming
 * and client-streaming calls of protobuf-c messages, and a set of server
 * streams read together by one thread (see rpc.h).
 *
 * Threads. The client is shared: the channel and the registered methods do
 * not change after rpc_client_open, and every blocking call plucks its
 * batches from a completion queue of its own, taken from the client's idle
 * queues (at most RPC_CLIENT_IDLE_QUEUES are kept) and given back when the
 * call ends. A pluck queue serves only a handful of concurrent pluckers, so
 * one queue per call in flight is what lets any number of threads call at
 * once. A set of streams has one next queue and belongs to one thread.
 *
 * Bounds. Every call has a deadline (rpc_client_options.timeout_ms after it
 * starts), and messages are limited in both directions (max_message_bytes).
 * No retry policy is configured, and retries are disabled, so that grpc does
 * not keep a copy of every sent message for one.
 *
 * A call's batches: a unary call is one batch (send the request and close,
 * receive everything). A stream's first batch sends the request; it has a
 * batch that receives the status, started at once, and one per message. A
 * writer sends its initial metadata, one batch per message (the last one
 * half-closes), and a last batch receives the answer and the status.
 */
#include "rpc_internal.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC_CLIENT_IDLE_QUEUES 16
#define RPC_CLIENT_TARGET_MAX  256

static const char *const rpc_client_paths[RPC_CLIENT_METHOD_COUNT] = {
    [RPC_CLIENT_GET_CAPABILITIES] = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
    [RPC_CLIENT_FIND_MISSING_BLOBS] =
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
    [RPC_CLIENT_BATCH_UPDATE_BLOBS] =
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
    [RPC_CLIENT_BATCH_READ_BLOBS] =
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
    [RPC_CLIENT_GET_TREE] = "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
    [RPC_CLIENT_GET_ACTION_RESULT] = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
    [RPC_CLIENT_UPDATE_ACTION_RESULT] =
        "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
    [RPC_CLIENT_EXECUTE] = "/build.bazel.remote.execution.v2.Execution/Execute",
    [RPC_CLIENT_WAIT_EXECUTION] = "/build.bazel.remote.execution.v2.Execution/WaitExecution",
    [RPC_CLIENT_BYTESTREAM_READ] = "/google.bytestream.ByteStream/Read",
    [RPC_CLIENT_BYTESTREAM_WRITE] = "/google.bytestream.ByteStream/Write",
    [RPC_CLIENT_BYTESTREAM_QUERY_WRITE_STATUS] = "/google.bytestream.ByteStream/QueryWriteStatus",
    [RPC_CLIENT_SYNCHRONIZE] = "/buildbarn.remoteworker.OperationQueue/Synchronize",
    [RPC_CLIENT_FLEET_STATUS] = "/casbox.fleet.v1.FleetAdmin/Status",
    [RPC_CLIENT_FLEET_DRAIN] = "/casbox.fleet.v1.FleetAdmin/Drain",
    [RPC_CLIENT_FLEET_UNDRAIN] = "/casbox.fleet.v1.FleetAdmin/Undrain",
};

struct rpc_client {
    grpc_channel *channel;
    grpc_metadata bearer; /* "authorization: Bearer ...", when has_bearer */
    bool has_bearer;
    void *methods[RPC_CLIENT_METHOD_COUNT]; /* grpc_channel_register_call handles */
    gpr_timespec timeout;
    pthread_mutex_t lock; /* idle, n_idle */
    grpc_completion_queue *idle[RPC_CLIENT_IDLE_QUEUES];
    size_t n_idle;
};

const char *rpc_client_method_path(enum rpc_client_method method)
{
    return (unsigned)method < RPC_CLIENT_METHOD_COUNT ? rpc_client_paths[method] : "(unknown)";
}

/* --- the channel --- */

/* The grpc target of url and whether it wants TLS; -EINVAL with err set. */
static int client_parse_url(const char *url, const char **target, bool *tls, char *err,
                            size_t err_len)
{
    *target = url;
    *tls = false;
    if (strncmp(url, "grpc://", 7) == 0) {
        *target = url + 7;
    } else if (strncmp(url, "grpcs://", 8) == 0) {
        *target = url + 8;
        *tls = true;
    } else if (strstr(url, "://") != NULL) {
        snprintf(err, err_len, "%s: use grpc://HOST:PORT or grpcs://HOST:PORT", url);
        return -EINVAL;
    }
    if ((*target)[0] == '\0' || strlen(*target) >= RPC_CLIENT_TARGET_MAX ||
        strchr(*target, '/') != NULL) {
        snprintf(err, err_len, "%s: expected HOST:PORT after the scheme", url);
        return -EINVAL;
    }
    return 0;
}

/* Reads the bearer token of token_file (its first line, trimmed) into the
 * metadata every call sends. */
static int client_load_token(struct rpc_client *c, const char *token_file, char *err,
                             size_t err_len)
{
    char *text = NULL, value[4200];
    size_t len, start = 0;
    int rc;

    if (token_file == NULL || token_file[0] == '\0')
        return 0;
    rc = auth_secret_file_read(token_file, &text, &len, NULL, err, err_len);
    if (rc != 0)
        return rc;
    while (start < len && (text[start] == ' ' || text[start] == '\t'))
        start++;
    len = start + strcspn(text + start, "\r\n");
    while (len > start && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    if (len == start || len - start > 4096) {
        snprintf(err, err_len, "%s: expected one line holding the token (1 to 4096 bytes)",
                 token_file);
        rc = -EINVAL;
    } else {
        snprintf(value, sizeof(value), "Bearer %.*s", (int)(len - start), text + start);
        c->bearer.key = grpc_slice_from_static_string("authorization");
        c->bearer.value = grpc_slice_from_copied_string(value);
        c->has_bearer = true;
        memset(value, 0, sizeof(value));
    }
    memset(text, 0, len);
    free(text);
    return rc;
}

int rpc_client_open(const char *url, const struct rpc_client_options *opt, struct rpc_client **out,
                    char *err, size_t err_len)
{
    uint64_t max_bytes =
        opt && opt->max_message_bytes ? opt->max_message_bytes : RPC_CLIENT_MAX_MESSAGE_BYTES;
    uint64_t timeout_ms = opt && opt->timeout_ms ? opt->timeout_ms : RPC_CLIENT_TIMEOUT_MS;
    int max_message = max_bytes > INT_MAX ? INT_MAX : (int)max_bytes;
    int backoff_ms =
        opt && opt->max_reconnect_backoff_ms
            ? (int)(opt->max_reconnect_backoff_ms > INT_MAX ? INT_MAX
                                                            : opt->max_reconnect_backoff_ms)
            : 0;
    grpc_arg args[4] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = max_message},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = max_message},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         .value.integer = backoff_ms},
    };
    grpc_channel_args channel_args = {.num_args = backoff_ms > 0 ? 4 : 3, .args = args};
    grpc_channel_credentials *creds;
    struct rpc_client *c;
    const char *target;
    bool tls;
    int rc;

    *out = NULL;
    rc = client_parse_url(url, &target, &tls, err, err_len);
    if (rc != 0)
        return rc;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    rc = -pthread_mutex_init(&c->lock, NULL);
    if (rc != 0) {
        free(c);
        return rc;
    }
    c->timeout = gpr_time_from_millis((int64_t)timeout_ms, GPR_TIMESPAN);
    grpc_init();
    if (opt != NULL && client_load_token(c, opt->token_file, err, err_len) != 0) {
        rpc_client_close(c);
        return -EINVAL;
    }
    creds =
        tls ? rpc_tls_client_credentials(opt, err, err_len) : grpc_insecure_credentials_create();
    if (creds == NULL) {
        rpc_client_close(c);
        return -EINVAL;
    }
    c->channel = grpc_channel_create(target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    if (c->channel == NULL) {
        snprintf(err, err_len, "%s: cannot create a gRPC channel", url);
        rpc_client_close(c);
        return -EIO;
    }
    for (int m = 0; m < RPC_CLIENT_METHOD_COUNT; m++)
        c->methods[m] = grpc_channel_register_call(c->channel, rpc_client_paths[m], NULL, NULL);
    *out = c;
    return 0;
}

void rpc_client_close(struct rpc_client *c)
{
    if (c == NULL)
        return;
    while (c->n_idle > 0)
        rpc_queue_destroy(c->idle[--c->n_idle]);
    if (c->channel != NULL)
        grpc_channel_destroy(c->channel);
    if (c->has_bearer) {
        grpc_slice_unref(c->bearer.key);
        grpc_slice_unref(c->bearer.value);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
    grpc_shutdown();
}

/* A pluck queue for one call: an idle one, or a new one. */
static grpc_completion_queue *client_queue_take(struct rpc_client *c)
{
    grpc_completion_queue *cq = NULL;

    pthread_mutex_lock(&c->lock);
    if (c->n_idle > 0)
        cq = c->idle[--c->n_idle];
    pthread_mutex_unlock(&c->lock);
    return cq != NULL ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* Gives back the queue of a call that has ended (nothing left to pluck). */
static void client_queue_give(struct rpc_client *c, grpc_completion_queue *cq)
{
    pthread_mutex_lock(&c->lock);
    if (c->n_idle < RPC_CLIENT_IDLE_QUEUES) {
        c->idle[c->n_idle++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (cq != NULL)
        rpc_queue_destroy(cq);
}

static grpc_call *client_call_create(struct rpc_client *c, enum rpc_client_method method,
                                     grpc_completion_queue *cq)
{
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), c->timeout);

    return grpc_channel_create_registered_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               c->methods[method], deadline, NULL);
}

/* The first op of every call: its initial metadata, with the bearer token
 * when the client has one. */
static void client_initial_metadata(const struct rpc_client *c, grpc_op *op)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->has_bearer) {
        op->data.send_initial_metadata.count = 1;
        op->data.send_initial_metadata.metadata = (grpc_metadata *)&c->bearer;
    }
}

/* --- statuses --- */

static void client_status_set(struct rpc_client_status *st, grpc_status_code code, const char *fmt,
                              ...) __attribute__((format(printf, 3, 4)));

static void client_status_set(struct rpc_client_status *st, grpc_status_code code, const char *fmt,
                              ...)
{
    va_list ap;

    st->code = code;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
}

/* What GRPC_OP_RECV_STATUS_ON_CLIENT fills in, until the batch completes. */
struct client_end {
    grpc_metadata_array trailing;
    grpc_status_code code;
    grpc_slice details;
};

static void client_end_init(struct client_end *e, grpc_op *op)
{
    grpc_metadata_array_init(&e->trailing);
    e->code = GRPC_STATUS_UNKNOWN;
    e->details = grpc_empty_slice();
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &e->trailing;
    op->data.recv_status_on_client.status = &e->code;
    op->data.recv_status_on_client.status_details = &e->details;
}

/* Sets st from the status received (received: its batch completed) and frees
 * e. 0 when the status is OK, else -EIO. */
static int client_end_finish(struct client_end *e, bool received, struct rpc_client_status *st)
{
    size_t n = GRPC_SLICE_LENGTH(e->details);

    if (!received) {
        client_status_set(st, GRPC_STATUS_UNKNOWN, "%s", "the call failed without a status");
    } else {
        st->code = e->code;
        if (n >= sizeof(st->message))
            n = sizeof(st->message) - 1;
        memcpy(st->message, GRPC_SLICE_START_PTR(e->details), n);
        st->message[n] = '\0';
    }
    grpc_slice_unref(e->details);
    grpc_metadata_array_destroy(&e->trailing);
    return st->code == GRPC_STATUS_OK ? 0 : -EIO;
}

/* Decodes the answer of a call whose status was OK. 0 or -EPROTO. */
static int client_answer(grpc_byte_buffer *recv, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **resp, struct rpc_client_status *st)
{
    if (recv == NULL) {
        client_status_set(st, GRPC_STATUS_INTERNAL, "%s", "the server sent no message");
        return -EPROTO;
    }
    *resp = rpc_message_unpack(recv, desc);
    if (*resp == NULL) {
        client_status_set(st, GRPC_STATUS_INTERNAL, "the answer does not decode as %s", desc->name);
        return -EPROTO;
    }
    return 0;
}

/* ops[0..4): send the initial metadata, the request and close; receive the
 * initial metadata. */
static void client_request_ops(const struct rpc_client *c, grpc_op *ops, grpc_byte_buffer *send,
                               grpc_metadata_array *initial)
{
    client_initial_metadata(c, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
}

/* --- unary calls --- */

int rpc_client_unary(struct rpc_client *c, enum rpc_client_method method,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                     ProtobufCMessage **resp, struct rpc_client_status *st)
{
    grpc_byte_buffer *send = rpc_message_pack(req), *recv = NULL;
    grpc_completion_queue *cq = NULL;
    grpc_metadata_array initial;
    struct client_end end;
    grpc_call *call = NULL;
    grpc_op ops[6];
    int rc;

    *resp = NULL;
    if (send != NULL)
        cq = client_queue_take(c);
    if (cq != NULL)
        call = client_call_create(c, method, cq);
    if (call == NULL) {
        client_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", "cannot start the call");
        rc = -ENOMEM;
        goto out;
    }
    grpc_metadata_array_init(&initial);
    memset(ops, 0, sizeof(ops));
    client_request_ops(c, ops, send, &initial);
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    client_end_init(&end, &ops[5]);
    /* The batch holds the status: it completes once the call has ended. */
    rc = rpc_batch_run(call, cq, ops, 6, call);
    rc = client_end_finish(&end, rc == 0, st);
    if (rc == 0)
        rc = client_answer(recv, resp_desc, resp, st);
    grpc_metadata_array_destroy(&initial);
    grpc_call_unref(call);
out:
    if (cq != NULL)
        client_queue_give(c, cq);
    if (send != NULL)
        grpc_byte_buffer_destroy(send);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    return rc;
}

/* --- server streams --- */

enum client_tag_kind { CLIENT_TAG_START, CLIENT_TAG_MESSAGE, CLIENT_TAG_END };

struct client_tag {
    struct rpc_client_stream *stream;
    enum client_tag_kind kind;
};

struct rpc_client_stream {
    struct rpc_client_streams *set;
    void *user;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial;
    struct client_end end;
    struct client_tag tags[3]; /* by enum client_tag_kind */
    int pending;               /* batches started, not yet completed */
    bool cancelled;
    bool start_failed; /* a batch could not start: the call was cancelled */
    struct rpc_client_stream *prev, *next;
};

struct rpc_client_streams {
    struct rpc_client *client;
    grpc_completion_queue *cq; /* a next queue: every stream's batches */
    struct rpc_client_stream *live;
    /* The message of the last event and its stream, whose next message is
     * asked for when the caller comes back for the next event. */
    grpc_byte_buffer *given;
    struct rpc_client_stream *given_by;
};

int rpc_client_streams_create(struct rpc_client *c, struct rpc_client_streams **out)
{
    struct rpc_client_streams *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return -ENOMEM;
    s->client = c;
    s->cq = grpc_completion_queue_create_for_next(NULL);
    if (s->cq == NULL) {
        free(s);
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

static int client_stream_batch(struct rpc_client_stream *st, const grpc_op *ops, size_t n,
                               enum client_tag_kind kind)
{
    if (grpc_call_start_batch(st->call, ops, n, &st->tags[kind], NULL) != GRPC_CALL_OK)
        return -EIO;
    st->pending++;
    return 0;
}

static int client_stream_recv(struct rpc_client_stream *st)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &st->recv;
    return client_stream_batch(st, &op, 1, CLIENT_TAG_MESSAGE);
}

static void client_stream_free(struct rpc_client_stream *st)
{
    grpc_metadata_array_destroy(&st->initial);
    if (st->send != NULL)
        grpc_byte_buffer_destroy(st->send);
    if (st->recv != NULL)
        grpc_byte_buffer_destroy(st->recv);
    if (st->call != NULL)
        grpc_call_unref(st->call);
    free(st);
}

int rpc_client_stream_start(struct rpc_client_streams *s, enum rpc_client_method method,
                            const ProtobufCMessage *req, void *user)
{
    struct rpc_client_stream *st = calloc(1, sizeof(*st));
    grpc_op ops[4], end_op;

    if (st == NULL)
        return -ENOMEM;
    st->set = s;
    st->user = user;
    for (int k = 0; k < 3; k++) {
        st->tags[k].stream = st;
        st->tags[k].kind = (enum client_tag_kind)k;
    }
    grpc_metadata_array_init(&st->initial);
    st->send = rpc_message_pack(req);
    if (st->send != NULL)
        st->call = client_call_create(s->client, method, s->cq);
    if (st->call == NULL) {
        client_stream_free(st);
        return -ENOMEM;
    }
    memset(ops, 0, sizeof(ops));
    client_request_ops(s->client, ops, st->send, &st->initial);
    if (client_stream_batch(st, ops, 4, CLIENT_TAG_START) != 0) {
        client_stream_free(st);
        return -EIO;
    }
    memset(&end_op, 0, sizeof(end_op));
    client_end_init(&st->end, &end_op);
    if (client_stream_batch(st, &end_op, 1, CLIENT_TAG_END) != 0 || client_stream_recv(st) != 0) {
        /* What started still completes on the queue: cancel and let it. */
        st->start_failed = true;
        grpc_call_cancel(st->call, NULL);
    }
    st->next = s->live;
    if (s->live != NULL)
        s->live->prev = st;
    s->live = st;
    return 0;
}

void rpc_client_stream_cancel(struct rpc_client_stream *st)
{
    if (!st->cancelled)
        grpc_call_cancel(st->call, NULL);
    st->cancelled = true;
}

/* The end of a stream whose batches have all completed: fills ev, frees st. */
static void client_stream_end(struct rpc_client_streams *s, struct rpc_client_stream *st,
                              struct rpc_client_stream_event *ev)
{
    ev->stream = st;
    ev->user = st->user;
    ev->message = NULL;
    client_end_finish(&st->end, !st->start_failed, &ev->status);
    if (st->start_failed)
        client_status_set(&ev->status, GRPC_STATUS_INTERNAL, "%s", "cannot start the call");
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->live = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    client_stream_free(st);
}

int rpc_client_streams_next(struct rpc_client_streams *s, struct rpc_client_stream_event *ev)
{
    struct rpc_client_stream *st = s->given_by;

    if (s->given != NULL) {
        grpc_byte_buffer_destroy(s->given);
        s->given = NULL;
    }
    /* The caller is done with the last message: ask for the next one. */
    if (st != NULL) {
        s->given_by = NULL;
        if (!st->cancelled && client_stream_recv(st) != 0)
            rpc_client_stream_cancel(st);
        if (st->pending == 0) {
            client_stream_end(s, st, ev);
            return 1;
        }
    }
    while (s->live != NULL) {
        grpc_event e = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        struct client_tag *tag;

        if (e.type != GRPC_OP_COMPLETE)
            continue;
        tag = e.tag;
        st = tag->stream;
        st->pending--;
        if (tag->kind == CLIENT_TAG_MESSAGE && st->recv != NULL) {
            grpc_byte_buffer *msg = st->recv;

            st->recv = NULL;
            if (e.success && !st->cancelled) {
                s->given = msg;
                s->given_by = st;
                ev->stream = st;
                ev->user = st->user;
                ev->message = msg;
                return 1;
            }
            grpc_byte_buffer_destroy(msg);
        }
        if (st->pending == 0) {
            client_stream_end(s, st, ev);
            return 1;
        }
    }
    return 0;
}

void rpc_client_streams_destroy(struct rpc_client_streams *s)
{
    struct rpc_client_stream_event ev;

    if (s == NULL)
        return;
    for (struct rpc_client_stream *st = s->live; st != NULL; st = st->next)
        rpc_client_stream_cancel(st);
    while (rpc_client_streams_next(s, &ev) == 1)
        ;
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(s->cq);
    free(s);
}

int rpc_client_server_stream(struct rpc_client *c, enum rpc_client_method method,
                             const ProtobufCMessage *req, rpc_client_message_fn on_message,
                             void *ctx, struct rpc_client_status *st)
{
    struct rpc_client_streams *s;
    struct rpc_client_stream_event ev;
    int rc, rc_message = 0;

    rc = rpc_client_streams_create(c, &s);
    if (rc == 0)
        rc = rpc_client_stream_start(s, method, req, NULL);
    if (rc != 0) {
        client_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", "cannot start the call");
        rpc_client_streams_destroy(s);
        return rc;
    }
    while (rpc_client_streams_next(s, &ev) == 1) {
        if (ev.message == NULL) {
            *st = ev.status;
            break;
        }
        if (rc_message == 0) {
            rc_message = on_message(ctx, ev.message);
            if (rc_message != 0)
                rpc_client_stream_cancel(ev.stream);
        }
    }
    rpc_client_streams_destroy(s);
    if (rc_message != 0)
        return rc_message;
    return st->code == GRPC_STATUS_OK ? 0 : -EIO;
}

/* --- client streams --- */

struct rpc_client_writer {
    struct rpc_client *client;
    grpc_completion_queue *cq;
    grpc_call *call;
    bool closed; /* the last message was sent */
    bool ended;  /* a batch failed: the call has ended */
};

int rpc_client_writer_start(struct rpc_client *c, enum rpc_client_method method,
                            struct rpc_client_writer **out)
{
    struct rpc_client_writer *w = calloc(1, sizeof(*w));
    grpc_op op;

    *out = NULL;
    if (w == NULL)
        return -ENOMEM;
    w->client = c;
    w->cq = client_queue_take(c);
    if (w->cq != NULL)
        w->call = client_call_create(c, method, w->cq);
    if (w->call == NULL) {
        if (w->cq != NULL)
            client_queue_give(c, w->cq);
        free(w);
        return -ENOMEM;
    }
    memset(&op, 0, sizeof(op));
    client_initial_metadata(c, &op);
    w->ended = rpc_batch_run(w->call, w->cq, &op, 1, w) != 0;
    *out = w;
    return 0;
}

int rpc_client_writer_send(struct rpc_client_writer *w, grpc_slice *slices, size_t n, bool last)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];

    if (!w->ended && !w->closed)
        bb = grpc_raw_byte_buffer_create(slices, n);
    for (size_t i = 0; i < n; i++)
        grpc_slice_unref(slices[i]);
    if (bb == NULL)
        return -ECANCELED;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = bb;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    w->ended = rpc_batch_run(w->call, w->cq, ops, last ? 2 : 1, w) != 0;
    grpc_byte_buffer_destroy(bb);
    if (w->ended)
        return -ECANCELED; /* the server ended the call: its status says why */
    w->closed = last;
    return 0;
}

int rpc_client_writer_finish(struct rpc_client_writer *w,
                             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                             struct rpc_client_status *st)
{
    grpc_metadata_array initial;
    grpc_byte_buffer *recv = NULL;
    struct client_end end;
    grpc_op ops[3];
    int rc;

    *resp = NULL;
    if (!w->closed && !w->ended)
        grpc_call_cancel(w->call, NULL);
    grpc_metadata_array_init(&initial);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &recv;
    client_end_init(&end, &ops[2]);
    rc = rpc_batch_run(w->call, w->cq, ops, 3, w);
    rc = client_end_finish(&end, rc == 0, st);
    if (rc == 0)
        rc = client_answer(recv, resp_desc, resp, st);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_metadata_array_destroy(&initial);
    grpc_call_unref(w->call);
    client_queue_give(w->client, w->cq);
    free(w);
    return rc;
}
