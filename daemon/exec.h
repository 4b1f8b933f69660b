/*
 * exec.h - the Execution service's scheduler and operations.
 *
 * Execute loads and checks an action (so a missing input fails at once), then
 * queues it; a fixed set of slot threads runs queued actions through the
 * pipeline (stage inputs, run in the sandbox, collect outputs, cache the
 * result). Each action is an operation with a name that WaitExecution can
 * follow while it runs and for execution.operation_retention seconds after.
 * Two Executes of the same action digest in flight share one operation.
 */
#ifndef CASBOX_EXEC_H
#define CASBOX_EXEC_H

#include <stdint.h>

#include "casboxd.h"
#include "reapi.h"

struct action;
struct action_stage_stats;

struct exec_service;
struct action; /* a loaded, checked action (action.h) */

enum exec_stage { EXEC_QUEUED, EXEC_EXECUTING, EXEC_COMPLETED };

/* Wall-clock microseconds of each step, for ExecutedActionMetadata. */
struct exec_times {
    uint64_t queued;
    uint64_t worker_start;
    uint64_t input_fetch_start, input_fetch_end;
    uint64_t execution_start, execution_end;
    uint64_t output_upload_start, output_upload_end;
    uint64_t worker_end;
};

int exec_service_start(struct casboxd *d, struct exec_service **out);
/* Makes every watching stream end with UNAVAILABLE, refuses new actions and
 * kills the running ones. Call before stopping the gRPC server. */
void exec_service_begin_stop(struct exec_service *svc);
/* Waits for running actions to finish (they are bounded by their timeouts)
 * and frees the service. */
void exec_service_stop(struct exec_service *svc);

/* Loads and checks an action for execution (exec_pipeline.c): FAILED_PRECONDITION
 * with every missing blob, or INVALID_ARGUMENT naming the bad field. */
int exec_action_load(struct casboxd *d, const char *instance, const struct cas_digest *digest,
                     struct action **out, struct reapi_status *st);
void exec_action_free(struct action *act);
/* Removes scratch directories left by a previous run and the executable-copy
 * cache; called at start-up before any action runs. */
int exec_scratch_reset(struct casboxd *d);

/* The executable-copy cache (exec_copies.c): exec_copies_stage stages an
 * input root by hardlinks (action_stage_inputs) with dir as the cache and
 * empties the cache afterwards when it has grown past its bound. */
void exec_copies_init(struct exec_copies *c, uint64_t max_bytes);
void exec_copies_destroy(struct exec_copies *c);
int exec_copies_stage(struct exec_copies *c, struct cas_store *cas, const struct action *act,
                      const char *lower_dir, const char *dir, struct action_stage_stats *stats,
                      struct reapi_status *st);

/* What a run leaves behind (its scratch directory, its FUSE tree) until
 * exec_pipeline_cleanup. */
struct exec_leftovers;

/* Runs one loaded action to completion on the calling slot thread: fills
 * *response (an ExecuteResponse, packed, malloc'd) and *left (exec_pipeline.c). */
int exec_pipeline_run(struct casboxd *d, const char *instance, struct action *act,
                      struct exec_times *times, uint8_t **response, size_t *response_len,
                      char *log_line, size_t log_len, struct exec_leftovers **left);
/* Removes and frees what a run left (NULL is fine). The slot calls it after
 * publishing the result: the client does not wait for the clean-up. */
void exec_pipeline_cleanup(struct casboxd *d, struct exec_leftovers *left);

/* Removes leftovers on a thread of its own (exec_cleaner.c): at most
 * max_pending wait; past that exec_cleaner_put removes them in the caller.
 * exec_cleaner_stop removes every pending one, then joins the thread. */
struct exec_cleaner;
int exec_cleaner_start(struct casboxd *d, size_t max_pending, struct exec_cleaner **out);
void exec_cleaner_put(struct exec_cleaner *c, struct exec_leftovers *left);
void exec_cleaner_stop(struct exec_cleaner *c);

/* Packs an ExecuteResponse: result (an empty one when NULL, as Bazel needs
 * one), cached_result, the status (OK when st is NULL) and message. */
int exec_response_pack(const Build__Bazel__Remote__Execution__V2__ActionResult *result, bool cached,
                       const struct reapi_status *st, const char *message, uint8_t **out,
                       size_t *len);

#endif
