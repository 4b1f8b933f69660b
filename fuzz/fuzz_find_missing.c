/*
 * fuzz_find_missing.c - feeds FindMissingBlobsRequest messages to
 * find_missing_request_decode (reapi/find_missing.c), casboxd's own decoder
 * for the call a build makes with 100,000 digests. When protobuf-c accepts
 * the message too, both must read the same instance and digests; the
 * digests found are then encoded as a response that protobuf-c must read
 * back to the same digests.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

static void compare_with_protobuf_c(const struct find_missing_request *r, const uint8_t *msg,
                                    size_t len)
{
    FindMissingBlobsRequest *m =
        build__bazel__remote__execution__v2__find_missing_blobs_request__unpack(NULL, len, msg);

    if (m == NULL)
        return;
    assert(strcmp(r->instance_name, m->instance_name) == 0);
    assert(r->n_digests == m->n_blob_digests);
    for (size_t i = 0; i < r->n_digests; i++) {
        struct cas_digest d;
        bool ok =
            cas_digest_parse(m->blob_digests[i]->hash, m->blob_digests[i]->size_bytes, &d) == 0;

        if (r->has_bad && i == r->bad_index) {
            assert(!ok);
            assert(strcmp(r->bad_hash, m->blob_digests[i]->hash) == 0);
            assert(r->bad_size == m->blob_digests[i]->size_bytes);
            break;
        }
        assert(ok);
        assert(memcmp(&d.hash, &r->digests[i].hash, sizeof(d.hash)) == 0);
        assert(d.size == r->digests[i].size);
    }
    build__bazel__remote__execution__v2__find_missing_blobs_request__free_unpacked(m, NULL);
}

static void check_response(const struct find_missing_request *r)
{
    size_t n = r->has_bad ? r->bad_index : r->n_digests;
    bool *missing = calloc(n + 1, sizeof(*missing));
    FindMissingBlobsResponse *resp;
    uint8_t *out;
    size_t len, k = 0;

    if (missing == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        missing[i] = (r->digests[i].hash[0] & 1) != 0;
    if (find_missing_response_encode(r->digests, missing, n, &out, &len) == 0) {
        resp = build__bazel__remote__execution__v2__find_missing_blobs_response__unpack(NULL, len,
                                                                                        out);
        assert(resp != NULL);
        for (size_t i = 0; i < n; i++) {
            struct cas_digest d;

            if (!missing[i])
                continue;
            assert(k < resp->n_missing_blob_digests);
            assert(cas_digest_parse(resp->missing_blob_digests[k]->hash,
                                    resp->missing_blob_digests[k]->size_bytes, &d) == 0);
            assert(memcmp(&d.hash, &r->digests[i].hash, sizeof(d.hash)) == 0);
            assert(d.size == r->digests[i].size);
            k++;
        }
        assert(k == resp->n_missing_blob_digests);
        build__bazel__remote__execution__v2__find_missing_blobs_response__free_unpacked(resp, NULL);
        free(out);
    }
    free(missing);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct find_missing_request r;

    if (find_missing_request_decode(data, size, &r) == 0) {
        assert(r.instance_name != NULL);
        assert(!r.has_bad || r.bad_index < r.n_digests);
        compare_with_protobuf_c(&r, data, size);
        check_response(&r);
    }
    find_missing_request_free(&r);
    return 0;
}
