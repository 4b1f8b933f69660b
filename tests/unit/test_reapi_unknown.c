/*
 * test_reapi_unknown.c - fields newer than the generated types, through
 * protobuf-c's unknown fields (reapi/unknown.c), and the API 2.3
 * digest_function check (reapi/digest_function.c).
 *
 * The wire bytes are written by hand here, as a newer client would send them,
 * so that the tests check protobuf-c's representation of unknown fields (the
 * bytes after the tag) and not only a round trip through our own code.
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

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *desc, const void *bytes,
                                size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, bytes);

    assert_non_null(m);
    return m;
}

static void test_varint_get(void **state)
{
    /* FindMissingBlobsRequest: instance_name "i" (1), digest_function BLAKE3 (3) */
    static const uint8_t blake3[] = {0x0a, 0x01, 'i', 0x18, 0x09};
    /* the field twice, and a big value (300 = 0xac 0x02): the last wins */
    static const uint8_t twice[] = {0x18, 0x01, 0x18, 0xac, 0x02};
    /* field 3 length-delimited (a packed run): not a scalar enum */
    static const uint8_t packed[] = {0x1a, 0x02, 0x01, 0x09};
    /* field 3 with wire type fixed32: not an enum */
    static const uint8_t fixed[] = {0x1d, 0x01, 0x00, 0x00, 0x00};
    const ProtobufCMessageDescriptor *desc =
        &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor;
    ProtobufCMessage *m;
    uint64_t v = 42;

    (void)state;
    m = unpack(desc, blake3, sizeof(blake3));
    assert_string_equal(((FindMissingBlobsRequest *)m)->instance_name, "i");
    assert_int_equal(reapi_unknown_varint_get(m, 3, &v), 1);
    assert_int_equal(v, 9);
    assert_int_equal(reapi_unknown_varint_get(m, 4, &v), 0);
    assert_int_equal(v, 0);
    protobuf_c_message_free_unpacked(m, NULL);

    m = unpack(desc, twice, sizeof(twice));
    assert_int_equal(reapi_unknown_varint_get(m, 3, &v), 1);
    assert_int_equal(v, 300);
    protobuf_c_message_free_unpacked(m, NULL);

    m = unpack(desc, packed, sizeof(packed));
    assert_int_equal(reapi_unknown_varint_get(m, 3, &v), -EINVAL);
    protobuf_c_message_free_unpacked(m, NULL);

    m = unpack(desc, fixed, sizeof(fixed));
    assert_int_equal(reapi_unknown_varint_get(m, 3, &v), -EINVAL);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_varints_get(void **state)
{
    /* BatchReadBlobsRequest.acceptable_compressors (3, repeated): one
     * unpacked value, then a packed run of two */
    static const uint8_t bytes[] = {0x18, 0x00, 0x1a, 0x02, 0x01, 0x03};
    const ProtobufCMessageDescriptor *desc =
        &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor;
    ProtobufCMessage *m;
    uint64_t v[4];
    size_t n;

    (void)state;
    m = unpack(desc, bytes, sizeof(bytes));
    assert_int_equal(reapi_unknown_varints_get(m, 3, v, 4, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(v[0], 0);
    assert_int_equal(v[1], 1);
    assert_int_equal(v[2], 3);
    assert_int_equal(reapi_unknown_varints_get(m, 3, v, 1, &n), 0);
    assert_int_equal(n, 3); /* the count, beyond max */
    assert_int_equal(reapi_unknown_varints_get(m, 7, v, 4, &n), 0);
    assert_int_equal(n, 0);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_varint_put(void **state)
{
    /* ExecutionCapabilities: digest_function SHA256 (1), exec_enabled (2),
     * then digest_functions [SHA256] (5) packed after the known fields */
    static const uint8_t want[] = {0x08, 0x01, 0x10, 0x01, 0x28, 0x01};
    Build__Bazel__Remote__Execution__V2__ExecutionCapabilities caps =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTION_CAPABILITIES__INIT;
    ProtobufCMessage *back;
    uint8_t buf[64];
    uint64_t v[2];
    size_t len, n;

    (void)state;
    caps.digest_function = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
    caps.exec_enabled = 1;
    assert_int_equal(reapi_unknown_varint_put(&caps.base, 5, REAPI_DIGEST_FUNCTION_SHA256), 0);
    len = protobuf_c_message_get_packed_size(&caps.base);
    assert_int_equal(len, sizeof(want));
    assert_int_equal(protobuf_c_message_pack(&caps.base, buf), len);
    assert_memory_equal(buf, want, len);

    /* a second value of a repeated field, and a value of several bytes */
    assert_int_equal(reapi_unknown_varint_put(&caps.base, 5, 300), 0);
    len = protobuf_c_message_pack(&caps.base, buf);
    back =
        unpack(&build__bazel__remote__execution__v2__execution_capabilities__descriptor, buf, len);
    assert_int_equal(reapi_unknown_varints_get(back, 5, v, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], 300);
    protobuf_c_message_free_unpacked(back, NULL);
    reapi_unknown_clear(&caps.base);
    assert_int_equal(caps.base.n_unknown_fields, 0);
    assert_null(caps.base.unknown_fields);

    /* on a heap message, free_unpacked frees what put added (ASan checks) */
    back =
        unpack(&build__bazel__remote__execution__v2__execution_capabilities__descriptor, want, 4);
    assert_int_equal(reapi_unknown_varint_put(back, 6, 7), 0);
    protobuf_c_message_free_unpacked(back, NULL);
}

static void test_digest_function(void **state)
{
    static const struct {
        uint8_t bytes[3];
        size_t len;
        const char *error; /* NULL: accepted */
    } cases[] = {
        {{0}, 0, NULL},          /* unset */
        {{0x18, 0x00}, 2, NULL}, /* UNKNOWN (0): the server's */
        {{0x18, 0x01}, 2, NULL}, /* SHA256 */
        {{0x18, 0x09}, 2, "digest_function BLAKE3 (9) is not supported: this server uses SHA256"},
        {{0x18, 0x02}, 2, "digest_function SHA1 (2) is not supported"},
        {{0x18, 0x08}, 2, "SHA256TREE (8)"},
        {{0x18, 0x0a}, 2, "GITSHA1 (10)"},
        {{0x18, 0x2a}, 2, "digest_function 42 is not supported"},
        {{0x1a, 0x00}, 2, "FindMissingBlobsRequest.digest_function (field 3) is not an enum"},
    };
    const ProtobufCMessageDescriptor *desc =
        &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ProtobufCMessage *m = unpack(desc, cases[i].bytes, cases[i].len);
        struct reapi_status st;
        int rc;

        reapi_status_init(&st);
        rc = reapi_digest_function_check(m, REAPI_FIELD_FIND_MISSING_BLOBS_REQUEST_DIGEST_FUNCTION,
                                         &st);
        if (cases[i].error == NULL) {
            if (rc != 0)
                fail_msg("case %zu refused: %s", i, st.message);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
            if (strstr(st.message, cases[i].error) == NULL)
                fail_msg("case %zu: '%s' does not contain '%s'", i, st.message, cases[i].error);
        }
        reapi_status_free(&st);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_string_equal(reapi_digest_function_name(1), "SHA256");
    assert_string_equal(reapi_digest_function_name(9), "BLAKE3");
    assert_null(reapi_digest_function_name(11));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_get),
        cmocka_unit_test(test_varints_get),
        cmocka_unit_test(test_varint_put),
        cmocka_unit_test(test_digest_function),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
