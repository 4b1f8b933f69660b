/*
 * svc_cas.c - build.bazel.remote.execution.v2.ContentAddressableStorage:
 * FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs and GetTree.
 *
 * A malformed digest anywhere in a request fails the whole request with
 * INVALID_ARGUMENT naming its index; per-blob problems in the Batch calls are
 * reported in that blob's own status, as the spec says. Requests are bounded
 * by server.max_batch_blobs digests and server.max_batch_bytes of data.
 *
 * Inline data may be zstd-compressed (API 2.1; the fields are unknown to
 * Debian's protos and read through reapi's unknown-field helpers): each
 * BatchUpdateBlobs request says its compressor, and is decompressed into
 * memory bounded by its digest's size before it is verified and stored
 * (the store keeps blobs uncompressed); BatchReadBlobs compresses a blob
 * when the client accepts zstd and it gets smaller, and says which it did.
 * A compressed request counts in the batch's bytes with the larger of its
 * data and its digest's size, so what it decompresses to is bounded too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

/* Converts every digest of a request; the first bad one fails the request.
 * A good digest is parsed without formatting its field name (FindMissingBlobs
 * may carry 100,000 of them); the name is made for the error only. */
static int cas_digests_from_request(Digest **pds, size_t n, struct cas_digest *out,
                                    struct reapi_status *st, const char *what)
{
    char field[64];

    for (size_t i = 0; i < n; i++) {
        const Digest *pd = pds[i];

        if (pd != NULL && pd->hash != NULL && pd->size_bytes >= 0 &&
            cas_digest_parse(pd->hash, pd->size_bytes, &out[i]) == 0)
            continue;
        snprintf(field, sizeof(field), "%s[%zu]", what, i);
        if (reapi_digest_from_proto(pd, &out[i], st, field) != 0)
            return -EINVAL;
    }
    return 0;
}

static bool cas_check_count(struct casboxd *d, size_t n, struct reapi_status *st, const char *what)
{
    if (n > d->cfg.max_batch_blobs) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s: %zu digests exceed the limit of %" PRIu64
                         " per request (server.max_batch_blobs)",
                         what, n, d->cfg.max_batch_blobs);
        return false;
    }
    return true;
}

/* A digest the decoder found malformed: INVALID_ARGUMENT naming its index,
 * worded as for every other request (reapi_digest_from_proto). */
static void cas_find_missing_bad(const struct find_missing_request *r, struct reapi_status *st)
{
    Digest pd = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
    struct cas_digest ignored;
    char field[64];

    pd.hash = r->bad_hash;
    pd.size_bytes = r->bad_size;
    snprintf(field, sizeof(field), "blob_digests[%zu]", r->bad_index);
    if (reapi_digest_from_proto(&pd, &ignored, st, field) == 0)
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: not a SHA-256 digest", field);
}

