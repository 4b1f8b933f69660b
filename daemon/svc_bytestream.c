/*
 * svc_bytestream.c - google.bytestream.ByteStream over the CAS: Read, Write
 * and QueryWriteStatus.
 *
 * Read streams a blob in server.read_chunk_bytes chunks, reading straight
 * into the response's wire buffer (the message is one bytes field, so its
 * encoding is a tag, a length and the data: no second copy).
 *
 * Write appends to a cas_writer, which hashes as it goes and commits only when
 * the size and hash match the resource name's digest. Uploads are resumable:
 * an upload that ends without finish_write stays in a bounded table, keyed by
 * its resource name, so QueryWriteStatus reports its committed size and a new
 * Write can continue at that offset. A gap or overlap in write_offset is
 * INVALID_ARGUMENT.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "casboxd.h"
#include "util/util.h"

struct upload {
    char *name; /* resource name up to and including the size segment */
    struct cas_writer *writer;
    bool busy; /* a Write stream is appending to it now */
    time_t last_used;
    struct upload *next;
};

struct bytestream_uploads {
    pthread_mutex_t lock;
    struct upload *head;
    uint64_t count;
    uint64_t max;
};

int bytestream_uploads_new(uint64_t max_uploads, struct bytestream_uploads **out)
{
    struct bytestream_uploads *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return -ENOMEM;
    pthread_mutex_init(&u->lock, NULL);
    u->max = max_uploads;
    *out = u;
    return 0;
}

static void upload_free(struct upload *up)
{
    if (up->writer != NULL)
        cas_writer_abort(up->writer);
    free(up->name);
    free(up);
}

void bytestream_uploads_free(struct bytestream_uploads *u)
{
    if (u == NULL)
        return;
    while (u->head != NULL) {
        struct upload *up = u->head;

        u->head = up->next;
        upload_free(up);
    }
    pthread_mutex_destroy(&u->lock);
    free(u);
}

/* Takes the upload named name out of the table for exclusive use (busy), or
 * -EBUSY when another stream holds it, or -ENOENT. */
static int uploads_take(struct bytestream_uploads *u, const char *name, struct upload **out)
{
    int rc = -ENOENT;

    pthread_mutex_lock(&u->lock);
    for (struct upload *up = u->head; up != NULL; up = up->next) {
        if (strcmp(up->name, name) != 0)
            continue;
        if (up->busy) {
            rc = -EBUSY;
        } else {
            up->busy = true;
            *out = up;
            rc = 0;
        }
        break;
    }
    pthread_mutex_unlock(&u->lock);
    return rc;
}

static void uploads_unlink_locked(struct bytestream_uploads *u, struct upload *target)
{
    for (struct upload **pp = &u->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            u->count--;
            return;
        }
    }
}

/* Adds a new busy upload, dropping the oldest idle one when the table is full. */
static int uploads_add(struct bytestream_uploads *u, struct upload *up)
{
    struct upload *victim = NULL;
    int rc = 0;

    pthread_mutex_lock(&u->lock);
    if (u->count >= u->max) {
        for (struct upload *p = u->head; p != NULL; p = p->next) {
            if (!p->busy && (victim == NULL || p->last_used < victim->last_used))
                victim = p;
        }
        if (victim == NULL) {
            rc = -EAGAIN;
            goto out;
        }
        uploads_unlink_locked(u, victim);
    }
    up->busy = true;
    up->next = u->head;
    u->head = up;
    u->count++;
out:
    pthread_mutex_unlock(&u->lock);
    if (victim != NULL) {
        LOG_I("dropping idle upload %s: server.max_uploads reached", victim->name);
        upload_free(victim);
    }
    return rc;
}

/* Gives an upload back: kept for resumption, or removed and freed. */
static void uploads_release(struct bytestream_uploads *u, struct upload *up, bool keep)
{
    pthread_mutex_lock(&u->lock);
    if (keep) {
        up->busy = false;
        up->last_used = time(NULL);
    } else {
        uploads_unlink_locked(u, up);
    }
    pthread_mutex_unlock(&u->lock);
    if (!keep)
        upload_free(up);
}

