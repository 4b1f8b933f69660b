/*
 * svc_action_cache.c - build.bazel.remote.execution.v2.ActionCache:
 * GetActionResult and UpdateActionResult.
 *
 * A stored result is served only while every blob it references is still in
 * the CAS (output files, the files inside output directory Trees, stdout and
 * stderr): otherwise the client is told NOT_FOUND and re-runs the action,
 * instead of failing later on a download. With [cas] remote the check asks
 * the remote (one batched FindMissingBlobs): a copy in this host's cache
 * does not count, since the client's next FindMissingBlobs goes there. With
 * [action_cache] remote the entries live in that server's ActionCache.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

/* The digests a result references, collected (duplicates and all). */
struct ac_blobs {
    struct cas_digest *digests;
    size_t n, cap;
};

static int ac_blobs_add(struct ac_blobs *b, const Digest *pd, struct reapi_status *st)
{
    struct cas_digest dg;

    if (pd == NULL)
        return 0; /* an optional digest left out */
    if (reapi_digest_from_proto(pd, &dg, st, "digest") != 0)
        return -EINVAL;
    if (array_reserve((void **)&b->digests, &b->cap, b->n, sizeof(*b->digests)) != 0) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    b->digests[b->n++] = dg;
    return 0;
}

static int ac_directory_blobs(struct ac_blobs *b,
                              const Build__Bazel__Remote__Execution__V2__Directory *dir,
                              struct reapi_status *st)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < dir->n_files; i++)
        rc = ac_blobs_add(b, dir->files[i]->digest, st);
    return rc;
}

/* The Tree blob and the files it names. A Tree that cannot be read (absent
 * here and upstream) is listed itself, so the check finds it missing. */
static int ac_tree_blobs(struct casboxd *d, struct ac_blobs *b, const Digest *pd,
                         struct reapi_status *st)
{
    struct cas_digest dg;
    void *buf = NULL;
    size_t len;
    Tree *tree = NULL;
    int rc;

    if (pd == NULL) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "an output directory has no tree");
        return -EINVAL;
    }
    rc = ac_blobs_add(b, pd, st);
    if (rc != 0)
        return rc;
    dg = b->digests[b->n - 1];
    rc = cas_store_get(d->store, &dg, &buf, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0) {
        shared_read_status(d, &dg, rc, st);
        return rc;
    }
    tree = build__bazel__remote__execution__v2__tree__unpack(NULL, len, buf);
    if (tree == NULL || tree->root == NULL) {
        reapi_status_set(st, GRPC_STATUS_NOT_FOUND, "output tree %s does not decode", pd->hash);
        rc = -EBADMSG;
        goto out;
    }
    rc = ac_directory_blobs(b, tree->root, st);
    for (size_t i = 0; rc == 0 && i < tree->n_children; i++)
        rc = ac_directory_blobs(b, tree->children[i], st);
out:
    if (tree != NULL)
        build__bazel__remote__execution__v2__tree__free_unpacked(tree, NULL);
    free(buf);
    return rc;
}

int action_cache_result_blobs(struct casboxd *d, const ActionResult *r, struct cas_digest **out,
                              size_t *n, struct reapi_status *st)
{
    struct ac_blobs b = {0};
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < r->n_output_files; i++)
        rc = ac_blobs_add(&b, r->output_files[i]->digest, st);
    for (size_t i = 0; rc == 0 && i < r->n_output_directories; i++)
        rc = ac_tree_blobs(d, &b, r->output_directories[i]->tree_digest, st);
    if (rc == 0)
        rc = ac_blobs_add(&b, r->stdout_digest, st);
    if (rc == 0)
        rc = ac_blobs_add(&b, r->stderr_digest, st);
    if (rc != 0) {
        free(b.digests);
        return rc;
    }
    *out = b.digests;
    *n = b.n;
    return 0;
}

