/*
 * test_reapi_find_missing.c - FindMissingBlobs decoded and encoded by hand
 * (reapi/find_missing.c): requests packed by protobuf-c read back to the
 * same fields however they are cut into slices, more digests than a chunk,
 * a bad digest kept for its error message (the earliest of the two passes'), digest_function
 * plain, packed and malformed, unknown fields skipped, malformed messages
 * rejected, and responses that protobuf-c unpacks to exactly the missing
 * digests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

/* What a decode gave: the scan's fields and every digest of the second pass. */
struct decoded {
    struct find_missing_request r;
    struct cas_digest d[64];
    size_t n;
    int rc;
};

static int collect(void *ctx, const struct cas_digest *d, size_t n)
{
    struct decoded *x = ctx;

    assert_true(n <= FIND_MISSING_CHUNK);
    for (size_t i = 0; i < n; i++) {
        if (x->n < 64)
            x->d[x->n] = d[i];
        x->n++;
    }
    return 0;
}

/* Decodes bytes cut into spans of `piece` bytes (0: one span): the scan,
 * then (when it passed) the digests. Returns the first failure. */
static int decode_in(const uint8_t *bytes, size_t len, size_t piece, struct decoded *x)
{
    struct find_missing_span spans[512];
    size_t n = 0;

    memset(x, 0, sizeof(*x));
    if (piece == 0)
        piece = len ? len : 1;
    for (size_t off = 0; off < len; off += piece) {
        assert_true(n < 512);
        spans[n].data = bytes + off;
        spans[n].len = len - off < piece ? len - off : piece;
        n++;
    }
    x->rc = find_missing_request_scan(spans, n, &x->r);
    if (x->rc == 0)
        x->rc = find_missing_request_digests(&x->r, collect, x);
    return x->rc;
}

static const char *const hashes[] = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "0000000000000000000000000000000000000000000000000000000000000001",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
};

/* A request packed by protobuf-c; *len set. */
static uint8_t *pack_request(const char *instance, Digest **digests, size_t n, size_t *len)
{
    FindMissingBlobsRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
    uint8_t *buf;

    req.instance_name = (char *)instance;
    req.blob_digests = digests;
    req.n_blob_digests = n;
    *len = build__bazel__remote__execution__v2__find_missing_blobs_request__get_packed_size(&req);
    buf = malloc(*len + 1);
    assert_non_null(buf);
    build__bazel__remote__execution__v2__find_missing_blobs_request__pack(&req, buf);
    return buf;
}

static void test_round_trip(void **state)
{
    Digest d[3], *pd[3];
    struct decoded x;
    const int64_t sizes[] = {0, 5, (int64_t)1 << 40};
    uint8_t *buf;
    size_t len;

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        build__bazel__remote__execution__v2__digest__init(&d[i]);
        d[i].hash = (char *)hashes[i];
        d[i].size_bytes = sizes[i];
        pd[i] = &d[i];
    }
    buf = pack_request("main/x", pd, 3, &len);
    /* Cut anywhere, the same fields: grpc hands requests over in slices. */
    for (size_t piece = 0; piece <= len; piece++) {
        assert_int_equal(decode_in(buf, len, piece, &x), 0);
        assert_string_equal(x.r.instance_name, "main/x");
        assert_int_equal(x.r.n_digests, 3);
        assert_int_equal(x.n, 3);
        assert_false(x.r.has_bad);
        assert_false(x.r.has_digest_function);
        for (size_t i = 0; i < 3; i++) {
            char hex[CAS_HASH_HEX + 1];

            cas_digest_hex(&x.d[i], hex);
            assert_string_equal(hex, hashes[i]);
            assert_int_equal(x.d[i].size, sizes[i]);
        }
        find_missing_request_free(&x.r);
    }
    free(buf);

    /* Nothing at all: the empty instance, no digests. */
    assert_int_equal(decode_in((const uint8_t *)"", 0, 0, &x), 0);
    assert_string_equal(x.r.instance_name, "");
    assert_int_equal(x.r.n_digests, 0);
    assert_int_equal(x.n, 0);
    find_missing_request_free(&x.r);
}

/* More digests than a chunk: every one handed over, in order, in chunks. */
static void test_chunks(void **state)
{
    size_t n = 2 * FIND_MISSING_CHUNK + 7, count = 0;
    Digest *d = calloc(n, sizeof(*d));
    Digest **pd = calloc(n, sizeof(*pd));
    struct decoded x;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_non_null(d);
    assert_non_null(pd);
    for (size_t i = 0; i < n; i++) {
        build__bazel__remote__execution__v2__digest__init(&d[i]);
        d[i].hash = (char *)hashes[i % 3];
        d[i].size_bytes = (int64_t)i;
        pd[i] = &d[i];
    }
    buf = pack_request("", pd, n, &len);
    assert_int_equal(decode_in(buf, len, 1000, &x), 0);
    assert_int_equal(x.r.n_digests, n);
    assert_int_equal(x.n, n);
    for (size_t i = 0; i < 64; i++)
        count += x.d[i].size == (int64_t)i;
    assert_int_equal(count, 64);
    find_missing_request_free(&x.r);
    free(buf);
    free(pd);
    free(d);
}

