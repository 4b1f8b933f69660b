/*
 * cli_replay_main.c - casbox-replay, the program behind `casbox run
 * --action`: casbox hands it its own command line, unchanged. Kept apart so
 * that `casbox run -- CMD` does not load grpc and the daemon's libraries.
 * Run by hand it behaves exactly like `casbox run --action ...`.
 */
#include <stdio.h>
#include <string.h>

#include "cli_replay.h"

int main(int argc, char **argv)
{
    struct cli_run run;
    int status;

    if (argc >= 2 && strcmp(argv[1], "fleet") == 0)
        return cli_fleet_main(argc - 1, argv + 1);
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        fputs("casbox-replay: the program behind `casbox run --action HASH/SIZE --remote URL`; "
              "see casbox run --help\n",
              stderr);
        return CLI_EXIT_USAGE;
    }
    status = cli_options_parse(argc - 1, argv + 1, &run);
    if (status == CLI_OPTIONS_RUN && !run.replay) {
        cli_error("casbox-replay only replays actions (--action HASH/SIZE); use casbox run");
        status = CLI_EXIT_USAGE;
    } else if (status == CLI_OPTIONS_RUN) {
        status = cli_replay_run(&run);
    }
    cli_run_free(&run);
    return status;
}
