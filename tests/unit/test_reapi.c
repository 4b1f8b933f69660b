/*
 * test_daemon_reapi.c - ByteStream resource names, wire digest checks and the
 * status details (PreconditionFailure) built for missing blobs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "google/rpc/error_details.pb-c.h"
#include "reapi/reapi.h"

#define H "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"

static void test_read_names(void **state)
{
    struct reapi_resource r;

    (void)state;
    assert_int_equal(reapi_resource_parse_read("blobs/" H "/12", &r), 0);
    assert_int_equal(r.instance_len, 0);
    assert_int_equal(r.digest.size, 12);
    assert_int_equal(reapi_resource_parse_read("main/blobs/" H "/0", &r), 0);
    assert_int_equal(r.instance_len, 4);
    assert_memory_equal(r.instance, "main", 4);
    assert_int_equal(reapi_resource_parse_read("a/b/c/blobs/" H "/7/extra/name", &r), 0);
    assert_int_equal(r.instance_len, 5);
    assert_memory_equal(r.instance, "a/b/c", 5);
    assert_int_equal(r.digest.size, 7);

    assert_int_equal(reapi_resource_parse_read("", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/" H, &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/" H "/-1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/" H "/1x", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/abc/1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/" H "/99999999999999999999", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("x//blobs/" H "/1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("uploads/u/blobs/zz" H "/1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("uploads/u/blobs/" H "/1", &r), -EINVAL);
}

static void test_write_names(void **state)
{
    struct reapi_resource r;

    (void)state;
    assert_int_equal(reapi_resource_parse_write("uploads/1234/blobs/" H "/5", &r), 0);
    assert_int_equal(r.instance_len, 0);
    assert_int_equal(r.upload_id_len, 4);
    assert_memory_equal(r.upload_id, "1234", 4);
    assert_int_equal(reapi_resource_parse_write("x/y/uploads/u-1/blobs/" H "/5/meta", &r), 0);
    assert_int_equal(r.instance_len, 3);
    assert_int_equal(r.digest.size, 5);
    assert_int_equal(reapi_resource_parse_write("blobs/" H "/5", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_write("uploads//blobs/" H "/5", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_write("uploads/u/blobs/" H, &r), -EINVAL);
}

static void test_wire_digests(void **state)
{
    Digest pd = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
    struct reapi_status st;
    struct cas_digest d;
    struct reapi_digest_buf buf;

    (void)state;
    reapi_status_init(&st);
    pd.hash = H;
    pd.size_bytes = 3;
    assert_int_equal(reapi_digest_from_proto(&pd, &d, &st, "f"), 0);
    reapi_digest_to_proto(&d, &buf);
    assert_string_equal(buf.pd.hash, H);
    assert_int_equal(buf.pd.size_bytes, 3);

    pd.hash = "abc";
    assert_int_equal(reapi_digest_from_proto(&pd, &d, &st, "blob_digests[2]"), -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "blob_digests[2]"));
    reapi_status_init(&st);
    pd.hash = H;
    pd.size_bytes = -1;
    assert_int_equal(reapi_digest_from_proto(&pd, &d, &st, "d"), -EINVAL);
    assert_non_null(strstr(st.message, "negative"));
    reapi_status_init(&st);
    pd.hash = "g948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
    pd.size_bytes = 1;
    assert_int_equal(reapi_digest_from_proto(&pd, &d, &st, "d"), -EINVAL);
    assert_non_null(strstr(st.message, "hexadecimal"));
    reapi_status_init(&st);
    assert_int_equal(reapi_digest_from_proto(NULL, &d, &st, "root"), -EINVAL);
}

static void test_missing_details(void **state)
{
    struct reapi_status st;
    struct cas_digest a, b;
    Google__Rpc__Status *s;
    Google__Rpc__PreconditionFailure *pf;

    (void)state;
    reapi_status_init(&st);
    assert_int_equal(cas_digest_parse(H, 5, &a), 0);
    b = a;
    b.size = 6;
    reapi_status_add_missing(&st, &a);
    reapi_status_add_missing(&st, &b);
    reapi_status_add_missing(&st, &a); /* deduplicated */
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    s = reapi_status_to_proto(&st);
    assert_non_null(s);
    assert_int_equal(s->n_details, 1);
    assert_string_equal(s->details[0]->type_url,
                        "type.googleapis.com/google.rpc.PreconditionFailure");
    pf = google__rpc__precondition_failure__unpack(NULL, s->details[0]->value.len,
                                                   s->details[0]->value.data);
    assert_non_null(pf);
    assert_int_equal(pf->n_violations, 2);
    assert_string_equal(pf->violations[0]->type, "MISSING");
    assert_string_equal(pf->violations[0]->subject, "blobs/" H "/5");
    assert_string_equal(pf->violations[1]->subject, "blobs/" H "/6");
    google__rpc__precondition_failure__free_unpacked(pf, NULL);
    reapi_status_proto_free(s);
    reapi_status_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_names),
        cmocka_unit_test(test_write_names),
        cmocka_unit_test(test_wire_digests),
        cmocka_unit_test(test_missing_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
