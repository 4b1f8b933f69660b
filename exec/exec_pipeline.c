/*
 * exec_pipeline.c - exec_run(), one action from stage to result, the one
 * pipeline that casboxd's slots and casbox-replay both call: stage the
 * inputs, run the command in the sandbox (through the spawner), collect the
 * outputs and fill ExecutedActionMetadata. Caching the result and answering
 * the client are the caller's (daemon/execution_run.c).
 *
 * Staging is by hardlinks (action_stage_inputs) or, when the front end
 * mounted the FUSE filesystem (env->fs), by adding the input root as a tree of that mount
 * and using <mount>/<scratch id> as the overlay's read-only lower layer; the
 * working directory and output parents are then made in the upper layer.
 *
 * What the runner itself has to say (a limit hit, an exec failure) is
 * appended to the action's stderr, where Bazel shows it to the user, and
 * kept in exec_outcome.verdict (casboxd puts it in ExecuteResponse.message).
 *
 * Removing the scratch directory and the FUSE tree is left to
 * exec_leftovers_remove, which the cleaner thread (exec_cleaner.c) calls once
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
#include <sys/statvfs.h>
#include <unistd.h>

#include "action_internal.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

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
    bool upstream;                      /* the store is a cache of an upstream CAS */
    struct cas_fetch_stats fetch;       /* upstream only */
};

#define EXEC_STAGING_TYPE_URL "type.googleapis.com/google.protobuf.Struct"

/* One entry of the Struct: a number or a string. */
struct exec_struct_field {
    Google__Protobuf__Struct__FieldsEntry entry;
    Google__Protobuf__Value value;
};

static void exec_struct_set(struct exec_struct_field *f, const char *key, double number,
                            const char *string)
{
    google__protobuf__struct__fields_entry__init(&f->entry);
    google__protobuf__value__init(&f->value);
    f->entry.key = (char *)key;
    f->entry.value = &f->value;
    if (string != NULL) {
        f->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        f->value.string_value = (char *)string;
    } else {
        f->value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        f->value.number_value = number;
    }
}

/* What staging did, as a google.protobuf.Struct in an Any (docs/fuse.md):
 * {"bytes_read": n, "files_opened": n, "mode": "fuse", "staging_us": n}, the
 * first two for fuse only. A well-known type, so that every client can print
 * it (buildbox's trexe --action-result-json and rexplorer turn results into
 * JSON and fail on an Any whose type they do not know). Keys in byte order:
 * the same counters always pack to the same bytes. */
