/*
 * svc_bytestream.c - google.bytestream.ByteStream over the CAS: Read, Write
 * and QueryWriteStatus, of blobs/ and of zstd compressed-blobs/.
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
 *
 * Compressed blobs ({instance}/compressed-blobs/zstd/{hash}/{size}) are
 * compressed on the way out and decompressed on the way in: the store keeps
 * plain files, which staging hardlinks and FUSE serves at any offset.
 * Their offsets (read_offset, read_limit, write_offset, committed_size) count
 * compressed bytes, as the REAPI says; the digest is the uncompressed blob's.
 * A Read compresses the whole blob from its start, always at the same level,
 * and drops what comes before read_offset, so a resumed Read sees the bytes
 * the first one did. A Write feeds a zstd decoder (kept with the upload, so
 * it resumes too) whose output, bounded by the digest's size, goes to the
 * same verified writer. An upload of a blob already stored completes at once
 * with committed_size -1, as the REAPI allows for compressed uploads.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "casboxd.h"
#include "util/util.h"

struct upload {
    char *name; /* resource name up to and including the size segment */
    struct cas_writer *writer;
    struct reapi_zstd_decoder *dec; /* compressed uploads: what feeds writer */
    bool busy;                      /* a Write stream is appending to it now */
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
    reapi_zstd_decoder_free(up->dec);
    free(up->name);
    free(up);
}

/* What the client has sent of an upload: compressed bytes for a compressed
 * one (the REAPI counts its offsets so), else the bytes written. */
static int64_t upload_offset(const struct upload *up)
{
    return up->dec != NULL ? reapi_zstd_decoder_consumed(up->dec) : cas_writer_offset(up->writer);
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
    return strndup(name, res->key_len);
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

/* Room before a ReadResponse's data for its header (the tag and a varint
 * length); the data starts page-aligned after it. */
#define READ_HEADER_ROOM 4096

/* One Read stream, event-driven (rpc.h): bytestream_read checks the
 * request and opens the blob, then read_pump alternates between producing
 * messages (one chunk read, or one piece of the blob compressed, into
 * `queue`) and sending them one at a time, each send's completion calling
 * it again; a reader that does not read holds its buffers, not a thread.
 * Each step returns 0 or a negative errno with st set; read_end alone ends
 * the call. */
struct read_stream {
    struct casboxd *d;
    struct rpc_call *call;
    Google__Bytestream__ReadRequest *req;
    struct reapi_resource res;
    int fd;
    struct reapi_status st;
    /* compressed reads: the compressed bytes seen, the end read_limit sets
     * (INT64_MAX: none), and the message being filled */
    int64_t seen, end;
    uint8_t *msg;
    size_t msg_len;
    bool client_gone;
    /* the next byte of the blob to read, and (plain reads) where to stop */
    int64_t offset, plain_end;
    struct reapi_zstd_encoder *enc; /* compressed reads */
    uint8_t *in;                    /* compressed reads: the piece read */
    uint8_t *queue, *queue_tail;    /* messages ready to send (struct read_queued) */
    bool produced_all;              /* nothing left to read */
};

/* A message waiting to be sent: kept at the start of its buffer's header
 * room, which the header (at most 16 bytes, at its end) does not reach. */
struct read_queued {
    uint8_t *next;
    size_t len;
};

/* Whether the caller may use the resource name's instance (auth/). */
static int bytestream_authorize(struct rpc_call *call, const struct reapi_resource *res,
                                struct reapi_status *st)
{
    char instance[2048];

    if (res->instance_len >= sizeof(instance)) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "instance name longer than %zu bytes",
                         sizeof(instance) - 1);
        return -EINVAL;
    }
    memcpy(instance, res->instance, res->instance_len);
    instance[res->instance_len] = '\0';
    return rpc_call_authorize(call, instance, st);
}

