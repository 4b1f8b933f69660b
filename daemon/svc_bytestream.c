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

static void bytestream_write(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
    struct write_request wr, *req = NULL;
    grpc_byte_buffer *bb = NULL;
    struct upload *up = NULL;
    struct reapi_resource res;
    struct reapi_status st;
    bool keep = false;
    bool existed = false;
    int rc;

    reapi_status_init(&st);
    rc = bytestream_recv(call, &bb, &wr, &req);
    if (rc <= 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         rc == 0 ? "Write stream had no request" : "WriteRequest not parseable");
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
        /* Already stored: drain the stream without writing, report complete. */
        existed = true;
    } else {
        char *key = upload_key(req->resource_name, &res);

        if (key == NULL) {
            reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        rc = uploads_take(d->uploads, key, &up);
        if (rc == -EBUSY) {
            free(key);
            reapi_status_set(&st, GRPC_STATUS_ABORTED,
                             "upload %s is being written by another stream", req->resource_name);
            goto out;
        }
        if (rc == 0 && req->write_offset == 0 && cas_writer_offset(up->writer) != 0) {
            /* A restart from zero discards what was there. */
            cas_writer_abort(up->writer);
            up->writer = NULL;
            rc = cas_writer_begin(d->store, &res.digest, &up->writer);
            if (rc != 0) {
                free(key);
                reapi_status_set(&st, GRPC_STATUS_INTERNAL, "cannot start upload: %s",
                                 strerror(-rc));
                goto out;
            }
        }
        if (rc == -ENOENT) {
            up = calloc(1, sizeof(*up));
            if (up == NULL) {
                free(key);
                reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            up->name = key;
            key = NULL;
            rc = cas_writer_begin(d->store, &res.digest, &up->writer);
            if (rc == 0)
                rc = uploads_add(d->uploads, up);
            if (rc != 0) {
                reapi_status_set(
                    &st, rc == -EAGAIN ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
                    "cannot start upload: %s",
                    rc == -EAGAIN ? "too many uploads in progress (server.max_uploads)"
                                  : strerror(-rc));
                upload_free(up);
                up = NULL;
                goto out;
            }
        }
        free(key);
    }

    for (;;) {
        int64_t at = existed ? req->write_offset : cas_writer_offset(up->writer);

        if (!existed && req->write_offset != at) {
            reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                             "write_offset %" PRId64 " leaves a %s: %" PRId64
                             " bytes are committed",
                             req->write_offset, req->write_offset > at ? "gap" : "overlap", at);
            keep = true; /* the committed bytes are still good */
            goto out;
        }
        if (req->write_offset + (int64_t)req->data_len > res.digest.size) {
            reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                             "data runs to %" PRId64 " bytes, past the digest's size %" PRId64,
                             req->write_offset + (int64_t)req->data_len, res.digest.size);
            goto out;
        }
        if (!existed && req->data_len > 0) {
            rc = bytestream_append(up->writer, req);
            if (rc != 0) {
                reapi_status_set(
                    &st, rc == -ENOSPC ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
                    "writing upload failed: %s", strerror(-rc));
                goto out;
            }
        }
        if (req->finish_write) {
            int64_t total = req->write_offset + (int64_t)req->data_len;

            if (total != res.digest.size) {
                reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "finish_write after %" PRId64 " bytes, the digest says %" PRId64,
                                 total, res.digest.size);
                goto out;
            }
            if (!existed) {
                rc = cas_writer_commit(up->writer);
                up->writer = NULL;
                if (rc == -EINVAL) {
                    char hex[CAS_HASH_HEX + 1];

                    cas_digest_hex(&res.digest, hex);
                    reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                                     "uploaded data does not match digest %s/%" PRId64
                                     " of the resource name",
                                     hex, res.digest.size);
                    goto out;
                }
                if (rc != 0) {
                    reapi_status_set(&st, GRPC_STATUS_INTERNAL, "committing blob failed: %s",
                                     strerror(-rc));
                    goto out;
                }
            }
            resp.committed_size = res.digest.size;
            break;
        }
        rc = bytestream_recv(call, &bb, &wr, &req);
        if (rc == 0) {
            /* Closed without finish_write: keep it for resumption. */
            resp.committed_size = existed ? res.digest.size : cas_writer_offset(up->writer);
            keep = !existed;
            break;
        }
        if (rc < 0) {
            if (rc == -EINVAL)
                reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "WriteRequest not parseable");
            else
                reapi_status_set(&st, GRPC_STATUS_CANCELLED, "client went away");
            keep = rc != -EINVAL;
            goto out;
        }
        if (req->resource_name[0] != '\0') {
            struct reapi_resource again;

            if (reapi_resource_parse_write(req->resource_name, &again) != 0 ||
                !cas_digest_equal(&again.digest, &res.digest)) {
                reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "resource name changed within one Write");
                goto out;
            }
        }
    }
out:
    if (up != NULL)
        uploads_release(d->uploads, up, keep && up->writer != NULL);
    if (!reapi_status_ok(&st) && st.code != GRPC_STATUS_CANCELLED)
        LOG_I("ByteStream.Write %s: %s", req && req->resource_name ? req->resource_name : "",
              st.message);
    rpc_call_finish(call, &resp.base, &st);
    reapi_status_free(&st);
    bytestream_recv_done(&bb, &wr, &req);
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
