/*
 * cli_main.c - `casbox`, the command-line front end of the sandbox: picks
 * the subcommand and answers --help and --version. Today there is one
 * subcommand, `casbox run` (docs/casbox-run.1).
 *
 * `casbox run --action` is served by a second program, casbox-replay, which
 * carries grpc and the daemon's pipeline; this one hands the command line
 * over to it unchanged (execv), so that a local run stays light.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define MAIN_REPLAY "casbox-replay"

static void main_print_help(FILE *out)
{
    fputs("Usage: casbox COMMAND [OPTIONS]\n"
          "\n"
          "Commands:\n"
          "  run      run a command in casbox's hermetic sandbox, or replay a remote\n"
          "           action locally (casbox run --help)\n"
          "  fleet    a fleet scheduler's queues, workers and drains (casbox fleet --help)\n"
          "  help     this text, or `casbox help run`\n"
          "\n"
          "Options:\n"
          "  -h, --help     this text\n"
          "  --version      print casbox's version\n"
          "\n"
          "Manual: man casbox-run (docs/casbox-run.1).\n",
          out);
}

/* Runs casbox-replay with our own arguments: $CASBOX_REPLAY, else beside
 * this program, else in ../libexec/casbox/ (a packaged layout). Returns
 * only on failure. */
static int main_exec_replay(char **argv)
{
    char self[PATH_MAX], path[PATH_MAX];
    const char *env = getenv("CASBOX_REPLAY");
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (env != NULL && env[0] != '\0') {
        execv(env, argv);
        cli_error("--action: cannot run CASBOX_REPLAY=%s: %s", env, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    if (n <= 0 || (slash = memrchr(self, '/', (size_t)n)) == NULL) {
        cli_error("--action: cannot find this program's directory: %s", strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    *slash = '\0';
    snprintf(path, sizeof(path), "%s/" MAIN_REPLAY, self);
    execv(path, argv);
    snprintf(path, sizeof(path), "%s/../libexec/casbox/" MAIN_REPLAY, self);
    execv(path, argv);
    cli_error("--action needs %s, which is neither in %s nor in %s/../libexec/casbox "
              "(set CASBOX_REPLAY)",
              MAIN_REPLAY, self, self);
    return CLI_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    struct cli_run run;
    int status;

    if (argc < 2) {
        fputs("casbox: no command given (try casbox --help)\n", stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("casbox %s\n", CASBOX_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        if (argc > 2 && strcmp(argv[1], "help") == 0 && strcmp(argv[2], "run") == 0) {
            cli_options_print_help(stdout);
            return 0;
        }
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            fprintf(stderr, "casbox: no help for unknown command '%s' (try casbox --help)\n",
                    argv[2]);
            return CLI_EXIT_USAGE;
        }
        main_print_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "fleet") == 0)
        return main_exec_replay(argv); /* casbox-replay has the gRPC client */
    if (strcmp(argv[1], "run") != 0) {
        if (argv[1][0] == '-')
            fprintf(stderr, "casbox: unknown option '%s' (try casbox --help)\n", argv[1]);
        else
            fprintf(stderr, "casbox: unknown command '%s' (try casbox --help)\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    status = cli_options_parse(argc - 1, argv + 1, &run);
    if (status == CLI_OPTIONS_RUN && run.replay) {
        cli_run_free(&run);
        return main_exec_replay(argv);
    }
    if (status == CLI_OPTIONS_RUN)
        status = cli_run_local(&run);
    cli_run_free(&run);
    return status;
}
