/*
 * rpc.h - gRPC on grpc core with protobuf-c messages: the server casboxd
 * serves with (server.c) and the client everything else calls it with
 * (client.c): casbox-replay, the benchmarks, and later the workers.
 *
 * The server. One dispatcher thread waits on the server's completion queue
 * for new calls and keeps one request posted per registered method (plus a
 * generic one that answers UNIMPLEMENTED). Each accepted call is queued to
 * one of two bounded thread pools: short calls (CAS, ByteStream,
 * ActionCache, Capabilities) and long streams (Execute, WaitExecution). A
 * pool thread runs the method's handler as straight-line code: every
 * rpc_call_* operation starts one grpc batch on the call's own completion
 * queue and plucks its completion, so a handler reads like a blocking
 * server. A full queue answers RESOURCE_EXHAUSTED at once.
 *
 * Event-driven calls (RPC_POOL_EVENT, server_async.c): a call that waits
 * on its client (a slow reader, a stalled writer) or on an event (a long
 * poll) must not hold a thread. Such a method's handler runs once, starts
 * one operation (rpc_call_async_recv, _send, rpc_call_park, rpc_call_offload)
 * and returns; the operation's done callback runs later on one of a few
 * event threads polling one shared completion queue (or on the timer thread,
 * or a pool thread), and starts the next, until the handler calls
 * rpc_call_finish, which then returns at once. At most
 * server.max_async_calls are open; more are refused RESOURCE_EXHAUSTED.
 *
 * The client. One channel per rpc_client; every call is blocking, has the
 * client's deadline and runs on a completion queue of its own (taken from a
 * small pool, so that any number of threads may call at once), except the
 * streams of an rpc_client_streams, which one thread reads together. Messages
 * are bounded in both directions (rpc_client_options.max_message_bytes).
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
struct auth_guard;

enum rpc_kind {
    RPC_UNARY,         /* one request, one response */
    RPC_SERVER_STREAM, /* one request, a stream of responses */
    RPC_CLIENT_STREAM, /* a stream of requests, one response */
};

/* short: unary calls, answered from what is here; stream: Execute and
 * WaitExecution, each held for an action's life; transfer: ByteStream, whose
 * calls wait on the client's pace. Separate, so that no kind can take the
 * threads another needs. */
enum rpc_pool {
    RPC_POOL_SHORT,
    RPC_POOL_STREAM,
    RPC_POOL_TRANSFER,
    RPC_POOL_COUNT,
    /* not a pool: the handler is event-driven (see above) and runs on the
     * dispatcher or an event thread; it must never block */
    RPC_POOL_EVENT = RPC_POOL_COUNT,
};

typedef void (*rpc_handler_fn)(void *ctx, struct rpc_call *call);

struct rpc_method {
    const char *path; /* "/package.Service/Method" */
    enum rpc_kind kind;
    enum rpc_pool pool;
    rpc_handler_fn handler;
    /* The AUTH_PERM_* bits (auth/auth.h) a caller needs, checked on the
     * request's instance name by rpc_call_authorize, which the handler must
     * call before it sends anything; 0: any authenticated caller. */
    unsigned perm;
};

/* TLS: PEM texts (auth_tls_files_load reads and checks them). */
struct rpc_server_tls {
    const char *certificate_chain; /* NULL: plaintext */
    const char *private_key;
    const char *client_ca; /* NULL: no client certificate asked for */
};

struct metrics;

struct rpc_server_options {
    const char *listen;         /* HOST:PORT */
    uint64_t max_message_bytes; /* largest message received */
    uint64_t threads[RPC_POOL_COUNT];
    uint64_t queue_length[RPC_POOL_COUNT];
    struct rpc_server_tls tls;
    /* The credentials policy (auth/auth.h); NULL: every call is allowed.
     * Must outlive the server. */
    struct auth_guard *auth;
    /* Where calls are counted (requests by method and code, latency, in
     * flight; server_metrics.c); NULL: nowhere. */
    struct metrics *metrics;
    /* A handler's send or receive that waits this long on its client (a
     * reader that does not read, a writer that sends nothing) cancels the
     * call with RESOURCE_EXHAUSTED, so a stalled client gives its pool
     * thread back; 0 = wait for the call's deadline. */
    uint64_t stall_timeout_ms;
    /* Event-driven calls: the threads polling their queue, and how many
     * may be open at once (beyond: RESOURCE_EXHAUSTED). 0: 2 and 10000. */
    uint64_t event_threads;
    uint64_t max_async_calls;
};

