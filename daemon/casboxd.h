/*
 * casboxd.h - the daemon's context: the one place its mutable state lives,
 * handed to every service handler, and the service tables.
 */
#ifndef CASBOX_CASBOXD_H
#define CASBOX_CASBOXD_H

#include <pthread.h>
#include <signal.h>

#include "auth/auth.h"
#include "cas/cas.h"
#include "config/config.h"
#include "exec/exec.h"
#include "reapi/reapi.h"
#include "remote/remote.h"
#include "rpc/rpc.h"
#include "sandbox/sandbox.h"

struct bytestream_uploads;
struct exec_service;
struct asset_service;
struct casfs;
struct observe;
struct metrics;

struct casboxd {
    /* The effective configuration. Keys that SIGHUP may change are read
     * through casboxd_config_snapshot; the others never change after start. */
    struct casbox_config cfg;
    pthread_mutex_t cfg_lock;
    struct cas_store *store;
    struct rpc_server *rpc;
    struct rpc_server *rpc_workers;  /* [scheduler] worker_listen; NULL: workers use rpc */
    struct sandbox_spawner *spawner; /* NULL when execution is off */
    struct bytestream_uploads *uploads;
    struct exec_service *exec;   /* NULL when execution is off */
    struct asset_service *asset; /* NULL unless [asset] enabled */
    struct casfs *fs;            /* the FUSE input-tree mount; NULL: hardlink staging */
    struct remote *remote;       /* [cas] remote: the source of truth; NULL: the store is */
    struct remote *ac_remote;    /* [action_cache] remote; NULL: the local action cache */
    struct observe *obs;         /* metrics, the web pages' board, [http] (observe.c) */
    struct exec_copies copies;
    /* What exec_run gets: the fields above, and the scratch paths below. */
    struct exec_env env;
    char scratch_dir[4096];   /* <state>/cas/exec */
    char exec_blob_dir[4096]; /* <state>/cas/exec-blobs */
    /* Who may do what (auth_setup.c): the policy every call is judged by,
     * and the server's TLS files. */
    struct auth_guard auth;
    struct auth_tls_files tls;
};

/* The status code of a failed store write (rc, a negative errno; need: the
 * bytes the call wanted to store) and its message in msg
 * (svc_store_error.c). */
grpc_status_code svc_store_error(struct casboxd *d, int rc, uint64_t need, char *msg, size_t len);

/* --- the upstream CAS and ActionCache (shared_storage.c) --- */

/* Opens [cas] remote (attaching it to d->store) and [action_cache] remote
 * when configured. */
int shared_storage_start(struct casboxd *d);
void shared_storage_stop(struct casboxd *d);
/* Of digests[0..n), sets missing[i] for those the source of truth lacks:
 * the remote CAS when there is one (a copy in the local cache does not
 * count: the client's next FindMissingBlobs goes there), else the store. */
int shared_find_missing(struct casboxd *d, const struct cas_digest *digests, size_t n,
                        bool *missing, struct reapi_status *st);
/* Uploads from the store what the remote CAS lacks of digests (no-op
 * without one): write-through, and outputs before their ActionCache entry. */
int shared_push(struct casboxd *d, const struct cas_digest *digests, size_t n,
                struct reapi_status *st);
/* st for a failed read of dg through the store (rc): NOT_FOUND, or
 * UNAVAILABLE with the remote's reason when a fetch from it failed. */
void shared_read_status(struct casboxd *d, const struct cas_digest *dg, int rc,
                        struct reapi_status *st);
/* The ActionCache: [action_cache] remote when set, else the local one.
 * -ENOENT without st set when there is no entry. */
int shared_ac_get(struct casboxd *d, const char *instance, const struct cas_digest *action,
                  void **buf, size_t *len, struct reapi_status *st);
int shared_ac_put(struct casboxd *d, const char *instance, const struct cas_digest *action,
                  const void *buf, size_t len, struct reapi_status *st);

/* A consistent copy of the configuration (reload.c). */
void casboxd_config_snapshot(struct casboxd *d, struct casbox_config *out);
/* Applies the keys of fresh that are safe to change at run time and logs the
 * others as needing a restart (SIGHUP). */
int casboxd_config_reload(struct casboxd *d, const struct casbox_config *fresh);

/* [tls] and [auth] (auth_setup.c): reads and checks the files, fills d->tls
 * and d->auth; on failure prints one line naming the file and returns
 * non-zero (casboxd refuses to start). */
