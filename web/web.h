/*
 * web.h - casboxd's HTTP side for the people who run it: /metrics for
 * Prometheus, and server-rendered pages (overview, action, input tree,
 * blob downloads) over libmicrohttpd, plus the board those pages read: the
 * actions running now and a bounded history of finished ones, failed ones
 * included (the ActionCache keeps only clean successes).
 *
 * Everything is bounded by web_options: connections, request size (URL and
 * headers, enforced by libmicrohttpd, which answers 414/431 past it), the
 * idle time of a connection, the history's length, the stdout/stderr shown
 * inline and the size of a message decoded for a page. Blobs are streamed
 * from their CAS file in pieces, never read whole into memory.
 *
 * TLS: with web_options.tls_* set, the listener speaks HTTPS only (GnuTLS
 * inside libmicrohttpd); a plain HTTP request on it gets no answer.
 *
 * Access: web_options.authorize, when set, sees every request's
 * Authorization header first and may refuse it (401). The [auth] work plugs
 * its read-token check in there.
 */
#ifndef CASBOX_WEB_H
#define CASBOX_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cas/cas.h"

struct metrics;
struct web_board;
struct web_server;

/* --- the board (board.c) --- */

/* ExecutedActionMetadata's timestamps, real-time microseconds (0: not
 * reached). */
struct web_action_times {
    uint64_t queued;
    uint64_t worker_start;
    uint64_t input_fetch_start, input_fetch_end;
    uint64_t execution_start, execution_end;
    uint64_t output_upload_start, output_upload_end;
    uint64_t worker_end;
};

/* EXECUTING: taken by a slot or a worker, its step not (yet) reported;
 * then INPUT_FETCH (staging the input tree), RUNNING (the command in its
 * sandbox), OUTPUT_UPLOAD (collecting and storing outputs). */
enum web_stage {
    WEB_STAGE_QUEUED,
    WEB_STAGE_EXECUTING,
    WEB_STAGE_INPUT_FETCH,
    WEB_STAGE_RUNNING,
    WEB_STAGE_OUTPUT_UPLOAD,
    WEB_STAGE_DONE,
    WEB_STAGE_COUNT
};

/* "queued", "executing", "input_fetch", "running", "output_upload", "done". */
const char *web_stage_name(enum web_stage s);

/* One action as the pages show it. Strings are copied in, truncated. */
struct web_action {
    char instance[256];
    struct cas_digest digest;
    char mnemonic[64]; /* RequestMetadata.action_mnemonic, "" when not sent */
    char target[256];  /* RequestMetadata.target_id */
    char worker[128];
    enum web_stage stage;
    /* Once finished: */
    char outcome[32]; /* ok, exit_nonzero, timeout, limit_<kind>, error, cancelled */
    int exit_code;
    char message[256];
    /* The packed ExecuteResponse, stored in the CAS (so failed results stay
     * viewable while the CAS keeps them); size -1: none. */
    struct cas_digest response;
    struct web_action_times times;
};

/* history_size: finished actions kept (the oldest dropped first). */
int web_board_new(size_t history_size, struct web_board **out);
void web_board_free(struct web_board *b);
/* An action was queued; (instance, digest) is unique among running ones
 * (identical Executes share one). -ENOMEM. */
int web_board_begin(struct web_board *b, const struct web_action *a);
/* The running entry moves to stage; the times of the stage it leaves and
 * the one it enters are stamped now (the overview's elapsed per stage). */
void web_board_stage(struct web_board *b, const char *instance, const struct cas_digest *d,
                     enum web_stage stage);
/* Running entries by stage, for a gauge: counts[WEB_STAGE_COUNT]. */
void web_board_count_stages(struct web_board *b, uint64_t *counts);
/* Sets what is known once the run is over (outcome, exit code, worker,
 * times) on the running entry. */
void web_board_result(struct web_board *b, const struct web_action *a);
/* Moves the running entry into the history (outcome "error" when no result
 * was set); response: where its ExecuteResponse is in the CAS, or NULL. */
void web_board_finish(struct web_board *b, const char *instance, const struct cas_digest *d,
                      const struct cas_digest *response);