int action_cache_result_complete(struct casboxd *d, const ActionResult *r, struct reapi_status *st)
{
    struct cas_digest *digests = NULL;
    bool *missing = NULL;
    size_t n = 0;
    int rc;

    rc = action_cache_result_blobs(d, r, &digests, &n, st);
    if (rc == -EINVAL || rc == -EBADMSG) {
        reapi_status_free(st);
        reapi_status_init(st);
        return 0; /* a malformed entry is as good as none */
    }
    if (rc != 0)
        return rc;
    missing = calloc(n + 1, sizeof(*missing));
    if (missing == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    rc = shared_find_missing(d, digests, n, missing, st);
    if (rc != 0)
        goto out;
    rc = 1;
    for (size_t i = 0; i < n; i++)
        if (missing[i])
            rc = 0;
out:
    free(missing);
    free(digests);
    return rc;
}

static void ac_get(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    Build__Bazel__Remote__Execution__V2__GetActionResultRequest *req = NULL;
    ActionResult *result = NULL;
    struct reapi_status st;
    struct cas_digest action;
    void *buf = NULL;
    size_t len;
    int rc;

    reapi_status_init(&st);
    if (rpc_call_request(
            call, &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
            (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "GetActionResultRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (reapi_digest_function_check(
            &req->base, REAPI_FIELD_GET_ACTION_RESULT_REQUEST_DIGEST_FUNCTION, &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->action_digest, &action, &st, "action_digest") != 0)
        goto out;
    rc = shared_ac_get(d, req->instance_name ? req->instance_name : "", &action, &buf, &len, &st);
    if (rc == -ENOENT) {
        observe_cache_lookup(d, "get_action_result", OBSERVE_CACHE_MISS);
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND, "no result for action %s/%" PRId64,
                         req->action_digest->hash, req->action_digest->size_bytes);
        goto out;
    }
    if (rc != 0)
        goto out;
    result = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, buf);
    if (result == NULL) {
        LOG_W("action cache entry for %s does not parse; treating it as absent",
              req->action_digest->hash);
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND, "no usable result for action %s",
                         req->action_digest->hash);
        goto out;
    }
    rc = action_cache_result_complete(d, result, &st);
    if (rc == 0) {
        observe_cache_lookup(d, "get_action_result", OBSERVE_CACHE_MISS_BLOB_GONE);
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND,
                         "result for action %s references blobs no longer in the CAS%s%s",
                         req->action_digest->hash, d->remote ? " at " : "",
                         d->remote ? remote_url(d->remote) : "");
        goto out;
    }
    if (rc < 0)
        goto out;
    observe_cache_lookup(d, "get_action_result", OBSERVE_CACHE_HIT);
out:
    rpc_call_finish(call, result && reapi_status_ok(&st) ? &result->base : NULL, &st);
    if (result != NULL)
        build__bazel__remote__execution__v2__action_result__free_unpacked(result, NULL);
    free(buf);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void ac_update(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req = NULL;
    struct reapi_status st;
    struct cas_digest action;
    uint8_t *buf = NULL;
    size_t len;

    reapi_status_init(&st);
    if (rpc_call_request(
            call, &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
            (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "UpdateActionResultRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (reapi_digest_function_check(
            &req->base, REAPI_FIELD_UPDATE_ACTION_RESULT_REQUEST_DIGEST_FUNCTION, &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->action_digest, &action, &st, "action_digest") != 0)
        goto out;
    if (req->action_result == NULL) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "action_result is missing");
        goto out;
    }
    len = build__bazel__remote__execution__v2__action_result__get_packed_size(req->action_result);
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    build__bazel__remote__execution__v2__action_result__pack(req->action_result, buf);
    shared_ac_put(d, req->instance_name ? req->instance_name : "", &action, buf, len, &st);
out:
    rpc_call_finish(call, req && req->action_result ? &req->action_result->base : NULL, &st);
    free(buf);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

const struct rpc_method action_cache_methods[] = {
    {"/build.bazel.remote.execution.v2.ActionCache/GetActionResult", RPC_UNARY, RPC_POOL_SHORT,
     ac_get, AUTH_PERM_READ},
    {"/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult", RPC_UNARY, RPC_POOL_SHORT,
     ac_update, AUTH_PERM_WRITE_AC},
};
const size_t action_cache_n_methods =
    sizeof(action_cache_methods) / sizeof(action_cache_methods[0]);