/* Binds, starts the dispatcher and the pools. ctx is passed to every handler.
 * methods must outlive the server. */
int rpc_server_start(const struct rpc_server_options *opt, const struct rpc_method *methods,
                     size_t n_methods, void *ctx, struct rpc_server **out);
/* SIGHUP: new PEM texts for the handshakes from now on; connections already
 * made keep theirs. -EINVAL when it would turn TLS on or off or change
 * whether client certificates are asked for (a restart does that). */
int rpc_server_tls_replace(struct rpc_server *srv, const struct rpc_server_tls *tls);
/* Stops accepting, cancels live calls, waits for every handler to return and
 * frees everything. */
void rpc_server_stop(struct rpc_server *srv);

/* --- inside a handler --- */

/* Unpacks the request of a unary or server-streaming call. -EINVAL when the
 * client sent none or it does not parse. Free with protobuf_c_message_free_unpacked. */
int rpc_call_request(struct rpc_call *call, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **out);
/* The request of a unary or server-streaming call as received (owned by the
 * call; NULL when the client sent none), for a handler that decodes it itself. */
grpc_byte_buffer *rpc_call_request_buffer(struct rpc_call *call);
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

/* --- inside an event-driven handler (RPC_POOL_EVENT, server_async.c) ---
 *
 * Each operation below returns 0 when started, and then calls done(state,
 * rc) exactly once, later, on another thread; or a negative errno when it
 * could not start (done is not called). One operation at a time per call,
 * except that a park or offload never overlaps another. rpc_call_request,
 * rpc_call_authorize and rpc_call_finish (and _fail) work as in a blocking
 * handler, but rpc_call_finish only starts the end of the call: the call
 * must not be touched after it. A send or receive that waits longer than
 * server.stream_stall_timeout cancels the call with RESOURCE_EXHAUSTED. */
typedef void (*rpc_async_fn)(void *state, int rc);

/* Receives the next message of a client stream into *out (destroy it with
 * grpc_byte_buffer_destroy): rc 1 with *out set, 0 at the end of the
 * stream, -ECANCELED when the call died. */
int rpc_call_async_recv(struct rpc_call *call, grpc_byte_buffer **out, rpc_async_fn done,
                        void *state);
/* Sends one message (encoded: data, len; destroy(user_data) once grpc is
 * done with it, also when it does not start): rc 0, or -ECANCELED. */
int rpc_call_async_send_raw(struct rpc_call *call, void *data, size_t len, void (*destroy)(void *),
                            void *user_data, rpc_async_fn done, void *state);
int rpc_call_async_send(struct rpc_call *call, const ProtobufCMessage *msg, rpc_async_fn done,
                        void *state);
/* Parks the call with no thread until rpc_call_resume (rc 0) or timeout_ms
 * (rc -ETIMEDOUT; 0: the call's deadline); done runs on the timer thread. */
int rpc_call_park(struct rpc_call *call, uint64_t timeout_ms, rpc_async_fn done, void *state);
/* Wakes a parked call: true, or false when it had already woken (timed
 * out). The caller must know the call is still parked (e.g. hold the lock
 * under which its done callback unlists it). */
bool rpc_call_resume(struct rpc_call *call);
/* Runs done(state, 0) on a thread of pool, for a step that blocks (a
 * remote fetch); -EAGAIN when the pool's queue is full. */
int rpc_call_offload(struct rpc_call *call, enum rpc_pool pool, rpc_async_fn done, void *state);

