/*
 * cli_grpc.c - the smallest gRPC client `casbox run --action` needs: one
 * channel, blocking unary and server-streaming calls of protobuf-c
 * messages, on grpc core's C API.
 *
 * Every call has its own deadline (CLI_GRPC_DEADLINE_S) and runs on one
 * pluck completion queue: start a batch, pluck its tag. A unary call is one
 * batch (send everything, receive everything); a server stream is a first
 * batch that sends the request, one batch per received message, and a last
 * one for the status. Messages may be as large as the server sends
 * (max_receive_message_length unlimited): a BatchReadBlobs answer is
 * bounded by the server's own max_batch_total_size_bytes.
 */
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_replay.h"

#define CLI_GRPC_DEADLINE_S 600

struct cli_grpc {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    char target[256];
};

static const char *const grpc_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *cli_grpc_code_name(grpc_status_code code)
{
    if ((unsigned)code < sizeof(grpc_code_names) / sizeof(grpc_code_names[0]))
        return grpc_code_names[code];
    return "UNKNOWN";
}

int cli_grpc_open(const char *url, struct cli_grpc **out, char *err, size_t err_len)
{
    grpc_arg args[1] = {{
        .type = GRPC_ARG_INTEGER,
        .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
        .value.integer = -1,
    }};
    grpc_channel_args channel_args = {.num_args = 1, .args = args};
    grpc_channel_credentials *creds;
    struct cli_grpc *g;
    const char *target = url;
    bool tls = false;

    if (strncmp(url, "grpc://", 7) == 0) {
        target = url + 7;
    } else if (strncmp(url, "grpcs://", 8) == 0) {
        target = url + 8;
        tls = true;
    } else if (strstr(url, "://") != NULL) {
        snprintf(err, err_len, "--remote %s: use grpc://HOST:PORT or grpcs://HOST:PORT", url);
        return -EINVAL;
    }
    if (target[0] == '\0' || strlen(target) >= sizeof(g->target) || strchr(target, '/') != NULL) {
        snprintf(err, err_len, "--remote %s: expected HOST:PORT after the scheme", url);
        return -EINVAL;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    snprintf(g->target, sizeof(g->target), "%s", target);
    grpc_init();
    creds = tls ? grpc_ssl_credentials_create(NULL, NULL, NULL, NULL)
                : grpc_insecure_credentials_create();
    g->channel = grpc_channel_create(g->target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    g->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (g->channel == NULL || g->cq == NULL) {
        snprintf(err, err_len, "--remote %s: cannot create a gRPC channel", url);
        cli_grpc_close(g);
        return -EIO;
    }
    *out = g;
    return 0;
}

void cli_grpc_close(struct cli_grpc *g)
{
    if (g == NULL)
        return;
    if (g->cq != NULL) {
        grpc_completion_queue_shutdown(g->cq);
        while (grpc_completion_queue_pluck(g->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(g->cq);
    }
    if (g->channel != NULL)
        grpc_channel_destroy(g->channel);
    free(g);
    grpc_shutdown();
}

static void grpc_status_set(struct cli_grpc_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void grpc_status_set(struct cli_grpc_status *st, grpc_status_code code, const char *fmt, ...)
{
    va_list ap;

    st->code = code;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
}

static grpc_byte_buffer *grpc_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    grpc_slice slice;
    grpc_byte_buffer *bb;

    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    slice = grpc_slice_new(buf, len, free);
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* The bytes of a received message, as one slice (unref it). */
static grpc_slice grpc_read_all(grpc_byte_buffer *bb, bool *ok)
{
    grpc_byte_buffer_reader reader;
    grpc_slice slice = grpc_empty_slice();

    *ok = grpc_byte_buffer_reader_init(&reader, bb) != 0;
    if (*ok) {
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    return slice;
}

/* Starts a batch and waits for it; false when the batch failed. */
static bool grpc_run_batch(struct cli_grpc *g, grpc_call *call, const grpc_op *ops, size_t n,
                           void *tag)
{
    grpc_event ev;

    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return false;
    ev = grpc_completion_queue_pluck(g->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static grpc_call *grpc_start_call(struct cli_grpc *g, const char *method)
{
    grpc_slice m = grpc_slice_from_copied_string(method);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_seconds(CLI_GRPC_DEADLINE_S, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(g->channel, NULL, GRPC_PROPAGATE_DEFAULTS, g->cq, m,
                                               NULL, deadline, NULL);

    grpc_slice_unref(m);
    return call;
}

/* Receives the final status into st; 0 when OK. */
static int grpc_finish(struct cli_grpc *g, grpc_call *call, struct cli_grpc_status *st, int tag)
{
    grpc_metadata_array trailing;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;
    char *text;
    int rc = 0;

    grpc_metadata_array_init(&trailing);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing;
    op.data.recv_status_on_client.status = &code;
    op.data.recv_status_on_client.status_details = &details;
    if (!grpc_run_batch(g, call, &op, 1, (void *)(intptr_t)tag)) {
        grpc_status_set(st, GRPC_STATUS_UNKNOWN, "%s", "the call failed without a status");
        rc = -EIO;
    } else {
        text = grpc_slice_to_c_string(details);
        grpc_status_set(st, code, "%s", text != NULL ? text : "");
        gpr_free(text);
        rc = code == GRPC_STATUS_OK ? 0 : -EIO;
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailing);
    return rc;
}

/* Starts a call of method that sends req as its one message: sets *call and
 * *send and fills ops[0..3] (send metadata, the message and close; receive
 * the initial metadata into initial). st starts as OK; -ENOMEM with st set
 * when the call cannot start. */
static int grpc_begin(struct cli_grpc *g, const char *method, const ProtobufCMessage *req,
                      grpc_call **call, grpc_byte_buffer **send, grpc_metadata_array *initial,
                      grpc_op *ops, struct cli_grpc_status *st)
{
    st->code = GRPC_STATUS_OK;
    st->message[0] = '\0';
    *send = grpc_pack(req);
    *call = *send != NULL ? grpc_start_call(g, method) : NULL;
    if (*call == NULL) {
        grpc_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", "cannot start the call");
        return -ENOMEM;
    }
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = *send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
    return 0;
}

int cli_grpc_unary(struct cli_grpc *g, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                   struct cli_grpc_status *st)
{
    grpc_metadata_array initial;
    grpc_byte_buffer *send = NULL, *recv = NULL;
    grpc_call *call = NULL;
    grpc_op ops[5];
    grpc_slice data;
    bool ok;
    int rc = 0;

    *resp = NULL;
    grpc_metadata_array_init(&initial);
    memset(ops, 0, sizeof(ops));
    rc = grpc_begin(g, method, req, &call, &send, &initial, ops, st);
    if (rc != 0)
        goto out;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    /* A failed batch still ends with a status: that is what the user needs. */
    grpc_run_batch(g, call, ops, 5, (void *)1);
    rc = grpc_finish(g, call, st, 2);
    if (rc != 0)
        goto out;
    if (recv == NULL) {
        grpc_status_set(st, GRPC_STATUS_INTERNAL, "%s", "the server sent no message");
        rc = -EPROTO;
        goto out;
    }
    data = grpc_read_all(recv, &ok);
    if (ok)
        *resp = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(data),
                                          GRPC_SLICE_START_PTR(data));
    grpc_slice_unref(data);
    if (*resp == NULL) {
        grpc_status_set(st, GRPC_STATUS_INTERNAL, "the answer does not decode as %s",
                        resp_desc->name);
        rc = -EPROTO;
    }
out:
    if (send != NULL)
        grpc_byte_buffer_destroy(send);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    if (call != NULL)
        grpc_call_unref(call);
    grpc_metadata_array_destroy(&initial);
    return rc;
}

int cli_grpc_server_stream(struct cli_grpc *g, const char *method, const ProtobufCMessage *req,
                           int (*on_message)(void *ctx, const uint8_t *data, size_t len), void *ctx,
                           struct cli_grpc_status *st)
{
    grpc_metadata_array initial;
    grpc_byte_buffer *send = NULL;
    grpc_call *call = NULL;
    grpc_op ops[4];
    int rc = 0, rc_cb = 0;

    grpc_metadata_array_init(&initial);
    memset(ops, 0, sizeof(ops));
    rc = grpc_begin(g, method, req, &call, &send, &initial, ops, st);
    if (rc != 0)
        goto out;
    if (grpc_run_batch(g, call, ops, 4, (void *)1)) {
        for (;;) {
            grpc_byte_buffer *recv = NULL;
            grpc_slice data;
            grpc_op op;
            bool ok;

            memset(&op, 0, sizeof(op));
            op.op = GRPC_OP_RECV_MESSAGE;
            op.data.recv_message.recv_message = &recv;
            if (!grpc_run_batch(g, call, &op, 1, (void *)2) || recv == NULL)
                break;
            data = grpc_read_all(recv, &ok);
            rc_cb =
                ok ? on_message(ctx, GRPC_SLICE_START_PTR(data), GRPC_SLICE_LENGTH(data)) : -EPROTO;
            grpc_slice_unref(data);
            grpc_byte_buffer_destroy(recv);
            if (rc_cb != 0) {
                grpc_call_cancel(call, NULL);
                break;
            }
        }
    }
    rc = grpc_finish(g, call, st, 3);
    if (rc_cb != 0)
        rc = rc_cb;
out:
    if (send != NULL)
        grpc_byte_buffer_destroy(send);
    if (call != NULL)
        grpc_call_unref(call);
    grpc_metadata_array_destroy(&initial);
    return rc;
}