/* The request and its resource name. */
static int read_begin(struct read_stream *rs)
{
    int rc;

    if (rpc_call_request(rs->call, &google__bytestream__read_request__descriptor,
                         (ProtobufCMessage **)&rs->req) != 0) {
        reapi_status_set(&rs->st, GRPC_STATUS_INVALID_ARGUMENT, "ReadRequest not parseable");
        return -EINVAL;
    }
    rc = reapi_resource_parse_read(rs->req->resource_name, &rs->res);
    if (rc != 0) {
        reapi_resource_status(&rs->st, rs->req->resource_name, rc, &rs->res, false);
        return rc;
    }
    rc = bytestream_authorize(rs->call, &rs->res, &rs->st);
    if (rc != 0)
        return rc;
    /* bytestream.proto: a negative offset or one past the end is
     * OUT_OF_RANGE. A compressed blob's end is known only once it has been
     * compressed (read_compressed). */
    if (rs->req->read_limit < 0) {
        reapi_status_set(&rs->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "read_limit %" PRId64 " is negative", rs->req->read_limit);
        return -EINVAL;
    }
    if (rs->req->read_offset < 0 || (rs->res.compressor == REAPI_COMPRESSOR_IDENTITY &&
                                     rs->req->read_offset > rs->res.digest.size)) {
        reapi_status_set(&rs->st, GRPC_STATUS_OUT_OF_RANGE,
                         "read_offset %" PRId64 " is outside the blob's size %" PRId64,
                         rs->req->read_offset, rs->res.digest.size);
        return -ERANGE;
    }
    return 0;
}

/* The blob's file. */
static int read_open(struct read_stream *rs)
{
    char hex[CAS_HASH_HEX + 1];

    rs->fd = cas_store_open_blob(rs->d->store, &rs->res.digest);
    if (rs->fd >= 0) {
        observe_transfer(rs->d, "read", "bytestream", 1, (uint64_t)rs->res.digest.size);
        return 0;
    }
    if (rs->d->remote != NULL) {
        shared_read_status(rs->d, &rs->res.digest, rs->fd, &rs->st);
        return rs->fd;
    }
    cas_digest_hex(&rs->res.digest, hex);
    reapi_status_set(&rs->st, rs->fd == -ENOENT ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INTERNAL,
                     "blob %s/%" PRId64 " %s", hex, rs->res.digest.size,
                     rs->fd == -ENOENT ? "not found" : strerror(-rs->fd));
    return rs->fd;
}

/* Queues the ReadResponse whose len bytes of data start at buf +
 * READ_HEADER_ROOM (buf is the queue's now). */
static int read_send(struct read_stream *rs, uint8_t *buf, size_t len)
{
    struct read_queued *q = (struct read_queued *)buf;

    q->next = NULL;
    q->len = len;
    if (rs->queue_tail != NULL)
        ((struct read_queued *)rs->queue_tail)->next = buf;
    else
        rs->queue = buf;
    rs->queue_tail = buf;
    return 0;
}