/* Authorization (authorize.c). Before a handler runs, its caller's
 * credentials (bearer token, verified client certificate) are resolved:
 * unknown ones are answered UNAUTHENTICATED without running it. The handler
 * then calls rpc_call_authorize with the instance name of its request before
 * it acts: 0, or -EACCES with st set to UNAUTHENTICATED or PERMISSION_DENIED
 * (naming the permission and the instance) and a rate-limited log line; the
 * handler then finishes the call with st. A handler that sends a response
 * without having asked is refused (INTERNAL) when authorization is on. */
int rpc_call_authorize(struct rpc_call *call, const char *instance, struct reapi_status *st);
/* The AUTH_PERM_* bits the caller has on instance (Capabilities tells what
 * it may do); counts as authorized. */
unsigned rpc_call_permissions(struct rpc_call *call, const char *instance);

/* "NOT_FOUND" for GRPC_STATUS_NOT_FOUND. */
const char *rpc_status_code_name(grpc_status_code code);
/* Decodes a received message as desc; NULL when bb is NULL or it does not
 * parse. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *rpc_message_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc);

/* --- the client (client.c) --- */

struct rpc_client;

/* The methods the client calls, registered once per channel (grpc's fast
 * path: no method lookup per call). */
enum rpc_client_method {
    RPC_CLIENT_GET_CAPABILITIES,
    RPC_CLIENT_FIND_MISSING_BLOBS,
    RPC_CLIENT_BATCH_UPDATE_BLOBS,
    RPC_CLIENT_BATCH_READ_BLOBS,
    RPC_CLIENT_GET_TREE,
    RPC_CLIENT_GET_ACTION_RESULT,
    RPC_CLIENT_UPDATE_ACTION_RESULT,
    RPC_CLIENT_EXECUTE,
    RPC_CLIENT_WAIT_EXECUTION,
    RPC_CLIENT_BYTESTREAM_READ,
    RPC_CLIENT_BYTESTREAM_WRITE,
    RPC_CLIENT_BYTESTREAM_QUERY_WRITE_STATUS,
    /* the fleet: Buildbarn's worker protocol, casbox's admin service */
    RPC_CLIENT_SYNCHRONIZE,
    RPC_CLIENT_FLEET_STATUS,
    RPC_CLIENT_FLEET_DRAIN,
    RPC_CLIENT_FLEET_UNDRAIN,
    RPC_CLIENT_METHOD_COUNT,
};

/* "/google.bytestream.ByteStream/Read" for RPC_CLIENT_BYTESTREAM_READ. */
const char *rpc_client_method_path(enum rpc_client_method method);

#define RPC_CLIENT_MAX_MESSAGE_BYTES (64u << 20)
#define RPC_CLIENT_TIMEOUT_MS        (600u * 1000)

struct rpc_client_options {
    uint64_t max_message_bytes; /* largest message sent or received; 0: 64 MiB */
    uint64_t timeout_ms;        /* every call's deadline, from its start; 0: 600 s */
    /* Longest wait between reconnection attempts after the server went
     * away; 0: grpc's default (120 s). */
    uint64_t max_reconnect_backoff_ms;
    /* grpcs:// only: the CA bundle that signs the server (NULL: the system's
     * roots), and a client certificate and key for mutual TLS (both or
     * neither). PEM file paths. */
    const char *tls_ca_file;
    const char *tls_certificate_file;
    const char *tls_private_key_file;
    /* A file holding the bearer token sent as "authorization: Bearer ..."
     * with every call (one line; must not be readable by others). NULL:
     * none. */
    const char *token_file;
};

/* How a call ended: the server's status code and message, or the code and
 * a description of what went wrong on this side. */
struct rpc_client_status {
    grpc_status_code code;
    char message[512];
};

/* A command-line client's credentials from its environment (tls.c):
 * CASBOX_TLS_CA, CASBOX_TLS_CERT and CASBOX_TLS_KEY (for grpcs://) and
 * CASBOX_TOKEN_FILE; fields already set are kept. */
void rpc_client_options_from_env(struct rpc_client_options *opt);

