/*
 * write_request.c - decoding a google.bytestream.WriteRequest without
 * copying its data.
 *
 * ByteStream.Write carries blobs in messages of up to a few MiB. Unpacking
 * them with protobuf-c costs two copies of every byte (grpc's readall into
 * one contiguous slice, then protobuf-c's copy of the bytes field); here the
 * data field is described as spans into the slices grpc received, and the
 * writer hashes and writes from there. The message has four fields:
 * resource_name = 1 (string), write_offset = 2 (int64), finish_write = 3
 * (bool), data = 10 (bytes); anything else is skipped by its wire type, as
 * protobuf does.
 */
#include "reapi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

/* A read position over the buffer's slices. */
struct wr_cursor {
    const struct write_request *r;
    size_t slice; /* index into r->slices */
    size_t off;   /* offset in that slice */
};

static size_t wr_slice_len(const struct wr_cursor *c)
{
    return GRPC_SLICE_LENGTH(c->r->slices[c->slice]);
}

static const uint8_t *wr_slice_ptr(const struct wr_cursor *c)
{
    return GRPC_SLICE_START_PTR(c->r->slices[c->slice]) + c->off;
}

/* Moves past exhausted slices; false at the end of the message. */
static bool wr_more(struct wr_cursor *c)
{
    while (c->slice < c->r->n_slices && c->off >= wr_slice_len(c)) {
        c->slice++;
        c->off = 0;
    }
    return c->slice < c->r->n_slices;
}

static int wr_byte(struct wr_cursor *c, uint8_t *b)
{
    if (!wr_more(c))
        return -EINVAL;
    *b = *wr_slice_ptr(c);
    c->off++;
    return 0;
}

static int wr_varint(struct wr_cursor *c, uint64_t *v)
{
    uint8_t b;
    int rc;

    *v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        rc = wr_byte(c, &b);
        if (rc != 0)
            return rc;
        if (shift == 63 && b > 1)
            return -EINVAL; /* more than 64 bits */
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return -EINVAL;
}

/* Walks len bytes; each piece goes to r->spans when spans is true, or is
 * copied to out (when not NULL). */
static int wr_take(struct wr_cursor *c, uint64_t len, struct write_request *r, bool spans,
                   uint8_t *out)
{
    while (len > 0) {
        size_t n;

        if (!wr_more(c))
            return -EINVAL;
        n = wr_slice_len(c) - c->off;
        if (n > len)
            n = (size_t)len;
        if (spans) {
            r->spans[r->n_spans].data = wr_slice_ptr(c);
            r->spans[r->n_spans].len = n;
            r->n_spans++;
        } else if (out != NULL) {
            memcpy(out, wr_slice_ptr(c), n);
            out += n;
        }
        c->off += n;
        len -= n;
    }
    return 0;
}

static int wr_field_name(struct wr_cursor *c, uint64_t len, struct write_request *r)
{
    char *name;

    if (len > 64 * 1024)
        return -EINVAL; /* no resource name is that long */
    name = malloc((size_t)len + 1);
    if (name == NULL)
        return -ENOMEM;
    if (wr_take(c, len, r, false, (uint8_t *)name) != 0) {
        free(name);
        return -EINVAL;
    }
    name[len] = '\0';
    free(r->resource_name);
    r->resource_name = name;
    return 0;
}

static int wr_field(struct wr_cursor *c, uint64_t key, struct write_request *r)
{
    uint64_t field = key >> 3, wire = key & 7, v;
    int rc;

    switch (wire) {
    case WIRE_VARINT:
        rc = wr_varint(c, &v);
        if (rc != 0)
            return rc;
        if (field == 2)
            r->write_offset = (int64_t)v;
        else if (field == 3)
            r->finish_write = v != 0;
        else if (field == 1 || field == 10)
            return -EINVAL;
        return 0;
    case WIRE_LEN:
        rc = wr_varint(c, &v);
        if (rc != 0)
            return rc;
        if (field == 1)
            return wr_field_name(c, v, r);
        if (field == 10) {
            r->n_spans = 0; /* the last occurrence wins */
            r->data_len = (size_t)v;
            return wr_take(c, v, r, true, NULL);
        }
        if (field == 2 || field == 3)
            return -EINVAL;
        return wr_take(c, v, r, false, NULL);
    case WIRE_I64:
    case WIRE_I32:
        if ((field >= 1 && field <= 3) || field == 10)
            return -EINVAL; /* a known field with the wrong wire type */
        return wr_take(c, wire == WIRE_I64 ? 8 : 4, r, false, NULL);
    default:
        return -EINVAL; /* groups and reserved wire types */
    }
}

static int wr_collect_slices(grpc_byte_buffer *bb, struct write_request *r)
{
    grpc_slice *s;

    if (!grpc_byte_buffer_reader_init(&r->reader, bb))
        return -EINVAL;
    r->reader_live = true;
    while (grpc_byte_buffer_reader_peek(&r->reader, &s) != 0) {
        if (array_reserve((void **)&r->slices, &r->cap_slices, r->n_slices, sizeof(*r->slices)) !=
            0)
            return -ENOMEM;
        r->slices[r->n_slices++] = *s; /* borrowed: the reader keeps the ref */
    }
    return 0;
}

int write_request_decode(grpc_byte_buffer *bb, struct write_request *r)
{
    struct wr_cursor c = {.r = r};
    uint64_t key;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = wr_collect_slices(bb, r);
    if (rc != 0)
        return rc;
    /* The data field cannot span more pieces than there are slices. */
    r->spans = calloc(r->n_slices ? r->n_slices : 1, sizeof(*r->spans));
    if (r->spans == NULL)
        return -ENOMEM;
    while (wr_more(&c)) {
        rc = wr_varint(&c, &key);
        if (rc == 0 && (key >> 3) == 0)
            rc = -EINVAL; /* field number 0 does not exist */
        if (rc == 0)
            rc = wr_field(&c, key, r);
        if (rc != 0)
            return rc;
    }
    if (r->resource_name == NULL) {
        r->resource_name = strdup("");
        if (r->resource_name == NULL)
            return -ENOMEM;
    }
    return 0;
}

void write_request_free(struct write_request *r)
{
    free(r->resource_name);
    free(r->spans);
    free(r->slices);
    if (r->reader_live)
        grpc_byte_buffer_reader_destroy(&r->reader);
    memset(r, 0, sizeof(*r));
}
