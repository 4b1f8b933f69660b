/*
 * exec_pipeline.c - one action from a slot thread's point of view: stage the
 * inputs, run the command in the sandbox (through the spawner), collect the
 * outputs, fill ExecutedActionMetadata, cache the result, and pack the
 * ExecuteResponse that the operation's watchers receive.
 *
 * Staging is by hardlinks (action_stage_inputs) or, when casboxd mounted the
 * FUSE filesystem (d->fs), by adding the input root as a tree of that mount
 * and using <mount>/<scratch id> as the overlay's read-only lower layer; the
 * working directory and output parents are then made in the upper layer.
 *
 * What the runner itself has to say (a limit hit, an exec failure) is
 * appended to the action's stderr, where Bazel shows it to the user, and to
 * ExecuteResponse.message.
 *
 * Removing the scratch directory and the FUSE tree is left to
 * exec_pipeline_cleanup, which the cleaner thread (exec_cleaner.c) calls once
 * the result is published: right after a sandbox exits, the kernel is still
 * tearing down its mount namespace and the removal can take tens of
 * milliseconds that neither the client nor the slot's next action need wait
 * for.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "action.h"
#include "casfs.h"
#include "clock.h"
#include "exec.h"
#include "log.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

typedef Build__Bazel__Remote__Execution__V2__ActionResult ActionResult;
typedef Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata ExecutedActionMetadata;

int exec_action_load(struct casboxd *d, const char *instance, const struct cas_digest *digest,
                     struct action **out, struct reapi_status *st)
{
    struct casbox_config cfg;
    uint64_t max_ms;
    int rc;

    (void)instance;
    casboxd_config_snapshot(d, &cfg);
    max_ms = cfg.exec_max_timeout * 1000u;
    rc = action_load(d->store, digest, &cfg, out, st);
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

int exec_scratch_reset(struct casboxd *d)
{
    char path[4096];
    int rc;

    /* Scratch dirs of actions a crash interrupted, and the executable-copy
     * cache (it is only a cache and grows without bound otherwise). */
    snprintf(path, sizeof(path), "%s/cas/exec", d->cfg.state_dir);
    rc = action_remove_tree(path);
    if (rc != 0 && rc != -ENOENT)
        return rc;
    snprintf(path, sizeof(path), "%s/cas/exec-blobs", d->cfg.state_dir);
    rc = action_remove_tree(path);
    if (rc != 0 && rc != -ENOENT)
        return rc;
    return 0;
}

void exec_action_free(struct action *act)
{
    action_free(act);
}

static Google__Protobuf__Timestamp *exec_timestamp(uint64_t us)
{
    Google__Protobuf__Timestamp *ts = malloc(sizeof(*ts));

    if (ts == NULL)
        return NULL;
    google__protobuf__timestamp__init(ts);
    ts->seconds = (int64_t)(us / 1000000);
    ts->nanos = (int32_t)(us % 1000000) * 1000;
    return ts;
}

/* What staging did, for the log line and auxiliary_metadata. */
struct exec_staging {
    bool fuse;
    uint64_t micros;
    struct casfs_tree_stats fuse_stats; /* fuse only */
};

#define EXEC_STAGING_TYPE_URL "type.googleapis.com/casbox.StagingStats"

static size_t exec_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* An Any holding casbox.StagingStats (docs/fuse.md): files_opened = 1,
 * bytes_read = 2, staging_us = 3, mode = 4 (1 hardlink, 2 fuse), all
 * varints; 1 and 2 only for fuse. Hand-encoded: no .proto needed for four
 * integers. */
