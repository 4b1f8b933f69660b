/*
 * execution_run.c - what casboxd adds around exec_run() for one action on a
 * slot thread: the configuration snapshot (SIGHUP may change it between
 * actions), the ActionCache entry for a clean success, the ExecuteResponse
 * the operation's watchers receive, and the action's log line.
 *
 * The pipeline itself (stage, run, collect) is exec/'s, the same one
 * casbox-replay runs; nothing here touches an input or an output.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "casboxd.h"
#include "util/util.h"

int execution_action_load(struct casboxd *d, const char *instance, const struct cas_digest *digest,
                          struct action **out, struct reapi_status *st)
{
    struct casbox_config cfg;
    uint64_t max_ms;
    int rc;

    (void)instance;
    casboxd_config_snapshot(d, &cfg);
    /* In a fleet the scheduler has matched the action's platform to the
     * worker's announced properties (superset): any property name is fine. */
    if (strcmp(cfg.role, "all") != 0)
        snprintf(cfg.exec_accepted_properties, sizeof(cfg.exec_accepted_properties), "*");
    max_ms = cfg.exec_max_timeout * 1000u;
    rc = action_load_cached(d->store, d->env.trees, digest, &cfg, out, st);
    if (rc != 0)
        return rc;
    /* The REAPI: a timeout above the server's maximum MUST be rejected. */
    if ((*out)->timeout_ms > max_ms) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Action.timeout of %.3f s exceeds the server's maximum of %" PRIu64
                         " s (execution.max_timeout)",
                         (*out)->timeout_ms / 1000.0, cfg.exec_max_timeout);
        action_free(*out);
        *out = NULL;
        return -EINVAL;
    }
    return 0;
}

