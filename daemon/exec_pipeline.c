/*
 * exec_pipeline.c - one action from a slot thread's point of view: stage the
 * inputs, run the command in the sandbox (through the spawner), collect the
 * outputs, fill ExecutedActionMetadata, cache the result, and pack the
 * ExecuteResponse that the operation's watchers receive.
 *
 * What the runner itself has to say (a limit hit, an exec failure) is
 * appended to the action's stderr, where Bazel shows it to the user, and to
 * ExecuteResponse.message.
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
#include "exec.h"
#include "log.h"
#include "google/protobuf/timestamp.pb-c.h"

typedef Build__Bazel__Remote__Execution__V2__ActionResult ActionResult;
typedef Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata ExecutedActionMetadata;

int exec_action_load(struct casboxd *d, const char *instance, const struct cas_digest *digest,
                     struct action **out, struct reapi_status *st)
{
    uint64_t max_ms = d->cfg.exec_max_timeout * 1000u;
    int rc;

    (void)instance;
    rc = action_load(d->store, digest, &d->cfg, out, st);
    if (rc != 0)
        return rc;
    /* The REAPI: a timeout above the server's maximum MUST be rejected. */
    if ((*out)->timeout_ms > max_ms) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Action.timeout of %.3f s exceeds the server's maximum of %" PRIu64
                         " s (execution.max_timeout)",
                         (*out)->timeout_ms / 1000.0, d->cfg.exec_max_timeout);
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

/* Fills result->execution_metadata; every field its own allocation, as
 * action_result_free expects. */
static int exec_fill_metadata(ActionResult *result, const char *worker, const struct exec_times *t)
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

int exec_pipeline_run(struct casboxd *d, const char *instance, struct action *act,
                      struct exec_times *times, uint8_t **response, size_t *response_len,
                      char *log_line, size_t log_len)
{
    struct action_scratch scratch;
    struct action_stage_stats stage_stats;
    struct action_output_stats out_stats;
    struct action_output_limits limits;
    struct action_spec_notes notes;
    struct sandbox_spec spec;
    struct sandbox_result res;
    struct reapi_status st;
    ActionResult *result = NULL;
    char base[4096], exec_blobs[4096], id[32] = "", verdict[512];
    int rc;

    reapi_status_init(&st);
    sandbox_spec_init(&spec);
    memset(&scratch, 0, sizeof(scratch));
    memset(&res, 0, sizeof(res));
    memset(&stage_stats, 0, sizeof(stage_stats));
    memset(&out_stats, 0, sizeof(out_stats));
    verdict[0] = '\0';
    snprintf(base, sizeof(base), "%s/cas/exec", d->cfg.state_dir);
    snprintf(exec_blobs, sizeof(exec_blobs), "%s/cas/exec-blobs", d->cfg.state_dir);
    mkdir(base, 0700);
    mkdir(exec_blobs, 0700);

    times->input_fetch_start = exec_now_us();
    exec_scratch_id(id, sizeof(id));
    rc = action_scratch_create(base, id, &scratch);
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "cannot create scratch dir under %s: %s", base,
                         strerror(-rc));
        goto respond;
    }
    if (action_stage_inputs(d->store, act, scratch.lower, exec_blobs, &stage_stats, &st) != 0)
        goto respond;
    times->input_fetch_end = exec_now_us();
    if (action_spec_build(act, &d->cfg, &scratch, &spec, &notes, &st) != 0)
        goto respond;

    times->execution_start = exec_now_us();
    rc = sandbox_spawner_run(d->spawner, &spec, &res);
    times->execution_end = exec_now_us();
    if (rc != 0) {
        reapi_status_set(&st, GRPC_STATUS_INTERNAL, "sandbox could not be started: %s",
                         res.error[0] ? res.error : strerror(-rc));
        goto respond;
    }
    exec_describe(&res, &spec, verdict, sizeof(verdict));
    if (verdict[0] != '\0')
        exec_note_stderr(scratch.stderr_path, verdict);

    times->output_upload_start = exec_now_us();
    limits.max_bytes = d->cfg.exec_max_output_bytes;
    limits.max_entries = d->cfg.exec_max_output_files;
    if (action_outputs_collect(d->store, act, &scratch, &limits, &result, &out_stats, &st) != 0)
        goto respond;
    times->output_upload_end = exec_now_us();
    result->exit_code = res.exit_code;
    if (res.limit == SANDBOX_LIMIT_TIMEOUT)
        reapi_status_set(&st, GRPC_STATUS_DEADLINE_EXCEEDED, "%s", verdict);
    times->worker_end = exec_now_us();
    if (exec_fill_metadata(result, d->cfg.worker_name, times) != 0) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto respond;
    }
    if (reapi_status_ok(&st) && result->exit_code == 0 && !act->action->do_not_cache) {
        rc = exec_cache_result(d, instance, act, result);
        if (rc != 0)
            LOG_W("caching the result failed: %s", strerror(-rc));
    }

respond:
    if (times->worker_end == 0)
        times->worker_end = exec_now_us();
    snprintf(log_line, log_len,
             "exit %d%s%s, staged %" PRIu64 " files in %.1f ms, ran %.1f ms, %" PRIu64
             " outputs (%" PRIu64 " bytes)%s%s",
             result ? result->exit_code : -1, verdict[0] ? " " : "", verdict, stage_stats.files,
             stage_stats.micros / 1000.0, (times->execution_end - times->execution_start) / 1000.0,
             out_stats.files + out_stats.symlinks + out_stats.dirs, out_stats.bytes,
             reapi_status_ok(&st) ? "" : "; ", reapi_status_ok(&st) ? "" : st.message);
    rc = exec_response_pack(result, false, &st, verdict[0] ? verdict : st.message, response,
                            response_len);
    action_result_free(result);
    sandbox_spec_free(&spec);
    action_scratch_remove(&scratch);
    reapi_status_free(&st);
    return rc;
}
