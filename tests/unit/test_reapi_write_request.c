/*
 * test_daemon_write_request.c - decoding google.bytestream.WriteRequest in
 * place from grpc byte buffers (reapi/write_request.c): the same fields as
 * protobuf-c's unpack for messages cut into slices at every size, unknown
 * fields skipped, the last occurrence winning, and malformed messages
 * rejected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <stdlib.h>
#include <string.h>

#include "google/bytestream/bytestream.pb-c.h"
#include "reapi/reapi.h"

/* A byte buffer holding bytes cut into slices of `piece` bytes. */
static grpc_byte_buffer *buffer_of(const uint8_t *bytes, size_t len, size_t piece)
{
    size_t n = len == 0 ? 1 : (len + piece - 1) / piece;
    grpc_slice *slices = calloc(n, sizeof(*slices));
    grpc_byte_buffer *bb;

    assert_non_null(slices);
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

/* Decodes bytes cut at `piece`; returns the decoder's result, r filled. */
static int decode(const uint8_t *bytes, size_t len, size_t piece, struct write_request *r,
                  grpc_byte_buffer **bb)
{
    *bb = buffer_of(bytes, len, piece);
    return write_request_decode(*bb, r);
}

/* The data of r, joined. */
static uint8_t *joined(const struct write_request *r)
{
    uint8_t *out = malloc(r->data_len + 1), *p = out;
    size_t total = 0;

    assert_non_null(out);
    for (size_t i = 0; i < r->n_spans; i++) {
        memcpy(p, r->spans[i].data, r->spans[i].len);
        p += r->spans[i].len;
        total += r->spans[i].len;
    }
    assert_int_equal(total, r->data_len);
    return out;
}

static void test_matches_protobuf_c(void **state)
{
    static const size_t pieces[] = {1, 2, 3, 7, 64, 4096, 1 << 20};
    Google__Bytestream__WriteRequest m = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
    uint8_t data[70000], *packed, *got;
    struct write_request r;
    grpc_byte_buffer *bb;
    size_t len;

    (void)state;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    m.resource_name = "inst/uploads/3f1c/blobs/"
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/70000";
    m.write_offset = 1234567890123LL;
    m.finish_write = true;
    m.data.data = data;
    m.data.len = sizeof(data);
    len = google__bytestream__write_request__get_packed_size(&m);
    packed = malloc(len);
    assert_non_null(packed);
    google__bytestream__write_request__pack(&m, packed);
    for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
        assert_int_equal(decode(packed, len, pieces[p], &r, &bb), 0);
        assert_string_equal(r.resource_name, m.resource_name);
        assert_int_equal(r.write_offset, m.write_offset);
        assert_true(r.finish_write);
        assert_int_equal(r.data_len, sizeof(data));
        got = joined(&r);
        assert_memory_equal(got, data, sizeof(data));
        free(got);
        /* spans point into grpc's slices: no copy of the data was made */
        if (pieces[p] >= len)
            assert_int_equal(r.n_spans, 1);
        write_request_free(&r);
        grpc_byte_buffer_destroy(bb);
    }
    free(packed);

    /* An empty message: every field at its default. */
    assert_int_equal(decode(NULL, 0, 1, &r, &bb), 0);
    assert_string_equal(r.resource_name, "");
    assert_int_equal(r.write_offset, 0);
    assert_false(r.finish_write);
    assert_int_equal(r.data_len, 0);
    write_request_free(&r);
    grpc_byte_buffer_destroy(bb);
}

static void test_unknown_fields_and_last_wins(void **state)
{
    /* name "a", offset 5, field 4 varint, field 99 bytes, field 7 fixed32,
     * field 8 fixed64, data "xy", then name "bc", data "z", offset 6,
     * finish_write 1 then 0. */
    static const uint8_t msg[] = {0x0a, 1,   'a',  0x10, 5,   0x20, 0x96, 0x01, 0x9a, 0x06, 2,
                                  'q',  'r', 0x3d, 1,    2,   3,    4,    0x41, 1,    2,    3,
                                  4,    5,   6,    7,    8,   0x52, 2,    'x',  'y',  0x0a, 2,
                                  'b',  'c', 0x52, 1,    'z', 0x10, 6,    0x18, 1,    0x18, 0};
    struct write_request r;
    grpc_byte_buffer *bb;

    (void)state;
    for (size_t piece = 1; piece <= sizeof(msg); piece++) {
        assert_int_equal(decode(msg, sizeof(msg), piece, &r, &bb), 0);
        assert_string_equal(r.resource_name, "bc");
        assert_int_equal(r.write_offset, 6);
        assert_false(r.finish_write);
        assert_int_equal(r.data_len, 1);
        assert_int_equal(r.n_spans, 1);
        assert_memory_equal(r.spans[0].data, "z", 1);
        write_request_free(&r);
        grpc_byte_buffer_destroy(bb);
    }
}

static void expect_invalid(const uint8_t *msg, size_t len, const char *what)
{
    struct write_request r;
    grpc_byte_buffer *bb;

    for (size_t piece = 1; piece <= len; piece++) {
        int rc = decode(msg, len, piece, &r, &bb);

        if (rc != -EINVAL)
            fail_msg("%s (slices of %zu): decode returned %d, want -EINVAL", what, piece, rc);
        write_request_free(&r);
        grpc_byte_buffer_destroy(bb);
    }
}

static void test_malformed(void **state)
{
    static const uint8_t cut_data[] = {0x52, 5, 'a', 'b'};
    static const uint8_t cut_varint[] = {0x10, 0x80};
    static const uint8_t long_varint[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t over_64[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0x02};
    static const uint8_t group[] = {0x0b, 0x0c};
    static const uint8_t field0[] = {0x00, 1};
    static const uint8_t data_as_varint[] = {0x50, 1};
    static const uint8_t offset_as_bytes[] = {0x12, 1, 'x'};
    static const uint8_t huge_len[] = {0x52, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'};
    static const uint8_t cut_fixed64[] = {0x41, 1, 2, 3};
    static const uint8_t bad_wire[] = {0x0e, 1};

    (void)state;
    expect_invalid(cut_data, sizeof(cut_data), "data shorter than its length");
    expect_invalid(cut_varint, sizeof(cut_varint), "varint cut off");
    expect_invalid(long_varint, sizeof(long_varint), "11-byte varint");
    expect_invalid(over_64, sizeof(over_64), "varint over 64 bits");
    expect_invalid(group, sizeof(group), "group wire type");
    expect_invalid(field0, sizeof(field0), "field number 0");
    expect_invalid(data_as_varint, sizeof(data_as_varint), "data with the varint wire type");
    expect_invalid(offset_as_bytes, sizeof(offset_as_bytes), "write_offset as bytes");
    expect_invalid(huge_len, sizeof(huge_len), "length past the message");
    expect_invalid(cut_fixed64, sizeof(cut_fixed64), "fixed64 cut off");
    expect_invalid(bad_wire, sizeof(bad_wire), "wire type 6");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_protobuf_c),
        cmocka_unit_test(test_unknown_fields_and_last_wins),
        cmocka_unit_test(test_malformed),
    };
    int rc;

    grpc_init();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    grpc_shutdown();
    return rc;
}
