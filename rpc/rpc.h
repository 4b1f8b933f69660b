/*
 * rpc.h - a small gRPC server on grpc core, with protobuf-c messages.
 *
 * One dispatcher thread waits on the server's completion queue for new calls
 * and keeps one request posted per registered method (plus a generic one that
 * answers UNIMPLEMENTED). Each accepted call is queued to one of two bounded
 * thread pools: short calls (CAS, ByteStream, ActionCache, Capabilities) and
 * long streams (Execute, WaitExecution). A pool thread runs the method's
 * handler as straight-line code: every rpc_call_* operation starts one grpc
 * batch on the call's own completion queue and plucks its completion, so a
 * handler reads like a blocking server. A full queue answers
 * RESOURCE_EXHAUSTED at once.
 */
#ifndef CASBOX_RPC_H
#define CASBOX_RPC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "reapi/reapi.h"

struct rpc_server;
struct rpc_call;

enum rpc_kind {
    RPC_UNARY,         /* one request, one response */
    RPC_SERVER_STREAM, /* one request, a stream of responses */
    RPC_CLIENT_STREAM, /* a stream of requests, one response */
};

/* short: unary calls, answered from what is here; stream: Execute and
 * WaitExecution, each held for an action's life; transfer: ByteStream, whose
 * calls wait on the client's pace. Separate, so that no kind can take the
 * threads another needs. */
enum rpc_pool { RPC_POOL_SHORT, RPC_POOL_STREAM, RPC_POOL_TRANSFER, RPC_POOL_COUNT };

typedef void (*rpc_handler_fn)(void *ctx, struct rpc_call *call);

struct rpc_method {
    const char *path; /* "/package.Service/Method" */
    enum rpc_kind kind;
    enum rpc_pool pool;
    rpc_handler_fn handler;
};

struct rpc_server_options {
    const char *listen;         /* HOST:PORT */
    uint64_t max_message_bytes; /* largest message received */
    uint64_t threads[RPC_POOL_COUNT];
    uint64_t queue_length[RPC_POOL_COUNT];
};

/* Binds, starts the dispatcher and the pools. ctx is passed to every handler.
 * methods must outlive the server. */
int rpc_server_start(const struct rpc_server_options *opt, const struct rpc_method *methods,
                     size_t n_methods, void *ctx, struct rpc_server **out);
/* Stops accepting, cancels live calls, waits for every handler to return and
 * frees everything. */
void rpc_server_stop(struct rpc_server *srv);

/* --- inside a handler --- */

/* Unpacks the request of a unary or server-streaming call. -EINVAL when the
 * client sent none or it does not parse. Free with protobuf_c_message_free_unpacked. */
int rpc_call_request(struct rpc_call *call, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out);
/* Receives the next message of a client stream: 1 with *out set, 0 at the end
 * of the stream, -EINVAL when it does not parse, -ECANCELED when the call died. */
int rpc_call_recv(struct rpc_call *call, const ProtobufCMessageDescriptor *desc,
                  ProtobufCMessage **out);
/* The same without decoding: 1 with *out set (destroy it with
 * grpc_byte_buffer_destroy), 0 at the end of the stream, -ECANCELED. */
int rpc_call_recv_buffer(struct rpc_call *call, grpc_byte_buffer **out);
/* Sends one message of a stream; -ECANCELED when the client went away. */
int rpc_call_send(struct rpc_call *call, const ProtobufCMessage *msg);
/* Sends one message already encoded (data, len); destroy(user_data) is called
 * once grpc is done with the bytes, also on failure. */
int rpc_call_send_raw(struct rpc_call *call, void *data, size_t len, void (*destroy)(void *),
                      void *user_data);
/* Ends the call: sends msg (may be NULL) and the status (NULL means OK), with
 * the status details in grpc-status-details-bin. Call exactly once. */
int rpc_call_finish(struct rpc_call *call, const ProtobufCMessage *msg,
                    const struct reapi_status *st);
/* rpc_call_finish(call, msg, NULL) in two halves: _start sends msg and the
 * OK status without waiting, and may run on another thread while the
 * handler's thread is blocked on something else (never at the same time as
 * another operation on the call); the handler's thread then calls _wait.
 * When _start fails, nothing was started and the call is not finished. */
int rpc_call_finish_start(struct rpc_call *call, const ProtobufCMessage *msg);
int rpc_call_finish_wait(struct rpc_call *call);
/* Ends the call with a code and a formatted message and no response. */
int rpc_call_fail(struct rpc_call *call, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The client's deadline, and the method path being served. */
gpr_timespec rpc_call_deadline(const struct rpc_call *call);
const char *rpc_call_method(const struct rpc_call *call);
/* A value of the request metadata, or NULL; *len set to its length. */
const char *rpc_call_metadata(const struct rpc_call *call, const char *key, size_t *len);

/* "NOT_FOUND" for GRPC_STATUS_NOT_FOUND. */
const char *rpc_status_code_name(grpc_status_code code);
/* Decodes a received message as desc; NULL when bb is NULL or it does not
 * parse. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *rpc_message_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc);

#endif
