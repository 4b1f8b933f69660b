/*
 * remote_internal.h - the remote structure and the helpers the files of
 * remote/ share: status messages that name the remote, resource names.
 */
#ifndef CASBOX_REMOTE_INTERNAL_H
#define CASBOX_REMOTE_INTERNAL_H

#include <stdatomic.h>

#include "remote.h"

struct remote {
    char *url;
    char *instance;
    struct rpc_client *rpc;
    uint64_t batch_digests;
    uint64_t batch_bytes;
    uint64_t chunk_bytes;
    _Atomic uint64_t fetched_blobs, fetched_bytes, fetch_failures, rejected_blobs;
    _Atomic uint64_t pushed_blobs, pushed_bytes, find_missing_calls;
};

/* instance, or the configured one when NULL. */
const char *remote_instance(const struct remote *r, const char *instance);

/* Rewrites st->message as "remote URL: CALL: CODE: message" and returns
 * remote_errno_of(st->code) (rc when the code is OK but rc failed). */
int remote_status_fail(struct remote *r, int rc, const char *call, struct rpc_client_status *st);
/* Sets st to code and a message naming the remote; returns rc. */
int remote_status_set(struct remote *r, int rc, grpc_status_code code, struct rpc_client_status *st,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* "{instance/}blobs/HASH/SIZE", malloc'd. */
char *remote_read_resource(const char *instance, const struct cas_digest *d);

#endif