static uint8_t *read_buffer(struct read_stream *rs, size_t len)
{
    /* The data lands page-aligned (reads into aligned buffers run 2-3x
     * faster here) with the header right before it. */
    uint8_t *buf = aligned_alloc(4096, (READ_HEADER_ROOM + len + 4095) & ~(size_t)4095);

    if (buf == NULL)
        reapi_status_set(&rs->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return buf;
}

/* pread until want bytes, the end of the file or an error: a read that
 * fails part-way (a bad block) returns the bytes before it first, and only
 * the next call tells the error. Returns the bytes read or -1 with errno. */
static ssize_t read_full(int fd, uint8_t *buf, size_t want, int64_t offset)
{
    size_t done = 0;

    while (done < want) {
        ssize_t n = pread(fd, buf + done, want - done, (off_t)offset + (off_t)done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* A pread of the blob returned got instead of want bytes. A media error
 * (EIO) makes the blob missing in the store (it is dropped and the client
 * uploads it again: NOT_FOUND); anything else means the file changed. */
static int read_failed(struct read_stream *rs, ssize_t got)
{
    char hex[CAS_HASH_HEX + 1];
    int err = got < 0 ? -errno : -EIO;

    cas_digest_hex(&rs->res.digest, hex);
    if (got < 0 && cas_store_read_failed(rs->d->store, &rs->res.digest, rs->fd, err) == -ENOENT) {
        reapi_status_set(&rs->st, GRPC_STATUS_NOT_FOUND,
                         "blob %s/%" PRId64 " not found: its file is unreadable (%s) and was "
                         "removed; upload it again",
                         hex, rs->res.digest.size, strerror(-err));
        return -ENOENT;
    }
    reapi_status_set(&rs->st, GRPC_STATUS_DATA_LOSS, "blob %s/%" PRId64 " %s while being read", hex,
                     rs->res.digest.size, got < 0 ? strerror(-err) : "shrank");
    return -EIO;
}

/* The next chunk of the blob as it is stored (from read_offset, up to
 * read_limit bytes). */
static int read_plain_step(struct read_stream *rs)
{
    size_t want = (size_t)(rs->plain_end - rs->offset);
    uint8_t *buf;
    ssize_t got;

    if (want > rs->d->cfg.read_chunk_bytes)
        want = rs->d->cfg.read_chunk_bytes;
    if (want > 0) {
        buf = read_buffer(rs, want);
        if (buf == NULL)
            return -ENOMEM;
        got = read_full(rs->fd, buf + READ_HEADER_ROOM, want, rs->offset);
        if (got != (ssize_t)want) {
            int rc = read_failed(rs, got);

            free(buf);
            return rc;
        }
        read_send(rs, buf, want);
        rs->offset += (int64_t)want;
    }
    rs->produced_all = rs->offset >= rs->plain_end;
    return 0;
}

/* Sends the message being filled, if it has data. */
static int read_flush(struct read_stream *rs)
{
    uint8_t *buf = rs->msg;

    if (buf == NULL || rs->msg_len == 0)
        return 0;
    rs->msg = NULL;
    return read_send(rs, buf, rs->msg_len);
}

/* Takes the encoder's output: drops what lies before read_offset, stops at
 * read_limit (-ECANCELED, with seen at the end), and fills messages of
 * server.read_chunk_bytes. */
static int read_compressed_sink(void *ctx, const void *data, size_t len)
{
    struct read_stream *rs = ctx;
    const uint8_t *p = data;
    size_t chunk = rs->d->cfg.read_chunk_bytes;

    if (rs->seen + (int64_t)len <= rs->req->read_offset) {
        rs->seen += (int64_t)len;
        return 0;
    }
    if (rs->seen < rs->req->read_offset) {
        p += rs->req->read_offset - rs->seen;
        len -= (size_t)(rs->req->read_offset - rs->seen);
        rs->seen = rs->req->read_offset;
    }
    while (len > 0) {
        size_t take = chunk - rs->msg_len;

        if (rs->seen == rs->end)
            return -ECANCELED; /* read_limit reached: no need to go on */
        if (take > len)
            take = len;
        if ((int64_t)take > rs->end - rs->seen)
            take = (size_t)(rs->end - rs->seen);
        if (rs->msg == NULL) {
            rs->msg = read_buffer(rs, chunk);
            rs->msg_len = 0;
            if (rs->msg == NULL)
                return -ENOMEM;
        }
        memcpy(rs->msg + READ_HEADER_ROOM + rs->msg_len, p, take);
        rs->msg_len += take;
        rs->seen += (int64_t)take;
        p += take;
        len -= take;
        if (rs->msg_len == chunk && read_flush(rs) != 0)
            return -ECANCELED;
    }
    return 0;
}

#define READ_PIECE (1 << 20)

/* The next piece of the blob compressed with zstd as it is read; its
 * output from read_offset (in compressed bytes), up to read_limit
 * compressed bytes, goes to the queue. */
static int read_compressed_step(struct read_stream *rs)
{
    size_t want = (size_t)(rs->res.digest.size - rs->offset);
    bool last;
    ssize_t got;
    int rc;

    if (rs->enc == NULL) {
        rs->in = aligned_alloc(4096, READ_PIECE);
        rc = rs->in != NULL
                 ? reapi_zstd_encoder_new(REAPI_ZSTD_LEVEL, rs->res.digest.size, &rs->enc)
                 : -ENOMEM;
        if (rc != 0) {
            reapi_status_set(&rs->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                             "compressing blob %s failed: %s", rs->req->resource_name,
                             strerror(-rc));
            return rc;
        }
    }
    if (want > READ_PIECE)
        want = READ_PIECE;
    got = want ? read_full(rs->fd, rs->in, want, rs->offset) : 0;
    if (got != (ssize_t)want)
        return read_failed(rs, got); /* sets the status */
    rs->offset += (int64_t)want;
    last = rs->offset == rs->res.digest.size;
    rc = reapi_zstd_encoder_feed(rs->enc, rs->in, want, last, read_compressed_sink, rs);
    if (rc == -ECANCELED) {
        rc = 0; /* read_limit reached */
        last = true;
    }
    if (rc != 0) {
        reapi_status_set(&rs->st,
                         rc == -ENOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
                         "compressing blob %s failed: %s", rs->req->resource_name, strerror(-rc));
        return rc;
    }
    if (!last)
        return 0;
    rs->produced_all = true;
    if (rs->seen < rs->req->read_offset) {
        reapi_status_set(&rs->st, GRPC_STATUS_OUT_OF_RANGE,
                         "read_offset %" PRId64 " is past the end of the compressed blob (%" PRId64
                         " bytes)",
                         rs->req->read_offset, rs->seen);
        return -ERANGE;
    }
    return read_flush(rs);
}

/* Ends the call with rs->st and frees rs. */
static void read_end(struct read_stream *rs)
{
    struct rpc_call *call = rs->call;

    while (rs->queue != NULL) {
        uint8_t *buf = rs->queue;

        rs->queue = ((struct read_queued *)buf)->next;
        free(buf);
    }
    if (rs->fd >= 0)
        close(rs->fd);
    free(rs->msg);
    reapi_zstd_encoder_free(rs->enc);
    free(rs->in);
    if (rs->req != NULL)
        protobuf_c_message_free_unpacked(&rs->req->base, NULL);
    rpc_call_finish(call, NULL, &rs->st);
    reapi_status_free(&rs->st);
    free(rs);
}

static void read_sent(void *state, int rc);

/* Sends the next queued message, producing more first when none is queued;
 * at the end (or on an error), ends the call. */
static void read_pump(struct read_stream *rs)
{
    uint8_t hdr[16];
    struct read_queued *q;
    uint8_t *buf;
    size_t hlen;
    int rc = 0;

    while (rs->queue == NULL && !rs->produced_all && rc == 0)
        rc = rs->res.compressor == REAPI_COMPRESSOR_ZSTD ? read_compressed_step(rs)
                                                         : read_plain_step(rs);
    if (rc != 0 || rs->queue == NULL) {
        read_end(rs);
        return;
    }
    buf = rs->queue;
    q = (struct read_queued *)buf;
    rs->queue = q->next;
    if (rs->queue == NULL)
        rs->queue_tail = NULL;
    hlen = read_response_header(hdr, q->len);
    memcpy(buf + READ_HEADER_ROOM - hlen, hdr, hlen);
    if (rpc_call_async_send_raw(rs->call, buf + READ_HEADER_ROOM - hlen, hlen + q->len, free, buf,
                                read_sent, rs) != 0) {
        rs->client_gone = true; /* buf was freed */
        read_end(rs);
    }
}

static void read_sent(void *state, int rc)
{
    struct read_stream *rs = state;

    if (rc != 0) {
        rs->client_gone = true;
        read_end(rs);
        return;
    }
    read_pump(rs);
}

/* On a pool thread: the blob's file, which may be fetched from the remote
 * first ([cas] remote), then the stream as usual. */
static void read_open_offloaded(void *state, int rc)
{
    struct read_stream *rs = state;

    (void)rc;
    if (read_open(rs) != 0)
        read_end(rs);
    else
        read_pump(rs);
}

static void bytestream_read(void *ctx, struct rpc_call *call)
{
    struct read_stream *rs = calloc(1, sizeof(*rs));
    struct casboxd *d = ctx;

    if (rs == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rs->d = d;
    rs->call = call;
    rs->fd = -1;
    reapi_status_init(&rs->st);
    if (read_begin(rs) != 0) {
        read_end(rs);
        return;
    }
    rs->offset = rs->res.compressor == REAPI_COMPRESSOR_ZSTD ? 0 : rs->req->read_offset;
    rs->plain_end = rs->res.digest.size;
    if (rs->req->read_limit > 0 && rs->req->read_limit < rs->plain_end - rs->offset)
        rs->plain_end = rs->offset + rs->req->read_limit;
    rs->end = rs->req->read_limit > 0 && rs->req->read_limit <= INT64_MAX - rs->req->read_offset
                  ? rs->req->read_offset + rs->req->read_limit
                  : INT64_MAX;
    /* A blob not here is fetched from the remote: that blocks, so not on
     * this thread. */
    if (d->remote != NULL && cas_store_contains(d->store, &rs->res.digest) != 1) {
        if (rpc_call_offload(call, RPC_POOL_TRANSFER, read_open_offloaded, rs) != 0) {
            reapi_status_set(&rs->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                             "server busy: too many calls in flight (server.max_inflight_calls)");
            read_end(rs);
        }
        return;
    }
    if (read_open(rs) != 0)
        read_end(rs);
    else
        read_pump(rs);
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

/* The WriteRequest received in *bb (rc: what the receive gave), decoded in
 * place (write_request.c): 1 with *req = wr, 0 at the end of the stream,
 * -EINVAL when it does not parse, -ECANCELED when the call died. */
static int bytestream_decode(int rc, grpc_byte_buffer **bb, struct write_request *wr,
                             struct write_request **req)
{
    if (rc <= 0)
        return rc;
    rc = write_request_decode(*bb, wr);
    *req = wr; /* freed by the next receive or bytestream_recv_done, also on failure */
    if (rc != 0)
        return rc == -ENOMEM ? -ECANCELED : -EINVAL;
    return 1;
}

static int bytestream_writer_sink(void *ctx, const void *data, size_t len)
{
    return cas_writer_append(ctx, data, len);
}

/* Writes the data of one WriteRequest from grpc's slices: straight to the
 * writer, or through the upload's decoder. */
static int bytestream_append(struct upload *up, const struct write_request *req)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < req->n_spans; i++) {
        if (up->dec != NULL)
            rc = reapi_zstd_decoder_feed(up->dec, req->spans[i].data, req->spans[i].len,
                                         bytestream_writer_sink, up->writer);
        else
            rc = cas_writer_append(up->writer, req->spans[i].data, req->spans[i].len);
    }
    return rc;
}

/* One Write stream, from its first message to the reply, event-driven
 * (rpc.h): each message received calls write_got, which appends it (on the
 * event thread: one chunk of disk I/O) and asks for the next; a writer that
 * sends nothing holds no thread. Each step below returns 0 or a negative
 * errno with st set; write_reply alone ends the call. */
struct write_stream {
    struct casboxd *d;
    struct rpc_call *call;
    grpc_byte_buffer *bb;
    struct write_request wr, *req; /* the message at hand (&wr), or NULL */
    struct reapi_resource res;     /* the first message's resource name */
    struct upload *up;             /* the upload written to; NULL when existed */
    bool existed;                  /* the blob is stored already: drain, report it complete */
    bool keep;                     /* on the way out: keep the upload for resumption */
    bool complete;                 /* the blob is stored (committed now or before) */
    int64_t committed;             /* the reply's committed_size, once done */
    char name[512];                /* the first message's resource name (for messages) */
    struct reapi_status st;
};

static bool write_compressed(const struct write_stream *ws)
{
    return ws->res.compressor == REAPI_COMPRESSOR_ZSTD;
}

/* The first message (rc: what its receive gave) and its resource name. */
static int write_begin(struct write_stream *ws, int rc)
{
    rc = bytestream_decode(rc, &ws->bb, &ws->wr, &ws->req);
    if (rc <= 0) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         rc == 0 ? "Write stream had no request" : "WriteRequest not parseable");
        return -EINVAL;
    }
    snprintf(ws->name, sizeof(ws->name), "%s", ws->req->resource_name);
    rc = reapi_resource_parse_write(ws->req->resource_name, &ws->res);
    if (rc != 0) {
        reapi_resource_status(&ws->st, ws->req->resource_name, rc, &ws->res, true);
        return rc;
    }
    return bytestream_authorize(ws->call, &ws->res, &ws->st);
}

/* A compressed upload may claim any size in a few bytes: one that could not
 * fit on the store's filesystem is refused before anything is decompressed. */
static int write_check_room(struct write_stream *ws)
{
    struct statvfs sv;
    uint64_t avail;

    if (statvfs(cas_store_tmp_dir(ws->d->store), &sv) != 0)
        return 0; /* the writer will report a real failure */
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    if ((uint64_t)ws->res.digest.size <= avail)
        return 0;
    reapi_status_set(&ws->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                     "compressed upload declares %" PRId64 " bytes, more than the %" PRIu64
                     " free on the store's filesystem",
                     ws->res.digest.size, avail);
    return -ENOSPC;
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
    if (rc == 0 && write_compressed(ws))
        rc = reapi_zstd_decoder_new(ws->res.digest.size, &up->dec);
    if (rc == 0)
        rc = uploads_add(ws->d->uploads, up);
    if (rc == -EAGAIN) {
        reapi_status_set(&ws->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "cannot start upload: too many uploads in progress (server.max_uploads)");
    } else if (rc != 0) {
        char why[512];
        grpc_status_code code =
            svc_store_error(ws->d, rc, (uint64_t)ws->res.digest.size, why, sizeof(why));

        reapi_status_set(&ws->st, code, "cannot start upload: %s", why);
    }
    if (rc != 0) {
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
    if (ws->up->dec != NULL)
        reapi_zstd_decoder_reset(ws->up->dec);
    rc = cas_writer_begin(ws->d->store, &ws->res.digest, &ws->up->writer);
    if (rc != 0) {
        char why[512];
        grpc_status_code code =
            svc_store_error(ws->d, rc, (uint64_t)ws->res.digest.size, why, sizeof(why));

        reapi_status_set(&ws->st, code, "cannot start upload: %s", why);
    }
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
    if (rc == -ENOENT) {
        rc = write_compressed(ws) ? write_check_room(ws) : 0;
        if (rc != 0) {
            free(key);
            return rc;
        }
        return write_start(ws, key);
    }
    free(key);
    if (rc == -EBUSY) {
        reapi_status_set(&ws->st, GRPC_STATUS_ABORTED,
                         "upload %s is being written by another stream", ws->req->resource_name);
        return rc;
    }
    if (ws->req->write_offset == 0 && upload_offset(ws->up) != 0)
        return write_restart(ws);
    return 0;
}

/* The status of a failed append. */
static int write_append_failed(struct write_stream *ws, int rc)
{
    if (rc == -EBADMSG || rc == -EFBIG)
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT, "%.300s: %s", ws->name,
                         ws->up->dec && reapi_zstd_decoder_error(ws->up->dec)[0]
                             ? reapi_zstd_decoder_error(ws->up->dec)
                             : "data runs past the digest's size");
    else {
        char why[512];
        grpc_status_code code =
            svc_store_error(ws->d, rc, (uint64_t)ws->res.digest.size, why, sizeof(why));

        reapi_status_set(&ws->st, code, "writing upload failed: %s", why);
    }
    return rc;
}

/* Checks the message at hand against what is committed and the most the
 * digest allows, and appends its data. */
static int write_message(struct write_stream *ws)
{
    const struct write_request *req = ws->req;
    int64_t at = ws->existed ? req->write_offset : upload_offset(ws->up);
    int64_t most =
        write_compressed(ws) ? reapi_zstd_max_compressed(ws->res.digest.size) : ws->res.digest.size;
    int rc;

    if (!ws->existed && req->write_offset != at) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "write_offset %" PRId64 " leaves a %s: %" PRId64 " bytes are committed",
                         req->write_offset, req->write_offset > at ? "gap" : "overlap", at);
        ws->keep = true; /* the committed bytes are still good */
        return -EINVAL;
    }
    if (req->write_offset + (int64_t)req->data_len > most) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "data runs to %" PRId64 " bytes, past %s %" PRId64,
                         req->write_offset + (int64_t)req->data_len,
                         write_compressed(ws) ? "what zstd needs for the digest's size at most,"
                                              : "the digest's size",
                         most);
        return -EINVAL;
    }
    if (ws->existed || req->data_len == 0)
        return 0;
    rc = bytestream_append(ws->up, req);
    return rc != 0 ? write_append_failed(ws, rc) : 0;
}

