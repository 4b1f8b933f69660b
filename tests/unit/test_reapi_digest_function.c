/*
 * test_reapi_digest_function.c - API 2.3's digest_function in requests
 * (reapi/digest_function.c), read through protobuf-c's unknown fields
 * (reapi/unknown_fields.c) from wire bytes written by hand, as a newer
 * client sends them.
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

static void test_digest_function(void **state)
{
    static const struct {
        uint8_t bytes[5];
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
        {{0x1d, 0x09, 0x00, 0x00, 0x00},
         5,
         "FindMissingBlobsRequest.digest_function (field 3) is not an enum"},
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

/* The field numbers: ExecuteRequest's is 9, GetTreeRequest's 5; another
 * request's number is just another field there. */
static void test_field_numbers(void **state)
{
    static const uint8_t execute_blake3[] = {0x48, 0x09};
    static const uint8_t tree_blake3[] = {0x28, 0x09};
    ProtobufCMessage *m;
    struct reapi_status st;

    (void)state;
    reapi_status_init(&st);
    m = unpack(&build__bazel__remote__execution__v2__execute_request__descriptor, execute_blake3,
               sizeof(execute_blake3));
    assert_int_equal(
        reapi_digest_function_check(m, REAPI_FIELD_EXECUTE_REQUEST_DIGEST_FUNCTION, &st), -EINVAL);
    assert_non_null(strstr(st.message, "BLAKE3 (9)"));
    reapi_status_free(&st);
    reapi_status_init(&st);
    assert_int_equal(reapi_digest_function_check(m, 5, &st), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    m = unpack(&build__bazel__remote__execution__v2__get_tree_request__descriptor, tree_blake3,
               sizeof(tree_blake3));
    assert_int_equal(
        reapi_digest_function_check(m, REAPI_FIELD_GET_TREE_REQUEST_DIGEST_FUNCTION, &st), -EINVAL);
    reapi_status_free(&st);
    protobuf_c_message_free_unpacked(m, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_function),
        cmocka_unit_test(test_field_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
