/*
 * cli_replay.c - `casbox run --action HASH/SIZE --remote URL`: replay a
 * remote action on this machine, the way casboxd runs it.
 *
 * Everything after the fetch is the daemon's own pipeline (daemon/action.h):
 * action_load validates against a casboxd configuration (the defaults, or
 * --config), action_stage_inputs hardlinks the input root out of a private
 * local CAS, action_spec_build makes the same sandbox spec, and the spawner
 * runs it exactly as it runs the daemon's actions (it must be forked before
 * grpc_init, as in casboxd). action_outputs_collect then builds the
 * ActionResult, which is printed and, with --compare, diffed against the
 * server's cached one (GetActionResult).
 *
 * All of it happens in ${TMPDIR:-/tmp}/casbox-replay.XXXXXX (cas/, exec/,
 * exec-blobs/), removed at the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_replay.h"
#include "config/config.h"
#include "exec/exec.h"
#include "reapi/reapi.h"

#define METHOD_GET_ACTION_RESULT "/build.bazel.remote.execution.v2.ActionCache/GetActionResult"

struct replay {
    struct cli_run *run;
    struct cas_digest action;
    struct casbox_config cfg;
    char *dir; /* the temporary directory */
    struct cas_store *cas;
    struct cli_grpc *grpc;
    struct sandbox_spawner *spawner;
    struct action *act;
    struct action_scratch scratch;
    struct sandbox_spec spec;
    struct sandbox_result res;
    bool ran;
    cli_action_result_t *result;
    char name[CAS_HASH_HEX + 24]; /* the action's digest, for messages */
    char err[1024];
};

static int replay_config(struct replay *r)
{
    char err[512];
    int rc;

    config_init_defaults(&r->cfg);
    if (r->run->config_path != NULL) {
        rc = config_load_file(&r->cfg, r->run->config_path, err, sizeof(err));
        if (rc != 0) {
            snprintf(r->err, sizeof(r->err), "--config: %s", err);
            return rc;
        }
    }
    snprintf(r->cfg.state_dir, sizeof(r->cfg.state_dir), "%s", r->dir);
    rc = config_finish(&r->cfg, err, sizeof(err));
    if (rc != 0)
        snprintf(r->err, sizeof(r->err), "--config: %s", err);
    return rc;
}

static int replay_mkdir(struct replay *r, const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", r->dir, name);
    if (mkdir(path, 0700) != 0) {
        snprintf(r->err, sizeof(r->err), "mkdir %s: %s", path, strerror(errno));
        return -errno;
    }
    return 0;
}

/* Fetch, load, stage, build the spec. */
static int replay_prepare(struct replay *r)
{
    struct action_stage_stats stage;
    struct action_spec_notes notes;
    struct cli_fetch_stats fetched;
    struct reapi_status st;
    char cas_dir[4096], exec_dir[4096], blobs_dir[4096];
    int rc;

    rc = replay_mkdir(r, "cas", cas_dir, sizeof(cas_dir));
    if (rc == 0)
        rc = replay_mkdir(r, "exec", exec_dir, sizeof(exec_dir));
    if (rc == 0)
        rc = replay_mkdir(r, "exec-blobs", blobs_dir, sizeof(blobs_dir));
    if (rc != 0)
        return rc;
    rc = cas_store_open(cas_dir, &(struct cas_store_options){.max_bytes = 0}, &r->cas);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "opening a local CAS in %s: %s", cas_dir, strerror(-rc));
        return rc;
    }
    rc = cli_grpc_open(r->run->remote, &r->grpc, r->err, sizeof(r->err));
    if (rc != 0)
        return rc;
    rc = cli_fetch_action(r->grpc, r->run->instance, r->cas, &r->action, &r->cfg, &r->act, &fetched,
                          r->err, sizeof(r->err));
    if (rc != 0)
        return rc;
    fprintf(stderr, "casbox run: fetched action %s: %" PRIu64 " blobs, %" PRIu64 " bytes from %s\n",
            r->name, fetched.blobs, fetched.bytes, r->run->remote);

    reapi_status_init(&st);
    rc = action_scratch_create(exec_dir, "replay", &r->scratch);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "creating the scratch directory in %s: %s", exec_dir,
                 strerror(-rc));
        goto out;
    }
    rc = action_stage_inputs(r->cas, r->act, r->scratch.lower, blobs_dir, &stage, &st);
    if (rc == 0)
        rc = action_spec_build(r->act, &r->cfg, &r->scratch, &r->spec, &notes, &st);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "action %s: %s: %s", r->name, cli_grpc_code_name(st.code),
                 st.message);
        goto out;
    }
    if (notes.timeout_capped)
        fprintf(stderr,
                "casbox run: Action.timeout capped to execution.max_timeout (%" PRIu64
                " s), as casboxd would\n",
                r->cfg.exec_max_timeout);
out:
    reapi_status_free(&st);
    return rc;
}

