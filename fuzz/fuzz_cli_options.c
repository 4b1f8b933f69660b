/*
 * fuzz_cli_options.c - feeds command lines to cli_options_parse
 * (cmd/cli_options.c), `casbox run`'s option parser: the input split at NUL
 * bytes is argv after "run" (a trailing NUL is not an empty argument). What
 * a user or a script types is checked here before any namespace exists; a
 * parse must end in a run, an exit status, or a usage error, and free
 * everything either way.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_ARGS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ARGS + 2], *copy = malloc(size + 1);
    struct cli_run run;
    int argc = 0, rc;

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[argc++] = "run";
    for (size_t off = 0; off < size && argc <= MAX_ARGS; off += strlen(copy + off) + 1)
        argv[argc++] = copy + off;
    argv[argc] = NULL;
    rc = cli_options_parse(argc, argv, &run);
    assert(rc == CLI_OPTIONS_RUN || rc == 0 || rc == CLI_EXIT_USAGE || rc == CLI_EXIT_FAILURE);
    if (rc == CLI_OPTIONS_RUN)
        assert(run.replay || (run.spec.argv != NULL && run.spec.argv[0] != NULL));
    cli_run_free(&run);
    free(copy);
    return 0;
}