/* A compressed upload's data must end after a whole frame and decompress to
 * exactly the digest's size. */
static int write_finish_compressed(struct write_stream *ws)
{
    struct reapi_zstd_decoder *dec = ws->up->dec;
    int rc = reapi_zstd_decoder_finish(dec);

    if (rc != 0)
        return write_append_failed(ws, rc);
    if (reapi_zstd_decoder_produced(dec) != ws->res.digest.size) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%.300s: zstd data decompresses to %" PRId64
                         " bytes, the digest declares %" PRId64,
                         ws->name, reapi_zstd_decoder_produced(dec), ws->res.digest.size);
        return -EINVAL;
    }
    return 0;
}

/* finish_write: the blob must be complete; commits it. */
static int write_commit(struct write_stream *ws)
{
    int64_t total = ws->req->write_offset + (int64_t)ws->req->data_len;
    char hex[CAS_HASH_HEX + 1];
    int rc;

    if (!write_compressed(ws) && total != ws->res.digest.size) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "finish_write after %" PRId64 " bytes, the digest says %" PRId64, total,
                         ws->res.digest.size);
        return -EINVAL;
    }
    if (!ws->existed) {
        rc = write_compressed(ws) ? write_finish_compressed(ws) : 0;
        if (rc != 0)
            return rc;
        rc = cas_writer_commit(ws->up->writer);
        ws->up->writer = NULL;
        if (rc == -EINVAL) {
            cas_digest_hex(&ws->res.digest, hex);
            reapi_status_set(
                &ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                "uploaded data%s does not match digest %s/%" PRId64 " of the resource name",
                write_compressed(ws) ? ", decompressed," : "", hex, ws->res.digest.size);
            return rc;
        }
        if (rc != 0) {
            char why[512];
            grpc_status_code code =
                svc_store_error(ws->d, rc, (uint64_t)ws->res.digest.size, why, sizeof(why));

            reapi_status_set(&ws->st, code, "committing blob failed: %s", why);
            return rc;
        }
    }
    if (!ws->existed)
        observe_transfer(ws->d, "written", "bytestream", 1, (uint64_t)ws->res.digest.size);
    /* Compressed: the compressed bytes received, as Bazel checks. */
    ws->committed = write_compressed(ws) ? total : ws->res.digest.size;
    ws->complete = true;
    return 0;
}

