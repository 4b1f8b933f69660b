/*
 * cli_run.c - `casbox run -- COMMAND`: the local run.
 *
 * The spec from the command line gets its exec root: with --input, an
 * overlay of DIR (never modified) under a scratch upper/work pair; with
 * outputs but no input, a scratch directory bound read-write; otherwise an
 * empty tmpfs, which costs nothing to set up or tear down. Then, in order:
 * signal forwarding on, sandbox_run (this process is single-threaded, as it
 * requires), forwarding off, outputs copied back, the verdict and the --json
 * report, the scratch directory removed.
 *
 * stdin, stdout and stderr are the caller's (spec stdin_null false, no
 * stdout/stderr files), so pipes and a terminal pass straight through; the
 * command is in our process group, so a terminal's Ctrl-C reaches it directly.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cli.h"
#include "util/util.h"

/* Scratch layout: <scratch>/upper, work (the overlay's), merged (mount
 * point of the copy-back view), root (the exec root when there is no
 * input). */
struct run_scratch {
    char *dir;
    char *upper;
    char *work;
    char *merged;
    char *root;
};

static int run_scratch_subdir(const char *dir, const char *name, char **out, char *err,
                              size_t err_len)
{
    if (asprintf(out, "%s/%s", dir, name) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    if (mkdir(*out, 0700) != 0) {
        int rc = -errno;

        snprintf(err, err_len, "mkdir %s: %s", *out, strerror(-rc));
        return rc;
    }
    return 0;
}

/* Fills the spec's exec root for the run's input and outputs. */
static int run_prepare_exec_root(struct cli_run *run, struct run_scratch *sc, char *err,
                                 size_t err_len)
{
    struct sandbox_spec *spec = &run->spec;
    struct stat st;
    int rc;

    memset(&st, 0, sizeof(st));
    if (run->input_dir != NULL) {
        rc = stat(run->input_dir, &st) != 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
        if (rc != 0) {
            snprintf(err, err_len, "--input %s: %s", run->input_dir, strerror(-rc));
            return rc;
        }
    }
    if (run->input_dir == NULL && run->n_outputs == 0)
        return 0; /* an empty tmpfs */
    if (run->dry_run) {
        /* What the run would use, without creating anything. */
        rc = sandbox_spec_set_string(&spec->lower_dir,
                                     run->input_dir ? run->input_dir : "<scratch>/root");
        if (rc == 0 && run->input_dir != NULL)
            rc = sandbox_spec_set_string(&spec->upper_dir, "<scratch>/upper");
        if (rc == 0 && run->input_dir != NULL)
            rc = sandbox_spec_set_string(&spec->work_dir, "<scratch>/work");
        return rc;
    }
    rc = cli_scratch_create("casbox-run", &sc->dir, err, err_len);
    if (rc != 0)
        return rc;
    if (run->input_dir == NULL) {
        rc = run_scratch_subdir(sc->dir, "root", &sc->root, err, err_len);
        if (rc == 0 && chmod(sc->root, 0755) != 0)
            rc = -errno;
        if (rc == 0)
            rc = sandbox_spec_set_string(&spec->lower_dir, sc->root);
        return rc;
    }
    rc = run_scratch_subdir(sc->dir, "upper", &sc->upper, err, err_len);
    /* The overlay's root takes the upper layer's mode: make it DIR's. */
    if (rc == 0 && chmod(sc->upper, st.st_mode & 07777) != 0) {
        rc = -errno;
        snprintf(err, err_len, "chmod %s: %s", sc->upper, strerror(-rc));
    }
    if (rc == 0)
        rc = run_scratch_subdir(sc->dir, "work", &sc->work, err, err_len);
    if (rc == 0 && run->n_outputs > 0)
        rc = run_scratch_subdir(sc->dir, "merged", &sc->merged, err, err_len);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->lower_dir, run->input_dir);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->upper_dir, sc->upper);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->work_dir, sc->work);
    return rc;
}

static void run_scratch_remove(struct run_scratch *sc)
{
    int rc;

    if (sc->dir != NULL) {
        rc = util_remove_tree(sc->dir);
        if (rc != 0 && rc != -ENOENT)
            cli_error("warning: could not remove the scratch directory %s: %s", sc->dir,
                      strerror(-rc));
    }
    free(sc->dir);
    free(sc->upper);
    free(sc->work);
    free(sc->merged);
    free(sc->root);
    memset(sc, 0, sizeof(*sc));
}

