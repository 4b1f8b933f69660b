/*
 * reapi.h - REAPI value helpers shared by the services: digests between the
 * wire and the store, ByteStream resource names, and protobuf-c includes.
 */
#ifndef CASBOX_REAPI_H
#define CASBOX_REAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/longrunning/operations.pb-c.h"
#include "status.h"

typedef Build__Bazel__Remote__Execution__V2__Digest reapi_digest_t;

/* A proto Digest with the storage for its hash string. */
struct reapi_digest_buf {
    reapi_digest_t pd;
    char hex[CAS_HASH_HEX + 1];
};

/* Checks and converts a wire digest. On a malformed one sets INVALID_ARGUMENT
 * in st naming field and returns -EINVAL. A NULL pd is invalid too. */
int reapi_digest_from_proto(const reapi_digest_t *pd, struct cas_digest *out,
                            struct reapi_status *st, const char *field);
/* Fills buf so that &buf->pd is a wire digest equal to d. */
void reapi_digest_to_proto(const struct cas_digest *d, struct reapi_digest_buf *buf);
/* A malloc'd wire digest (with its hash string); free with reapi_digest_free. */
reapi_digest_t *reapi_digest_new(const struct cas_digest *d);
void reapi_digest_free(reapi_digest_t *pd);

/* ByteStream resource names. Parsing never allocates: instance points into
 * name and instance_len is its length (0 for the empty instance). */
struct reapi_resource {
    const char *instance;
    size_t instance_len;
    const char *upload_id; /* uploads only */
    size_t upload_id_len;
    struct cas_digest digest;
};

/* "{instance}/blobs/{hash}/{size}[/...]" */
int reapi_resource_parse_read(const char *name, struct reapi_resource *out);
/* "{instance}/uploads/{uuid}/blobs/{hash}/{size}[/...]" */
int reapi_resource_parse_write(const char *name, struct reapi_resource *out);
/* Parses a non-negative decimal without sign; -EINVAL on anything else. */
int reapi_parse_size(const char *s, size_t len, int64_t *out);

#endif