/* The stream's next message (rc: what its receive gave): 1, or 0 when the
 * client closed the stream without finish_write (the upload is then kept
 * for resumption). */
static int write_next(struct write_stream *ws, int rc)
{
    struct reapi_resource again;

    rc = bytestream_decode(rc, &ws->bb, &ws->wr, &ws->req);

    if (rc == 0) {
        ws->committed = ws->existed ? ws->res.digest.size : upload_offset(ws->up);
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
         !cas_digest_equal(&again.digest, &ws->res.digest) ||
         again.compressor != ws->res.compressor)) {
        reapi_status_set(&ws->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name changed within one Write");
        return -EINVAL;
    }
    return 1;
}

/* Ends the call: the reply (committed_size when rc is 0) or ws->st; frees
 * ws. */
static void write_reply(struct write_stream *ws, int rc)
{
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;

    if (rc == 0)
        resp.committed_size = ws->committed;
    if (ws->up != NULL)
        uploads_release(ws->d->uploads, ws->up, ws->keep && ws->up->writer != NULL);
    if (!reapi_status_ok(&ws->st) && ws->st.code != GRPC_STATUS_CANCELLED)
        LOG_I("ByteStream.Write %s: %s", ws->name, ws->st.message);
    rpc_call_finish(ws->call, &resp.base, &ws->st);
    reapi_status_free(&ws->st);
    bytestream_recv_done(&ws->bb, &ws->wr, &ws->req);
    free(ws);
}