static void test_bad_digest_kept(void **state)
{
    Digest d[4], *pd[4];
    struct decoded x;
    uint8_t *buf;
    size_t len;

    (void)state;
    for (size_t i = 0; i < 4; i++) {
        build__bazel__remote__execution__v2__digest__init(&d[i]);
        d[i].hash = (char *)hashes[0];
        pd[i] = &d[i];
    }
    d[1].hash = "abc";
    d[1].size_bytes = 7;
    d[2].hash = "zz"; /* only the first bad one is reported */
    buf = pack_request("", pd, 4, &len);
    assert_int_equal(decode_in(buf, len, 0, &x), -EINVAL);
    assert_true(x.r.has_bad);
    assert_int_equal(x.r.bad_index, 1);
    assert_string_equal(x.r.bad_hash, "abc");
    assert_int_equal(x.r.bad_size, 7);
    assert_int_equal(x.r.n_digests, 4);
    find_missing_request_free(&x.r);
    free(buf);

    /* A hash that is not hex, then a negative size: the first is reported. */
    d[1].hash = "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    d[1].size_bytes = 1;
    d[2].hash = (char *)hashes[0];
    d[2].size_bytes = -1;
    buf = pack_request("", pd, 4, &len);
    assert_int_equal(decode_in(buf, len, 7, &x), -EINVAL);
    assert_true(x.r.has_bad);
    assert_int_equal(x.r.bad_index, 1);
    assert_string_equal(x.r.bad_hash, d[1].hash);
    find_missing_request_free(&x.r);
    /* Only the negative size; the scan does not look into digests. */
    d[1].hash = (char *)hashes[0];
    free(buf);
    buf = pack_request("", pd, 4, &len);
    assert_int_equal(find_missing_request_scan(&(struct find_missing_span){buf, len}, 1, &x.r), 0);
    assert_false(x.r.has_bad);
    assert_int_equal(x.r.n_digests, 4);
    assert_int_equal(find_missing_request_digests(&x.r, NULL, NULL), -EINVAL);
    assert_true(x.r.has_bad);
    assert_int_equal(x.r.bad_index, 2);
    assert_int_equal(x.r.bad_size, -1);
    find_missing_request_free(&x.r);
    free(buf);
}

static void test_fields_as_protobuf_reads_them(void **state)
{
    /* instance "a", then unknown fields of every wire type, a Digest with an
     * unknown field and its hash given twice (the last wins), then "b". */
    uint8_t msg[256], *p = msg;
    struct decoded x;

    (void)state;
    *p++ = 0x0a, *p++ = 1, *p++ = 'a';
    *p++ = 0x78, *p++ = 0x96, *p++ = 0x01;                      /* field 15 varint */
    *p++ = 0x81, *p++ = 0x01, memset(p, 0, 8), p += 8;          /* field 16 i64 */
    *p++ = 0x8d, *p++ = 0x01, memset(p, 0, 4), p += 4;          /* field 17 i32 */
    *p++ = 0x92, *p++ = 0x01, *p++ = 2, *p++ = 'x', *p++ = 'y'; /* field 18 len */
    *p++ = 0x12, *p++ = (uint8_t)(2 + 2 + 2 + 64 + 2);
    *p++ = 0x0a, *p++ = 0;    /* hash "" */
    *p++ = 0x18, *p++ = 0x01; /* unknown field 3 of Digest */
    *p++ = 0x0a, *p++ = 64, memcpy(p, hashes[1], 64), p += 64;
    *p++ = 0x10, *p++ = 9;
    *p++ = 0x0a, *p++ = 1, *p++ = 'b';
    for (size_t piece = 0; piece < 12; piece++) {
        assert_int_equal(decode_in(msg, (size_t)(p - msg), piece, &x), 0);
        assert_string_equal(x.r.instance_name, "b");
        assert_int_equal(x.r.n_digests, 1);
        assert_false(x.r.has_bad);
        assert_int_equal(x.n, 1);
        assert_int_equal(x.d[0].size, 9);
        find_missing_request_free(&x.r);
    }
}