static void run_print_dry(const struct cli_run *run)
{
    sandbox_spec_print(&run->spec, stdout);
    for (size_t i = 0; i < run->n_outputs; i++)
        printf("output: \"%s\"\n", run->outputs[i]);
    if (run->output_dir != NULL)
        printf("output_dir: \"%s\"\n", run->output_dir);
}

int cli_run_local(struct cli_run *run)
{
    struct run_scratch sc;
    struct sandbox_result res;
    pid_t unreaped = -1;
    const struct sandbox_run_options opts = {.unreaped = &unreaped};
    struct cli_report report;
    bool ran = false, *copied = NULL;
    char err[512] = "", verdict[256];
    int status = CLI_EXIT_FAILURE, stopped_by, rc;

    memset(&sc, 0, sizeof(sc));
    memset(&res, 0, sizeof(res));
    copied = calloc(run->n_outputs ? run->n_outputs : 1, sizeof(*copied));
    if (copied == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto out;
    }
    rc = run_prepare_exec_root(run, &sc, err, sizeof(err));
    if (rc != 0) {
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "preparing the exec root: %s", strerror(-rc));
        goto out;
    }
    if (run->dry_run) {
        run_print_dry(run);
        status = 0;
        goto out;
    }

    rc = cli_signal_forward_start();
    if (rc != 0) {
        snprintf(err, sizeof(err), "sigaction: %s", strerror(-rc));
        goto out;
    }
    /* pid 1 reports once everything it ran is gone; its exit and the
     * namespaces' teardown then go on while we finish (or exit). */
    rc = sandbox_run_with(&run->spec, &res, &opts);
    cli_signal_forward_stop();
    stopped_by = cli_signal_stopped_by();
    if (rc != 0) {
        snprintf(err, sizeof(err), "%s", res.error[0] ? res.error : strerror(-rc));
        goto out;
    }
    ran = true;
    status = cli_exit_status(&res);
    if (stopped_by != 0 && res.limit == SANDBOX_LIMIT_NONE && res.term_signal == SIGKILL) {
        /* pid 1 was killed before the command started: report the signal. */
        status = 128 + stopped_by;
        snprintf(err, sizeof(err), "stopped by SIG%s before the command started",
                 sigabbrev_np(stopped_by) ? sigabbrev_np(stopped_by) : "?");
    } else if (res.error[0] != '\0' &&
               (res.exit_code == CLI_EXIT_FAILURE || res.exit_code == CLI_EXIT_EXEC)) {
        snprintf(err, sizeof(err), "%s", res.error);
    } else if (res.error[0] != '\0') {
        cli_error("warning: %s", res.error);
    }
    cli_verdict(&res, &run->spec, verdict, sizeof(verdict));
    if (verdict[0] != '\0')
        cli_error("%s", verdict);

    if (run->n_outputs > 0 && err[0] == '\0') {
        struct cli_copy_source src = {
            .lower = run->input_dir != NULL ? run->input_dir : sc.root,
            .upper = sc.upper,
            .mount_point = sc.merged,
        };

        rc = cli_copy_outputs(&src, run->outputs, run->n_outputs, run->output_dir, copied, err,
                              sizeof(err));
        if (rc != 0)
            status = CLI_EXIT_FAILURE;
        for (size_t i = 0; rc == 0 && i < run->n_outputs; i++)
            if (!copied[i])
                cli_error("warning: output %s was not produced", run->outputs[i]);
    }
out:
    if (err[0] != '\0')
        cli_error("%s", err);
    if (run->json_path != NULL && !run->dry_run) {
        char json_err[512];

        memset(&report, 0, sizeof(report));
        report.spec = &run->spec;
        report.res = ran ? &res : NULL;
        report.exit_status = status;
        report.error = err;
        report.outputs = run->outputs;
        report.copied = copied;
        report.n_outputs = run->n_outputs;
        if (cli_report_write(run->json_path, &report, json_err, sizeof(json_err)) != 0) {
            cli_error("%s", json_err);
            if (status == 0)
                status = CLI_EXIT_FAILURE;
        }
    }
    /* The overlay over the scratch directory lives until pid 1 is gone. */
    if (unreaped > 0 && sc.dir != NULL)
        while (waitpid(unreaped, NULL, 0) < 0 && errno == EINTR)
            ;
    run_scratch_remove(&sc);
    free(copied);
    return status;
}