static Google__Protobuf__Any *exec_staging_any(const struct exec_staging *sg)
{
    Google__Protobuf__Any *any = malloc(sizeof(*any));
    uint8_t buf[4 * 11];
    size_t n = 0;

    if (any == NULL)
        return NULL;
    google__protobuf__any__init(any);
    if (sg->fuse) {
        buf[n++] = 1 << 3;
        n += exec_put_varint(buf + n, sg->fuse_stats.files_opened);
        buf[n++] = 2 << 3;
        n += exec_put_varint(buf + n, sg->fuse_stats.bytes_read);
    }
    buf[n++] = 3 << 3;
    n += exec_put_varint(buf + n, sg->micros);
    buf[n++] = 4 << 3;
    n += exec_put_varint(buf + n, sg->fuse ? 2 : 1);
    any->type_url = strdup(EXEC_STAGING_TYPE_URL);
    any->value.data = malloc(n);
    if (any->type_url == NULL || any->value.data == NULL) {
        free(any->type_url);
        free(any->value.data);
        free(any);
        return NULL;
    }
    memcpy(any->value.data, buf, n);
    any->value.len = n;
    return any;
}

/* Fills result->execution_metadata; every field its own allocation, as
 * action_result_free expects. */
static int exec_fill_metadata(ActionResult *result, const char *worker, const struct exec_times *t,
                              const struct exec_staging *sg)
{
    ExecutedActionMetadata *md = calloc(1, sizeof(*md));

    if (md == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__executed_action_metadata__init(md);
    result->execution_metadata = md;
    md->worker = strdup(worker);
    md->queued_timestamp = exec_timestamp(t->queued);
    md->worker_start_timestamp = exec_timestamp(t->worker_start);
    md->worker_completed_timestamp = exec_timestamp(t->worker_end);
    md->input_fetch_start_timestamp = exec_timestamp(t->input_fetch_start);
    md->input_fetch_completed_timestamp = exec_timestamp(t->input_fetch_end);
    md->execution_start_timestamp = exec_timestamp(t->execution_start);
    md->execution_completed_timestamp = exec_timestamp(t->execution_end);
    md->output_upload_start_timestamp = exec_timestamp(t->output_upload_start);
    md->output_upload_completed_timestamp = exec_timestamp(t->output_upload_end);
    md->auxiliary_metadata = malloc(sizeof(*md->auxiliary_metadata));
    if (md->auxiliary_metadata == NULL)
        return -ENOMEM;
    md->auxiliary_metadata[0] = exec_staging_any(sg);
    if (md->auxiliary_metadata[0] == NULL)
        return -ENOMEM;
    md->n_auxiliary_metadata = 1;
    if (md->worker == NULL || md->queued_timestamp == NULL || md->worker_start_timestamp == NULL ||
        md->worker_completed_timestamp == NULL || md->input_fetch_start_timestamp == NULL ||
        md->input_fetch_completed_timestamp == NULL || md->execution_start_timestamp == NULL ||
        md->execution_completed_timestamp == NULL || md->output_upload_start_timestamp == NULL ||
        md->output_upload_completed_timestamp == NULL)
        return -ENOMEM;
    return 0;
}

/* Appends a runner's line to the action's stderr file. */
static void exec_note_stderr(const char *path, const char *line)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return;
    if (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0)
        LOG_W("cannot append to %s", path);
    close(fd);
}

/* The runner's one-line verdict on a sandbox result; "" when it ran normally. */
static void exec_describe(const struct sandbox_result *res, const struct sandbox_spec *spec,
                          char *buf, size_t len)
{
    buf[0] = '\0';
    if (res->error[0] != '\0') {
        snprintf(buf, len, "casbox: %s", res->error);
        return;
    }
    switch (res->limit) {
    case SANDBOX_LIMIT_NONE:
        break;
    case SANDBOX_LIMIT_TIMEOUT:
        snprintf(buf, len, "casbox: killed after the timeout of %.3f s",
                 spec->limits.timeout_ms / 1000.0);
        break;
    case SANDBOX_LIMIT_MEMORY:
        snprintf(buf, len,
                 "casbox: killed: memory limit of %" PRIu64
                 " bytes exceeded (execution.memory_bytes)",
                 spec->limits.memory_bytes);
        break;
    case SANDBOX_LIMIT_PIDS:
        snprintf(buf, len, "casbox: process limit of %" PRIu64 " reached (execution.pids_max)",
                 spec->limits.pids_max);
        break;
    case SANDBOX_LIMIT_CPU:
        snprintf(buf, len, "casbox: CPU time limit of %" PRIu64 " s reached",
                 spec->limits.cpu_seconds);
        break;
    case SANDBOX_LIMIT_OUTPUT:
        snprintf(buf, len, "casbox: output truncated at %" PRIu64 " bytes (execution.stdio_bytes)",
                 spec->limits.output_bytes);
        break;
    }
}