static Google__Protobuf__Any *exec_staging_any(const struct exec_staging *sg)
{
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    struct exec_struct_field f[8];
    Google__Protobuf__Struct__FieldsEntry *entries[8];
    Google__Protobuf__Any *any = malloc(sizeof(*any));
    size_t n = 0;

    if (any == NULL)
        return NULL;
    google__protobuf__any__init(any);
    if (sg->fuse)
        exec_struct_set(&f[n++], "bytes_read", (double)sg->fuse_stats.bytes_read, NULL);
    /* With an upstream CAS (docs/shared-storage.md): input blobs fetched
     * from it for this action, and those found in the local cache. */
    if (sg->upstream) {
        exec_struct_set(&f[n++], "fetch_failures", (double)sg->fetch.failures, NULL);
        exec_struct_set(&f[n++], "fetched_blobs", (double)sg->fetch.fetched_blobs, NULL);
        exec_struct_set(&f[n++], "fetched_bytes", (double)sg->fetch.fetched_bytes, NULL);
    }
    if (sg->fuse)
        exec_struct_set(&f[n++], "files_opened", (double)sg->fuse_stats.files_opened, NULL);
    if (sg->upstream)
        exec_struct_set(&f[n++], "local_hits", (double)sg->fetch.local_hits, NULL);
    exec_struct_set(&f[n++], "mode", 0, sg->fuse ? "fuse" : "hardlink");
    exec_struct_set(&f[n++], "staging_us", (double)sg->micros, NULL);
    for (size_t i = 0; i < n; i++)
        entries[i] = &f[i].entry;
    st.n_fields = n;
    st.fields = entries;
    any->type_url = strdup(EXEC_STAGING_TYPE_URL);
    any->value.len = google__protobuf__struct__get_packed_size(&st);
    any->value.data = malloc(any->value.len);
    if (any->type_url == NULL || any->value.data == NULL) {
        free(any->type_url);
        free(any->value.data);
        free(any);
        return NULL;
    }
    google__protobuf__struct__pack(&st, any->value.data);
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

/* Stores one of the action's stdio files (absent: the empty blob). */
static int exec_store_stdio(struct cas_store *store, const char *path, Digest **out)
{
    struct cas_digest dg = *cas_digest_empty();
    int rc = 0;

    if (access(path, F_OK) == 0)
        rc = cas_store_put_file(store, path, false, &dg);
    if (rc != 0)
        return rc;
    *out = action_digest_proto_new(&dg);
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
        reapi_status_set(st,
                         rc == -ENOSPC || rc == -EDQUOT ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                        : GRPC_STATUS_INTERNAL,
                         "storing stdout/stderr failed: %s", strerror(-rc));
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

/* FUSE staging: <mount>/<id> becomes the lower layer; the working directory
 * and output parents go to the upper layer (the lower one is read-only). */
static int exec_stage_fuse(const struct exec_env *env, const struct action *act, const char *id,
                           struct action_scratch *scratch, struct action_stage_stats *stats,
                           bool *added, struct reapi_status *st)
{
    char *lower = NULL;
    int rc;

    rc = casfs_tree_add(env->fs, id, &act->input_root_digest);
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "cannot add the input root to %s: %s",
                         casfs_mountpoint(env->fs), strerror(-rc));
        return rc;
    }
    *added = true;
    if (asprintf(&lower, "%s/%s", casfs_mountpoint(env->fs), id) < 0) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    free(scratch->lower);
    scratch->lower = lower;
    return action_stage_output_dirs(act, scratch->upper, stats, st);
}

/* What a run leaves for exec_leftovers_remove. */
struct exec_leftovers {
    struct action_scratch scratch;
    char id[32];
    bool tree_added;
};

static void exec_leftovers_clear(const struct exec_env *env, struct exec_leftovers *l)
{
    /* Never waits for readers: a process still reading is left its files. */
    if (l->tree_added && casfs_tree_remove(env->fs, l->id, NULL) != 0)
        LOG_W("removing input tree %s from the FUSE mount: not found", l->id);
    l->tree_added = false;
    action_scratch_remove(&l->scratch);
}

void exec_leftovers_remove(const struct exec_env *env, struct exec_leftovers *left)
{
    if (left == NULL)
        return;
    exec_leftovers_clear(env, left);
    free(left);
    /* Its scratch dir may have filled the disk: the store's limit follows
     * the free space now, not within the second. */
    cas_store_space_changed(env->store);
}

void exec_outcome_init(struct exec_outcome *o)
{
    memset(o, 0, sizeof(*o));
    reapi_status_init(&o->status);
    sandbox_spec_init(&o->spec);
}

void exec_outcome_free(struct exec_outcome *o)
{
    action_result_free(o->result);
    o->result = NULL;
    sandbox_spec_free(&o->spec);
    reapi_status_free(&o->status);
}

/* Scratch directory and staging: lower (and upper) ready for the spec. */
static int exec_run_stage(const struct exec_env *env, const struct action *act,
                          struct exec_leftovers *l, struct exec_outcome *out)
{
    struct action_scratch *scratch = &l->scratch;
    uint64_t start;
    int rc;