/* The upload key: the resource name cut after the size segment, so that
 * optional trailing metadata does not create a second upload. */
static char *upload_key(const char *name, const struct reapi_resource *res)
{
    const char *p = res->upload_id + res->upload_id_len; /* "/blobs/{hash}/{size}..." */
    char sizebuf[32];
    size_t len;

    snprintf(sizebuf, sizeof(sizebuf), "%" PRId64, res->digest.size);
    p = strstr(p, "/blobs/");
    if (p == NULL)
        return NULL;
    len = (size_t)(p - name) + strlen("/blobs/") + CAS_HASH_HEX + 1 + strlen(sizebuf);
    if (len > strlen(name))
        len = strlen(name);
    return strndup(name, len);
}

/* --- Read --- */

/* Encodes a ReadResponse header into hdr: the key of field 10 (`bytes data =
 * 10`, wire type 2, taken from the generated descriptor) and the length. */
static size_t read_response_header(uint8_t *hdr, size_t len)
{
    size_t n = 0;

    hdr[n++] = (uint8_t)((google__bytestream__read_response__descriptor.fields[0].id << 3) | 2);
    do {
        uint8_t b = len & 0x7f;

        len >>= 7;
        hdr[n++] = b | (len ? 0x80 : 0);
    } while (len);
    return n;
}

static void bytestream_read(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    Google__Bytestream__ReadRequest *req = NULL;
    struct reapi_resource res;
    struct reapi_status st;
    int64_t offset, end;
    int fd = -1;

    reapi_status_init(&st);
    if (rpc_call_request(call, &google__bytestream__read_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "ReadRequest not parseable");
        goto out;
    }
    if (reapi_resource_parse_read(req->resource_name, &res) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name '%.300s' is not {instance}/blobs/{sha256}/{size}",
                         req->resource_name);
        goto out;
    }
    /* bytestream.proto: a negative offset or one past the end is OUT_OF_RANGE. */
    if (req->read_limit < 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "read_limit %" PRId64 " is negative",
                         req->read_limit);
        goto out;
    }
    if (req->read_offset < 0 || req->read_offset > res.digest.size) {
        reapi_status_set(&st, GRPC_STATUS_OUT_OF_RANGE,
                         "read_offset %" PRId64 " is outside the blob's size %" PRId64,
                         req->read_offset, res.digest.size);
        goto out;
    }
    fd = cas_store_open_blob(d->store, &res.digest);
    if (fd < 0) {
        char hex[CAS_HASH_HEX + 1];

        cas_digest_hex(&res.digest, hex);
        reapi_status_set(&st, fd == -ENOENT ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INTERNAL,
                         "blob %s/%" PRId64 " %s", hex, res.digest.size,
                         fd == -ENOENT ? "not found" : strerror(-fd));
        goto out;
    }
    offset = req->read_offset;
    end = res.digest.size;
    if (req->read_limit > 0 && req->read_limit < end - offset)
        end = offset + req->read_limit;
    while (offset < end) {
        size_t want = (size_t)(end - offset);
        uint8_t hdr[16];
        size_t hlen;
        uint8_t *buf;
        ssize_t got;

        if (want > d->cfg.read_chunk_bytes)
            want = d->cfg.read_chunk_bytes;
        hlen = read_response_header(hdr, want);
        /* The data lands page-aligned at buf + 4096 (reads into aligned
         * buffers run 2-3x faster here) with the header right before it. */
        buf = aligned_alloc(4096, (4096 + want + 4095) & ~(size_t)4095);
        if (buf == NULL) {
            reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        got = pread(fd, buf + 4096, want, offset);
        if (got != (ssize_t)want) {
            free(buf);
            reapi_status_set(&st, GRPC_STATUS_DATA_LOSS, "blob %s shrank while being read",
                             req->resource_name);
            goto out;
        }
        memcpy(buf + 4096 - hlen, hdr, hlen);
        if (rpc_call_send_raw(call, buf + 4096 - hlen, hlen + want, free, buf) != 0)
            goto out; /* client gone; buf was freed by the send */
        offset += (int64_t)want;
    }
out:
    if (fd >= 0)
        close(fd);
    rpc_call_finish(call, NULL, &st);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* --- Write --- */

/* Frees the previous message of a Write stream, if any. */
static void bytestream_recv_done(grpc_byte_buffer **bb, struct write_request *wr,
                                 struct write_request **req)
{
    if (*req != NULL)
        write_request_free(wr);
    *req = NULL;
    if (*bb != NULL)
        grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
}

/* The next WriteRequest of the stream, decoded in place (write_request.c):
 * 1 with *req = wr, 0 at the end of the stream, -EINVAL when it does not
 * parse, -ECANCELED when the call died. */
static int bytestream_recv(struct rpc_call *call, grpc_byte_buffer **bb, struct write_request *wr,
                           struct write_request **req)
{
    int rc;

    bytestream_recv_done(bb, wr, req);
    rc = rpc_call_recv_buffer(call, bb);
    if (rc <= 0)
        return rc;
    rc = write_request_decode(*bb, wr);
    *req = wr; /* freed by the next call or bytestream_recv_done, also on failure */
    if (rc != 0)
        return rc == -ENOMEM ? -ECANCELED : -EINVAL;
    return 1;
}

/* Hashes and writes the data of one WriteRequest from grpc's slices. */
static int bytestream_append(struct cas_writer *w, const struct write_request *req)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < req->n_spans; i++)
        rc = cas_writer_append(w, req->spans[i].data, req->spans[i].len);
    return rc;
}