/* A wire digest with its own allocations, as action_result_free expects. */
static reapi_digest_t *exec_digest_alloc(const struct cas_digest *dg)
{
    reapi_digest_t *pd = malloc(sizeof(*pd));

    if (pd == NULL)
        return NULL;
    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = malloc(CAS_HASH_HEX + 1);
    if (pd->hash == NULL) {
        free(pd);
        return NULL;
    }
    cas_digest_hex(dg, pd->hash);
    pd->size_bytes = dg->size;
    return pd;
}

/* Stores one of the action's stdio files (absent: the empty blob). */
static int exec_store_stdio(struct cas_store *store, const char *path, reapi_digest_t **out)
{
    struct cas_digest dg = *cas_digest_empty();
    int rc = 0;

    if (access(path, F_OK) == 0)
        rc = cas_store_put_file(store, path, false, &dg);
    if (rc != 0)
        return rc;
    *out = exec_digest_alloc(&dg);
    return *out ? 0 : -ENOMEM;
}

/* An ActionResult with only stdout and stderr, for an action whose outputs
 * were rejected. */
static int exec_result_stdio_only(struct cas_store *store, const struct action_scratch *scratch,
                                  ActionResult **out, struct reapi_status *st)
{
    ActionResult *r = calloc(1, sizeof(*r));
    int rc;

    if (r == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    build__bazel__remote__execution__v2__action_result__init(r);
    rc = exec_store_stdio(store, scratch->stdout_path, &r->stdout_digest);
    if (rc == 0)
        rc = exec_store_stdio(store, scratch->stderr_path, &r->stderr_digest);
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "storing stdout/stderr failed: %s",
                         strerror(-rc));
        action_result_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void exec_scratch_id(char *buf, size_t len)
{
    unsigned char r[12];

    if (RAND_bytes(r, sizeof(r)) != 1)
        memset(r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(r) && 2 * i + 2 < len; i++)
        snprintf(buf + 2 * i, 3, "%02x", r[i]);
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
                             const ActionResult *result)
{
    size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(result);
    uint8_t *buf = malloc(len ? len : 1);
    int rc;

    if (buf == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__action_result__pack(result, buf);
    rc = cas_ac_put(d->store, instance, &act->digest, buf, len);
    free(buf);
    return rc;
}

/* FUSE staging: <mount>/<id> becomes the lower layer; the working directory
 * and output parents go to the upper layer (the lower one is read-only). */
static int exec_stage_fuse(struct casboxd *d, const struct action *act, const char *id,
                           struct action_scratch *scratch, struct action_stage_stats *stats,
                           bool *added, struct reapi_status *st)
{
    char *lower = NULL;
    int rc;

    rc = casfs_tree_add(d->fs, id, &act->input_root_digest);
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "cannot add the input root to %s: %s",
                         casfs_mountpoint(d->fs), strerror(-rc));
        return rc;
    }
    *added = true;
    if (asprintf(&lower, "%s/%s", casfs_mountpoint(d->fs), id) < 0) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    free(scratch->lower);
    scratch->lower = lower;
    return action_stage_output_dirs(act, scratch->upper, stats, st);
}

/* What a run leaves for exec_pipeline_cleanup. */
struct exec_leftovers {
    struct action_scratch scratch;
    char id[32];
    bool tree_added;
};

static void exec_leftovers_remove(struct casboxd *d, struct action_scratch *scratch, const char *id,
                                  bool tree_added)
{
    /* Never waits for readers: a process still reading is left its files. */
    if (tree_added && casfs_tree_remove(d->fs, id, NULL) != 0)
        LOG_W("removing input tree %s from the FUSE mount: not found", id);
    action_scratch_remove(scratch);
}

/* Hands the scratch directory and the FUSE tree to *left, or removes them now
 * when that cannot be allocated. */
