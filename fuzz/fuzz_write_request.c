/*
 * fuzz_write_request.c - feeds google.bytestream.WriteRequest messages to
 * write_request_decode (reapi/write_request.c), casboxd's own protobuf
 * decoder for ByteStream.Write, which reads a client's bytes straight from
 * grpc's slices. The first input byte says where the message is cut into
 * slices (grpc hands over messages in pieces); the rest is the message. When
 * protobuf-c accepts the message too, both must read the same fields.
 */
#include <assert.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

/* The message in slices of `piece` bytes (at least one slice). */
static grpc_byte_buffer *buffer_of(const uint8_t *bytes, size_t len, size_t piece)
{
    size_t n = len == 0 ? 1 : (len + piece - 1) / piece;
    grpc_slice *slices = calloc(n, sizeof(*slices));
    grpc_byte_buffer *bb;

    if (slices == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t off = i * piece, l = len - off < piece ? len - off : piece;

        slices[i] = grpc_slice_from_copied_buffer((const char *)bytes + off, len ? l : 0);
    }
    bb = grpc_raw_byte_buffer_create(slices, n);
    for (size_t i = 0; i < n; i++)
        grpc_slice_unref(slices[i]);
    free(slices);
    return bb;
}

static void compare_with_protobuf_c(const struct write_request *r, const uint8_t *msg, size_t len)
{
    Google__Bytestream__WriteRequest *m = google__bytestream__write_request__unpack(NULL, len, msg);
    size_t off = 0;

    if (m == NULL)
        return;
    assert(strcmp(r->resource_name, m->resource_name) == 0);
    assert(r->write_offset == m->write_offset);
    assert(r->finish_write == (m->finish_write != 0));
    assert(r->data_len == m->data.len);
    for (size_t i = 0; i < r->n_spans; i++) {
        assert(off + r->spans[i].len <= m->data.len);
        assert(memcmp(r->spans[i].data, m->data.data + off, r->spans[i].len) == 0);
        off += r->spans[i].len;
    }
    assert(off == m->data.len);
    google__bytestream__write_request__free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct write_request r;
    grpc_byte_buffer *bb;
    size_t piece;

    if (size == 0)
        return 0;
    piece = data[0] == 0 ? size : data[0]; /* 0: the whole message in one slice */
    bb = buffer_of(data + 1, size - 1, piece);
    if (bb == NULL)
        return 0;
    if (write_request_decode(bb, &r) == 0) {
        size_t total = 0;

        for (size_t i = 0; i < r.n_spans; i++)
            total += r.spans[i].len;
        assert(total == r.data_len && r.resource_name != NULL);
        compare_with_protobuf_c(&r, data + 1, size - 1);
    }
    write_request_free(&r);
    grpc_byte_buffer_destroy(bb);
    return 0;
}