/* One Write stream, from its first message to the reply. Each step below
 * returns 0 or a negative errno with st set; bytestream_write alone ends
 * the call. */
struct write_stream {
    struct casboxd *d;
    struct rpc_call *call;
    grpc_byte_buffer *bb;
    struct write_request wr, *req; /* the message at hand (&wr), or NULL */
    struct reapi_resource res;     /* the first message's resource name */
    struct upload *up;             /* the upload written to; NULL when existed */
    bool existed;                  /* the blob is stored already: drain, report it complete */
    bool keep;                     /* on the way out: keep the upload for resumption */
    int64_t committed;             /* the reply's committed_size, once done */
    struct reapi_status st;
};

/* The first message and its resource name. */
static int write_begin(struct write_stream *ws)
{
    int rc = bytestream_recv(ws->call, &ws->bb, &ws->wr, &ws->req);

    if (rc <= 0) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         rc == 0 ? "Write stream had no request" : "WriteRequest not parseable");
        return -EINVAL;
    }
    if (reapi_resource_parse_write(ws->req->resource_name, &ws->res) != 0) {
        reapi_status_set(
            &ws->st, GRPC_STATUS_INVALID_ARGUMENT,
            "resource name '%.300s' is not {instance}/uploads/{uuid}/blobs/{sha256}/{size}",
            ws->req->resource_name);
        return -EINVAL;
    }
    return 0;
}