static void exec_leftovers_take(struct casboxd *d, struct action_scratch *scratch, const char *id,
                                bool tree_added, struct exec_leftovers **left)
{
    struct exec_leftovers *l = malloc(sizeof(*l));

    *left = l;
    if (l == NULL) {
        exec_leftovers_remove(d, scratch, id, tree_added);
        return;
    }
    l->scratch = *scratch;
    memset(scratch, 0, sizeof(*scratch));
    snprintf(l->id, sizeof(l->id), "%s", id);
    l->tree_added = tree_added;
}

void exec_pipeline_cleanup(struct casboxd *d, struct exec_leftovers *left)
{
    if (left == NULL)
        return;
    exec_leftovers_remove(d, &left->scratch, left->id, left->tree_added);
    free(left);
}

int exec_pipeline_run(struct casboxd *d, const char *instance, struct action *act,
                      struct exec_times *times, uint8_t **response, size_t *response_len,
                      char *log_line, size_t log_len, struct exec_leftovers **left)
{
    struct action_scratch scratch;
    struct action_stage_stats stage_stats;
    struct action_output_stats out_stats;
    struct action_output_limits limits;
    struct cas_ingest_options ingest;
    struct action_spec_notes notes;
    struct sandbox_spec spec;
    struct sandbox_result res;
    struct reapi_status st;
    struct casbox_config cfg; /* this action's snapshot (SIGHUP may change d->cfg) */
    ActionResult *result = NULL;
    struct exec_staging staging;
    char base[4096], exec_blobs[4096], id[32] = "", verdict[512], staged[160];
    bool tree_added = false;
    uint64_t start;
    int rc;

    reapi_status_init(&st);
    casboxd_config_snapshot(d, &cfg);
    sandbox_spec_init(&spec);
    memset(&scratch, 0, sizeof(scratch));
    memset(&res, 0, sizeof(res));
    memset(&stage_stats, 0, sizeof(stage_stats));
    memset(&out_stats, 0, sizeof(out_stats));
    memset(&staging, 0, sizeof(staging));
    staging.fuse = d->fs != NULL;
    verdict[0] = '\0';
    snprintf(base, sizeof(base), "%s/cas/exec", cfg.state_dir);
    snprintf(exec_blobs, sizeof(exec_blobs), "%s/cas/exec-blobs", cfg.state_dir);
    mkdir(base, 0700);
    mkdir(exec_blobs, 0700);

    times->input_fetch_start = clock_real_us();
    exec_scratch_id(id, sizeof(id));
    rc = action_scratch_create(base, id, &scratch);
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "cannot create scratch dir under %s: %s", base,
                         strerror(-rc));
        goto respond;
    }
    start = clock_real_us();
    if (staging.fuse) {
        rc = exec_stage_fuse(d, act, id, &scratch, &stage_stats, &tree_added, &st);
        if (rc != 0)
            goto respond;
        stage_stats.micros = clock_real_us() - start;
    } else {
        rc = exec_copies_stage(&d->copies, d->store, act, scratch.lower, exec_blobs, &stage_stats,
                               &st);
        if (rc != 0)
            goto respond;
    }
    staging.micros = stage_stats.micros;
    times->input_fetch_end = clock_real_us();
    if (action_spec_build(act, &cfg, &scratch, &spec, &notes, &st) != 0)
        goto respond;

    times->execution_start = clock_real_us();
    rc = sandbox_spawner_run(d->spawner, &spec, &res);
    times->execution_end = clock_real_us();
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "sandbox could not be started: %s",
                         res.error[0] ? res.error : strerror(-rc));
        goto respond;
    }
    exec_describe(&res, &spec, verdict, sizeof(verdict));
    if (verdict[0] != '\0')
        exec_note_stderr(scratch.stderr_path, verdict);

    times->output_upload_start = clock_real_us();
    limits.max_bytes = cfg.exec_max_output_bytes;
    limits.max_entries = cfg.exec_max_output_files;
    memset(&ingest, 0, sizeof(ingest));
    ingest.threads = (unsigned)cfg.ingest_threads;
    ingest.queue_depth = (unsigned)cfg.ingest_queue_depth;
    if (cas_ingest_mode_parse(cfg.ingest_mode, &ingest.mode) != 0)
        ingest.mode = CAS_INGEST_AUTO;
    if (action_outputs_collect_opts(d->store, act, &scratch, &limits, &ingest, &result, &out_stats,
                                    &st) != 0) {
        /* Outputs the action got wrong (a limit, a path leaving the exec
         * root) fail the action, not the call: RESOURCE_EXHAUSTED would make
         * Bazel retry it, and the user would not see stdout and stderr. An
         * absolute output symlink keeps the FAILED_PRECONDITION the REAPI
         * prescribes for SymlinkAbsolutePathStrategy DISALLOWED, with the
         * stdio attached. */
        struct reapi_status kept;

        if (st.code != GRPC_STATUS_RESOURCE_EXHAUSTED &&
            st.code != GRPC_STATUS_FAILED_PRECONDITION && st.code != GRPC_STATUS_INVALID_ARGUMENT)
            goto respond;
        snprintf(verdict, sizeof(verdict), "casbox: outputs rejected: %s", st.message);
        exec_note_stderr(scratch.stderr_path, verdict);
        kept = st;
        reapi_status_init(&st);
        if (exec_result_stdio_only(d->store, &scratch, &result, &st) != 0) {
            reapi_status_free(&kept);
            goto respond;
        }
        if (kept.code == GRPC_STATUS_FAILED_PRECONDITION) {
            reapi_status_free(&st);
            st = kept;
        } else {
            reapi_status_free(&kept);
        }
        if (res.exit_code == 0)
            res.exit_code = 1;
    }
    times->output_upload_end = clock_real_us();
    result->exit_code = res.exit_code;
    if (res.limit == SANDBOX_LIMIT_TIMEOUT)
        reapi_status_set(&st, GRPC_STATUS_DEADLINE_EXCEEDED, "%s", verdict);
    times->worker_end = clock_real_us();
    if (staging.fuse)
        casfs_tree_stats(d->fs, id, &staging.fuse_stats);
    if (exec_fill_metadata(result, cfg.worker_name, times, &staging) != 0) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto respond;
    }
    /* Only clean successes are cached: not a run that hit a limit (its
     * output may be truncated) nor one whose outputs were rejected. */
    if (reapi_status_ok(&st) && result->exit_code == 0 && res.limit == SANDBOX_LIMIT_NONE &&
        verdict[0] == '\0' && !act->action->do_not_cache) {
        rc = exec_cache_result(d, instance, act, result);
        if (rc != 0)
            LOG_W("caching the result failed: %s", strerror(-rc));
    }