/* This thread's CPU time: the handler's cost whatever the machine's load. */
static uint64_t cas_thread_cpu_us(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0; /* not on Linux; the figure is only logged */
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* One FindMissingBlobs call's state while its digests stream past. */
struct find_missing_call {
    struct casboxd *d;
    struct reapi_status *st;
    struct find_missing_response resp;
    bool missing[FIND_MISSING_CHUNK];
    size_t n_missing;
    uint64_t lookup_us;
};

/* A chunk of digests: looked up (one index lock for the chunk), the missing
 * ones appended to the response. */
static int cas_find_missing_chunk(void *ctx, const struct cas_digest *dg, size_t n)
{
    struct find_missing_call *fc = ctx;
    uint64_t t0 = clock_mono_us();
    int rc;

    /* Answered by the source of truth: with [cas] remote, the remote, never
     * this host's cache (which would make the client skip an upload the
     * remote needs). */
    rc = shared_find_missing(fc->d, dg, n, fc->missing, fc->st);
    fc->lookup_us += clock_mono_us() - t0;
    if (rc != 0)
        return rc < 0 ? rc : -EIO;
    for (size_t i = 0; i < n; i++)
        fc->n_missing += fc->missing[i];
    if (find_missing_response_add(&fc->resp, dg, fc->missing, n) != 0) {
        reapi_status_set(fc->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* The request's slices, read where grpc received them. */
static int cas_request_spans(struct rpc_call *call, grpc_byte_buffer_reader *reader, bool *live,
                             struct find_missing_span **spans, size_t *n, size_t *cap)
{
    grpc_byte_buffer *bb = rpc_call_request_buffer(call);
    grpc_slice *s;

    if (bb == NULL || !grpc_byte_buffer_reader_init(reader, bb))
        return -EINVAL;
    *live = true;
    while (grpc_byte_buffer_reader_peek(reader, &s) != 0) {
        if (array_reserve((void **)spans, cap, *n, sizeof(**spans)) != 0)
            return -ENOMEM;
        (*spans)[(*n)++] =
            (struct find_missing_span){GRPC_SLICE_START_PTR(*s), GRPC_SLICE_LENGTH(*s)};
    }
    return 0;
}

/* FindMissingBlobs without protobuf-c and in bounded memory: the request is
 * scanned where grpc received it (instance, digest_function, count), then
 * its digests are parsed, looked up and answered a chunk at a time
 * (reapi/find_missing.c). The phases are logged at debug level. */
static void cas_find_missing(void *ctx, struct rpc_call *call)
{
    struct find_missing_call fc = {.d = ctx};
    struct find_missing_request req;
    struct reapi_status st;
    grpc_byte_buffer_reader reader;
    bool reader_live = false;
    struct find_missing_span *spans = NULL;
    size_t n_spans = 0, cap_spans = 0;
    uint64_t t0 = clock_mono_us(), cpu0 = cas_thread_cpu_us(), t_scan;
    int rc;

    reapi_status_init(&st);
    fc.st = &st;
    memset(&req, 0, sizeof(req));
    rc = cas_request_spans(call, &reader, &reader_live, &spans, &n_spans, &cap_spans);
    if (rc == 0)
        rc = find_missing_request_scan(spans, n_spans, &req);
    t_scan = clock_mono_us();
    if (rc == -ENOMEM) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "FindMissingBlobsRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req.instance_name, &st) != 0)
        goto out;
    if (reapi_digest_function_check_value(
            "FindMissingBlobsRequest", REAPI_FIELD_FIND_MISSING_BLOBS_REQUEST_DIGEST_FUNCTION,
            req.has_digest_function, req.digest_function_malformed, req.digest_function, &st) != 0)
        goto out;
    if (!cas_check_count(fc.d, req.n_digests, &st, "blob_digests"))
        goto out;
    rc = find_missing_request_digests(&req, cas_find_missing_chunk, &fc);
    if (rc == -EBADMSG) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "FindMissingBlobsRequest not parseable");
        goto out;
    }
    if (req.has_bad) {
        cas_find_missing_bad(&req, &st);
        goto out;
    }
    if (rc == -ENOMEM)
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    else if (rc != 0 && reapi_status_ok(&st)) /* else the chunk's lookup said why */
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "FindMissingBlobs: %s", strerror(-rc));
    if (rc != 0)
        goto out;
    if (fc.resp.buf == NULL) {
        fc.resp.buf = malloc(1); /* nothing missing: an empty message */
        if (fc.resp.buf == NULL) {
            reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
    }
    observe_find_missing(fc.d, req.n_digests, fc.n_missing);
    LOG_D("FindMissingBlobs: %zu digests, %zu missing: scan %" PRIu64
          " us, parse+lookup+encode %" PRIu64 " us (lookup %" PRIu64 " us), cpu %" PRIu64 " us",
          req.n_digests, fc.n_missing, t_scan - t0, clock_mono_us() - t_scan, fc.lookup_us,
          cas_thread_cpu_us() - cpu0);
    /* The answer goes as a message of its own, then the status. */
    rc = rpc_call_send_raw(call, fc.resp.buf, fc.resp.len, free, fc.resp.buf);
    fc.resp.buf = NULL; /* the send owns it now */
    if (rc != 0)
        reapi_status_set(&st, GRPC_STATUS_CANCELLED, "the response could not be sent");
out:
    rpc_call_finish(call, NULL, &st);
    find_missing_response_free(&fc.resp);
    find_missing_request_free(&req);
    free(spans);
    if (reader_live)
        grpc_byte_buffer_reader_destroy(&reader);
    reapi_status_free(&st);
}

static void cas_status_fill(Google__Rpc__Status *s, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Per-blob statuses own their message (freed by cas_status_free). */
static void cas_status_fill(Google__Rpc__Status *s, grpc_status_code code, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    google__rpc__status__init(s);
    s->code = code;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    s->message = strdup(buf);
    if (s->message == NULL)
        s->message = "";
}

static void cas_status_free(Google__Rpc__Status *s)
{
    if (s->message != NULL && s->message[0] != '\0')
        free(s->message);
}

/* The compressor of a BatchUpdateBlobs request (IDENTITY when unset); -1
 * when the field does not decode. */
static int64_t cas_update_compressor(const BatchUpdateBlobsRequest_Request *r)
{
    uint64_t v = REAPI_COMPRESSOR_IDENTITY;

    if (reapi_unknown_varint(&r->base, REAPI_FIELD_BATCH_UPDATE_REQUEST_COMPRESSOR, &v) < 0 ||
        v > INT32_MAX)
        return -1;
    return (int64_t)v;
}

/* What a request counts for in the batch's limit: its data, or for
 * compressed data the larger of that and what it decompresses to. */
static uint64_t cas_update_bytes(const BatchUpdateBlobsRequest_Request *r)
{
    uint64_t declared = r->digest != NULL && r->digest->size_bytes > 0 ? r->digest->size_bytes : 0;

    if (cas_update_compressor(r) == REAPI_COMPRESSOR_IDENTITY || declared < r->data.len)
        return r->data.len;
    return declared;
}

/* Stores one request's blob, decompressing it first when it is compressed.
 * Returns cas_store_put's result, or -EBADMSG with *status filled when the
 * compressor is not served or the data does not decompress to the digest's
 * size. *dec is made on first use. */
static int cas_update_one(struct casboxd *d, const BatchUpdateBlobsRequest_Request *r,
                          const struct cas_digest *dg, struct reapi_zstd_decoder **dec,
                          Google__Rpc__Status *status)
{
    int64_t compressor = cas_update_compressor(r);
    void *plain;
    int rc;

    if (compressor == REAPI_COMPRESSOR_IDENTITY)
        return cas_store_put(d->store, dg, r->data.data, r->data.len);
    if (!reapi_compressor_supported(compressor)) {
        const char *name = reapi_compressor_name(compressor);

        cas_status_fill(status, GRPC_STATUS_INVALID_ARGUMENT,
                        "compressor %s%s%" PRId64 "%s is not supported (this server offers "
                        "identity and zstd)",
                        name ? name : "", name ? " (" : "", compressor, name ? ")" : "");
        return -EBADMSG;
    }
    plain = malloc(dg->size ? (size_t)dg->size : 1);
    rc = plain ? 0 : -ENOMEM;
    if (rc == 0 && *dec == NULL)
        rc = reapi_zstd_decoder_new(dg->size, dec);
    if (rc == 0)
        rc = reapi_zstd_decoder_buffer(*dec, r->data.data, r->data.len, plain, (size_t)dg->size);
    if (rc == 0) {
        rc = cas_store_put(d->store, dg, plain, (size_t)dg->size);
    } else if (rc != -ENOMEM) {
        cas_status_fill(status, GRPC_STATUS_INVALID_ARGUMENT, "blob %s/%" PRId64 ": %s",
                        r->digest->hash, r->digest->size_bytes, reapi_zstd_decoder_error(*dec));
        rc = -EBADMSG;
    }
    free(plain);
    return rc;
}

/* Write-through: the blobs this batch stored go to [cas] remote before the
 * answer (the remote, not this cache, answers the next FindMissingBlobs).
 * When that fails, each of them reports the remote's status. */
static void cas_update_push(struct casboxd *d, const BatchUpdateBlobsRequest *req,
                            const BatchUpdateBlobsResponse *resp, Google__Rpc__Status *statuses)
{
    struct cas_digest *stored = calloc(resp->n_responses + 1, sizeof(*stored));
    struct reapi_status st;
    size_t n = 0;

    reapi_status_init(&st);
    if (stored == NULL) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < resp->n_responses; i++)
            if (statuses[i].code == GRPC_STATUS_OK &&
                reapi_digest_from_proto(req->requests[i]->digest, &stored[n], &st, "digest") == 0)
                n++;
        shared_push(d, stored, n, &st);
    }
    for (size_t i = 0; !reapi_status_ok(&st) && i < resp->n_responses; i++) {
        if (statuses[i].code == GRPC_STATUS_OK)
            cas_status_fill(&statuses[i], st.code, "%s", st.message);
    }
    reapi_status_free(&st);
    free(stored);
}

static void cas_batch_update(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    BatchUpdateBlobsRequest *req = NULL;
    BatchUpdateBlobsResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_RESPONSE__INIT;
    BatchUpdateBlobsResponse_Response *entries = NULL;
    Google__Rpc__Status *statuses = NULL;
    struct reapi_zstd_decoder *dec = NULL;
    struct reapi_status st;
    uint64_t total = 0, stored_blobs = 0, stored_bytes = 0;
    size_t n = 0;

    reapi_status_init(&st);
    if (rpc_call_request(
            call, &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor,
            (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "BatchUpdateBlobsRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (reapi_digest_function_check(
            &req->base, REAPI_FIELD_BATCH_UPDATE_BLOBS_REQUEST_DIGEST_FUNCTION, &st) != 0)
        goto out;
    n = req->n_requests;
    if (!cas_check_count(d, n, &st, "requests"))
        goto out;
    for (size_t i = 0; i < n; i++)
        total += cas_update_bytes(req->requests[i]);
    if (total > d->cfg.max_batch_bytes) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "batch of %" PRIu64 " bytes exceeds max_batch_total_size_bytes %" PRIu64
                         ": use ByteStream.Write for large blobs",
                         total, d->cfg.max_batch_bytes);
        goto out;
    }
    entries = calloc(n + 1, sizeof(*entries));
    statuses = calloc(n + 1, sizeof(*statuses));
    resp.responses = calloc(n + 1, sizeof(*resp.responses));
    if (entries == NULL || statuses == NULL || resp.responses == NULL) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *r =
            req->requests[i];
        struct reapi_status blob_st;
        struct cas_digest dg;
        int rc;

        build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(
            &entries[i]);
        entries[i].digest = r->digest;
        entries[i].status = &statuses[i];
        resp.responses[resp.n_responses++] = &entries[i];
        reapi_status_init(&blob_st);
        if (reapi_digest_from_proto(r->digest, &dg, &blob_st, "digest") != 0) {
            cas_status_fill(&statuses[i], GRPC_STATUS_INVALID_ARGUMENT, "%s", blob_st.message);
            continue;
        }
        rc = cas_update_one(d, r, &dg, &dec, &statuses[i]);
        if (rc == -EBADMSG)
            continue; /* the status says why */
        if (rc == -EINVAL) {
            cas_status_fill(&statuses[i], GRPC_STATUS_INVALID_ARGUMENT,
                            "data (%zu bytes%s) does not match digest %s/%" PRId64, r->data.len,
                            cas_update_compressor(r) == REAPI_COMPRESSOR_IDENTITY
                                ? ""
                                : ", decompressed from zstd",
                            r->digest->hash, r->digest->size_bytes);
        } else if (rc != 0) {
            char why[512];
            grpc_status_code code = svc_store_error(d, rc, (uint64_t)dg.size, why, sizeof(why));

            cas_status_fill(&statuses[i], code, "storing %s failed: %s", r->digest->hash, why);
        } else {
            google__rpc__status__init(&statuses[i]);
            stored_blobs++;
            stored_bytes += (uint64_t)dg.size;
        }
    }
    if (d->remote != NULL)
        cas_update_push(d, req, &resp, statuses);
