/*
 * action_cache.c - the remote's ActionCache (`[action_cache] remote`):
 * GetActionResult and UpdateActionResult with the ActionResult carried as
 * serialized bytes, as the local action cache (cas_ac_*) stores it, so the
 * daemon's checks run on either the same way.
 */
#include "remote_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

typedef Build__Bazel__Remote__Execution__V2__GetActionResultRequest GetActionResultRequest;
typedef Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest UpdateActionResultRequest;

int remote_ac_get(struct remote *r, const char *instance, const struct cas_digest *action,
                  void **buf, size_t *len, struct rpc_client_status *st)
{
    GetActionResultRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
    ActionResult *result = NULL;
    struct reapi_digest_buf db;
    uint8_t *bytes = NULL;
    size_t n;
    int rc;

    *buf = NULL;
    *len = 0;
    reapi_digest_to_proto(action, &db);
    req.instance_name = (char *)remote_instance(r, instance);
    req.action_digest = &db.pd;
    rc = rpc_client_unary(r->rpc, RPC_CLIENT_GET_ACTION_RESULT, &req.base,
                          &build__bazel__remote__execution__v2__action_result__descriptor,
                          (ProtobufCMessage **)&result, st);
    if (rc != 0)
        return remote_status_fail(r, rc, "GetActionResult", st);
    n = protobuf_c_message_get_packed_size(&result->base);
    bytes = malloc(n > 0 ? n : 1);
    if (bytes == NULL) {
        rc = remote_status_set(r, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, st, "out of memory");
        goto out;
    }
    protobuf_c_message_pack(&result->base, bytes);
    *buf = bytes;
    *len = n;
    rc = 0;
out:
    protobuf_c_message_free_unpacked(&result->base, NULL);
    return rc;
}

int remote_ac_put(struct remote *r, const char *instance, const struct cas_digest *action,
                  const void *buf, size_t len, struct rpc_client_status *st)
{
    UpdateActionResultRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__UPDATE_ACTION_RESULT_REQUEST__INIT;
    ActionResult *result = NULL, *answer = NULL;
    struct reapi_digest_buf db;
    int rc;

    result = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, buf);
    if (result == NULL)
        return remote_status_set(r, -EINVAL, GRPC_STATUS_INVALID_ARGUMENT, st,
                                 "UpdateActionResult: the ActionResult does not decode");
    reapi_digest_to_proto(action, &db);
    req.instance_name = (char *)remote_instance(r, instance);
    req.action_digest = &db.pd;
    req.action_result = result;
    rc = rpc_client_unary(r->rpc, RPC_CLIENT_UPDATE_ACTION_RESULT, &req.base,
                          &build__bazel__remote__execution__v2__action_result__descriptor,
                          (ProtobufCMessage **)&answer, st);
    if (rc != 0)
        rc = remote_status_fail(r, rc, "UpdateActionResult", st);
    if (answer != NULL)
        protobuf_c_message_free_unpacked(&answer->base, NULL);
    build__bazel__remote__execution__v2__action_result__free_unpacked(result, NULL);
    return rc;
}
