/*
 * find_missing.c - FindMissingBlobs against the remote, in batches of at
 * most batch_digests digests (bounded requests and answers). The remote is
 * the only one who can answer it: a proxy that answered from its own cache
 * would make Bazel skip an upload the remote needs (buildbox-casd#21).
 */
#include "remote_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

static int find_missing_batch(struct remote *r, const char *instance,
                              const struct cas_digest *digests, size_t n, bool *missing,
                              struct rpc_client_status *st)
{
    FindMissingBlobsRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
    FindMissingBlobsResponse *resp = NULL;
    struct reapi_digest_buf *bufs = calloc(n, sizeof(*bufs));
    Digest **list = calloc(n, sizeof(*list));
    size_t next = 0;
    int rc;

    if (bufs == NULL || list == NULL) {
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        reapi_digest_to_proto(&digests[i], &bufs[i]);
        list[i] = &bufs[i].pd;
        missing[i] = false;
    }
    req.instance_name = (char *)instance;
    req.n_blob_digests = n;
    req.blob_digests = list;
    atomic_fetch_add(&r->find_missing_calls, 1);
    rc = rpc_client_unary(
        r->rpc, RPC_CLIENT_FIND_MISSING_BLOBS, &req.base,
        &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
        (ProtobufCMessage **)&resp, st);
    if (rc != 0) {
        rc = remote_status_fail(r, rc, "FindMissingBlobs", st);
        goto out;
    }
    for (size_t k = 0; k < resp->n_missing_blob_digests; k++) {
        struct reapi_status rst;
        struct cas_digest d;
        bool known = false;

        reapi_status_init(&rst);
        rc = reapi_digest_from_proto(resp->missing_blob_digests[k], &d, &rst, "missing");
        reapi_status_free(&rst);
        if (rc != 0) {
            rc = remote_status_set(r, -EIO, GRPC_STATUS_INTERNAL, st,
                                   "FindMissingBlobs answered with a malformed digest");
            goto out;
        }
        /* Servers answer in request order, mostly: look from where the
         * last one was found, wrapping around. Of a digest asked for twice,
         * one copy is marked. */
        for (size_t j = 0; j < n && !known; j++, next = next + 1 == n ? 0 : next + 1) {
            if (cas_digest_equal(&digests[next], &d)) {
                missing[next] = true;
                known = true;
            }
        }
        if (!known) {
            rc = remote_status_set(r, -EIO, GRPC_STATUS_INTERNAL, st,
                                   "FindMissingBlobs named a blob that was not asked for");
            goto out;
        }
    }
    rc = 0;
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(list);
    free(bufs);
    return rc;
}

int remote_find_missing(struct remote *r, const char *instance, const struct cas_digest *digests,
                        size_t n, bool *missing, struct rpc_client_status *st)
{
    int rc = 0;

    instance = remote_instance(r, instance);
    for (size_t off = 0; rc == 0 && off < n; off += r->batch_digests) {
        size_t k = n - off < r->batch_digests ? n - off : r->batch_digests;

        rc = find_missing_batch(r, instance, digests + off, k, missing + off, st);
    }
    return rc;
}