int casboxd_auth_start(struct casboxd *d);
void casboxd_auth_stop(struct casboxd *d);
/* SIGHUP: the tokens and certificates files again, with fresh's [auth]
 * keys, and the [tls] files for new connections; a broken file keeps the
 * current ones and logs why. */
void casboxd_auth_reload(struct casboxd *d, const struct casbox_config *fresh);
/* What casboxd's own clients (worker -> scheduler, remote CAS) use: [client]
 * tls_ca, tls_certificate, tls_private_key and token_file. cfg must outlive
 * the options. */
void casboxd_client_options(const struct casbox_config *cfg, struct rpc_client_options *out);

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
extern const struct rpc_method asset_methods[];
extern const size_t asset_n_methods;
/* role scheduler: Buildbarn's worker protocol (svc_operation_queue.c) and
 * casbox's fleet admin service (svc_fleet_admin.c) */
extern const struct rpc_method operation_queue_methods[];
extern const size_t operation_queue_n_methods;
extern const struct rpc_method fleet_admin_methods[];
extern const size_t fleet_admin_n_methods;

/* ByteStream's resumable uploads table (svc_bytestream.c). */
int bytestream_uploads_new(uint64_t max_uploads, struct bytestream_uploads **out);
void bytestream_uploads_free(struct bytestream_uploads *u);

/* Whether an ActionResult's referenced blobs are all in the source of truth
 * (svc_action_cache.c; shared_find_missing): 1 yes, 0 no, or a negative
 * errno with st set when that cannot be told (the remote is unreachable).
 * Used by the Execution service's cache lookup too. */
int action_cache_result_complete(struct casboxd *d,
                                 const Build__Bazel__Remote__Execution__V2__ActionResult *r,
                                 struct reapi_status *st);
/* Every blob an ActionResult references, its Trees' files included (the
 * Trees read through the store), into a malloc'd array. */
int action_cache_result_blobs(struct casboxd *d,
                              const Build__Bazel__Remote__Execution__V2__ActionResult *r,
                              struct cas_digest **out, size_t *n, struct reapi_status *st);

/* The Remote Asset API (svc_asset.c): its URI -> digest map, loaded from
 * <state>/asset-map.log, and the downloader. */
int asset_service_start(struct casboxd *d, struct asset_service **out);
/* Ends the downloads in progress (their calls answer UNAVAILABLE); call
 * before stopping the gRPC server, which waits for every handler. */
void asset_service_begin_stop(struct asset_service *svc);
void asset_service_stop(struct asset_service *svc);

/* --- the Execution service (svc_execution.c) ---
 *
 * Execute loads and checks an action (so a missing input fails at once), then
 * queues it; a fixed set of slot threads runs queued actions through
 * exec_run (execution_run.c: stage inputs, run in the sandbox, collect
 * outputs, cache the result). Each action is an operation with a name that
 * WaitExecution can follow while it runs and for
 * execution.operation_retention seconds after. Two Executes of the same
 * action digest in flight share one operation.
 */
struct exec_service;

enum exec_stage { EXEC_QUEUED, EXEC_EXECUTING, EXEC_COMPLETED };

int exec_service_start(struct casboxd *d, struct exec_service **out);
/* Makes every watching stream end with UNAVAILABLE, refuses new actions and
 * kills the running ones. Call before stopping the gRPC server. */
void exec_service_begin_stop(struct exec_service *svc);
/* Waits for running actions to finish (they are bounded by their timeouts)
 * and frees the service. */
void exec_service_stop(struct exec_service *svc);

/* --- one action on a slot (execution_run.c) --- */

/* Loads and checks an action for execution: FAILED_PRECONDITION with every
 * missing blob, or INVALID_ARGUMENT naming the bad field (a timeout above
 * execution.max_timeout among them, as the REAPI requires). */
int execution_action_load(struct casboxd *d, const char *instance, const struct cas_digest *digest,
                          struct action **out, struct reapi_status *st);
/* Removes scratch directories left by a previous run and the executable-copy
 * cache, creates both afresh and fills d->env; called at start-up before any
 * action runs. */
int execution_env_init(struct casboxd *d);
/* Runs one loaded action with exec_run on the calling slot thread, caches a
 * clean result, and packs the ExecuteResponse (malloc'd) that the
 * operation's watchers receive; *left is for exec_leftovers_remove. */
int execution_run_action(struct casboxd *d, const char *instance, struct action *act,
                         struct exec_times *times, uint8_t **response, size_t *response_len,
                         char *log_line, size_t log_len, struct exec_leftovers **left);
