/*
 * cli.h - declarations shared by the files of `casbox`, the command-line
 * front end of the sandbox. Not a public header: nothing outside
 * cmd/ includes it.
 *
 * Two programs are built from this directory, so that `casbox run -- CMD`
 * is a small program of the sandbox library and libseccomp (static-pie when
 * possible): loading grpc and its fifty libraries would cost more than the
 * whole sandbox:
 *
 *   casbox         cli_main.c     the subcommand, --help, --version; hands
 *                                 --action over to casbox-replay
 *                  cli_run.c      a local run: scratch directories, signals,
 *                                 sandbox_run, outputs, the exit status
 *                  cli_signal.c   forwarding SIGTERM, SIGINT, ... to the command
 *                  cli_copy.c     copying outputs out of the exec root
 *   casbox-replay  cli_replay*.c  --action (cli_replay.h): fetch an action,
 *                  cli_fetch.c    run it as casboxd would, print and compare
 *                  cli_result.c   its ActionResult; links the daemon's
 *                                 pipeline and the gRPC client (rpc/rpc.h)
 *   both           cli_options.c  `casbox run`'s command line -> struct cli_run
 *                  cli_report.c   exit statuses, the verdict, the --json report
 *                  cli_util.c     scratch directories, sizes, removing trees
 *
 * Like the libraries, functions return 0 or a negative errno and write a
 * one-line reason into an err buffer; only the two modes (cli_run_local,
 * cli_replay_run) and the mains print, one line per problem.
 */
#ifndef CASBOX_CLI_H
#define CASBOX_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sandbox/sandbox.h"

/* Exit statuses of `casbox run` besides the command's own (docs/casbox-run.1). */
#define CLI_EXIT_DIFFERENT 1   /* --compare: the results differ */
#define CLI_EXIT_USAGE     2   /* bad command line */
#define CLI_EXIT_CPU       121 /* --cpu-seconds reached */
#define CLI_EXIT_PIDS      122 /* --pids reached: a fork was refused */
#define CLI_EXIT_MEMORY    123 /* --memory exceeded: the OOM killer acted */
#define CLI_EXIT_TIMEOUT   124 /* --timeout reached (as coreutils timeout) */
#define CLI_EXIT_FAILURE   125 /* casbox itself failed (set-up, copy-back, fetch) */
#define CLI_EXIT_EXEC      127 /* the command could not be executed */

/* The default PATH of the command when neither --env nor --keep-env set one. */
#define CLI_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* --- the command line (cli_options.c) --- */

/* Everything `casbox run` was asked to do. Every pointer is owned. */
struct cli_run {
    /* The parts of the sandbox the flags set: argv, envp, extra mounts, cwd,
     * network, uid0, limits, seccomp. The exec root is added by cli_run.c. */
    struct sandbox_spec spec;
    char *input_dir; /* --input, absolute; NULL for an empty exec root */
    char **outputs;  /* --output, relative to the exec root ("" = all of it) */
    size_t n_outputs;
    char *output_dir; /* --output-dir; NULL = "." when there are outputs */
    char *json_path;  /* --json */
    bool dry_run;     /* print the spec instead of running */
    /* --action mode */
    bool replay;
    char action_hash[65]; /* --action HASH/SIZE: 64 lowercase hex digits */
    int64_t action_size;
    char *remote;      /* --remote URL */
    char *instance;    /* --instance, "" by default */
    char *config_path; /* --config: casboxd's configuration file */
    bool compare;
};

/* cli_options_parse's answer when the command line asks for a run. */
#define CLI_OPTIONS_RUN (-1)

/* Parses `casbox run`'s arguments (argv[0] is "run") into run (freed with
 * cli_run_free in every case). Returns CLI_OPTIONS_RUN, or the status to
 * exit with: 0 after --help, CLI_EXIT_USAGE after printing one line. */
int cli_options_parse(int argc, char **argv, struct cli_run *run);
void cli_run_free(struct cli_run *run);
void cli_options_print_help(FILE *out);

/* Prints "casbox run: <message>" as one line on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A local run (cli_run.c); returns the exit status. */
int cli_run_local(struct cli_run *run);

/* --- small utilities (cli_util.c) --- */

/* Makes ${TMPDIR:-/tmp}/<prefix>.XXXXXX (mode 0700); *out is malloc'd. */
int cli_scratch_create(const char *prefix, char **out, char *err, size_t err_len);
/* "12", "4K", "16M", "1G", "2T" (powers of 1024). -EINVAL on garbage or
 * overflow. */
int cli_parse_size(const char *s, uint64_t *out);

/* --- signals (cli_signal.c) --- */

/* Installs the forwarding handlers for SIGINT, SIGTERM, SIGHUP, SIGQUIT,
 * SIGUSR1 and SIGUSR2: each is passed on to the command (our child's first
 * child), except a terminal's SIGINT/SIGQUIT, which the command's process
 * group received already. A signal that comes before the command runs stops
 * the sandbox. */
int cli_signal_forward_start(void);
/* Restores the default dispositions. */
void cli_signal_forward_stop(void);
/* The signal that stopped the sandbox before its command ran, or 0. */
int cli_signal_stopped_by(void);

/* --- copying outputs back (cli_copy.c) --- */

struct cli_copy_source {
    const char *lower;       /* the input tree, or the exec root itself when upper is NULL */
    const char *upper;       /* the overlay's upper layer, or NULL */
    const char *mount_point; /* an empty directory for the read-only merged view (with upper) */
};

/* Copies paths[i] (relative to the exec root; "" for all of it) from the
 * exec root as the command left it into dest, created as needed. Files keep
 * their permission bits and modification time, symlinks are copied as
 * symlinks, directories recursively; existing files are replaced.
 * copied[i] is false for a path that does not exist. */
int cli_copy_outputs(const struct cli_copy_source *src, char *const *paths, size_t n,
                     const char *dest, bool *copied, char *err, size_t err_len);

/* --- exit statuses and reports (cli_report.c) --- */

/* What `casbox run` exits with for a sandbox result (the table in
 * docs/casbox-run.1): a limit hit has its own status. */
int cli_exit_status(const struct sandbox_result *res);
/* A one-line verdict on a run ("killed after the timeout of 2 s"); "" when
 * the command simply exited or died of a signal. */
void cli_verdict(const struct sandbox_result *res, const struct sandbox_spec *spec, char *buf,
                 size_t len);

struct cli_report {
    const struct sandbox_spec *spec;
    const struct sandbox_result *res; /* NULL when nothing ran */
    int exit_status;                  /* what casbox run exits with */
    const char *error;                /* casbox's own failure, or NULL */
    char *const *outputs;             /* --output paths and whether each was copied */
    const bool *copied;
    size_t n_outputs;
    const char *action; /* --action HASH/SIZE, or NULL */
};

/* Writes the --json report (format in docs/casbox-run.1). */
int cli_report_write(const char *path, const struct cli_report *r, char *err, size_t err_len);

#endif