out:
    observe_transfer(d, "written", "batch", stored_blobs, stored_bytes);
    rpc_call_finish(call, &resp.base, &st);
    for (size_t i = 0; statuses != NULL && i < resp.n_responses; i++)
        cas_status_free(&statuses[i]);
    free(resp.responses);
    free(entries);
    free(statuses);
    reapi_zstd_decoder_free(dec);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* Whether acceptable_compressors lists zstd (IDENTITY is always fine). */
static bool cas_read_accepts_zstd(const BatchReadBlobsRequest *req)
{
    uint64_t values[16];
    int n = reapi_unknown_varints(&req->base, REAPI_FIELD_BATCH_READ_ACCEPTABLE_COMPRESSORS, values,
                                  sizeof(values) / sizeof(values[0]));

    for (int i = 0; i < n; i++) {
        if (values[i] == REAPI_COMPRESSOR_ZSTD)
            return true;
    }
    return false;
}

/* Replaces an entry's data with its zstd compression when that is smaller,
 * and says so in the entry's compressor field (kept in *u). */
static void cas_read_compress(BatchReadBlobsResponse_Response *e, struct reapi_unknown_out *u)
{
    void *packed;
    size_t len;

    if (e->data.len == 0 ||
        reapi_zstd_compress_buffer(e->data.data, e->data.len, REAPI_ZSTD_LEVEL, &packed, &len) != 0)
        return; /* sent as it is */
    if (len >= e->data.len) {
        free(packed);
        return;
    }
    free(e->data.data);
    e->data.data = packed;
    e->data.len = len;
    reapi_unknown_out_init(u);
    reapi_unknown_out_varint(u, REAPI_FIELD_BATCH_READ_RESPONSE_COMPRESSOR, REAPI_COMPRESSOR_ZSTD);
    reapi_unknown_out_attach(u, &e->base);
}

