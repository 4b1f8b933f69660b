/*
 * test_reapi_find_missing.c - FindMissingBlobs decoded and encoded by hand
 * (reapi/find_missing.c): requests packed by protobuf-c read back to the
 * same fields, a bad digest kept for its error message, digest_function
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
    struct find_missing_request r;
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
    assert_int_equal(find_missing_request_decode(buf, len, &r), 0);
    assert_string_equal(r.instance_name, "main/x");
    assert_int_equal(r.n_digests, 3);
    assert_false(r.has_bad);
    assert_false(r.has_digest_function);
    for (size_t i = 0; i < 3; i++) {
        char hex[CAS_HASH_HEX + 1];

        cas_digest_hex(&r.digests[i], hex);
        assert_string_equal(hex, hashes[i]);
        assert_int_equal(r.digests[i].size, sizes[i]);
    }
    find_missing_request_free(&r);
    free(buf);

    /* Nothing at all: the empty instance, no digests. */
    assert_int_equal(find_missing_request_decode((const uint8_t *)"", 0, &r), 0);
    assert_string_equal(r.instance_name, "");
    assert_int_equal(r.n_digests, 0);
    find_missing_request_free(&r);
}

static void test_bad_digest_kept(void **state)
{
    Digest d[3], *pd[3];
    struct find_missing_request r;
    uint8_t *buf;
    size_t len;

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        build__bazel__remote__execution__v2__digest__init(&d[i]);
        d[i].hash = (char *)hashes[0];
        pd[i] = &d[i];
    }
    d[1].hash = "abc";
    d[1].size_bytes = 7;
    d[2].hash = "zz"; /* only the first bad one is reported */
    buf = pack_request("", pd, 3, &len);
    assert_int_equal(find_missing_request_decode(buf, len, &r), 0);
    assert_true(r.has_bad);
    assert_int_equal(r.bad_index, 1);
    assert_string_equal(r.bad_hash, "abc");
    assert_int_equal(r.bad_size, 7);
    assert_int_equal(r.n_digests, 3);
    find_missing_request_free(&r);
    free(buf);

    /* A negative size and a hash of uppercase hex are bad too. */
    d[1].hash = (char *)hashes[0];
    d[1].size_bytes = -1;
    d[2].hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    buf = pack_request("", pd, 3, &len);
    assert_int_equal(find_missing_request_decode(buf, len, &r), 0);
    assert_true(r.has_bad);
    assert_int_equal(r.bad_index, 1);
    assert_int_equal(r.bad_size, -1);
    find_missing_request_free(&r);
    free(buf);
}

static void test_fields_as_protobuf_reads_them(void **state)
{
    /* instance "a", then unknown fields of every wire type, a Digest with an
     * unknown field and its hash given twice (the last wins), then "b". */
    uint8_t msg[256], *p = msg;
    struct find_missing_request r;

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
    assert_int_equal(find_missing_request_decode(msg, (size_t)(p - msg), &r), 0);
    assert_string_equal(r.instance_name, "b");
    assert_int_equal(r.n_digests, 1);
    assert_false(r.has_bad);
    assert_int_equal(r.digests[0].size, 9);
    find_missing_request_free(&r);
}

static void test_digest_function(void **state)
{
    const uint8_t plain[] = {0x18, 0x09};
    const uint8_t packed[] = {0x1a, 0x02, 0x09, 0x01};
    const uint8_t bad_packed[] = {0x1a, 0x01, 0x80};
    const uint8_t fixed[] = {0x1d, 0, 0, 0, 0};
    struct find_missing_request r;
    struct reapi_status st;

    (void)state;
    assert_int_equal(find_missing_request_decode(plain, sizeof(plain), &r), 0);
    assert_true(r.has_digest_function);
    assert_int_equal(r.digest_function, 9);
    reapi_status_init(&st);
    assert_int_equal(reapi_digest_function_check_value("FindMissingBlobsRequest", 3, true, false,
                                                       r.digest_function, &st),
                     -EINVAL);
    assert_non_null(strstr(st.message, "BLAKE3"));
    reapi_status_free(&st);
    find_missing_request_free(&r);

    assert_int_equal(find_missing_request_decode(packed, sizeof(packed), &r), 0);
    assert_int_equal(r.digest_function, 1); /* the last wins */
    assert_false(r.digest_function_malformed);
    find_missing_request_free(&r);

    assert_int_equal(find_missing_request_decode(bad_packed, sizeof(bad_packed), &r), 0);
    assert_true(r.digest_function_malformed);
    find_missing_request_free(&r);
    assert_int_equal(find_missing_request_decode(fixed, sizeof(fixed), &r), 0);
    assert_true(r.digest_function_malformed);
    reapi_status_init(&st);
    assert_int_equal(
        reapi_digest_function_check_value("FindMissingBlobsRequest", 3, false, true, 0, &st),
        -EINVAL);
    assert_string_equal(st.message,
                        "FindMissingBlobsRequest.digest_function (field 3) is not an enum value");
    reapi_status_free(&st);
    find_missing_request_free(&r);
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
        {"varint over 64 bits", {0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 8},
    };
    struct find_missing_request r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = find_missing_request_decode(cases[i].bytes, cases[i].len, &r);

        if (rc != -EINVAL)
            fail_msg("%s: decoded to %d, want -EINVAL", cases[i].what, rc);
        find_missing_request_free(&r);
    }
}

static void test_response(void **state)
{
    struct cas_digest d[3];
    const bool missing[3] = {true, false, true};
    FindMissingBlobsResponse *resp;
    uint8_t *out;
    size_t len;

    (void)state;
    assert_int_equal(cas_digest_parse(hashes[0], 0, &d[0]), 0);
    assert_int_equal(cas_digest_parse(hashes[1], 3, &d[1]), 0);
    assert_int_equal(cas_digest_parse(hashes[2], INT64_MAX, &d[2]), 0);
    assert_int_equal(find_missing_response_encode(d, missing, 3, &out, &len), 0);
    resp = build__bazel__remote__execution__v2__find_missing_blobs_response__unpack(NULL, len, out);
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
        assert_int_equal(want, len);
        assert_memory_equal(again, out, len);
        free(again);
    }
    build__bazel__remote__execution__v2__find_missing_blobs_response__free_unpacked(resp, NULL);
    free(out);

    /* None missing: an empty message. */
    assert_int_equal(find_missing_response_encode(d, (const bool[3]){0}, 3, &out, &len), 0);
    assert_int_equal(len, 0);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_digest_kept),
        cmocka_unit_test(test_fields_as_protobuf_reads_them),
        cmocka_unit_test(test_digest_function),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_response),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