/* Opens a channel to grpc://HOST:PORT, grpcs://HOST:PORT (TLS, see
 * rpc_client_options) or HOST:PORT (plaintext), with grpc_init; no
 * connection is made before the first call. opt may be NULL (the defaults).
 * On failure err says why, starting with url (or naming the file). */
int rpc_client_open(const char *url, const struct rpc_client_options *opt, struct rpc_client **out,
                    char *err, size_t err_len);
/* Every call must have ended. Then grpc_shutdown. */
void rpc_client_close(struct rpc_client *c);

/* A unary call: sends req, decodes the answer as resp_desc into *resp (free
 * with protobuf_c_message_free_unpacked). 0; or -EIO when the status is not
 * OK, -EPROTO when the answer is missing or does not decode, -ENOMEM. st is
 * set in every case. */
int rpc_client_unary(struct rpc_client *c, enum rpc_client_method method,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                     ProtobufCMessage **resp, struct rpc_client_status *st);

/* Receives one message of a server stream (rpc_message_unpack decodes it;
 * grpc keeps the buffer). A negative return cancels the call. */
typedef int (*rpc_client_message_fn)(void *ctx, grpc_byte_buffer *message);

/* A server-streaming call: sends req and gives every message to
 * on_message. 0 when the stream ended with OK; on_message's error when it
 * cancelled the call; else as rpc_client_unary. st is set in every case. */
int rpc_client_server_stream(struct rpc_client *c, enum rpc_client_method method,
                             const ProtobufCMessage *req, rpc_client_message_fn on_message,
                             void *ctx, struct rpc_client_status *st);

/* Many server streams at once, read by one thread in the order their
 * messages arrive (one completion queue for all of them). */
struct rpc_client_streams;
struct rpc_client_stream;

struct rpc_client_stream_event {
    struct rpc_client_stream *stream;
    void *user; /* as given to rpc_client_stream_start */
    /* The next message of the stream; valid until the next call of
     * rpc_client_streams_next. NULL: the stream has ended with status (and
     * is freed). */
    grpc_byte_buffer *message;
    struct rpc_client_status status;
};

int rpc_client_streams_create(struct rpc_client *c, struct rpc_client_streams **out);
/* Cancels the streams still live, waits for them to end and frees s. */
void rpc_client_streams_destroy(struct rpc_client_streams *s);
/* Starts a server-streaming call with req in s; its messages and then its
 * end come out of rpc_client_streams_next with user. 0, or a negative errno
 * when it could not start (then no event will come for it). */
int rpc_client_stream_start(struct rpc_client_streams *s, enum rpc_client_method method,
                            const ProtobufCMessage *req, void *user);
/* Ends a live stream early: no more of its messages are given; its end
 * (CANCELLED, unless it had already ended otherwise) still comes. */
void rpc_client_stream_cancel(struct rpc_client_stream *stream);
/* Waits for the next message or end of any stream of s: 1 with *ev set, 0
 * when no stream is live. */
int rpc_client_streams_next(struct rpc_client_streams *s, struct rpc_client_stream_event *ev);

/* A client-streaming call (ByteStream.Write): messages sent one at a time,
 * then one answer. */
struct rpc_client_writer;

/* Starts a call of method and sends its initial metadata. 0, -ENOMEM or
 * -EIO. */
int rpc_client_writer_start(struct rpc_client *c, enum rpc_client_method method,
                            struct rpc_client_writer **out);
/* Sends one message made of n slices, already encoded (their references are
 * taken over, also on failure); last also half-closes. 0, or -ECANCELED when
 * the call has ended (rpc_client_writer_finish says why). */
int rpc_client_writer_send(struct rpc_client_writer *w, grpc_slice *slices, size_t n, bool last);
/* Cancels the call if the last message was not sent, receives the answer
 * (decoded as resp_desc into *resp) and the status, and frees w. Returns as
 * rpc_client_unary. */
int rpc_client_writer_finish(struct rpc_client_writer *w,
                             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                             struct rpc_client_status *st);

#endif
