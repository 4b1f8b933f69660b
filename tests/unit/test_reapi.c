/*
 * test_reapi.c - ByteStream resource names (blobs/ and compressed-blobs/, with
 * and without a digest function segment), wire digest checks and the status
 * details (PreconditionFailure) built for missing blobs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

static void test_compressed_names(void **state)
{
    struct reapi_resource r;
    struct reapi_status st;
    const char *name;

    (void)state;
    assert_int_equal(reapi_resource_parse_read("blobs/" H "/12", &r), 0);
    assert_int_equal(r.compressor, REAPI_COMPRESSOR_IDENTITY);
    assert_int_equal(reapi_resource_parse_read("main/compressed-blobs/zstd/" H "/12", &r), 0);
    assert_int_equal(r.compressor, REAPI_COMPRESSOR_ZSTD);
    assert_int_equal(r.instance_len, 4);
    assert_int_equal(r.digest.size, 12);
    assert_int_equal(reapi_resource_parse_read("compressed-blobs/identity/" H "/3", &r), 0);
    assert_int_equal(r.compressor, REAPI_COMPRESSOR_IDENTITY);

    name = "a/uploads/u1/compressed-blobs/zstd/" H "/9/meta/data";
    assert_int_equal(reapi_resource_parse_write(name, &r), 0);
    assert_int_equal(r.compressor, REAPI_COMPRESSOR_ZSTD);
    assert_int_equal(r.instance_len, 1);
    assert_memory_equal(r.upload_id, "u1", 2);
    /* The upload is named by everything up to the size. */
    assert_int_equal(r.key_len, strlen(name) - strlen("/meta/data"));

    assert_int_equal(reapi_resource_parse_read("compressed-blobs/" H "/12", &r), -ENOTSUP);
    assert_int_equal(reapi_resource_parse_read("compressed-blobs//" H "/12", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("compressed-blobs/zstd/" H, &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("compressed-blobs/zstd/zz/1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("compressed-blobs/zstd/uploads/" H "/1", &r),
                     -EPROTONOSUPPORT);
    assert_int_equal(reapi_resource_parse_read("x/compressed-blobs/x/blobs/" H "/1", &r), -ENOTSUP);
    for (int i = 0; i < 4; i++) {
        static const char *const names[] = {"deflate", "brotli", "garbage", "ZSTD"};
        char buf[256];

        snprintf(buf, sizeof(buf), "uploads/u/compressed-blobs/%s/" H "/1", names[i]);
        assert_int_equal(reapi_resource_parse_write(buf, &r), -ENOTSUP);
        assert_int_equal(r.unsupported_len, strlen(names[i]));
        assert_memory_equal(r.unsupported, names[i], r.unsupported_len);
        reapi_status_init(&st);
        reapi_resource_status(&st, buf, -ENOTSUP, &r, true);
        assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
        assert_non_null(strstr(st.message, names[i]));
        assert_non_null(strstr(st.message, "zstd"));
    }
    reapi_status_init(&st);
    reapi_resource_status(&st, "nonsense", -EINVAL, &r, false);
    assert_non_null(strstr(st.message, "'nonsense'"));
    assert_non_null(strstr(st.message, "compressed-blobs/zstd"));
}

static void test_digest_function_names(void **state)
{
    struct reapi_resource r;
    struct reapi_status st;

    (void)state;
    /* API 2.3: an optional digest function before the hash; sha256 served. */
    assert_int_equal(reapi_resource_parse_read("blobs/sha256/" H "/12", &r), 0);
    assert_int_equal(r.digest.size, 12);
    assert_int_equal(reapi_resource_parse_read("i/compressed-blobs/zstd/sha256/" H "/12", &r), 0);
    assert_int_equal(r.compressor, REAPI_COMPRESSOR_ZSTD);
    assert_int_equal(reapi_resource_parse_write("uploads/u/blobs/sha256/" H "/5/meta", &r), 0);
    assert_int_equal(r.digest.size, 5);
    /* A size after the hash means no digest function: "{hash}/{size}/{meta}". */
    assert_int_equal(reapi_resource_parse_write("uploads/u/blobs/" H "/5/sha256", &r), 0);
    assert_int_equal(reapi_resource_parse_read("blobs/sha256/" H, &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/sha256/12", &r), -EINVAL);

    static const char *const others[] = {"blake3",  "sha1", "md5",    "sha256tree", "gitsha1",
                                         "murmur3", "vso",  "sha384", "sha512"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        char buf[256];

        snprintf(buf, sizeof(buf), "blobs/%s/" H "/1", others[i]);
        assert_int_equal(reapi_resource_parse_read(buf, &r), -EPROTONOSUPPORT);
        assert_int_equal(r.unsupported_len, strlen(others[i]));
        snprintf(buf, sizeof(buf), "uploads/u/compressed-blobs/zstd/%s/" H "/1", others[i]);
        assert_int_equal(reapi_resource_parse_write(buf, &r), -EPROTONOSUPPORT);
        reapi_status_init(&st);
        reapi_resource_status(&st, buf, -EPROTONOSUPPORT, &r, true);
        assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
        assert_non_null(strstr(st.message, others[i]));
        assert_non_null(strstr(st.message, "sha256"));
    }
    /* Not a word: a malformed name, not an unknown function. */
    assert_int_equal(reapi_resource_parse_read("blobs/SHA256/" H "/1", &r), -EINVAL);
    assert_int_equal(reapi_resource_parse_read("blobs/1sha/" H "/1", &r), -EINVAL);
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
        cmocka_unit_test(test_read_names),       cmocka_unit_test(test_write_names),
        cmocka_unit_test(test_compressed_names), cmocka_unit_test(test_digest_function_names),
        cmocka_unit_test(test_wire_digests),     cmocka_unit_test(test_missing_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