/* Empties (or creates) one of the state dir's scratch directories. */
static int execution_dir_reset(const char *path)
{
    int rc = util_remove_tree(path);

    if (rc != 0 && rc != -ENOENT)
        return rc;
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int execution_env_init(struct casboxd *d)
{
    int rc;

    /* Scratch dirs of actions a crash interrupted, and the executable-copy
     * cache (it is only a cache and grows without bound otherwise). */
    snprintf(d->scratch_dir, sizeof(d->scratch_dir), "%s/cas/exec", d->cfg.state_dir);
    snprintf(d->exec_blob_dir, sizeof(d->exec_blob_dir), "%s/cas/exec-blobs", d->cfg.state_dir);
    d->env = (struct exec_env){
        .store = d->store,
        .spawner = d->spawner,
        .fs = d->fs,
        .copies = &d->copies,
        .scratch_dir = d->scratch_dir,
        .exec_blob_dir = d->exec_blob_dir,
    };
    rc = execution_dir_reset(d->scratch_dir);
    if (rc == 0)
        rc = execution_dir_reset(d->exec_blob_dir);
    if (rc == 0)
        rc = exec_tree_cache_new(d->cfg.exec_tree_cache_entries, &d->env.trees);
    return rc;
}

int exec_response_pack(const ActionResult *result, bool cached, const struct reapi_status *st,
                       const char *message, uint8_t **out, size_t *len)
{
    Build__Bazel__Remote__Execution__V2__ExecuteResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTE_RESPONSE__INIT;
    ActionResult empty = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
    Google__Rpc__Status ok, *status = NULL;
    int rc = 0;

    resp.result = result ? (ActionResult *)result : &empty;
    resp.cached_result = cached;
    if (st != NULL && !reapi_status_ok(st)) {
        status = reapi_status_to_proto(st);
        if (status == NULL)
            return -ENOMEM;
        resp.status = status;
    } else {
        reapi_status_fill_simple(&ok, GRPC_STATUS_OK, "");
        resp.status = &ok;
    }
    resp.message = (char *)(message ? message : "");
    *len = build__bazel__remote__execution__v2__execute_response__get_packed_size(&resp);
    *out = malloc(*len ? *len : 1);
    if (*out == NULL)
        rc = -ENOMEM;
    else
        build__bazel__remote__execution__v2__execute_response__pack(&resp, *out);
    reapi_status_proto_free(status);
    return rc;
}

static int exec_cache_result(struct casboxd *d, const char *instance, const struct action *act,
                             const ActionResult *result, struct reapi_status *st)
{
    size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(result);
    uint8_t *buf = malloc(len ? len : 1);
    int rc;

    if (buf == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__action_result__pack(result, buf);
    rc = shared_ac_put(d, instance, &act->digest, buf, len, st);
    free(buf);
    return rc;
}

/* With [cas] remote, every blob the result names goes there before the
 * ActionCache entry that names it is written (and before the client hears
 * of it, so that its next FindMissingBlobs, answered by the remote, agrees). */
static int exec_push_outputs(struct casboxd *d, const ActionResult *result, struct reapi_status *st)
{
    struct cas_digest *digests = NULL;
    size_t n = 0;
    int rc;

    if (d->remote == NULL || result == NULL)
        return 0;
    rc = action_cache_result_blobs(d, result, &digests, &n, st);
    if (rc == 0)
        rc = shared_push(d, digests, n, st);
    free(digests);
    return rc;
}

/* The one line casboxd logs for a finished action. */
void execution_log_line(const struct action *act, const struct exec_times *times,
                        const struct exec_outcome *o, char *buf, size_t len)
{
    char staged[320];

    if (o->fuse)
        snprintf(staged, sizeof(staged),
                 "fuse tree of %" PRIu64 " files in %.1f ms (%" PRIu64 " opened, %" PRIu64
                 " bytes read, %" PRIu64 " lookups%s)",
                 act->input_files, o->stage.micros / 1000.0, o->fuse_stats.files_opened,
                 o->fuse_stats.bytes_read, o->fuse_stats.lookups,
                 act->tree_cached ? ", tree known complete" : "");
    else
        snprintf(staged, sizeof(staged), "staged %" PRIu64 " files in %.1f ms", o->stage.files,
                 o->stage.micros / 1000.0);
    if (o->upstream) {
        size_t used = strlen(staged);

        snprintf(staged + used, sizeof(staged) - used,
                 "; fetched %" PRIu64 " blobs (%" PRIu64 " bytes), %" PRIu64 " local hits",
                 o->fetch_stats.fetched_blobs, o->fetch_stats.fetched_bytes,
                 o->fetch_stats.local_hits);
    }
    snprintf(buf, len, "exit %d%s%s, %s, ran %.1f ms, %" PRIu64 " outputs (%" PRIu64 " bytes)%s%s",
             o->result ? o->result->exit_code : -1, o->verdict[0] ? " " : "", o->verdict, staged,
             (times->execution_end - times->execution_start) / 1000.0,
             o->outputs.files + o->outputs.symlinks + o->outputs.dirs, o->outputs.bytes,
             reapi_status_ok(&o->status) ? "" : "; ",
             reapi_status_ok(&o->status) ? "" : o->status.message);
}

/* exec_run's steps to the board (observe_action_step), while it runs. */
struct execution_step_ctx {
    struct casboxd *d;
    const char *instance;
    const struct cas_digest *digest;
};

static void execution_note_step(void *ctx, enum exec_step step)
{
    const struct execution_step_ctx *c = ctx;

    observe_action_step(c->d, c->instance, c->digest, step);
}

int execution_run_action(struct casboxd *d, const char *instance, struct action *act,
                         struct exec_times *times, uint8_t **response, size_t *response_len,
                         char *log_line, size_t log_len, struct exec_leftovers **left)
{
    struct casbox_config cfg; /* this action's snapshot (SIGHUP may change d->cfg) */
    struct exec_outcome o;
    int rc;

    casboxd_config_snapshot(d, &cfg);
    struct execution_step_ctx step = {d, instance, &act->digest};

    exec_outcome_init(&o);
    times->on_step = execution_note_step;
    times->on_step_ctx = &step;
    exec_run(&d->env, &cfg, act, false, times, &o);
    times->on_step = NULL;
    times->on_step_ctx = NULL;
    if (exec_push_outputs(d, o.result, &o.status) != 0)
        o.cacheable = false; /* o.status: UNAVAILABLE naming the remote */
    if (o.cacheable) {
        struct reapi_status cst;

        reapi_status_init(&cst);
        rc = exec_cache_result(d, instance, act, o.result, &cst);
        if (rc != 0)
            LOG_W("caching the result failed: %s", cst.message[0] ? cst.message : strerror(-rc));
        reapi_status_free(&cst);
    }
    execution_log_line(act, times, &o, log_line, log_len);
    rc = exec_response_pack(o.result, false, &o.status, o.verdict[0] ? o.verdict : o.status.message,
                            response, response_len);
    observe_action_result(d, instance, act, times, &o);
    *left = o.left;
    exec_outcome_free(&o);
    return rc;
}
