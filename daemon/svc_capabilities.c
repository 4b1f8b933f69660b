/*
 * svc_capabilities.c - build.bazel.remote.execution.v2.Capabilities.
 *
 * Advertises SHA-256 (also in API 2.3's ExecutionCapabilities.digest_functions),
 * the batch limit, absolute symlinks ALLOWED, action-cache updates, execution
 * when it is running, and API versions 2.0 to 2.2 (the protos Debian ships
 * are the v2.2-era API). Also the compressors, identity and zstd, for
 * ByteStream's compressed-blobs and for the batch calls (CacheCapabilities'
 * supported_compressors and supported_batch_update_compressors). The fields
 * newer than Debian's protos are sent as unknown fields. Bazel 7 refuses
 * --remote_cache_compression unless both compressor lists have zstd.
 *
 * It answers every authenticated caller, and says what that caller may do
 * on the request's instance (auth/): update_enabled only with write-ac,
 * exec_enabled only with execute, so that Bazel adapts (a read-only token
 * builds locally without uploading) instead of failing late.
 */
#include "casboxd.h"

static void capabilities_get(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    ProtobufCMessage *req = NULL;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SERVER_CAPABILITIES__INIT;
    Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__CACHE_CAPABILITIES__INIT;
    Build__Bazel__Remote__Execution__V2__ActionCacheUpdateCapabilities ac_update =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_CACHE_UPDATE_CAPABILITIES__INIT;
    Build__Bazel__Remote__Execution__V2__ExecutionCapabilities exec =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTION_CAPABILITIES__INIT;
    Build__Bazel__Semver__SemVer low = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
    Build__Bazel__Semver__SemVer high = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
    Build__Bazel__Remote__Execution__V2__DigestFunction__Value functions[] = {
        BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256};
    const uint64_t compressors[] = {REAPI_COMPRESSOR_IDENTITY, REAPI_COMPRESSOR_ZSTD};
    const uint64_t digest_functions[] = {REAPI_DIGEST_FUNCTION_SHA256};
    struct reapi_unknown_out cache_new, exec_new;
    unsigned perms;

    if (rpc_call_request(call,
                         &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
                         &req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "GetCapabilitiesRequest missing or not parseable");
        return;
    }
    perms = rpc_call_permissions(
        call, ((Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest *)req)->instance_name);
    cache.n_digest_function = 1;
    cache.digest_function = functions;
    ac_update.update_enabled = (perms & AUTH_PERM_WRITE_AC) != 0;
    cache.action_cache_update_capabilities = &ac_update;
    cache.max_batch_total_size_bytes = (int64_t)d->cfg.max_batch_bytes;
    /* Absolute symlink targets are kept as they are, in inputs and outputs:
     * the sandbox resolves them inside the action's own root (docs/security.md). */
    cache.symlink_absolute_path_strategy =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__ALLOWED;
    reapi_unknown_out_init(&cache_new);
    reapi_unknown_out_packed(&cache_new, REAPI_FIELD_CACHE_CAPABILITIES_SUPPORTED_COMPRESSORS,
                             compressors, 2);
    reapi_unknown_out_packed(&cache_new,
                             REAPI_FIELD_CACHE_CAPABILITIES_SUPPORTED_BATCH_UPDATE_COMPRESSORS,
                             compressors, 2);
    reapi_unknown_out_attach(&cache_new, &cache.base);
    caps.cache_capabilities = &cache;

    exec.digest_function = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
    exec.exec_enabled = d->exec != NULL && (perms & AUTH_PERM_EXECUTE) != 0;
    caps.execution_capabilities = &exec;
    /* API 2.3's repeated digest_functions, which the v2.2 type lacks. */
    reapi_unknown_out_init(&exec_new);
    reapi_unknown_out_packed(&exec_new, REAPI_FIELD_EXECUTION_CAPABILITIES_DIGEST_FUNCTIONS,
                             digest_functions, 1);
    reapi_unknown_out_attach(&exec_new, &exec.base);

    low.major = 2;
    low.minor = 0;
    high.major = 2;
    high.minor = 2;
    caps.low_api_version = &low;
    caps.high_api_version = &high;
    rpc_call_finish(call, &caps.base, NULL);
    protobuf_c_message_free_unpacked(req, NULL);
}

const struct rpc_method capabilities_methods[] = {
    {"/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", RPC_UNARY, RPC_POOL_SHORT,
     capabilities_get, AUTH_PERM_NONE},
};
const size_t capabilities_n_methods =
    sizeof(capabilities_methods) / sizeof(capabilities_methods[0]);