/* A new upload called key (taken over in every case), added to the table. */
static int write_start(struct write_stream *ws, char *key)
{
    struct upload *up = calloc(1, sizeof(*up));
    int rc;

    if (up == NULL) {
        free(key);
        reapi_status_set(&ws->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    up->name = key;
    rc = cas_writer_begin(ws->d->store, &ws->res.digest, &up->writer);
    if (rc == 0)
        rc = uploads_add(ws->d->uploads, up);
    if (rc != 0) {
        reapi_status_set(
            &ws->st, rc == -EAGAIN ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
            "cannot start upload: %s",
            rc == -EAGAIN ? "too many uploads in progress (server.max_uploads)" : strerror(-rc));
        upload_free(up);
        return rc;
    }
    ws->up = up;
    return 0;
}

/* A resumed upload written from offset 0 again: what was there is dropped. */
static int write_restart(struct write_stream *ws)
{
    int rc;

    cas_writer_abort(ws->up->writer);
    ws->up->writer = NULL;
    rc = cas_writer_begin(ws->d->store, &ws->res.digest, &ws->up->writer);
    if (rc != 0)
        reapi_status_set(&ws->st, GRPC_STATUS_INTERNAL, "cannot start upload: %s", strerror(-rc));
    return rc;
}

/* The upload the stream writes to: the one under its name (resumed, or
 * started again from offset 0), or a new one; none when the blob is stored
 * already. */
static int write_open(struct write_stream *ws)
{
    char *key;
    int rc;

    if (cas_store_contains(ws->d->store, &ws->res.digest) == 1) {
        ws->existed = true;
        return 0;
    }
    key = upload_key(ws->req->resource_name, &ws->res);
    if (key == NULL) {
        reapi_status_set(&ws->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = uploads_take(ws->d->uploads, key, &ws->up);
    if (rc == -ENOENT)
        return write_start(ws, key);
    free(key);
    if (rc == -EBUSY) {
        reapi_status_set(&ws->st, GRPC_STATUS_ABORTED,
                         "upload %s is being written by another stream", ws->req->resource_name);
        return rc;
    }
    if (ws->req->write_offset == 0 && cas_writer_offset(ws->up->writer) != 0)
        return write_restart(ws);
    return 0;
}

/* Checks the message at hand against what is committed and the digest's
 * size, and appends its data. */
static int write_message(struct write_stream *ws)
{
    const struct write_request *req = ws->req;
    int64_t at = ws->existed ? req->write_offset : cas_writer_offset(ws->up->writer);
    int rc;

    if (!ws->existed && req->write_offset != at) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "write_offset %" PRId64 " leaves a %s: %" PRId64 " bytes are committed",
                         req->write_offset, req->write_offset > at ? "gap" : "overlap", at);
        ws->keep = true; /* the committed bytes are still good */
        return -EINVAL;
    }
    if (req->write_offset + (int64_t)req->data_len > ws->res.digest.size) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "data runs to %" PRId64 " bytes, past the digest's size %" PRId64,
                         req->write_offset + (int64_t)req->data_len, ws->res.digest.size);
        return -EINVAL;
    }
    if (ws->existed || req->data_len == 0)
        return 0;
    rc = bytestream_append(ws->up->writer, req);
    if (rc != 0)
        reapi_status_set(&ws->st,
                         rc == -ENOSPC ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
                         "writing upload failed: %s", strerror(-rc));
    return rc;
}

/* finish_write: the blob must be complete; commits it. */
static int write_commit(struct write_stream *ws)
{
    int64_t total = ws->req->write_offset + (int64_t)ws->req->data_len;
    char hex[CAS_HASH_HEX + 1];
    int rc;

    if (total != ws->res.digest.size) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "finish_write after %" PRId64 " bytes, the digest says %" PRId64, total,
                         ws->res.digest.size);
        return -EINVAL;
    }
    if (!ws->existed) {
        rc = cas_writer_commit(ws->up->writer);
        ws->up->writer = NULL;
        if (rc == -EINVAL) {
            cas_digest_hex(&ws->res.digest, hex);
            reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                             "uploaded data does not match digest %s/%" PRId64
                             " of the resource name",
                             hex, ws->res.digest.size);
            return rc;
        }
        if (rc != 0) {
            reapi_status_set(&ws->st, GRPC_STATUS_INTERNAL, "committing blob failed: %s",
                             strerror(-rc));
            return rc;
        }
    }
    ws->committed = ws->res.digest.size;
    return 0;
}

/* The stream's next message: 1, or 0 when the client closed the stream
 * without finish_write (the upload is then kept for resumption). */
static int write_next(struct write_stream *ws)
{
    struct reapi_resource again;
    int rc = bytestream_recv(ws->call, &ws->bb, &ws->wr, &ws->req);

    if (rc == 0) {
        ws->committed = ws->existed ? ws->res.digest.size : cas_writer_offset(ws->up->writer);
        ws->keep = !ws->existed;
        return 0;
    }
    if (rc < 0) {
        if (rc == -EINVAL)
            reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT, "WriteRequest not parseable");
        else
            reapi_status_set(&ws->st, GRPC_STATUS_CANCELLED, "client went away");
        ws->keep = rc != -EINVAL;
        return rc;
    }
    if (ws->req->resource_name[0] != '\0' &&
        (reapi_resource_parse_write(ws->req->resource_name, &again) != 0 ||
         !cas_digest_equal(&again.digest, &ws->res.digest))) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name changed within one Write");
        return -EINVAL;
    }
    return 1;
}