/* Packs an ExecuteResponse: result (an empty one when NULL, as Bazel needs
 * one), cached_result, the status (OK when st is NULL) and message. */
/* The one line logged for a finished action (exit, staging, fetches, run
 * time, outputs, status), into buf; the worker role logs it too. */
void execution_log_line(const struct action *act, const struct exec_times *times,
                        const struct exec_outcome *o, char *buf, size_t len);
int exec_response_pack(const Build__Bazel__Remote__Execution__V2__ActionResult *result, bool cached,
                       const struct reapi_status *st, const char *message, uint8_t **out,
                       size_t *len);

/* --- role worker (worker.c) ---
 *
 * One Buildbarn Synchronize loop per execution slot against
 * [worker] scheduler, each running its actions with execution_run_action;
 * returns when a signal in sigs (SIGTERM, SIGINT) asked it to stop and the
 * running actions are finished. 0, or a negative errno when it could not
 * start. */
int fleet_worker_run(struct casboxd *d, const sigset_t *sigs);

/* Actions waiting for a slot (role scheduler: for a worker), actions running
 * on this host's slots, and (role scheduler) worker slots known. */
/* Role scheduler: the fleet's counts and worker slots (sched/sched.h), read
 * under the service's lock (svc_operation_queue.c); zero when not one. */
struct sched_counts;
struct sched_worker_info;
void fleet_scheduler_counts(struct exec_service *svc, struct sched_counts *out);
size_t fleet_scheduler_workers(struct exec_service *svc, struct sched_worker_info *out, size_t max);
void exec_service_counts(struct exec_service *svc, uint64_t *queued, uint64_t *running,
                         uint64_t *workers);

/* --- metrics and the web pages (observe.c) ---
 * Each observe_* function does nothing while d->obs is NULL. */
int observe_start(struct casboxd *d); /* the registry, the board, the families */
struct metrics *observe_metrics(struct casboxd *d);
int observe_serve(struct casboxd *d); /* [http] listen; 0 when empty */
void observe_stop_serving(struct casboxd *d);
void observe_tls_reload(struct casboxd *d); /* the listener again with d->tls */
void observe_stop(struct casboxd *d);
enum observe_cache { OBSERVE_CACHE_HIT, OBSERVE_CACHE_MISS, OBSERVE_CACHE_MISS_BLOB_GONE };
/* via: "get_action_result" or "execute" */
void observe_cache_lookup(struct casboxd *d, const char *via, enum observe_cache result);
/* direction: "written" or "read"; api: "batch" or "bytestream" */
void observe_transfer(struct casboxd *d, const char *direction, const char *api, uint64_t blobs,
                      uint64_t bytes);
void observe_find_missing(struct casboxd *d, uint64_t asked, uint64_t missing);
/* Role scheduler: a worker slot was lost; requeued: its action goes back to
 * the queue. */
void observe_fleet_lost(struct casboxd *d, bool requeued);
/* Role scheduler: an action's worker and the stage it last reported. */
enum observe_fleet_stage {
    OBSERVE_FLEET_TAKEN,
    OBSERVE_FLEET_FETCHING,
    OBSERVE_FLEET_RUNNING,
    OBSERVE_FLEET_UPLOADING
};
void observe_fleet_stage(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                         const char *worker, enum observe_fleet_stage stage);
/* Role scheduler: the worker's ExecuteResponse, counted by outcome and
 * shown with its ExecutedActionMetadata times. */
void observe_fleet_result(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                          const char *worker,
                          const Build__Bazel__Remote__Execution__V2__ExecuteResponse *r);
/* An action's life on the board: queued (call: its Execute, for
 * RequestMetadata), taken by a slot, its result, finished. */
void observe_action_queued(struct casboxd *d, struct rpc_call *call, const char *instance,
                           const struct cas_digest *dg, bool executing);
void observe_action_started(struct casboxd *d, const char *instance, const struct cas_digest *dg);
/* exec_run began a step (input fetch, execution, output upload). */
void observe_action_step(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                         enum exec_step step);
void observe_action_result(struct casboxd *d, const char *instance, const struct action *act,
                           const struct exec_times *t, const struct exec_outcome *o);
/* response: the ExecuteResponse the watchers got (NULL: none), kept in the
 * CAS for the action page. */
void observe_action_finished(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                             const uint8_t *response, size_t response_len);

#endif
