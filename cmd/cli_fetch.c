/*
 * cli_fetch.c - an action's blobs, from a REAPI server into a local CAS.
 *
 * The daemon's own loader decides what is needed: action_load walks the
 * Action, its Command and the input tree in the local store and lists every
 * blob it misses (FAILED_PRECONDITION with the digests, as it would tell
 * Bazel). Those are fetched and the load is tried again. Each round reaches
 * one directory level deeper, so the number of rounds is the depth of the
 * tree plus two, and the action that finally loads has passed exactly the
 * validation casboxd applies.
 *
 * Small blobs come in BatchReadBlobs requests within the server's
 * max_batch_total_size_bytes (GetCapabilities); large ones with
 * ByteStream.Read, streamed into a cas_writer. The store verifies every
 * blob's size and hash on the way in.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_replay.h"
#include "exec/exec.h"
#include "reapi/reapi.h"

#define FETCH_DEFAULT_BATCH (4u << 20) /* when the server does not say */
#define FETCH_MAX_BATCH     (64u << 20)
#define FETCH_BATCH_BLOBS   1000
#define FETCH_ENTRY_BYTES   128 /* room for one entry's framing in a batch answer */

struct fetch_ctx {
    struct rpc_client *rpc;
    const char *instance;
    struct cas_store *cas;
    uint64_t max_batch;
    struct cli_fetch_stats *stats;
    char *err;
    size_t err_len;
};

static int fetch_rpc_error(struct fetch_ctx *fc, int rc, const char *what,
                           const struct rpc_client_status *st)
{
    snprintf(fc->err, fc->err_len, "%s: %s: %s", what, rpc_status_code_name(st->code), st->message);
    return rc;
}

static int fetch_capabilities(struct fetch_ctx *fc)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = NULL;
    struct rpc_client_status st;
    int rc;

    req.instance_name = (char *)fc->instance;
    rc = rpc_client_unary(fc->rpc, RPC_CLIENT_GET_CAPABILITIES, &req.base,
                          &build__bazel__remote__execution__v2__server_capabilities__descriptor,
                          (ProtobufCMessage **)&caps, &st);
    if (rc != 0)
        return fetch_rpc_error(fc, rc, "GetCapabilities", &st);
    fc->max_batch = FETCH_DEFAULT_BATCH;
    if (caps->cache_capabilities != NULL &&
        caps->cache_capabilities->max_batch_total_size_bytes > 0)
        fc->max_batch = (uint64_t)caps->cache_capabilities->max_batch_total_size_bytes;
    if (fc->max_batch > FETCH_MAX_BATCH)
        fc->max_batch = FETCH_MAX_BATCH;
    protobuf_c_message_free_unpacked(&caps->base, NULL);
    return 0;
}

/* --- BatchReadBlobs --- */