static int replay_execute(struct replay *r)
{
    struct action_output_limits limits = {
        .max_bytes = r->cfg.exec_max_output_bytes,
        .max_entries = r->cfg.exec_max_output_files,
    };
    struct reapi_status st;
    char verdict[256];
    int rc;

    rc = sandbox_spawner_run(r->spawner, &r->spec, &r->res);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "the sandbox could not be started: %s",
                 r->res.error[0] ? r->res.error : strerror(-rc));
        return rc;
    }
    r->ran = true;
    if (r->res.error[0] != '\0')
        fprintf(stderr, "casbox run: %s\n", r->res.error);
    cli_verdict(&r->res, &r->spec, verdict, sizeof(verdict));
    if (verdict[0] != '\0')
        fprintf(stderr, "casbox run: %s\n", verdict);
    reapi_status_init(&st);
    rc = action_outputs_collect(r->cas, r->act, &r->scratch, &limits, &r->result, NULL, &st);
    if (rc != 0)
        snprintf(r->err, sizeof(r->err), "collecting the outputs: %s: %s",
                 cli_grpc_code_name(st.code), st.message);
    else
        r->result->exit_code = r->res.exit_code;
    reapi_status_free(&st);
    return rc;
}

/* GetActionResult and the diff; returns the exit status. */
static int replay_compare(struct replay *r)
{
    Build__Bazel__Remote__Execution__V2__GetActionResultRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
    cli_action_result_t *cached = NULL;
    struct reapi_digest_buf d;
    struct cli_grpc_status gst;
    int rc;

    reapi_digest_to_proto(&r->action, &d);
    req.instance_name = r->run->instance;
    req.action_digest = &d.pd;
    rc = cli_grpc_unary(r->grpc, METHOD_GET_ACTION_RESULT, &req.base,
                        &build__bazel__remote__execution__v2__action_result__descriptor,
                        (ProtobufCMessage **)&cached, &gst);
    if (rc != 0) {
        if (gst.code == GRPC_STATUS_NOT_FOUND)
            snprintf(r->err, sizeof(r->err),
                     "--compare: the server has no cached ActionResult for %s (failed actions "
                     "are not cached)",
                     r->name);
        else
            snprintf(r->err, sizeof(r->err), "GetActionResult: %s: %s",
                     cli_grpc_code_name(gst.code), gst.message);
        return CLI_EXIT_FAILURE;
    }
    fputc('\n', stdout);
    rc = cli_result_compare(stdout, r->result, cached) == 0 ? 0 : CLI_EXIT_DIFFERENT;
    protobuf_c_message_free_unpacked(&cached->base, NULL);
    return rc;
}

/* Writes the --json report; returns the exit status (125 instead of 0 when
 * the report could not be written). */
static int replay_report(struct replay *r, int status)
{
    struct cli_report report = {
        .spec = &r->spec,
        .res = r->ran ? &r->res : NULL,
        .exit_status = status,
        .error = r->err,
        .action = r->name,
    };
    char err[512];

    if (cli_report_write(r->run->json_path, &report, err, sizeof(err)) != 0) {
        fprintf(stderr, "casbox run: %s\n", err);
        if (status == 0)
            status = CLI_EXIT_FAILURE;
    }
    return status;
}

int cli_replay_run(struct cli_run *run)
{
    struct replay r;
    int status = CLI_EXIT_FAILURE, rc;

    memset(&r, 0, sizeof(r));
    r.run = run;
    sandbox_spec_init(&r.spec);
    rc = cas_digest_parse(run->action_hash, run->action_size, &r.action);
    if (rc != 0) {
        snprintf(r.err, sizeof(r.err), "--action %s/%" PRId64 ": not a digest", run->action_hash,
                 run->action_size);
        goto out;
    }
    cli_digest_string(&r.action, r.name, sizeof(r.name));
    rc = cli_scratch_create("casbox-replay", &r.dir, r.err, sizeof(r.err));
    if (rc == 0)
        rc = replay_config(&r);
    /* Before grpc_init: the spawner is forked while we are single-threaded. */
    if (rc == 0 && !run->dry_run) {
        rc = sandbox_spawner_start(&r.spawner);
        if (rc != 0)
            snprintf(r.err, sizeof(r.err), "cannot start the sandbox spawner: %s", strerror(-rc));
    }
    if (rc == 0)
        rc = replay_prepare(&r);
    if (rc == 0 && run->dry_run) {
        sandbox_spec_print(&r.spec, stdout);
        status = 0;
        goto out;
    }
    if (rc == 0)
        rc = replay_execute(&r);
    if (rc != 0)
        goto out;
    printf("action: %s\n", r.name);
    cli_result_print(stdout, r.result, r.cas);
    status = cli_exit_status(&r.res);
    if (run->compare)
        status = replay_compare(&r);
    fflush(stdout);
out:
    if (r.err[0] != '\0')
        fprintf(stderr, "casbox run: %s\n", r.err);
    if (run->json_path != NULL && !run->dry_run)
        status = replay_report(&r, status);
    action_result_free(r.result);
    sandbox_spec_free(&r.spec);
    action_scratch_remove(&r.scratch);
    action_free(r.act);
    if (r.spawner != NULL)
        sandbox_spawner_stop(r.spawner);
    cli_grpc_close(r.grpc);
    if (r.cas != NULL)
        cas_store_close(r.cas);
    if (r.dir != NULL) {
        rc = util_remove_tree(r.dir);
        if (rc != 0 && rc != -ENOENT)
            fprintf(stderr, "casbox run: warning: could not remove %s: %s\n", r.dir, strerror(-rc));
    }
    free(r.dir);
    return status;
}