static void cas_batch_read(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    BatchReadBlobsRequest *req = NULL;
    BatchReadBlobsResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__INIT;
    BatchReadBlobsResponse_Response *entries = NULL;
    Google__Rpc__Status *statuses = NULL;
    struct reapi_unknown_out *compressors = NULL;
    struct cas_digest *digests = NULL;
    struct reapi_status st;
    uint64_t total = 0, read_blobs = 0, read_bytes = 0;
    bool zstd = false;
    size_t n = 0;

    reapi_status_init(&st);
    if (rpc_call_request(call,
                         &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "BatchReadBlobsRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (reapi_digest_function_check(&req->base,
                                    REAPI_FIELD_BATCH_READ_BLOBS_REQUEST_DIGEST_FUNCTION, &st) != 0)
        goto out;
    n = req->n_digests;
    if (!cas_check_count(d, n, &st, "digests"))
        goto out;
    digests = calloc(n + 1, sizeof(*digests));
    entries = calloc(n + 1, sizeof(*entries));
    statuses = calloc(n + 1, sizeof(*statuses));
    compressors = calloc(n + 1, sizeof(*compressors));
    resp.responses = calloc(n + 1, sizeof(*resp.responses));
    if (digests == NULL || entries == NULL || statuses == NULL || compressors == NULL ||
        resp.responses == NULL) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (cas_digests_from_request(req->digests, n, digests, &st, "digests") != 0)
        goto out;
    for (size_t i = 0; i < n; i++)
        total += (uint64_t)digests[i].size;
    if (total > d->cfg.max_batch_bytes) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "batch of %" PRIu64 " bytes exceeds max_batch_total_size_bytes %" PRIu64
                         ": use ByteStream.Read for large blobs",
                         total, d->cfg.max_batch_bytes);
        goto out;
    }
    zstd = cas_read_accepts_zstd(req);
    for (size_t i = 0; i < n; i++) {
        void *buf = NULL;
        size_t len = 0;
        int rc;

        build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(&entries[i]);
        entries[i].digest = req->digests[i];
        entries[i].status = &statuses[i];
        resp.responses[resp.n_responses++] = &entries[i];
        rc = cas_store_get(d->store, &digests[i], &buf, &len);
        if (rc == 0) {
            entries[i].data.data = buf;
            entries[i].data.len = len;
            read_blobs++;
            read_bytes += len;
            if (zstd)
                cas_read_compress(&entries[i], &compressors[i]);
            google__rpc__status__init(&statuses[i]);
        } else {
            struct reapi_status rst;

            reapi_status_init(&rst);
            shared_read_status(d, &digests[i], rc, &rst);
            cas_status_fill(&statuses[i], rst.code, "%s", rst.message);
            reapi_status_free(&rst);
        }
    }