static int fetch_batch(struct fetch_ctx *fc, const struct cas_digest *digests, size_t n,
                       size_t *stored)
{
    BatchReadBlobsRequest req = BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_REQUEST__INIT;
    BatchReadBlobsResponse *resp = NULL;
    struct reapi_digest_buf *bufs = calloc(n, sizeof(*bufs));
    Digest **list = calloc(n, sizeof(*list));
    struct rpc_client_status gst;
    char name[CAS_HASH_HEX + 24];
    int rc = 0;

    if (bufs == NULL || list == NULL) {
        rc = -ENOMEM;
        snprintf(fc->err, fc->err_len, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        reapi_digest_to_proto(&digests[i], &bufs[i]);
        list[i] = &bufs[i].pd;
    }
    req.instance_name = (char *)fc->instance;
    req.n_digests = n;
    req.digests = list;
    rc = rpc_client_unary(
        fc->rpc, RPC_CLIENT_BATCH_READ_BLOBS, &req.base,
        &build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
        (ProtobufCMessage **)&resp, &gst);
    if (rc != 0) {
        fetch_rpc_error(fc, rc, "BatchReadBlobs", &gst);
        goto out;
    }
    for (size_t i = 0; i < resp->n_responses; i++) {
        const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *r =
            resp->responses[i];
        struct reapi_status st;
        struct cas_digest d;

        reapi_status_init(&st);
        rc = reapi_digest_from_proto(r->digest, &d, &st, "digest");
        reapi_status_free(&st);
        if (rc != 0) {
            snprintf(fc->err, fc->err_len, "BatchReadBlobs answered with a malformed digest");
            rc = -EPROTO;
            goto out;
        }
        cli_digest_string(&d, name, sizeof(name));
        if (r->status != NULL && r->status->code != 0) {
            snprintf(fc->err, fc->err_len, "the server has no blob %s (%s: %s)", name,
                     rpc_status_code_name((grpc_status_code)r->status->code),
                     r->status->message ? r->status->message : "");
            rc = -ENOENT;
            goto out;
        }
        rc = cas_store_put(fc->cas, &d, r->data.data, r->data.len);
        if (rc != 0) {
            snprintf(fc->err, fc->err_len, "blob %s from the server: %s", name,
                     rc == -EINVAL ? "its data does not match its digest" : strerror(-rc));
            goto out;
        }
        (*stored)++;
        fc->stats->blobs++;
        fc->stats->bytes += r->data.len;
    }
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(list);
    free(bufs);
    return rc;
}

/* --- ByteStream.Read --- */

struct fetch_stream {
    struct cas_writer *w;
    int error;
};

static int fetch_stream_message(void *ctx, grpc_byte_buffer *message)
{
    struct fetch_stream *fs = ctx;
    Google__Bytestream__ReadResponse *r = (Google__Bytestream__ReadResponse *)rpc_message_unpack(
        message, &google__bytestream__read_response__descriptor);
    int rc;

    if (r == NULL)
        return fs->error = -EPROTO;
    rc = cas_writer_append(fs->w, r->data.data, r->data.len);
    google__bytestream__read_response__free_unpacked(r, NULL);
    if (rc != 0)
        fs->error = rc;
    return rc;
}

static int fetch_stream_blob(struct fetch_ctx *fc, const struct cas_digest *d)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
    struct fetch_stream fs = {.w = NULL, .error = 0};
    struct rpc_client_status gst;
    char hex[CAS_HASH_HEX + 1], name[CAS_HASH_HEX + 24], *resource = NULL;
    int rc;

    cas_digest_hex(d, hex);
    cli_digest_string(d, name, sizeof(name));
    if (asprintf(&resource, "%s%sblobs/%s/%" PRId64, fc->instance, fc->instance[0] ? "/" : "", hex,
                 d->size) < 0)
        return -ENOMEM;
    rc = cas_writer_begin(fc->cas, d, &fs.w);
    if (rc != 0) {
        snprintf(fc->err, fc->err_len, "storing blob %s: %s", name, strerror(-rc));
        goto out;
    }
    req.resource_name = resource;
    rc = rpc_client_server_stream(fc->rpc, RPC_CLIENT_BYTESTREAM_READ, &req.base,
                                  fetch_stream_message, &fs, &gst);
    if (rc != 0) {
        cas_writer_abort(fs.w);
        if (fs.error != 0)
            snprintf(fc->err, fc->err_len, "ByteStream.Read %s: %s", resource,
                     fs.error == -EFBIG ? "more data than the digest's size" : strerror(-fs.error));
        else
            fetch_rpc_error(fc, rc, "ByteStream.Read", &gst);
        goto out;
    }
    rc = cas_writer_commit(fs.w);
    if (rc != 0) {
        snprintf(fc->err, fc->err_len, "blob %s from the server: %s", name,
                 rc == -EINVAL ? "its data does not match its digest" : strerror(-rc));
        goto out;
    }
    fc->stats->blobs++;
    fc->stats->bytes += (uint64_t)d->size;
out:
    free(resource);
    return rc;
}

/* --- what action_load asks for --- */

static int fetch_compare_size(const void *a, const void *b)
{
    const struct cas_digest *x = a, *y = b;

    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    return memcmp(x->hash, y->hash, sizeof(x->hash));
}

static bool fetch_is_small(const struct fetch_ctx *fc, const struct cas_digest *d)
{
    return (uint64_t)d->size * 2 <= fc->max_batch;
}

