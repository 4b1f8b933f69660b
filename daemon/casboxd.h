/*
 * casboxd.h - the daemon's context: the one place its mutable state lives,
 * handed to every service handler, and the service tables.
 */
#ifndef CASBOX_CASBOXD_H
#define CASBOX_CASBOXD_H

#include <pthread.h>

#include "cas.h"
#include "config.h"
#include "rpc.h"
#include "reapi.h"
#include "sandbox.h"

struct bytestream_uploads;
struct exec_service;
struct casfs;

/* The executable-copy cache of hardlink staging (exec_copies.c). */
struct exec_copies {
    pthread_rwlock_t lock; /* shared while staging, exclusive to empty it */
    uint64_t bytes;        /* copied since it was last emptied (atomic) */
    uint64_t max_bytes;    /* execution.exec_copy_cache_bytes */
};

struct casboxd {
    /* The effective configuration. Keys that SIGHUP may change are read
     * through casboxd_config_snapshot; the others never change after start. */
    struct casbox_config cfg;
    pthread_mutex_t cfg_lock;
    struct cas_store *store;
    struct rpc_server *rpc;
    struct sandbox_spawner *spawner; /* NULL when execution is off */
    struct bytestream_uploads *uploads;
    struct exec_service *exec; /* NULL when execution is off */
    struct casfs *fs;          /* the FUSE input-tree mount; NULL: hardlink staging */
    struct exec_copies copies;
};

/* A consistent copy of the configuration (reload.c). */
void casboxd_config_snapshot(struct casboxd *d, struct casbox_config *out);
/* Applies the keys of fresh that are safe to change at run time and logs the
 * others as needing a restart (SIGHUP). */
int casboxd_config_reload(struct casboxd *d, const struct casbox_config *fresh);

/* Each service exports its method table. */
extern const struct rpc_method capabilities_methods[];
extern const size_t capabilities_n_methods;
extern const struct rpc_method cas_methods[];
extern const size_t cas_n_methods;
extern const struct rpc_method bytestream_methods[];
extern const size_t bytestream_n_methods;
extern const struct rpc_method action_cache_methods[];
extern const size_t action_cache_n_methods;
extern const struct rpc_method execution_methods[];
extern const size_t execution_n_methods;

/* ByteStream's resumable uploads table (svc_bytestream.c). */
int bytestream_uploads_new(uint64_t max_uploads, struct bytestream_uploads **out);
void bytestream_uploads_free(struct bytestream_uploads *u);

/* Whether an ActionResult's referenced blobs are all in the CAS
 * (svc_action_cache.c); used by the Execution service's cache lookup. */
bool action_cache_result_complete(struct casboxd *d,
                                  const Build__Bazel__Remote__Execution__V2__ActionResult *r);

#endif