out:
    observe_transfer(d, "read", "batch", read_blobs, read_bytes);
    rpc_call_finish(call, &resp.base, &st);
    for (size_t i = 0; entries != NULL && i < resp.n_responses; i++) {
        free(entries[i].data.data);
        cas_status_free(&statuses[i]);
    }
    free(resp.responses);
    free(entries);
    free(statuses);
    free(compressors);
    free(digests);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* --- GetTree --- */

/* The directories of a tree in breadth-first order, each once: an
 * open-addressing set of indices (keyed by the hash's first bytes) finds
 * repeats in constant time, so shared subtrees cost nothing extra. */
struct tree_walk {
    Directory **dirs;
    struct cas_digest *digests;
    size_t n, cap;
    uint32_t *slots; /* index + 1, 0 = empty; power-of-two size, kept under half full */
    size_t n_slots;
};

static size_t tree_walk_slot(const struct tree_walk *w, const struct cas_digest *dg, bool *found)
{
    uint64_t h;
    size_t i;

    memcpy(&h, dg->hash, sizeof(h));
    for (i = h & (w->n_slots - 1);; i = (i + 1) & (w->n_slots - 1)) {
        uint32_t v = w->slots[i];

        if (v == 0) {
            *found = false;
            return i;
        }
        if (cas_digest_equal(&w->digests[v - 1], dg)) {
            *found = true;
            return i;
        }
    }
}

