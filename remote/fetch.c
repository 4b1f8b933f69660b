/*
 * fetch.c - one blob from the remote into the local store: ByteStream.Read,
 * each message appended to a cas_writer, which hashes as it goes and
 * commits only bytes that match the digest. So a remote that sends other
 * bytes (or more, or fewer) never gets them stored or served: the blob is
 * rejected, logged with its digest, and the read fails with -EBADMSG.
 */
#include "remote_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct fetch_stream {
    struct cas_writer *w;
    int error;
};

static int fetch_message(void *ctx, grpc_byte_buffer *message)
{
    struct fetch_stream *fs = ctx;
    Google__Bytestream__ReadResponse *resp = (Google__Bytestream__ReadResponse *)rpc_message_unpack(
        message, &google__bytestream__read_response__descriptor);
    int rc;

    if (resp == NULL)
        return fs->error = -EPROTO;
    rc = cas_writer_append(fs->w, resp->data.data, resp->data.len);
    google__bytestream__read_response__free_unpacked(resp, NULL);
    if (rc != 0)
        fs->error = rc;
    return rc;
}

/* The remote's bytes are not the blob d: count, log, answer -EBADMSG. */
static int fetch_rejected(struct remote *r, const struct cas_digest *d, const char *why,
                          struct rpc_client_status *st)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(d, hex);
    atomic_fetch_add(&r->rejected_blobs, 1);
    remote_status_set(r, -EBADMSG, GRPC_STATUS_DATA_LOSS, st,
                      "blob %s/%" PRId64 ": %s; rejected, not stored", hex, d->size, why);
    LOG_W("%s", st->message);
    return -EBADMSG;
}

int remote_fetch(struct remote *r, struct cas_store *store, const struct cas_digest *d,
                 struct rpc_client_status *st)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
    struct fetch_stream fs = {.w = NULL, .error = 0};
    char hex[CAS_HASH_HEX + 1];
    char *resource = remote_read_resource(r->instance, d);
    int rc;

    cas_digest_hex(d, hex);
    if (resource == NULL) {
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    rc = cas_writer_begin(store, d, &fs.w);
    if (rc != 0) {
        remote_status_set(r, rc, GRPC_STATUS_INTERNAL, st, "storing blob %s/%" PRId64 ": %s", hex,
                          d->size, strerror(-rc));
        goto out;
    }
    req.resource_name = resource;
    rc = rpc_client_server_stream(r->rpc, RPC_CLIENT_BYTESTREAM_READ, &req.base, fetch_message, &fs,
                                  st);
    if (rc != 0) {
        cas_writer_abort(fs.w);
        if (fs.error == -EFBIG)
            rc = fetch_rejected(r, d, "more bytes than the digest's size", st);
        else if (fs.error == -EPROTO)
            rc = remote_status_set(r, -EIO, GRPC_STATUS_INTERNAL, st,
                                   "ByteStream.Read %s: an answer that does not decode", resource);
        else if (fs.error != 0)
            rc = remote_status_set(r, fs.error, GRPC_STATUS_INTERNAL, st,
                                   "storing blob %s/%" PRId64 ": %s", hex, d->size,
                                   strerror(-fs.error));
        else if (st->code == GRPC_STATUS_NOT_FOUND)
            rc = remote_status_set(r, -ENOENT, GRPC_STATUS_NOT_FOUND, st,
                                   "has no blob %s/%" PRId64 " (ByteStream.Read: %s)", hex, d->size,
                                   st->message);
        else
            rc = remote_status_fail(r, rc, "ByteStream.Read", st);
        goto out;
    }
    rc = cas_writer_commit(fs.w);
    if (rc == -EINVAL) {
        rc = fetch_rejected(r, d, "the bytes sent do not match the digest", st);
        goto out;
    }
    if (rc != 0) {
        remote_status_set(r, rc, GRPC_STATUS_INTERNAL, st, "storing blob %s/%" PRId64 ": %s", hex,
                          d->size, strerror(-rc));
        goto out;
    }
    atomic_fetch_add(&r->fetched_blobs, 1);
    atomic_fetch_add(&r->fetched_bytes, (uint64_t)d->size);
    LOG_D("remote %s: fetched blob %s/%" PRId64, r->url, hex, d->size);
out:
    if (rc < 0)
        atomic_fetch_add(&r->fetch_failures, 1);
    free(resource);
    return rc;
}
