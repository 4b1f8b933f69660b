/*
 * cli_replay.h - the replay side of `casbox run` (casbox-replay): fetching
 * an action's blobs with the gRPC client (rpc/rpc.h), printing and comparing
 * ActionResults. Not a public header; see cli.h for the map.
 */
#ifndef CASBOX_CLI_REPLAY_H
#define CASBOX_CLI_REPLAY_H

#include <protobuf-c/protobuf-c.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "cli.h"
#include "reapi/reapi.h"
#include "rpc/rpc.h"

/* --action (cli_replay.c); returns the exit status. */
int cli_replay_run(struct cli_run *run);

/* --- fetching an action (cli_fetch.c) --- */

struct action;
struct casbox_config;

struct cli_fetch_stats {
    uint64_t blobs;
    uint64_t bytes;
    uint64_t rounds;
};

/* Loads the action with action_load from cas, fetching from the server
 * whatever it reports missing (the Action, its Command, the input tree level
 * by level, the files), until it loads. Blobs are verified on the way in. */
int cli_fetch_action(struct rpc_client *rpc, const char *instance, struct cas_store *cas,
                     const struct cas_digest *digest, const struct casbox_config *cfg,
                     struct action **out, struct cli_fetch_stats *stats, char *err, size_t err_len);
/* Fetches one blob into cas (BatchReadBlobs, or ByteStream.Read when large). */
int cli_fetch_blob(struct rpc_client *rpc, const char *instance, struct cas_store *cas,
                   const struct cas_digest *digest, char *err, size_t err_len);

/* --- ActionResults (cli_result.c) --- */

/* "hash/size" */
void cli_digest_string(const struct cas_digest *d, char *buf, size_t len);
/* Prints an ActionResult as text: exit code, outputs with digests, and the
 * stdout and stderr read back from cas. */
void cli_result_print(FILE *out, const ActionResult *result, struct cas_store *cas);
/* Prints the differences between a local and a cached ActionResult (exit
 * code, output files, directories and symlinks by path; stdout and stderr
 * digests are shown but not counted). Returns the number of differences. */
size_t cli_result_compare(FILE *out, const ActionResult *local, const ActionResult *cached);

/* `casbox fleet status|drain|undrain --scheduler URL` (cli_fleet.c); argv[0]
 * is "fleet". */
int cli_fleet_main(int argc, char **argv);

#endif