/* A cache lookup of Execute or GetActionResult: counted per minute for the
 * overview's hit-rate chart. */
void web_board_note_cache(struct web_board *b, bool hit);
/* The newest finished entry for digest (any instance); -ENOENT. */
int web_board_find(struct web_board *b, const struct cas_digest *d, struct web_action *out);

/* One worker slot of a fleet, as the overview shows it. */
struct web_worker_row {
    char id[128];
    char state[16]; /* idle, busy, draining */
    char action[96];
    char platform[96];
    uint32_t size_class;
    uint64_t since_us; /* wall clock: joined or took its action */
    uint64_t runs;
};
/* Names the worker running the entry (a fleet scheduler hands it out). */
void web_board_worker(struct web_board *b, const char *instance, const struct cas_digest *d,
                      const char *worker);

/* --- the HTTP server (server.c) --- */

#define WEB_PEER_NAMES    8
#define WEB_PEER_NAME_LEN 256

/* Who sent a request: what authorize judges. */
struct web_peer {
    const char *authorization; /* the Authorization header, NULL when none */
    bool has_certificate;      /* a client certificate verified by [tls] client_ca */
    size_t n_names;            /* its CN, then its subject alternative names */
    char names[WEB_PEER_NAMES][WEB_PEER_NAME_LEN];
};

struct web_options {
    const char *listen;          /* HOST:PORT */
    uint64_t max_connections;    /* at once; more are refused by the listener */
    uint64_t connection_timeout; /* seconds a connection may stay idle */
    uint64_t request_bytes;      /* memory per connection: URL, headers */
    uint64_t threads;            /* polling threads */
    uint64_t inline_bytes;       /* stdout/stderr shown on a page */
    uint64_t max_message_bytes;  /* largest Action/Command/Directory decoded for a page */
    const char *grpc_url;        /* for the casbox-replay line: grpc://HOST:PORT */
    const char *worker_name;     /* the overview's worker row */
    /* Role scheduler: the fleet's worker slots for the overview's table
     * (NULL: this host is the one worker). Fills at most max rows. */
    size_t (*fleet_workers)(void *ctx, struct web_worker_row *rows, size_t max);
    void *fleet_workers_ctx;
    struct cas_store *store;
    struct metrics *metrics;
    struct web_board *board;
    /* NULL: every request is allowed. Else 0 lets the request through and a
     * negative errno answers 401; peer: the header's value and the client
     * certificate's names. */
    int (*authorize)(void *ctx, const struct web_peer *peer);
    void *authorize_ctx;
    /* [tls]: PEM text, copied at start. NULL certificate: plain HTTP. With
     * client_ca, a request whose TLS peer has no certificate signed by it is
     * answered 403 before authorize is asked. */
    const char *tls_certificate;
    const char *tls_private_key;
    const char *tls_client_ca;
};

/* -ENOTSUP: TLS asked of a libmicrohttpd built without it; -EADDRINUSE;
 * -EINVAL: a listen address that is not HOST:PORT, or TLS files GnuTLS
 * refuses. */
int web_server_start(const struct web_options *opt, struct web_server **out);
/* Closes the listener and every connection; NULL is fine. */
void web_server_stop(struct web_server *s);

/* --- URLs (route.c) --- */

enum web_route_kind {
    WEB_ROUTE_OVERVIEW, /* / */
    WEB_ROUTE_METRICS,  /* /metrics */
    WEB_ROUTE_ACTION,   /* /action/<hash>/<size> */
    WEB_ROUTE_DIR,      /* /dir/<hash>/<size> */
    WEB_ROUTE_BLOB,     /* /blob/<hash>/<size>[/<name>] */
    WEB_ROUTE_HISTORY,  /* /history */
};

struct web_route {
    enum web_route_kind kind;
    struct cas_digest digest;
    char name[256]; /* blob: the file name to download as, "" when none */
};

/* Parses a request path (no query string). -ENOENT for a path that is no
 * page, -EINVAL for a page with a malformed digest (detail says what, for
 * the 400 page). */
int web_route_parse(const char *path, struct web_route *out, char *detail, size_t detail_len);

#endif