    exec_scratch_id(l->id, sizeof(l->id));
    rc = action_scratch_create(env->scratch_dir, l->id, scratch);
    /* The scratch dir shares the store's disk: make room once on ENOSPC. */
    if ((rc == -ENOSPC || rc == -EDQUOT) && cas_store_make_room(env->store, 1 << 20) == 0)
        rc = action_scratch_create(env->scratch_dir, l->id, scratch);
    if (rc != 0) {
        reapi_status_set(&out->status,
                         rc == -ENOSPC || rc == -EDQUOT ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                        : GRPC_STATUS_INTERNAL,
                         "cannot create scratch dir under %s: %s", env->scratch_dir, strerror(-rc));
        return rc;
    }
    if (!out->fuse)
        return exec_copies_stage(env->copies, env->store, act, scratch->lower, env->exec_blob_dir,
                                 &out->fetch, &out->stage, &out->status);
    start = clock_real_us();
    rc = exec_stage_fuse(env, act, l->id, scratch, &out->stage, &l->tree_added, &out->status);
    out->stage.micros = clock_real_us() - start;
    return rc;
}

/* Outputs the action got wrong (a limit, a path leaving the exec root) fail
 * the action, not the call: RESOURCE_EXHAUSTED would make Bazel retry it,
 * and the user would not see stdout and stderr. An output of the wrong type
 * (a directory named in output_files, a fifo) keeps the FAILED_PRECONDITION
 * the REAPI prescribes, with the stdio attached. */
static int exec_run_reject_outputs(const struct exec_env *env, const struct action_scratch *scratch,
                                   struct exec_outcome *out)
{
    struct reapi_status kept;
    grpc_status_code code = out->status.code;

    if (code != GRPC_STATUS_RESOURCE_EXHAUSTED && code != GRPC_STATUS_FAILED_PRECONDITION &&
        code != GRPC_STATUS_INVALID_ARGUMENT)
        return -EIO;
    snprintf(out->verdict, sizeof(out->verdict), "casbox: outputs rejected: %s",
             out->status.message);
    exec_note_stderr(scratch->stderr_path, out->verdict);
    kept = out->status;
    reapi_status_init(&out->status);
    if (exec_result_stdio_only(env->store, scratch, &out->result, &out->status) != 0) {
        reapi_status_free(&kept);
        return -EIO;
    }
    if (kept.code == GRPC_STATUS_FAILED_PRECONDITION) {
        reapi_status_free(&out->status);
        out->status = kept;
    } else {
        reapi_status_free(&kept);
    }
    if (out->sandbox.exit_code == 0)
        out->sandbox.exit_code = 1;
    return 0;
}

/* The action filled the disk (exec_check_disk): its outputs may be cut
 * short, so none is stored; the result carries stdout and stderr (cut short
 * too, but what there is helps) and the status stays RESOURCE_EXHAUSTED. */
static int exec_run_disk_full(const struct exec_env *env, const struct action_scratch *scratch,
                              struct exec_outcome *out)
{
    struct reapi_status kept = out->status;

    int rc;

    reapi_status_init(&out->status);
    rc = exec_result_stdio_only(env->store, scratch, &out->result, &out->status);
    reapi_status_free(&out->status);
    out->status = kept; /* the full disk is the news, not what followed from it */
    return rc == 0 ? 0 : -EIO;
}

/* Output collection with cfg's limits and ingestion options. */
static int exec_run_collect(const struct exec_env *env, const struct casbox_config *cfg,
                            const struct action *act, const struct action_scratch *scratch,
                            struct exec_outcome *out)
{
    struct action_output_limits limits = {
        .max_bytes = cfg->exec_max_output_bytes,
        .max_entries = cfg->exec_max_output_files,
    };
    struct cas_ingest_options ingest;

    if (out->status.code == GRPC_STATUS_RESOURCE_EXHAUSTED)
        return exec_run_disk_full(env, scratch, out); /* set by exec_check_disk */
    memset(&ingest, 0, sizeof(ingest));
    ingest.threads = (unsigned)cfg->ingest_threads;
    ingest.queue_depth = (unsigned)cfg->ingest_queue_depth;
    if (cas_ingest_mode_parse(cfg->ingest_mode, &ingest.mode) != 0)
        ingest.mode = CAS_INGEST_AUTO;
    if (action_outputs_collect_opts(env->store, act, scratch, &limits, &ingest, &out->result,
                                    &out->outputs, &out->status) == 0)
        return 0;
    return exec_run_reject_outputs(env, scratch, out);
}

