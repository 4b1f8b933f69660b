/*
 * svc_action_cache.c - build.bazel.remote.execution.v2.ActionCache:
 * GetActionResult and UpdateActionResult.
 *
 * A stored result is served only while every blob it references is still in
 * the CAS (output files, the files inside output directory Trees, stdout and
 * stderr): otherwise the client is told NOT_FOUND and re-runs the action,
 * instead of failing later on a download.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

static bool ac_blob_present(struct casboxd *d, const Digest *pd)
{
    struct reapi_status st;
    struct cas_digest dg;

    if (pd == NULL)
        return true; /* an optional digest left out */
    reapi_status_init(&st);
    if (reapi_digest_from_proto(pd, &dg, &st, "digest") != 0)
        return false;
    return cas_store_contains(d->store, &dg) == 1;
}

static bool ac_directory_present(struct casboxd *d,
                                 const Build__Bazel__Remote__Execution__V2__Directory *dir)
{
    for (size_t i = 0; i < dir->n_files; i++) {
        if (!ac_blob_present(d, dir->files[i]->digest))
            return false;
    }
    return true;
}

static bool ac_tree_present(struct casboxd *d, const Digest *pd)
{
    struct reapi_status st;
    struct cas_digest dg;
    void *buf = NULL;
    size_t len;
    Tree *tree = NULL;
    bool ok = false;

    reapi_status_init(&st);
    if (pd == NULL || reapi_digest_from_proto(pd, &dg, &st, "tree_digest") != 0)
        return false;
    if (cas_store_get(d->store, &dg, &buf, &len) != 0)
        return false;
    tree = build__bazel__remote__execution__v2__tree__unpack(NULL, len, buf);
    if (tree == NULL || tree->root == NULL || !ac_directory_present(d, tree->root))
        goto out;
    for (size_t i = 0; i < tree->n_children; i++) {
        if (!ac_directory_present(d, tree->children[i]))
            goto out;
    }
    ok = true;
out:
    if (tree != NULL)
        build__bazel__remote__execution__v2__tree__free_unpacked(tree, NULL);
    free(buf);
    return ok;
}

bool action_cache_result_complete(struct casboxd *d, const ActionResult *r)
{
    for (size_t i = 0; i < r->n_output_files; i++) {
        if (!ac_blob_present(d, r->output_files[i]->digest))
            return false;
    }
    for (size_t i = 0; i < r->n_output_directories; i++) {
        if (!ac_tree_present(d, r->output_directories[i]->tree_digest))
            return false;
    }
    return ac_blob_present(d, r->stdout_digest) && ac_blob_present(d, r->stderr_digest);
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
    if (reapi_digest_function_check(
            &req->base, REAPI_FIELD_GET_ACTION_RESULT_REQUEST_DIGEST_FUNCTION, &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->action_digest, &action, &st, "action_digest") != 0)
        goto out;
    rc = cas_ac_get(d->store, req->instance_name ? req->instance_name : "", &action, &buf, &len);
    if (rc == -ENOENT) {
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND, "no result for action %s/%" PRId64,
                         req->action_digest->hash, req->action_digest->size_bytes);
        goto out;
    }
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "reading the action cache failed: %s",
                         strerror(-rc));
        goto out;
    }
    result = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, buf);
    if (result == NULL) {
        LOG_W("action cache entry for %s does not parse; treating it as absent",
              req->action_digest->hash);
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND, "no usable result for action %s",
                         req->action_digest->hash);
        goto out;
    }
    if (!action_cache_result_complete(d, result)) {
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND,
                         "result for action %s references blobs no longer in the CAS",
                         req->action_digest->hash);
        goto out;
    }
out:
    rpc_call_finish(call, result ? &result->base : NULL, &st);
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
    int rc;

    reapi_status_init(&st);
    if (rpc_call_request(
            call, &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
            (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "UpdateActionResultRequest not parseable");
        goto out;
    }
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
    rc = cas_ac_put(d->store, req->instance_name ? req->instance_name : "", &action, buf, len);
    if (rc != 0) {
        char why[512];
        grpc_status_code code = svc_store_error(d, rc, len, why, sizeof(why));

        reapi_status_set(&st, code, "writing the action cache failed: %s", why);
    }
out:
    rpc_call_finish(call, req && req->action_result ? &req->action_result->base : NULL, &st);
    free(buf);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

const struct rpc_method action_cache_methods[] = {
    {"/build.bazel.remote.execution.v2.ActionCache/GetActionResult", RPC_UNARY, RPC_POOL_SHORT,
     ac_get},
    {"/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult", RPC_UNARY, RPC_POOL_SHORT,
     ac_update},
};
const size_t action_cache_n_methods =
    sizeof(action_cache_methods) / sizeof(action_cache_methods[0]);
