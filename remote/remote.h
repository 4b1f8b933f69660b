/*
 * remote.h - another REAPI CAS (and optionally its ActionCache) as the
 * source of truth, with this host's store as a bounded cache in front of it.
 *
 * Why a library of its own: the daemon's services (FindMissingBlobs
 * forwarded, writes passed through, outputs pushed before the ActionCache
 * entry), the fleet's workers and the store's fetch-through all need the same
 * few calls against the upstream, over the project's one gRPC client
 * (rpc/client.c). It sits above rpc/ and cas/: remote_attach() installs its
 * fetcher in a cas_store, so every read of the store (FUSE, staging, the
 * action loader) reads through to the remote on a miss.
 *
 * Errors: every function returns 0 or a negative errno and, where it takes
 * one, fills a struct rpc_client_status whose message names the remote
 * ("remote grpc://HOST:PORT: ..."):
 *   -ENOENT       the remote has no such blob or ActionResult (NOT_FOUND)
 *   -EHOSTUNREACH the remote cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
 *   -EBADMSG      the remote sent bytes that do not match the digest
 *                 (rejected and logged with the digest; nothing is stored)
 *   -EIO          any other status from the remote; -ENOMEM; -EINVAL.
 * All functions are thread-safe.
 */
#ifndef CASBOX_REMOTE_H
#define CASBOX_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cas/cas.h"
#include "rpc/rpc.h"

#define REMOTE_DEFAULT_TIMEOUT_MS    60000u
#define REMOTE_DEFAULT_BATCH_DIGESTS 4096u        /* digests per FindMissingBlobs */
#define REMOTE_DEFAULT_BATCH_BYTES   (1u << 20)   /* BatchUpdate/ReadBlobs request bytes */
#define REMOTE_DEFAULT_CHUNK_BYTES   (256u << 10) /* ByteStream.Write chunk */
#define REMOTE_RECONNECT_BACKOFF_MS  2000u        /* longest wait before reconnecting */

struct remote_options {
    const char *url;           /* grpc://HOST:PORT (grpcs:// once TLS is configured) */
    const char *instance_name; /* the remote's instance name; NULL or "" for none */
    /* Channel options: every call's deadline (rpc.timeout_ms; 0: 60 s), the
     * largest message, and whatever TLS and credential fields rpc/ offers. */
    struct rpc_client_options rpc;
    uint64_t batch_digests; /* 0: REMOTE_DEFAULT_BATCH_DIGESTS */
    /* Largest batch request; 0: REMOTE_DEFAULT_BATCH_BYTES, lowered to the
     * remote's max_batch_total_size_bytes when it says less. */
    uint64_t batch_bytes;
    uint64_t chunk_bytes; /* 0: REMOTE_DEFAULT_CHUNK_BYTES */
};

struct remote;

/* Opens a channel to opt->url (no connection before the first call). err
 * says why it failed, naming the url. */
int remote_open(const struct remote_options *opt, struct remote **out, char *err, size_t err_len);
/* No call may be running. */
void remote_close(struct remote *r);
/* "grpc://HOST:PORT", as configured. */
const char *remote_url(const struct remote *r);

/* Makes store a cache in front of r: a miss fetches from r (ByteStream.Read,
 * verified into the store; concurrent misses of one digest share one fetch),
 * and cas_store_find_missing asks r for blobs not here. r must outlive the
 * store's use; remote_detach undoes it. */
int remote_attach(struct remote *r, struct cas_store *store);
void remote_detach(struct remote *r, struct cas_store *store);

/* Fetches one blob into store through a verifying cas_writer. */
int remote_fetch(struct remote *r, struct cas_store *store, const struct cas_digest *d,
                 struct rpc_client_status *st);

/* Of digests[0..n), sets missing[i] for those the remote lacks. Batched by
 * batch_digests; the remote's FindMissingBlobs also keeps the others alive.
 * instance NULL: the configured one. */
int remote_find_missing(struct remote *r, const char *instance, const struct cas_digest *digests,
                        size_t n, bool *missing, struct rpc_client_status *st);

/* Uploads from store every one of digests[0..n) that the remote lacks:
 * small blobs in BatchUpdateBlobs requests, large ones streamed with
 * ByteStream.Write (never read whole into memory). -ENOENT (naming the
 * digest) when one is in neither place. */
int remote_push(struct remote *r, struct cas_store *store, const char *instance,
                const struct cas_digest *digests, size_t n, struct rpc_client_status *st);

/* A streamed upload of one blob (a client's Write passed through): begin,
 * append the bytes in order, finish. finish fails when fewer or other bytes
 * than d were sent; abort cancels. */
struct remote_upload;
int remote_upload_begin(struct remote *r, const char *instance, const struct cas_digest *d,
                        struct remote_upload **out, struct rpc_client_status *st);
int remote_upload_append(struct remote_upload *u, const void *buf, size_t len,
                         struct rpc_client_status *st);
int remote_upload_finish(struct remote_upload *u, struct rpc_client_status *st);
void remote_upload_abort(struct remote_upload *u);

/* The remote's ActionCache: serialized ActionResult bytes for an action
 * digest. get: -ENOENT when it has none; buf is malloc'd. */
int remote_ac_get(struct remote *r, const char *instance, const struct cas_digest *action,
                  void **buf, size_t *len, struct rpc_client_status *st);
int remote_ac_put(struct remote *r, const char *instance, const struct cas_digest *action,
                  const void *buf, size_t len, struct rpc_client_status *st);

/* Counters since remote_open, for logs and metrics. */
struct remote_stats {
    uint64_t fetched_blobs;
    uint64_t fetched_bytes;
    uint64_t fetch_failures;
    uint64_t rejected_blobs; /* bytes that did not match their digest */
    uint64_t pushed_blobs;
    uint64_t pushed_bytes;
    uint64_t find_missing_calls;
};
void remote_get_stats(struct remote *r, struct remote_stats *out);

/* The errno for a status code from the remote (see the list above). */
int remote_errno_of(grpc_status_code code);

#endif