respond:
    if (times->worker_end == 0)
        times->worker_end = clock_real_us();
    if (tree_added)
        casfs_tree_stats(d->fs, id, &staging.fuse_stats);
    if (staging.fuse)
        snprintf(staged, sizeof(staged),
                 "fuse tree of %" PRIu64 " files in %.1f ms (%" PRIu64 " opened, %" PRIu64
                 " bytes read)",
                 act->input_files, stage_stats.micros / 1000.0, staging.fuse_stats.files_opened,
                 staging.fuse_stats.bytes_read);
    else
        snprintf(staged, sizeof(staged), "staged %" PRIu64 " files in %.1f ms", stage_stats.files,
                 stage_stats.micros / 1000.0);
    snprintf(log_line, log_len,
             "exit %d%s%s, %s, ran %.1f ms, %" PRIu64 " outputs (%" PRIu64 " bytes)%s%s",
             result ? result->exit_code : -1, verdict[0] ? " " : "", verdict, staged,
             (times->execution_end - times->execution_start) / 1000.0,
             out_stats.files + out_stats.symlinks + out_stats.dirs, out_stats.bytes,
             reapi_status_ok(&st) ? "" : "; ", reapi_status_ok(&st) ? "" : st.message);
    rc = exec_response_pack(result, false, &st, verdict[0] ? verdict : st.message, response,
                            response_len);
    action_result_free(result);
    sandbox_spec_free(&spec);
    exec_leftovers_take(d, &scratch, id, tree_added, left);
    reapi_status_free(&st);
    return rc;
}