static void test_digest_function(void **state)
{
    const uint8_t plain[] = {0x18, 0x09};
    const uint8_t packed[] = {0x1a, 0x02, 0x09, 0x01};
    const uint8_t bad_packed[] = {0x1a, 0x01, 0x80};
    const uint8_t fixed[] = {0x1d, 0, 0, 0, 0};
    struct decoded x;
    struct reapi_status st;

    (void)state;
    assert_int_equal(decode_in(plain, sizeof(plain), 0, &x), 0);
    assert_true(x.r.has_digest_function);
    assert_int_equal(x.r.digest_function, 9);
    reapi_status_init(&st);
    assert_int_equal(reapi_digest_function_check_value("FindMissingBlobsRequest", 3, true, false,
                                                       x.r.digest_function, &st),
                     -EINVAL);
    assert_non_null(strstr(st.message, "BLAKE3"));
    reapi_status_free(&st);
    find_missing_request_free(&x.r);

    assert_int_equal(decode_in(packed, sizeof(packed), 1, &x), 0);
    assert_int_equal(x.r.digest_function, 1); /* the last wins */
    assert_false(x.r.digest_function_malformed);
    find_missing_request_free(&x.r);

    assert_int_equal(decode_in(bad_packed, sizeof(bad_packed), 0, &x), 0);
    assert_true(x.r.digest_function_malformed);
    find_missing_request_free(&x.r);
    assert_int_equal(decode_in(fixed, sizeof(fixed), 0, &x), 0);
    assert_true(x.r.digest_function_malformed);
    reapi_status_init(&st);
    assert_int_equal(
        reapi_digest_function_check_value("FindMissingBlobsRequest", 3, false, true, 0, &st),
        -EINVAL);
    assert_string_equal(st.message,
                        "FindMissingBlobsRequest.digest_function (field 3) is not an enum value");
    reapi_status_free(&st);
    find_missing_request_free(&x.r);
}

static void test_malformed(void **state)
{
    static const struct {
        const char *what;
        uint8_t bytes[8];
        size_t len;
    } cases[] = {
        {"truncated key", {0x80}, 1},
        {"field 0", {0x00, 0x00}, 2},
        {"length past the end", {0x0a, 0x05, 'a'}, 3},
        {"instance as a varint", {0x08, 0x01}, 2},
        {"digests as a varint", {0x10, 0x01}, 2},
        {"digest length past the end", {0x12, 0x03, 0x0a, 0x05}, 4},
        {"hash as a varint", {0x12, 0x02, 0x08, 0x01}, 4},
        {"size as a string", {0x12, 0x02, 0x12, 0x00}, 4},
        {"group wire type", {0x1b}, 1},
        {"varint cut short", {0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 8},
    };
    struct decoded x;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t piece = 0; piece < 3; piece++) {
            int rc = decode_in(cases[i].bytes, cases[i].len, piece, &x);

            /* -EINVAL from the scan, -EBADMSG inside a Digest (the second pass) */
            if ((rc != -EINVAL && rc != -EBADMSG) || x.r.has_bad)
                fail_msg("%s (pieces of %zu): decoded to %d, want not parseable", cases[i].what,
                         piece, rc);
            find_missing_request_free(&x.r);
        }
    }
    /* A malformed Digest after a bad one: not parseable, as protobuf-c says. */
    {
        const uint8_t msg[] = {0x12, 0x02, 0x0a, 0x00, 0x12, 0x02, 0x08, 0x01};

        assert_int_equal(decode_in(msg, sizeof(msg), 0, &x), -EBADMSG);
        find_missing_request_free(&x.r);
    }
}

static void test_response(void **state)
{
    struct cas_digest d[3];
    const bool missing[3] = {true, false, true};
    struct find_missing_response out = {0};
    FindMissingBlobsResponse *resp;

    (void)state;
    assert_int_equal(cas_digest_parse(hashes[0], 0, &d[0]), 0);
    assert_int_equal(cas_digest_parse(hashes[1], 3, &d[1]), 0);
    assert_int_equal(cas_digest_parse(hashes[2], INT64_MAX, &d[2]), 0);
    /* In two chunks, as the handler appends them. */
    assert_int_equal(find_missing_response_add(&out, d, missing, 2), 0);
    assert_int_equal(find_missing_response_add(&out, d + 2, missing + 2, 1), 0);
    resp = build__bazel__remote__execution__v2__find_missing_blobs_response__unpack(NULL, out.len,
                                                                                    out.buf);
    assert_non_null(resp);
    assert_int_equal(resp->n_missing_blob_digests, 2);
    assert_string_equal(resp->missing_blob_digests[0]->hash, hashes[0]);
    assert_int_equal(resp->missing_blob_digests[0]->size_bytes, 0);
    assert_string_equal(resp->missing_blob_digests[1]->hash, hashes[2]);
    assert_int_equal(resp->missing_blob_digests[1]->size_bytes, INT64_MAX);
    /* The same bytes protobuf-c would write. */
    {
        size_t want =
            build__bazel__remote__execution__v2__find_missing_blobs_response__get_packed_size(resp);
        uint8_t *again = malloc(want);

        assert_non_null(again);
        build__bazel__remote__execution__v2__find_missing_blobs_response__pack(resp, again);
        assert_int_equal(want, out.len);
        assert_memory_equal(again, out.buf, out.len);
        free(again);
    }
    build__bazel__remote__execution__v2__find_missing_blobs_response__free_unpacked(resp, NULL);
    find_missing_response_free(&out);

    /* None missing: an empty message. */
    assert_int_equal(find_missing_response_add(&out, d, (const bool[3]){0}, 3), 0);
    assert_int_equal(out.len, 0);
    find_missing_response_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_bad_digest_kept),
        cmocka_unit_test(test_fields_as_protobuf_reads_them),
        cmocka_unit_test(test_digest_function),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_response),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