/* Free bytes under which the scratch filesystem counts as filled by the
 * action: the CAS keeps [cas] disk_headroom free (by default 1 GiB or 5%), so only
 * writes that met ENOSPC leave less. */
#define EXEC_DISK_FULL_BYTES (1024 * 1024)

/* The action filled the filesystem of its scratch dir (the state dir's):
 * it failed, or casbox's stdout/stderr files met ENOSPC, with less than
 * EXEC_DISK_FULL_BYTES left, so its writes met ENOSPC and its outputs
 * and stdio may be cut short. That is RESOURCE_EXHAUSTED naming the
 * filesystem, never a success with truncated files (and never cached). */
static void exec_check_disk(const struct action_scratch *scratch, struct exec_outcome *out)
{
    struct statvfs sv;
    uint64_t avail, total;

    /* A clean run (exit 0, stdio whole) is left alone: on a disk the CAS
     * filled to the last block ([cas] disk_headroom = 0) it met no ENOSPC. */
    if (out->sandbox.exit_code == 0 && out->sandbox.error[0] == '\0' &&
        !out->sandbox.stdout_truncated && !out->sandbox.stderr_truncated)
        return;
    if (statvfs(scratch->root, &sv) != 0)
        return; /* cannot tell; the collection's writes will */
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    total = (uint64_t)sv.f_blocks * sv.f_frsize;
    if (avail >= EXEC_DISK_FULL_BYTES)
        return;
    snprintf(out->verdict, sizeof(out->verdict),
             "casbox: the action filled the filesystem holding %s (%" PRIu64
             " bytes free of %" PRIu64
             "): its outputs, stdout and stderr may be cut short; free space there or lower "
             "[cas] max_bytes",
             scratch->root, avail, total);
    reapi_status_set(&out->status, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", out->verdict);
}

static void exec_note_step(const struct exec_times *times, enum exec_step step)
{
    if (times->on_step != NULL)
        times->on_step(times->on_step_ctx, step);
}

/* The sandbox run and the verdict. */
static int exec_run_sandbox(const struct exec_env *env, const struct action_scratch *scratch,
                            const struct sandbox_cancel *cancel, struct exec_times *times,
                            struct exec_outcome *out)
{
    int rc;

    exec_note_step(times, EXEC_STEP_EXECUTION);
    times->execution_start = clock_real_us();
    rc = sandbox_spawner_run_cancellable(env->spawner, &out->spec, cancel, &out->sandbox);
    times->execution_end = clock_real_us();
    /* Killed on the caller's request: no outputs are worth collecting. */
    if (cancel != NULL && sandbox_cancel_fired(cancel)) {
        reapi_status_set(&out->status, GRPC_STATUS_CANCELLED, "the run was cancelled");
        return -ECANCELED;
    }
    if (rc != 0) {
        reapi_status_set(&out->status, GRPC_STATUS_INTERNAL, "sandbox could not be started: %s",
                         out->sandbox.error[0] ? out->sandbox.error : strerror(-rc));
        return rc;
    }
    out->ran = true;
    exec_describe(&out->sandbox, &out->spec, out->verdict, sizeof(out->verdict));
    exec_check_disk(scratch, out);
    if (out->verdict[0] != '\0')
        exec_note_stderr(scratch->stderr_path, out->verdict);
    return 0;
}

/* Exit code, status, metadata and whether the result may be cached. */
static int exec_run_finish(const struct casbox_config *cfg, const struct action *act,
                           struct exec_times *times, struct exec_outcome *out)
{
    struct exec_staging staging = {
        .fuse = out->fuse,
        .micros = out->stage.micros,
        .upstream = out->upstream,
        .fetch = out->fetch_stats,
    };

    out->result->exit_code = out->sandbox.exit_code;
    if (out->sandbox.limit == SANDBOX_LIMIT_TIMEOUT)
        reapi_status_set(&out->status, GRPC_STATUS_DEADLINE_EXCEEDED, "%s", out->verdict);
    times->worker_end = clock_real_us();
    staging.fuse_stats = out->fuse_stats;
    /* An input that could not be fetched while the action ran: its result
     * cannot be trusted (the client re-uploads a MISSING blob and retries). */
    action_fetch_outcome(&out->fetch_stats, &out->status);
    if (exec_fill_metadata(out->result, cfg->worker_name, times, &staging) != 0) {
        reapi_status_set(&out->status, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    /* Only clean successes are cached: not a run that hit a limit (its
     * output may be truncated) nor one whose outputs were rejected. */
    out->cacheable = reapi_status_ok(&out->status) && out->result->exit_code == 0 &&
                     out->sandbox.limit == SANDBOX_LIMIT_NONE && out->verdict[0] == '\0' &&
                     !act->action->do_not_cache;
    return 0;
}

/* out->fetch_stats: what hardlink staging counted plus what the FUSE
 * tree's opens counted. */
static void exec_run_fetch_stats(struct exec_outcome *out)
{
    struct cas_fetch_stats *fs = &out->fetch_stats;
    const struct cas_fetch_stats *tree = &out->fuse_stats.fetch;

    cas_fetch_counters_read(&out->fetch, fs);
    fs->local_hits += tree->local_hits;
    fs->fetched_blobs += tree->fetched_blobs;
    fs->fetched_bytes += tree->fetched_bytes;
    fs->failures += tree->failures;
    if (fs->first_error == 0 && tree->first_error != 0) {
        fs->first_error = tree->first_error;
        fs->first_digest = tree->first_digest;
        snprintf(fs->reason, sizeof(fs->reason), "%s", tree->reason);
    }
}

int exec_run(const struct exec_env *env, const struct casbox_config *cfg, const struct action *act,
             bool dry_run, struct exec_times *times, struct exec_outcome *out)
{
    return exec_run_cancellable(env, cfg, act, dry_run, NULL, times, out);
}

int exec_run_cancellable(const struct exec_env *env, const struct casbox_config *cfg,
                         const struct action *act, bool dry_run,
                         const struct sandbox_cancel *cancel, struct exec_times *times,
                         struct exec_outcome *out)
{
    struct exec_leftovers *l = calloc(1, sizeof(*l));
    int rc;

    out->fuse = env->fs != NULL;
    out->upstream = cas_store_has_upstream(env->store);
    out->left = l;
    if (l == NULL) {
        reapi_status_set(&out->status, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    /* The inputs stay in the store until the action ends, also those that
     * are fetched while it runs. */
    rc = action_pin_inputs(env->store, act);
    if (rc != 0) {
        reapi_status_set(&out->status, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "out of memory pinning the inputs");
        return rc;
    }
    exec_note_step(times, EXEC_STEP_INPUT_FETCH);
    times->input_fetch_start = clock_real_us();
    rc = exec_run_stage(env, act, l, out);
    if (rc == 0) {
        times->input_fetch_end = clock_real_us();
        rc = action_spec_build(act, cfg, &l->scratch, &out->spec, &out->notes, &out->status);
    }
    if (rc != 0 || dry_run)
        goto out;
    rc = exec_run_sandbox(env, &l->scratch, cancel, times, out);
    if (rc != 0)
        goto out;
    exec_note_step(times, EXEC_STEP_OUTPUT_UPLOAD);
    times->output_upload_start = clock_real_us();
    rc = exec_run_collect(env, cfg, act, &l->scratch, out);
    times->output_upload_end = clock_real_us();
    if (l->tree_added)
        casfs_tree_stats(env->fs, l->id, &out->fuse_stats);
    exec_run_fetch_stats(out);
    if (rc == 0)
        rc = exec_run_finish(cfg, act, times, out);
out:
    action_unpin_inputs(env->store, act);
    if (times->worker_end == 0)
        times->worker_end = clock_real_us();
    if (l->tree_added)
        casfs_tree_stats(env->fs, l->id, &out->fuse_stats);
    exec_run_fetch_stats(out);
    if (rc == 0 && !reapi_status_ok(&out->status))
        rc = -EIO;
    return rc;
}