/* On a pool thread: write-through ([cas] remote) streams the complete blob,
 * verified here first, to the remote from its file before the client is
 * answered. */
static void write_push(void *state, int rc)
{
    struct write_stream *ws = state;

    (void)rc;
    write_reply(ws, shared_push(ws->d, &ws->res.digest, 1, &ws->st));
}

/* The stream is over (rc 0 with ws->committed set, or a negative errno with
 * ws->st set). */
static void write_end(struct write_stream *ws, int rc)
{
    if (rc != 0 || !ws->complete || ws->d->remote == NULL) {
        write_reply(ws, rc);
        return;
    }
    if (rpc_call_offload(ws->call, RPC_POOL_TRANSFER, write_push, ws) != 0) {
        reapi_status_set(&ws->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "server busy: too many calls in flight (server.max_inflight_calls)");
        write_reply(ws, -EAGAIN);
    }
}

static void write_got(void *state, int rc);

/* Asks for the next message; write_got takes it. */
static void write_recv(struct write_stream *ws, rpc_async_fn done)
{
    bytestream_recv_done(&ws->bb, &ws->wr, &ws->req);
    if (rpc_call_async_recv(ws->call, &ws->bb, done, ws) != 0) {
        reapi_status_set(&ws->st, GRPC_STATUS_CANCELLED, "client went away");
        ws->keep = true;
        write_end(ws, -ECANCELED);
    }
}