static int tree_walk_grow(struct tree_walk *w)
{
    size_t cap = w->cap ? w->cap * 2 : 64;
    Directory **dirs;
    struct cas_digest *digests;

    dirs = realloc(w->dirs, cap * sizeof(*dirs));
    if (dirs == NULL)
        return -ENOMEM;
    w->dirs = dirs;
    digests = realloc(w->digests, cap * sizeof(*digests));
    if (digests == NULL)
        return -ENOMEM;
    w->digests = digests;
    w->cap = cap;
    free(w->slots);
    w->n_slots = cap * 2;
    w->slots = calloc(w->n_slots, sizeof(*w->slots));
    if (w->slots == NULL)
        return -ENOMEM;
    for (size_t k = 0; k < w->n; k++) {
        bool found;

        w->slots[tree_walk_slot(w, &w->digests[k], &found)] = (uint32_t)(k + 1);
    }
    return 0;
}

static int tree_walk_add(struct tree_walk *w, struct cas_store *store, const struct cas_digest *dg)
{
    void *buf = NULL;
    size_t len, slot;
    Directory *dir;
    bool found;
    int rc;

    if (w->n == w->cap) {
        rc = tree_walk_grow(w);
        if (rc != 0)
            return rc;
    }
    slot = tree_walk_slot(w, dg, &found);
    if (found)
        return 0;
    rc = cas_store_get(store, dg, &buf, &len);
    if (rc != 0)
        return rc;
    dir = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
    free(buf);
    if (dir == NULL)
        return -EBADMSG;
    w->dirs[w->n] = dir;
    w->digests[w->n] = *dg;
    w->n++;
    w->slots[slot] = (uint32_t)w->n;
    return 0;
}

