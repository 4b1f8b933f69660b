/*
 * rpc_internal.h - what the server (server.c) and the client (client.c)
 * both do with a grpc call (call.c). Not a public header: rpc.h is.
 */
#ifndef CASBOX_RPC_INTERNAL_H
#define CASBOX_RPC_INTERNAL_H

#include <stdatomic.h>

#include "rpc.h"

#include <grpc/grpc_security.h>
#include <pthread.h>

#include "auth/auth.h"

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

/* --- authorization (authorize.c) --- */

/* The server's part: the policy and the refusal log's limiter. */
struct rpc_server_auth {
    struct auth_guard *guard; /* NULL: every call allowed */
    bool client_certificates; /* peers present a certificate client_ca verified */
    struct auth_log_limiter limiter;
};

/* A call's part, from before its handler runs until it is freed. */
struct rpc_call_auth {
    struct auth_policy *policy; /* a reference, or NULL */
    struct auth_identity id;
    bool authorized; /* the handler asked, and was allowed (or no policy) */
};

void rpc_server_auth_init(struct rpc_server_auth *a, const struct rpc_server_options *opt);
void rpc_server_auth_destroy(struct rpc_server_auth *a);
/* Resolves the call's credentials before its handler runs: 0, or -EACCES
 * when it has answered the call (UNAUTHENTICATED, PERMISSION_DENIED). */
int rpc_call_authenticate(struct rpc_call *c);
/* Whether the call may send a response now (the safety net of a handler
 * that never called rpc_call_authorize); logs when not. */
bool rpc_call_auth_may_answer(struct rpc_call *c);
void rpc_call_auth_release(struct rpc_call *c);

/* What authorize.c reads of a call (server.c). */
struct rpc_call_auth *rpc_call_auth_state(struct rpc_call *c);
struct rpc_server_auth *rpc_call_server_auth(struct rpc_call *c);
grpc_call *rpc_call_grpc(struct rpc_call *c);
unsigned rpc_call_method_perm(const struct rpc_call *c);

/* --- TLS credentials (tls.c) --- */

/* The server's certificate config, swapped by rpc_server_tls_replace: grpc
 * asks for it (tls_fetch) at each new handshake and takes the pending one. */
struct rpc_server_tls_state {
    pthread_mutex_t lock;
    bool initialized;
    bool on;        /* TLS at all */
    bool client_ca; /* client certificates required */
    grpc_ssl_server_certificate_config *pending;
};

/* TLS server credentials for opt->tls (state must outlive them), or
 * insecure ones when it is off. */
grpc_server_credentials *rpc_tls_server_credentials(const struct rpc_server_options *opt,
                                                    struct rpc_server_tls_state *state);
int rpc_tls_state_replace(struct rpc_server_tls_state *state, const struct rpc_server_tls *tls);
void rpc_tls_state_destroy(struct rpc_server_tls_state *state);
/* Client credentials for a grpcs:// channel from opt's files; NULL with err
 * set when one cannot be read. */
grpc_channel_credentials *rpc_tls_client_credentials(const struct rpc_client_options *opt,
                                                     char *err, size_t err_len);

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