/* The whole stream: 0 with ws->committed set, or a negative errno with
 * ws->st set. */
static int bytestream_do_write(struct write_stream *ws)
{
    int rc = write_begin(ws);

    if (rc == 0)
        rc = write_open(ws);
    if (rc != 0)
        return rc;
    for (;;) {
        rc = write_message(ws);
        if (rc != 0)
            return rc;
        if (ws->req->finish_write)
            return write_commit(ws);
        rc = write_next(ws);
        if (rc <= 0)
            return rc; /* 0: closed without finish_write */
    }
}

static void bytestream_write(void *ctx, struct rpc_call *call)
{
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
    struct write_stream ws = {.d = ctx, .call = call};

    reapi_status_init(&ws.st);
    if (bytestream_do_write(&ws) == 0)
        resp.committed_size = ws.committed;
    if (ws.up != NULL)
        uploads_release(ws.d->uploads, ws.up, ws.keep && ws.up->writer != NULL);
    if (!reapi_status_ok(&ws.st) && ws.st.code != GRPC_STATUS_CANCELLED)
        LOG_I("ByteStream.Write %s: %s",
              ws.req && ws.req->resource_name ? ws.req->resource_name : "", ws.st.message);
    rpc_call_finish(call, &resp.base, &ws.st);
    reapi_status_free(&ws.st);
    bytestream_recv_done(&ws.bb, &ws.wr, &ws.req);
}

static void bytestream_query_write_status(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    Google__Bytestream__QueryWriteStatusRequest *req = NULL;
    Google__Bytestream__QueryWriteStatusResponse resp =
        GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_RESPONSE__INIT;
    struct reapi_resource res;
    struct reapi_status st;
    struct upload *up = NULL;
    char *key = NULL;
    int rc;

    reapi_status_init(&st);
    if (rpc_call_request(call, &google__bytestream__query_write_status_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "QueryWriteStatusRequest not parseable");
        goto out;
    }
    if (reapi_resource_parse_write(req->resource_name, &res) != 0) {
        reapi_status_set(
            &st, GRPC_STATUS_INVALID_ARGUMENT,
            "resource name '%.300s' is not {instance}/uploads/{uuid}/blobs/{sha256}/{size}",
            req->resource_name);
        goto out;
    }
    if (cas_store_contains(d->store, &res.digest) == 1) {
        resp.committed_size = res.digest.size;
        resp.complete = 1;
        goto out;
    }
    key = upload_key(req->resource_name, &res);
    rc = key ? uploads_take(d->uploads, key, &up) : -ENOMEM;
    if (rc == 0) {
        resp.committed_size = cas_writer_offset(up->writer);
        uploads_release(d->uploads, up, true);
    } else if (rc == -EBUSY) {
        reapi_status_set(&st, GRPC_STATUS_UNAVAILABLE,
                         "upload %s is being written right now; ask again", req->resource_name);
    } else {
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND, "no upload %s in progress",
                         req->resource_name);
    }
out:
    rpc_call_finish(call, &resp.base, &st);
    free(key);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* Read and Write wait on the client (its flow-control window, its next
 * message), so they have a pool of their own (server.transfer_threads): on
 * the short pool, a few uploads whose client is slow to send would hold every
 * thread while calls whose data is already here queue behind them (Bazel
 * starts dozens of small Writes at once at the start of a build; with 8
 * short threads the first wave's uploads queued for about 50 ms), and on the
 * stream pool, Executes waiting for a slot would hold up the uploads of the
 * next actions. */
const struct rpc_method bytestream_methods[] = {
    {"/google.bytestream.ByteStream/Read", RPC_SERVER_STREAM, RPC_POOL_TRANSFER, bytestream_read},
    {"/google.bytestream.ByteStream/Write", RPC_CLIENT_STREAM, RPC_POOL_TRANSFER, bytestream_write},
    {"/google.bytestream.ByteStream/QueryWriteStatus", RPC_UNARY, RPC_POOL_SHORT,
     bytestream_query_write_status},
};
const size_t bytestream_n_methods = sizeof(bytestream_methods) / sizeof(bytestream_methods[0]);
