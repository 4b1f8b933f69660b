/*
 * test_reapi_unknown_fields.c - the REAPI fields newer than Debian's protos,
 * written into and read from protobuf-c's unknown fields, checked against
 * the wire bytes protobuf gives them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reapi/reapi.h"

/* Packs m into a malloc'd buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    uint8_t *buf = malloc(protobuf_c_message_get_packed_size(m) + 1);

    assert_non_null(buf);
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(hay + i, needle, k) == 0)
            return true;
    }
    return false;
}

/* BatchUpdateBlobsRequest.Request.compressor = 3: written, packed as protobuf
 * would (key 0x18), read back after unpacking. */
static void test_varint_round_trip(void **state)
{
    BatchUpdateBlobsRequest_Request r =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__REQUEST__INIT;
    BatchUpdateBlobsRequest_Request *back;
    struct reapi_unknown_out u;
    const uint8_t want[] = {0x18, 0x01};
    uint64_t v = 99;
    uint8_t *buf;
    size_t len;

    (void)state;
    r.data.data = (uint8_t *)"abc";
    r.data.len = 3;
    reapi_unknown_out_init(&u);
    assert_int_equal(reapi_unknown_out_varint(&u, REAPI_FIELD_BATCH_UPDATE_REQUEST_COMPRESSOR,
                                              REAPI_COMPRESSOR_ZSTD),
                     0);
    reapi_unknown_out_attach(&u, &r.base);
    buf = pack(&r.base, &len);
    assert_true(contains(buf, len, want, sizeof(want)));
    back = (BatchUpdateBlobsRequest_Request *)protobuf_c_message_unpack(
        &build__bazel__remote__execution__v2__batch_update_blobs_request__request__descriptor, NULL,
        len, buf);
    assert_non_null(back);
    assert_int_equal(back->data.len, 3);
    assert_int_equal(reapi_unknown_varint(&back->base, 3, &v), 1);
    assert_int_equal(v, REAPI_COMPRESSOR_ZSTD);
    assert_int_equal(reapi_unknown_varint(&back->base, 4, &v), 0);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    free(buf);

    /* Big values take several bytes. */
    reapi_unknown_out_init(&u);
    assert_int_equal(reapi_unknown_out_varint(&u, 3, UINT64_MAX), 0);
    assert_int_equal(u.fields[0].len, 10);
}

/* CacheCapabilities 6 and 7, packed: [0, 1] is 0x32 0x02 0x00 0x01. */
static void test_packed_round_trip(void **state)
{
    Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__CACHE_CAPABILITIES__INIT;
    Build__Bazel__Remote__Execution__V2__CacheCapabilities *back;
    const uint64_t values[] = {REAPI_COMPRESSOR_IDENTITY, REAPI_COMPRESSOR_ZSTD};
    const uint8_t want6[] = {0x32, 0x02, 0x00, 0x01}, want7[] = {0x3a, 0x02, 0x00, 0x01};
    struct reapi_unknown_out u;
    uint64_t got[8];
    uint8_t *buf;
    size_t len;

    (void)state;
    cache.max_batch_total_size_bytes = 1000;
    reapi_unknown_out_init(&u);
    assert_int_equal(reapi_unknown_out_packed(&u, 6, values, 2), 0);
    assert_int_equal(reapi_unknown_out_packed(&u, 7, values, 2), 0);
    assert_int_equal(reapi_unknown_out_packed(&u, 8, values, 0), 0); /* nothing sent */
    assert_int_equal(u.n_fields, 2);
    reapi_unknown_out_attach(&u, &cache.base);
    buf = pack(&cache.base, &len);
    assert_true(contains(buf, len, want6, sizeof(want6)));
    assert_true(contains(buf, len, want7, sizeof(want7)));
    back = build__bazel__remote__execution__v2__cache_capabilities__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_int_equal(back->max_batch_total_size_bytes, 1000);
    assert_int_equal(reapi_unknown_varints(&back->base, 6, got, 8), 2);
    assert_int_equal(got[0], 0);
    assert_int_equal(got[1], 1);
    assert_int_equal(reapi_unknown_varints(&back->base, 7, got, 1), 1); /* at most max */
    build__bazel__remote__execution__v2__cache_capabilities__free_unpacked(back, NULL);
    free(buf);
}

/* BatchReadBlobsRequest.acceptable_compressors = 3 as another client may
 * send it: unpacked, packed, or both; the last value of a scalar wins. */
static void test_wire_forms(void **state)
{
    /* digests = 2 omitted; field 3: 1 unpacked, then packed [0, 1], then 0. */
    const uint8_t wire[] = {0x18, 0x01, 0x1a, 0x02, 0x00, 0x01, 0x18, 0x00};
    const uint8_t bad_run[] = {0x1a, 0x01, 0x80};       /* a varint cut short */
    const uint8_t bad_type[] = {0x1d, 1, 2, 3, 4};      /* field 3 as fixed32 */
    const uint8_t bad_len[] = {0x1a, 0x03, 0x01, 0x01}; /* shorter than it says */
    BatchReadBlobsRequest *r;
    uint64_t got[8], v;

    (void)state;
    r = build__bazel__remote__execution__v2__batch_read_blobs_request__unpack(NULL, sizeof(wire),
                                                                              wire);
    assert_non_null(r);
    assert_int_equal(reapi_unknown_varints(&r->base, 3, got, 8), 4);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 0);
    assert_int_equal(got[2], 1);
    assert_int_equal(got[3], 0);
    assert_int_equal(reapi_unknown_varint(&r->base, 3, &v), 1);
    assert_int_equal(v, 0);
    build__bazel__remote__execution__v2__batch_read_blobs_request__free_unpacked(r, NULL);

    r = build__bazel__remote__execution__v2__batch_read_blobs_request__unpack(NULL, sizeof(bad_run),
                                                                              bad_run);
    assert_non_null(r);
    assert_int_equal(reapi_unknown_varints(&r->base, 3, got, 8), -EINVAL);
    assert_int_equal(reapi_unknown_varint(&r->base, 3, &v), -EINVAL);
    build__bazel__remote__execution__v2__batch_read_blobs_request__free_unpacked(r, NULL);

    r = build__bazel__remote__execution__v2__batch_read_blobs_request__unpack(
        NULL, sizeof(bad_type), bad_type);
    assert_non_null(r);
    assert_int_equal(reapi_unknown_varint(&r->base, 3, &v), -EINVAL);
    build__bazel__remote__execution__v2__batch_read_blobs_request__free_unpacked(r, NULL);

    /* protobuf-c itself refuses a length past the end. */
    assert_null(build__bazel__remote__execution__v2__batch_read_blobs_request__unpack(
        NULL, sizeof(bad_len), bad_len));
}

static void test_out_full(void **state)
{
    struct reapi_unknown_out u;
    uint64_t many[100];

    (void)state;
    reapi_unknown_out_init(&u);
    for (int i = 0; i < REAPI_UNKNOWN_MAX_FIELDS; i++)
        assert_int_equal(reapi_unknown_out_varint(&u, (uint32_t)(10 + i), 1), 0);
    assert_int_equal(reapi_unknown_out_varint(&u, 20, 1), -ENOSPC);
    reapi_unknown_out_init(&u);
    for (int i = 0; i < 100; i++)
        many[i] = UINT64_MAX;
    assert_int_equal(reapi_unknown_out_packed(&u, 6, many, 100), -ENOSPC);
    assert_int_equal(u.n_fields, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_round_trip),
        cmocka_unit_test(test_packed_round_trip),
        cmocka_unit_test(test_wire_forms),
        cmocka_unit_test(test_out_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