static void tree_walk_free(struct tree_walk *w)
{
    for (size_t i = 0; i < w->n; i++)
        build__bazel__remote__execution__v2__directory__free_unpacked(w->dirs[i], NULL);
    free(w->dirs);
    free(w->digests);
    free(w->slots);
}

#define GET_TREE_MAX_DIRECTORIES 1000000

static void cas_get_tree(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    GetTreeRequest *req = NULL;
    struct tree_walk w = {0};
    struct reapi_status st;
    struct cas_digest root;
    int64_t start = 0;
    size_t page;
    int rc;

    reapi_status_init(&st);
    if (rpc_call_request(call, &build__bazel__remote__execution__v2__get_tree_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "GetTreeRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (reapi_digest_function_check(&req->base, REAPI_FIELD_GET_TREE_REQUEST_DIGEST_FUNCTION,
                                    &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->root_digest, &root, &st, "root_digest") != 0)
        goto out;
    if (req->page_size < 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "page_size %d is negative",
                         req->page_size);
        goto out;
    }
    if (req->page_token != NULL && req->page_token[0] != '\0' &&
        reapi_parse_size(req->page_token, strlen(req->page_token), &start) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "page_token '%s' was not issued by this server", req->page_token);
        goto out;
    }
    rc = tree_walk_add(&w, d->store, &root);
    if (rc != 0) {
        reapi_status_set(&st, rc == -ENOENT ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INVALID_ARGUMENT,
                         "root directory %s/%" PRId64 " %s", req->root_digest->hash,
                         req->root_digest->size_bytes,
                         rc == -ENOENT ? "not found" : "is not a Directory message");
        goto out;
    }
    /* Breadth first; missing or unparsable subtrees are omitted (the spec's rule). */
    for (size_t i = 0; i < w.n && w.n < GET_TREE_MAX_DIRECTORIES; i++) {
        for (size_t k = 0; k < w.dirs[i]->n_directories; k++) {
            struct reapi_status ignored;
            struct cas_digest child;

            reapi_status_init(&ignored);
            if (reapi_digest_from_proto(w.dirs[i]->directories[k]->digest, &child, &ignored,
                                        "child") != 0)
                continue;
            rc = tree_walk_add(&w, d->store, &child);
            if (rc == -ENOMEM) {
                reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
        }
    }
    if ((size_t)start > w.n) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "page_token '%s' is past the end",
                         req->page_token);
        goto out;
    }
    page = req->page_size > 0 ? (size_t)req->page_size : 1000;
    for (size_t i = (size_t)start; i < w.n || i == (size_t)start;) {
        GetTreeResponse resp = BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_TREE_RESPONSE__INIT;
        size_t n = w.n - i < page ? w.n - i : page;
        uint64_t bytes = 0;
        char token[32] = "";

        /* Keep each message well below the message size limit. */
        for (size_t k = 0; k < n; k++) {
            bytes += w.digests[i + k].size + 16;
            if (bytes > d->cfg.max_batch_bytes && k > 0) {
                n = k;
                break;
            }
        }
        resp.directories = &w.dirs[i];
        resp.n_directories = n;
        if (i + n < w.n)
            snprintf(token, sizeof(token), "%zu", i + n);
        resp.next_page_token = token;
        if (rpc_call_send(call, &resp.base) != 0)
            goto out;
        i += n;
        if (i >= w.n)
            break;
    }
out:
    rpc_call_finish(call, NULL, &st);
    tree_walk_free(&w);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

const struct rpc_method cas_methods[] = {
    {"/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs", RPC_UNARY,
     RPC_POOL_SHORT, cas_find_missing, AUTH_PERM_READ},
    {"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs", RPC_UNARY,
     RPC_POOL_SHORT, cas_batch_update, AUTH_PERM_WRITE},
    {"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs", RPC_UNARY,
     RPC_POOL_SHORT, cas_batch_read, AUTH_PERM_READ},
    {"/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree", RPC_SERVER_STREAM,
     RPC_POOL_SHORT, cas_get_tree, AUTH_PERM_READ},
};
const size_t cas_n_methods = sizeof(cas_methods) / sizeof(cas_methods[0]);
