/*
 * fuzz_find_missing.c - feeds FindMissingBlobsRequest messages to
 * casboxd's own decoder for the call a build makes with 100,000 digests
 * (reapi/find_missing.c): the scan, then the second pass over the digests.
 * The first input byte says where the message is cut into spans (grpc hands
 * requests over in slices); the rest is the message. When protobuf-c accepts
 * the message too, both must read the same instance and digests, and the
 * same first bad digest; the digests found are then encoded as a response
 * that protobuf-c must read back to the same digests.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

struct seen {
    struct cas_digest *d;
    size_t n, cap;
};

static int collect(void *ctx, const struct cas_digest *d, size_t n)
{
    struct seen *s = ctx;

    assert(n > 0 && n <= FIND_MISSING_CHUNK);
    if (s->n + n > s->cap) {
        size_t cap = (s->n + n) * 2;
        struct cas_digest *grown = realloc(s->d, cap * sizeof(*grown));

        if (grown == NULL)
            return -ENOMEM;
        s->d = grown;
        s->cap = cap;
    }
    memcpy(s->d + s->n, d, n * sizeof(*d));
    s->n += n;
    return 0;
}

static void compare_with_protobuf_c(const struct find_missing_request *r, const struct seen *s,
                                    int rc, const uint8_t *msg, size_t len)
{
    FindMissingBlobsRequest *m =
        build__bazel__remote__execution__v2__find_missing_blobs_request__unpack(NULL, len, msg);
    size_t i;

    /* protobuf-c accepts some malformed unknown fields inside a Digest (a
     * key with its varint cut off at the end of the message) that Google's
     * protobuf rejects, as the decoder does: not parseable, and nothing
     * else to compare. */
    if (m == NULL || rc == -EBADMSG) {
        if (m != NULL)
            build__bazel__remote__execution__v2__find_missing_blobs_request__free_unpacked(m, NULL);
        return;
    }
    assert(strcmp(r->instance_name, m->instance_name) == 0);
    assert(r->n_digests == m->n_blob_digests);
    for (i = 0; i < m->n_blob_digests; i++) {
        struct cas_digest d;

        if (cas_digest_parse(m->blob_digests[i]->hash, m->blob_digests[i]->size_bytes, &d) != 0)
            break;
        if (i >= s->n) { /* a chunk not handed over: only when a bad digest follows */
            assert(rc == -EINVAL);
            continue;
        }
        assert(memcmp(&d.hash, &s->d[i].hash, sizeof(d.hash)) == 0);
        assert(d.size == s->d[i].size);
    }
    if (i < m->n_blob_digests) { /* the first bad one */
        assert(rc == -EINVAL && r->has_bad && r->bad_index == i);
        assert(strcmp(r->bad_hash, m->blob_digests[i]->hash) == 0);
        assert(r->bad_size == m->blob_digests[i]->size_bytes);
    } else {
        assert(rc == 0 && !r->has_bad && s->n == m->n_blob_digests);
    }
    build__bazel__remote__execution__v2__find_missing_blobs_request__free_unpacked(m, NULL);
}

static void check_response(const struct seen *s)
{
    bool *missing = calloc(s->n + 1, sizeof(*missing));
    struct find_missing_response out = {0};
    FindMissingBlobsResponse *resp;
    size_t k = 0;

    if (missing == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        missing[i] = (s->d[i].hash[0] & 1) != 0;
    if (find_missing_response_add(&out, s->d, missing, s->n) == 0) {
        resp = build__bazel__remote__execution__v2__find_missing_blobs_response__unpack(
            NULL, out.len, out.buf ? out.buf : (const uint8_t *)"");
        assert(resp != NULL);
        for (size_t i = 0; i < s->n; i++) {
            struct cas_digest d;

            if (!missing[i])
                continue;
            assert(k < resp->n_missing_blob_digests);
            assert(cas_digest_parse(resp->missing_blob_digests[k]->hash,
                                    resp->missing_blob_digests[k]->size_bytes, &d) == 0);
            assert(memcmp(&d.hash, &s->d[i].hash, sizeof(d.hash)) == 0);
            assert(d.size == s->d[i].size);
            k++;
        }
        assert(k == resp->n_missing_blob_digests);
        build__bazel__remote__execution__v2__find_missing_blobs_response__free_unpacked(resp, NULL);
    }
    find_missing_response_free(&out);
    free(missing);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct find_missing_request r;
    struct find_missing_span *spans;
    struct seen s = {0};
    size_t piece, n = 0, len;
    const uint8_t *msg;
    int rc;

    if (size == 0)
        return 0;
    msg = data + 1;
    len = size - 1;
    piece = data[0] == 0 ? (len ? len : 1) : data[0]; /* 0: the whole message in one span */
    spans = calloc(len / piece + 1, sizeof(*spans));
    if (spans == NULL)
        return 0;
    for (size_t off = 0; off < len; off += piece) {
        spans[n].data = msg + off;
        spans[n].len = len - off < piece ? len - off : piece;
        n++;
    }
    rc = find_missing_request_scan(spans, n, &r);
    if (rc == 0) {
        assert(r.instance_name != NULL);
        assert(!r.has_bad || r.bad_index < r.n_digests);
        rc = find_missing_request_digests(&r, collect, &s);
        assert(rc == 0 || rc == -EINVAL || rc == -EBADMSG || rc == -ENOMEM);
        if (rc != -ENOMEM) {
            compare_with_protobuf_c(&r, &s, rc, msg, len);
            if (rc == 0)
                check_response(&s);
        }
    }
    find_missing_request_free(&r);
    free(s.d);
    free(spans);
    return 0;
}
