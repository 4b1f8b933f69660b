/*
 * upload.c - blobs to the remote: one streamed upload (ByteStream.Write, a
 * message per chunk as the bytes come, so a client's Write passes through
 * without being held whole), and remote_push, which sends what the remote
 * lacks of a list of local blobs: small ones in BatchUpdateBlobs requests of
 * at most batch_bytes, large ones streamed from their file.
 */
#include "remote_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "reapi/reapi.h"
#include "util/util.h"

/* Room for one entry's digest and framing in a batch request. */
#define UPLOAD_ENTRY_BYTES 128

struct remote_upload {
    struct remote *r;
    struct cas_digest digest;
    struct rpc_client_writer *w;
    char *resource;
    int64_t offset;
    bool ended; /* the remote ended the call early (it may have the blob) */
};

static void upload_uuid(char out[37])
{
    uint8_t b[16] = {0};

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        /* Unique enough within this process: the upload is named by the
         * digest too, and a collision only restarts the upload. */
        uint64_t t[2] = {clock_real_us(), clock_mono_us()};

        memcpy(b, t, sizeof(b));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

int remote_upload_begin(struct remote *r, const char *instance, const struct cas_digest *d,
                        struct remote_upload **out, struct rpc_client_status *st)
{
    struct remote_upload *u = calloc(1, sizeof(*u));
    char hex[CAS_HASH_HEX + 1], uuid[37];
    int rc;

    *out = NULL;
    if (u == NULL)
        return remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
    instance = remote_instance(r, instance);
    cas_digest_hex(d, hex);
    upload_uuid(uuid);
    u->r = r;
    u->digest = *d;
    if (asprintf(&u->resource, "%s%suploads/%s/blobs/%s/%" PRId64, instance, instance[0] ? "/" : "",
                 uuid, hex, d->size) < 0) {
        u->resource = NULL;
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto fail;
    }
    rc = rpc_client_writer_start(r->rpc, RPC_CLIENT_BYTESTREAM_WRITE, &u->w);
    if (rc != 0) {
        remote_status_set(r, rc, GRPC_STATUS_UNAVAILABLE, st, "ByteStream.Write: cannot start");
        goto fail;
    }
    *out = u;
    return 0;
fail:
    free(u->resource);
    free(u);
    return rc;
}

/* Sends one WriteRequest: data (may be empty) at the current offset. */
static int upload_send(struct remote_upload *u, const void *buf, size_t len, bool last)
{
    Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
    grpc_slice slice;
    uint8_t *bytes;
    size_t n;

    if (u->offset == 0)
        req.resource_name = u->resource;
    req.write_offset = u->offset;
    req.finish_write = last;
    req.data.data = (uint8_t *)buf;
    req.data.len = len;
    n = google__bytestream__write_request__get_packed_size(&req);
    bytes = malloc(n > 0 ? n : 1);
    if (bytes == NULL)
        return -ENOMEM;
    google__bytestream__write_request__pack(&req, bytes);
    slice = grpc_slice_new(bytes, n, free);
    if (rpc_client_writer_send(u->w, &slice, 1, last) != 0) {
        u->ended = true;
        return 0; /* finish says why */
    }
    u->offset += (int64_t)len;
    return 0;
}

int remote_upload_append(struct remote_upload *u, const void *buf, size_t len,
                         struct rpc_client_status *st)
{
    const uint8_t *p = buf;

    if (u->offset + (int64_t)len > u->digest.size)
        return remote_status_set(u->r, -EFBIG, GRPC_STATUS_INVALID_ARGUMENT, st,
                                 "upload of %" PRId64 " bytes given more", u->digest.size);
    while (len > 0 && !u->ended) {
        size_t n = len < u->r->chunk_bytes ? len : u->r->chunk_bytes;
        int rc = upload_send(u, p, n, false);

        if (rc != 0)
            return remote_status_set(u->r, rc, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        p += n;
        len -= n;
    }
    return 0;
}

int remote_upload_finish(struct remote_upload *u, struct rpc_client_status *st)
{
    Google__Bytestream__WriteResponse *resp = NULL;
    struct remote *r = u->r;
    char hex[CAS_HASH_HEX + 1];
    int rc = 0, finish_rc;

    cas_digest_hex(&u->digest, hex);
    if (!u->ended && u->offset != u->digest.size) {
        int64_t sent = u->offset, size = u->digest.size;

        remote_upload_abort(u);
        return remote_status_set(r, -EINVAL, GRPC_STATUS_INVALID_ARGUMENT, st,
                                 "upload of blob %s/%" PRId64 " ended after %" PRId64 " bytes", hex,
                                 size, sent);
    }
    if (!u->ended)
        rc = upload_send(u, NULL, 0, true);
    /* Always ends the call (cancelled when the last message was not sent). */
    finish_rc = rpc_client_writer_finish(u->w, &google__bytestream__write_response__descriptor,
                                         (ProtobufCMessage **)&resp, st);
    u->w = NULL;
    if (rc != 0) {
        remote_status_set(r, rc, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    if (finish_rc != 0) {
        rc = remote_status_fail(r, finish_rc, "ByteStream.Write", st);
        goto out;
    }
    /* committed_size: the size, or -1 when the remote answers an early
     * finish for a blob it already had (compressed uploads, API 2.1). */
    if (resp->committed_size != u->digest.size && resp->committed_size != -1) {
        rc = remote_status_set(r, -EIO, GRPC_STATUS_DATA_LOSS, st,
                               "ByteStream.Write of blob %s/%" PRId64 ": committed_size %" PRId64,
                               hex, u->digest.size, resp->committed_size);
        goto out;
    }
    atomic_fetch_add(&r->pushed_blobs, 1);
    atomic_fetch_add(&r->pushed_bytes, (uint64_t)u->digest.size);
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(u->resource);
    free(u);
    return rc;
}

void remote_upload_abort(struct remote_upload *u)
{
    struct rpc_client_status st;
    ProtobufCMessage *resp = NULL;

    if (u == NULL)
        return;
    /* Cancels the call: the last message was not sent. */
    if (u->w != NULL &&
        rpc_client_writer_finish(u->w, &google__bytestream__write_response__descriptor, &resp,
                                 &st) == 0 &&
        resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    free(u->resource);
    free(u);
}

/* --- push --- */

/* One large blob, read from its file in chunks and streamed. */
static int push_stream(struct remote *r, struct cas_store *store, const char *instance,
                       const struct cas_digest *d, struct rpc_client_status *st)
{
    struct remote_upload *u = NULL;
    char hex[CAS_HASH_HEX + 1];
    uint8_t *buf = NULL;
    int fd, rc;
    off_t off = 0;

    cas_digest_hex(d, hex);
    fd = cas_store_open_blob(store, d);
    if (fd < 0)
        return remote_status_set(r, fd, GRPC_STATUS_FAILED_PRECONDITION, st,
                                 "pushing blob %s/%" PRId64 ": not in the local store: %s", hex,
                                 d->size, strerror(-fd));
    buf = malloc(r->chunk_bytes);
    if (buf == NULL) {
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    rc = remote_upload_begin(r, instance, d, &u, st);
    if (rc != 0)
        goto out;
    while (off < d->size) {
        ssize_t got = pread(fd, buf, r->chunk_bytes, off);

        if (got <= 0) {
            rc = got < 0 ? -errno : -EIO;
            remote_upload_abort(u);
            remote_status_set(r, rc, GRPC_STATUS_INTERNAL, st,
                              "pushing blob %s/%" PRId64 ": reading it: %s", hex, d->size,
                              strerror(-rc));
            goto out;
        }
        rc = remote_upload_append(u, buf, (size_t)got, st);
        if (rc != 0) {
            remote_upload_abort(u);
            goto out;
        }
        off += got;
    }
    rc = remote_upload_finish(u, st);
out:
    free(buf);
    close(fd);
    return rc;
}

struct push_batch {
    BatchUpdateBlobsRequest_Request *entries;
    BatchUpdateBlobsRequest_Request **list;
    struct reapi_digest_buf *digests;
    void **data;
    size_t n, cap;
    uint64_t bytes;
};

static void push_batch_clear(struct push_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->data[i]);
    b->n = 0;
    b->bytes = 0;
}

static int push_batch_send(struct remote *r, const char *instance, struct push_batch *b,
                           struct rpc_client_status *st)
{
    BatchUpdateBlobsRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__INIT;
    BatchUpdateBlobsResponse *resp = NULL;
    int rc;

    if (b->n == 0)
        return 0;
    req.instance_name = (char *)instance;
    req.n_requests = b->n;
    req.requests = b->list;
    rc = rpc_client_unary(
        r->rpc, RPC_CLIENT_BATCH_UPDATE_BLOBS, &req.base,
        &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
        (ProtobufCMessage **)&resp, st);
    if (rc != 0) {
        rc = remote_status_fail(r, rc, "BatchUpdateBlobs", st);
        goto out;
    }
    for (size_t i = 0; i < resp->n_responses; i++) {
        const Google__Rpc__Status *s = resp->responses[i]->status;

        if (s != NULL && s->code != 0) {
            const Digest *pd = resp->responses[i]->digest;

            rc = remote_status_set(
                r, remote_errno_of((grpc_status_code)s->code), (grpc_status_code)s->code, st,
                "BatchUpdateBlobs: blob %s/%" PRId64 ": %s: %s",
                pd != NULL && pd->hash ? pd->hash : "?", pd != NULL ? pd->size_bytes : -1,
                rpc_status_code_name((grpc_status_code)s->code), s->message ? s->message : "");
            goto out;
        }
    }
    if (resp->n_responses != b->n) {
        rc = remote_status_set(r, -EIO, GRPC_STATUS_INTERNAL, st,
                               "BatchUpdateBlobs answered %zu of %zu blobs", resp->n_responses,
                               b->n);
        goto out;
    }
    atomic_fetch_add(&r->pushed_blobs, b->n);
    atomic_fetch_add(&r->pushed_bytes, b->bytes);
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    push_batch_clear(b);
    return rc;
}

static int push_batch_add(struct remote *r, struct cas_store *store, struct push_batch *b,
                          const struct cas_digest *d, struct rpc_client_status *st)
{
    BatchUpdateBlobsRequest_Request init =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__REQUEST__INIT;
    char hex[CAS_HASH_HEX + 1];
    void *data = NULL;
    size_t len = 0;
    int rc;

    cas_digest_hex(d, hex);
    rc = cas_store_get(store, d, &data, &len);
    if (rc != 0)
        return remote_status_set(r, rc, GRPC_STATUS_FAILED_PRECONDITION, st,
                                 "pushing blob %s/%" PRId64 ": not in the local store: %s", hex,
                                 d->size, strerror(-rc));
    b->entries[b->n] = init;
    reapi_digest_to_proto(d, &b->digests[b->n]);
    b->entries[b->n].digest = &b->digests[b->n].pd;
    b->entries[b->n].data.data = data;
    b->entries[b->n].data.len = len;
    b->list[b->n] = &b->entries[b->n];
    b->data[b->n] = data;
    b->n++;
    b->bytes += len;
    return 0;
}

int remote_push(struct remote *r, struct cas_store *store, const char *instance,
                const struct cas_digest *digests, size_t n, struct rpc_client_status *st)
{
    struct push_batch b = {0};
    bool *missing = NULL;
    int rc;

    instance = remote_instance(r, instance);
    if (n == 0)
        return 0;
    missing = calloc(n, sizeof(*missing));
    b.cap = r->batch_bytes / UPLOAD_ENTRY_BYTES + 1;
    if (b.cap > n)
        b.cap = n;
    b.entries = calloc(b.cap, sizeof(*b.entries));
    b.list = calloc(b.cap, sizeof(*b.list));
    b.digests = calloc(b.cap, sizeof(*b.digests));
    b.data = calloc(b.cap, sizeof(*b.data));
    if (missing == NULL || b.entries == NULL || b.list == NULL || b.digests == NULL ||
        b.data == NULL) {
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    rc = remote_find_missing(r, instance, digests, n, missing, st);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct cas_digest *d = &digests[i];
        uint64_t cost = (uint64_t)d->size + UPLOAD_ENTRY_BYTES;

        /* The empty blob too: some servers (BuildStream's) do not treat it
         * as always present, and a client asking them would not find it. */
        if (!missing[i])
            continue;
        if (cost > r->batch_bytes) {
            rc = push_stream(r, store, instance, d, st);
            continue;
        }
        if (b.n == b.cap || b.bytes + cost + b.n * UPLOAD_ENTRY_BYTES > r->batch_bytes)
            rc = push_batch_send(r, instance, &b, st);
        if (rc == 0)
            rc = push_batch_add(r, store, &b, d, st);
    }
    if (rc == 0)
        rc = push_batch_send(r, instance, &b, st);
out:
    push_batch_clear(&b);
    free(b.data);
    free(b.digests);
    free(b.list);
    free(b.entries);
    free(missing);
    return rc;
}