/* Fetches every digest (sorted and deduplicated in place); *stored counts
 * the blobs stored. Sorted by size, the small ones come first and go in
 * batches; the large ones follow, one stream each. */
static int fetch_blobs(struct fetch_ctx *fc, struct cas_digest *digests, size_t n, size_t *stored)
{
    size_t m = 0, i = 0;
    int rc = 0;

    qsort(digests, n, sizeof(*digests), fetch_compare_size);
    for (size_t k = 0; k < n; k++)
        if (m == 0 || fetch_compare_size(&digests[k], &digests[m - 1]) != 0)
            digests[m++] = digests[k];
    while (rc == 0 && i < m && fetch_is_small(fc, &digests[i])) {
        size_t start = i;
        uint64_t bytes = 0;

        while (i < m && fetch_is_small(fc, &digests[i]) && i - start < FETCH_BATCH_BLOBS &&
               (i == start ||
                bytes + (uint64_t)digests[i].size + FETCH_ENTRY_BYTES <= fc->max_batch)) {
            bytes += (uint64_t)digests[i].size + FETCH_ENTRY_BYTES;
            i++;
        }
        rc = fetch_batch(fc, digests + start, i - start, stored);
    }
    for (; rc == 0 && i < m; i++) {
        rc = fetch_stream_blob(fc, &digests[i]);
        if (rc == 0)
            (*stored)++;
    }
    return rc;
}

int cli_fetch_action(struct rpc_client *rpc, const char *instance, struct cas_store *cas,
                     const struct cas_digest *digest, const struct casbox_config *cfg,
                     struct action **out, struct cli_fetch_stats *stats, char *err, size_t err_len)
{
    struct fetch_ctx fc = {
        .rpc = rpc,
        .instance = instance,
        .cas = cas,
        .stats = stats,
        .err = err,
        .err_len = err_len,
    };
    struct reapi_status st;
    char name[CAS_HASH_HEX + 24];
    int rc;

    memset(stats, 0, sizeof(*stats));
    *out = NULL;
    cli_digest_string(digest, name, sizeof(name));
    rc = fetch_capabilities(&fc);
    if (rc != 0)
        return rc;
    for (;;) {
        size_t stored = 0;

        reapi_status_init(&st);
        stats->rounds++;
        rc = action_load(cas, digest, cfg, out, &st);
        if (rc == 0)
            break;
        if (st.code != GRPC_STATUS_FAILED_PRECONDITION || st.n_missing == 0) {
            snprintf(err, err_len, "action %s: %s: %s", name, rpc_status_code_name(st.code),
                     st.message);
            break;
        }
        if (stats->rounds > ACTION_MAX_INPUT_DEPTH + 3) {
            snprintf(err, err_len, "action %s: the input tree is deeper than %d levels", name,
                     ACTION_MAX_INPUT_DEPTH);
            rc = -ELOOP;
            break;
        }
        rc = fetch_blobs(&fc, st.missing, st.n_missing, &stored);
        if (rc == -ENOENT && stats->rounds == 1) /* the Action itself */
            snprintf(err, err_len, "the server has no action %s (instance '%s')", name, instance);
        if (rc == 0 && stored == 0) {
            cli_digest_string(&st.missing[0], name, sizeof(name));
            snprintf(err, err_len, "the server did not return blob %s", name);
            rc = -ENOENT;
        }
        if (rc != 0)
            break;
        reapi_status_free(&st);
    }
    reapi_status_free(&st);
    return rc;
}

int cli_fetch_blob(struct rpc_client *rpc, const char *instance, struct cas_store *cas,
                   const struct cas_digest *digest, char *err, size_t err_len)
{
    struct cli_fetch_stats stats;
    struct fetch_ctx fc = {
        .rpc = rpc,
        .instance = instance,
        .cas = cas,
        .max_batch = FETCH_DEFAULT_BATCH,
        .stats = &stats,
        .err = err,
        .err_len = err_len,
    };
    struct cas_digest d = *digest;
    size_t stored = 0;

    memset(&stats, 0, sizeof(stats));
    if (cas_store_contains(cas, digest) == 1)
        return 0;
    return fetch_blobs(&fc, &d, 1, &stored);
}