/* The message at hand: appended; then the commit or the next message. */
static void write_step(struct write_stream *ws)
{
    int rc = write_message(ws);

    if (rc != 0) {
        write_end(ws, rc);
        return;
    }
    if (ws->req->finish_write) {
        write_end(ws, write_commit(ws));
        return;
    }
    write_recv(ws, write_got);
}

static void write_got(void *state, int rc)
{
    struct write_stream *ws = state;

    rc = write_next(ws, rc);
    if (rc <= 0)
        write_end(ws, rc); /* 0: closed without finish_write */
    else
        write_step(ws);
}

static void write_first(void *state, int rc)
{
    struct write_stream *ws = state;

    rc = write_begin(ws, rc);
    if (rc == 0)
        rc = write_open(ws);
    if (rc != 0) {
        write_end(ws, rc);
        return;
    }
    if (ws->existed && write_compressed(ws)) {
        ws->committed = -1; /* stored already: done, without reading the rest */
        ws->complete = true;
        write_end(ws, 0);
        return;
    }
    write_step(ws);
}

static void bytestream_write(void *ctx, struct rpc_call *call)
{
    struct write_stream *ws = calloc(1, sizeof(*ws));

    if (ws == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    ws->d = ctx;
    ws->call = call;
    reapi_status_init(&ws->st);
    write_recv(ws, write_first);
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
    rc = reapi_resource_parse_write(req->resource_name, &res);
    if (rc != 0) {
        reapi_resource_status(&st, req->resource_name, rc, &res, true);
        goto out;
    }
    if (bytestream_authorize(call, &res, &st) != 0)
        goto out;
    if (cas_store_contains(d->store, &res.digest) == 1) {
        /* A compressed blob's compressed size is not known: -1, as a
         * Write of it answers. */
        resp.committed_size = res.compressor == REAPI_COMPRESSOR_ZSTD ? -1 : res.digest.size;
        resp.complete = 1;
        goto out;
    }
    key = upload_key(req->resource_name, &res);
    rc = key ? uploads_take(d->uploads, key, &up) : -ENOMEM;
    if (rc == 0) {
        resp.committed_size = upload_offset(up);
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
 * message), so they are event-driven: a slow reader or a stalled writer
 * holds its buffers, not a thread (1,000 such streams used to take every
 * thread of a pool, and a fresh 1 KiB transfer waited seconds behind them).
 * A step that blocks on the network (a remote fetch or write-through with
 * [cas] remote) runs on the transfer pool (server.transfer_threads). */
const struct rpc_method bytestream_methods[] = {
    {"/google.bytestream.ByteStream/Read", RPC_SERVER_STREAM, RPC_POOL_EVENT, bytestream_read,
     AUTH_PERM_READ},
    {"/google.bytestream.ByteStream/Write", RPC_CLIENT_STREAM, RPC_POOL_EVENT, bytestream_write,
     AUTH_PERM_WRITE},
    {"/google.bytestream.ByteStream/QueryWriteStatus", RPC_UNARY, RPC_POOL_SHORT,
     bytestream_query_write_status, AUTH_PERM_WRITE},
};
const size_t bytestream_n_methods = sizeof(bytestream_methods) / sizeof(bytestream_methods[0]);
