/*
 * status.h - a gRPC status being built up by a request handler: the code, a
 * message naming what was wrong, and the blobs found missing (sent to the
 * client as a google.rpc.PreconditionFailure, one MISSING violation per blob,
 * as the REAPI requires so that Bazel re-uploads them).
 */
#ifndef CASBOX_STATUS_H
#define CASBOX_STATUS_H

#include <grpc/status.h>
#include <stdbool.h>
#include <stddef.h>

#include "cas.h"
#include "google/rpc/status.pb-c.h"

struct reapi_status {
    grpc_status_code code; /* GRPC_STATUS_OK until set */
    char message[1024];
    struct cas_digest *missing;
    size_t n_missing;
    size_t missing_cap;
};

void reapi_status_init(struct reapi_status *st);
void reapi_status_free(struct reapi_status *st);
/* Sets code and message; the first error set wins (later calls are ignored). */
void reapi_status_set(struct reapi_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a missing blob (deduplicated) and sets FAILED_PRECONDITION. */
int reapi_status_add_missing(struct reapi_status *st, const struct cas_digest *d);
static inline bool reapi_status_ok(const struct reapi_status *st)
{
    return st->code == GRPC_STATUS_OK;
}
/* Builds a google.rpc.Status (with details) for the wire; free with
 * reapi_status_proto_free. */
Google__Rpc__Status *reapi_status_to_proto(const struct reapi_status *st);
void reapi_status_proto_free(Google__Rpc__Status *s);
/* Fills a google.rpc.Status for a plain code and message (no details) into
 * caller-owned storage; message must outlive the use. */
void reapi_status_fill_simple(Google__Rpc__Status *s, grpc_status_code code, char *message);

#endif
