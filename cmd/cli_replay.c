/*
 * cli_replay.c - `casbox run --action HASH/SIZE --remote URL`: replay a
 * remote action on this machine, the way casboxd runs it.
 *
 * Everything after the fetch is the daemon's own pipeline (exec/exec.h):
 * action_load validates against a casboxd configuration (the defaults, or
 * --config), then exec_run(), the very function casboxd's slots call, stages
 * the input root out of a private local CAS (hardlinks: this process mounts
 * no FUSE filesystem), builds the same sandbox spec, runs it with the
 * spawner exactly as it runs the daemon's actions (it must be forked before
 * grpc_init, as in casboxd) and collects the ActionResult, which is printed
 * and, with --compare, diffed against the server's cached one
 * (GetActionResult).
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
#include "util/util.h"

struct replay {
    struct cli_run *run;
    struct cas_digest action;
    struct casbox_config cfg;
    char *dir; /* the temporary directory */
    struct cas_store *cas;
    struct rpc_client *rpc;
    struct sandbox_spawner *spawner;
    struct action *act;
    struct exec_copies copies;
    struct exec_env env;
    struct exec_outcome outcome;
    char exec_dir[4096], blobs_dir[4096];
    bool copies_live;
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

/* Fetch and load the action into a private CAS. */
static int replay_prepare(struct replay *r)
{
    struct rpc_client_options copt = {0};
    struct cli_fetch_stats fetched;
    char cas_dir[4096], err[512] = "";
    int rc;

    rc = replay_mkdir(r, "cas", cas_dir, sizeof(cas_dir));
    if (rc == 0)
        rc = replay_mkdir(r, "exec", r->exec_dir, sizeof(r->exec_dir));
    if (rc == 0)
        rc = replay_mkdir(r, "exec-blobs", r->blobs_dir, sizeof(r->blobs_dir));
    if (rc != 0)
        return rc;
    rc = cas_store_open(cas_dir, &(struct cas_store_options){.max_bytes = 0}, &r->cas);
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "opening a local CAS in %s: %s", cas_dir, strerror(-rc));
        return rc;
    }
    rpc_client_options_from_env(&copt); /* CASBOX_TLS_CA, CASBOX_TOKEN_FILE, ... */
    rc = rpc_client_open(r->run->remote, &copt, &r->rpc, err, sizeof(err));
    if (rc != 0) {
        if (err[0] != '\0')
            snprintf(r->err, sizeof(r->err), "--remote %s", err);
        else
            snprintf(r->err, sizeof(r->err), "--remote %s: %s", r->run->remote, strerror(-rc));
        return rc;
    }
    rc = cli_fetch_action(r->rpc, r->run->instance, r->cas, &r->action, &r->cfg, &r->act, &fetched,
                          r->err, sizeof(r->err));
    if (rc != 0)
        return rc;
    fprintf(stderr, "casbox run: fetched action %s: %" PRIu64 " blobs, %" PRIu64 " bytes from %s\n",
            r->name, fetched.blobs, fetched.bytes, r->run->remote);
    r->env = (struct exec_env){
        .store = r->cas,
        .spawner = r->spawner,
        .copies = &r->copies,
        .scratch_dir = r->exec_dir,
        .exec_blob_dir = r->blobs_dir,
    };
    return 0;
}

/* exec_run, as casboxd's slots call it (a dry run stops after the spec). */
static int replay_execute(struct replay *r)
{
    struct exec_outcome *o = &r->outcome;
    struct exec_times times = {0};

    times.queued = times.worker_start = clock_real_us();
    exec_run(&r->env, &r->cfg, r->act, r->run->dry_run, &times, o);
    if (o->notes.timeout_capped)
        fprintf(stderr,
                "casbox run: Action.timeout capped to execution.max_timeout (%" PRIu64
                " s), as casboxd would\n",
                r->cfg.exec_max_timeout);
    if (o->ran && o->sandbox.error[0] != '\0')
        fprintf(stderr, "casbox run: %s\n", o->sandbox.error);
    if (o->verdict[0] != '\0')
        fprintf(stderr, "%s\n", o->verdict); /* "casbox: ...", as casboxd says it */
    if (o->result != NULL || (r->run->dry_run && reapi_status_ok(&o->status)))
        return 0;
    snprintf(r->err, sizeof(r->err), "action %s: %s: %s", r->name,
             rpc_status_code_name(o->status.code), o->status.message);
    return -EIO;
}

/* GetActionResult and the diff; returns the exit status. */
static int replay_compare(struct replay *r)
{
    Build__Bazel__Remote__Execution__V2__GetActionResultRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
    ActionResult *cached = NULL;
    struct reapi_digest_buf d;
    struct rpc_client_status gst;
    int rc;

    reapi_digest_to_proto(&r->action, &d);
    req.instance_name = r->run->instance;
    req.action_digest = &d.pd;
    rc = rpc_client_unary(r->rpc, RPC_CLIENT_GET_ACTION_RESULT, &req.base,
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
                     rpc_status_code_name(gst.code), gst.message);
        return CLI_EXIT_FAILURE;
    }
    fputc('\n', stdout);
    rc = cli_result_compare(stdout, r->outcome.result, cached) == 0 ? 0 : CLI_EXIT_DIFFERENT;
    protobuf_c_message_free_unpacked(&cached->base, NULL);
    return rc;
}

/* Writes the --json report; returns the exit status (125 instead of 0 when
 * the report could not be written). */
static int replay_report(struct replay *r, int status)
{
    struct cli_report report = {
        .spec = &r->outcome.spec,
        .res = r->outcome.ran ? &r->outcome.sandbox : NULL,
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
    exec_outcome_init(&r.outcome);
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
    if (rc == 0) {
        exec_copies_init(&r.copies, r.cfg.exec_copy_cache_bytes);
        r.copies_live = true;
        rc = replay_prepare(&r);
    }
    if (rc == 0)
        rc = replay_execute(&r);
    if (rc == 0 && run->dry_run) {
        sandbox_spec_print(&r.outcome.spec, stdout);
        status = 0;
        goto out;
    }
    if (rc != 0)
        goto out;
    printf("action: %s\n", r.name);
    cli_result_print(stdout, r.outcome.result, r.cas);
    status = r.outcome.ran ? cli_exit_status(&r.outcome.sandbox) : CLI_EXIT_FAILURE;
    if (run->compare)
        status = replay_compare(&r);
    fflush(stdout);
out:
    if (r.err[0] != '\0')
        fprintf(stderr, "casbox run: %s\n", r.err);
    if (run->json_path != NULL && !run->dry_run)
        status = replay_report(&r, status);
    exec_leftovers_remove(&r.env, r.outcome.left);
    exec_outcome_free(&r.outcome);
    if (r.copies_live)
        exec_copies_destroy(&r.copies);
    action_free(r.act);
    if (r.spawner != NULL)
        sandbox_spawner_stop(r.spawner);
    rpc_client_close(r.rpc);
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
