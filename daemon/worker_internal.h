/*
 * worker_internal.h - the worker role's storage (worker_storage.c): the local
 * store reads through to the fleet's CAS ([cas] remote, --cas; default the
 * scheduler), outputs are pushed there, and cacheable results go to its
 * ActionCache ([action_cache] remote, default the same). Private to daemon/.
 */
#ifndef CASBOX_WORKER_INTERNAL_H
#define CASBOX_WORKER_INTERNAL_H

#include "casboxd.h"

struct worker_storage;

/* Attaches the read-through fetcher to d->store. On failure err says why. */
int worker_storage_open(struct casboxd *d, struct worker_storage **out, char *err, size_t err_len);
void worker_storage_close(struct worker_storage *ws);
/* Uploads what the remote CAS lacks of result's blobs (stdout, stderr,
 * output files, output directories' Trees and their files). */
int worker_storage_upload_result(struct worker_storage *ws, const char *instance,
                                 const Build__Bazel__Remote__Execution__V2__ActionResult *result,
                                 struct reapi_status *st);
/* Writes the ActionCache entry (after the upload: outputs before the entry
 * naming them). */
int worker_storage_cache_result(struct worker_storage *ws, const char *instance,
                                const struct cas_digest *action,
                                const Build__Bazel__Remote__Execution__V2__ActionResult *result,
                                struct reapi_status *st);

#endif
