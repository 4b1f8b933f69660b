/*
 * digest_function.c - the digest_function field of API 2.3's requests.
 *
 * casbox hashes with SHA-256 only. A request may name its digest function
 * (DigestFunction.Value; 0, unset, means "the server's", which is SHA-256
 * here); any other value is refused with INVALID_ARGUMENT naming it, as the
 * REAPI asks of a server that does not support it. Debian 12's generated
 * types predate the field, so it is read from the unknown fields
 * (unknown_fields.c).
 */
#include "reapi.h"

#include <errno.h>
#include <inttypes.h>

/* DigestFunction.Value, by number (remote_execution.proto; 8-10 are API 2.3's). */
static const char *const digest_function_names[] = {
    "UNKNOWN", "SHA256",  "SHA1",       "MD5",    "VSO",     "SHA384",
    "SHA512",  "MURMUR3", "SHA256TREE", "BLAKE3", "GITSHA1",
};

const char *reapi_digest_function_name(uint64_t value)
{
    if (value < sizeof(digest_function_names) / sizeof(digest_function_names[0]))
        return digest_function_names[value];
    return NULL;
}

int reapi_digest_function_check_value(const char *message_name, uint32_t field, bool present,
                                      bool malformed, uint64_t value, struct reapi_status *st)
{
    const char *name;

    if (malformed) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s.digest_function (field %" PRIu32 ") is not an enum value",
                         message_name, field);
        return -EINVAL;
    }
    if (!present || value == REAPI_DIGEST_FUNCTION_UNSET || value == REAPI_DIGEST_FUNCTION_SHA256)
        return 0;
    name = reapi_digest_function_name(value);
    if (name != NULL)
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "digest_function %s (%" PRIu64
                         ") is not supported: this server uses SHA256",
                         name, value);
    else
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "digest_function %" PRIu64 " is not supported: this server uses SHA256",
                         value);
    return -EINVAL;
}

int reapi_digest_function_check(const ProtobufCMessage *req, uint32_t field,
                                struct reapi_status *st)
{
    uint64_t value = 0;
    int rc = reapi_unknown_varint(req, field, &value);

    return reapi_digest_function_check_value(req->descriptor->short_name, field, rc > 0, rc < 0,
                                             value, st);
}
