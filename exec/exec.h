/*
 * exec.h - the action pipeline as a library: one action's way from the CAS
 * to the sandbox and back. Load and validate the Action, its Command and
 * input tree; stage the input root (lazily through the FUSE mount, or as
 * hardlinks into a scratch directory); build the sandbox spec; run it;
 * collect the outputs from the overlay's layers into an ActionResult.
 *
 * casboxd's execution slots, its worker role and casbox-replay all call the
 * same function, exec_run(), with an exec_env naming what they have (a
 * store, a spawner, a FUSE mount or none, the executable-copy cache):
 *
 *     action_load(cas, &digest, cfg, &act, &st)           read + validate
 *     exec_run(&env, cfg, act, false, &times, &outcome)   stage, run, collect
 *     ... cache outcome.result when outcome.cacheable, answer the client ...
 *     exec_outcome_free(&outcome); exec_leftovers_remove(&env, left)
 *
 * The steps exec_run takes are public too, for tests and benchmarks:
 *
 *     action_scratch_create(base, id, &scratch)           <base>/<id>/...
 *     action_stage_inputs(cas, act, scratch.lower, exec_blob_dir, &stats, &st)
 *     action_spec_build(act, cfg, &scratch, &spec, &notes, &st)
 *     sandbox_spawner_run(spawner, &spec, &res)
 *     action_outputs_collect(cas, act, &scratch, &limits, &result, &st)
 *     action_result_free(result); action_scratch_remove(&scratch); action_free(act)
 *
 * Errors: every function taking a struct reapi_status returns 0 or a negative
 * errno and, when it fails, has set st: FAILED_PRECONDITION with every missing
 * blob (action_load, action_stage_inputs), INVALID_ARGUMENT naming the field,
 * path, platform property or input bound at fault (not RESOURCE_EXHAUSTED,
 * which Bazel would retry), RESOURCE_EXHAUSTED naming the output limit
 * exceeded (action_outputs_collect; the caller turns it into a failed
 * action), FAILED_PRECONDITION for an output of the wrong type, INTERNAL
 * (with the host path and strerror) for local I/O failures. The message is
 * one line, meant for the user.
 *
 * Nothing here keeps global state; a struct action is read-only after
 * action_load and may be shared between threads.
 */
#ifndef CASBOX_EXEC_H
#define CASBOX_EXEC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "config/config.h"
#include "fuse/casfs.h"
#include "reapi/reapi.h"
#include "sandbox/sandbox.h"
#include "util/util.h"

/* Bounds on the work one request can cause. */
#define ACTION_MAX_PROTO_BYTES  (64u << 20) /* an Action, Command or Directory blob */
#define ACTION_MAX_INPUT_NODES  (4u << 20)  /* files + dirs + symlinks staged, repeats counted */
#define ACTION_MAX_INPUT_DEPTH  128         /* directory levels below the input root */
#define ACTION_MAX_OUTPUT_DEPTH 128         /* directory levels inside one output directory */
#define ACTION_MAX_SYMLINK_HOPS 40          /* when resolving an output path's parents */

/* --- loading and validation (action_load.c, action_validate.c) --- */

enum action_output_kind {
    ACTION_OUTPUT_PATH,      /* Command.output_paths (v2.1): its type is found afterwards */
    ACTION_OUTPUT_FILE,      /* Command.output_files (before v2.1) */
    ACTION_OUTPUT_DIRECTORY, /* Command.output_directories (before v2.1) */
};

struct action_output {
    const char *path; /* relative to the working directory, as the Command spells it (the
                         ActionResult names the output so); points into the Command */
    char *full;       /* working directory + path, normalised (action_path_normalize):
                         what staging and collection walk from the exec root */
    enum action_output_kind kind;
};

/* One distinct Directory of the input tree (identical subtrees share one). */
struct action_input_dir {
    struct cas_digest digest;
    Build__Bazel__Remote__Execution__V2__Directory *dir;
    char *path;         /* where it was first met, "" for the root (for messages) */
    uint32_t min_depth; /* shallowest level it appears at; the root is 0 */
};

/* A subtree's size, every repeat counted (tree_cache.c remembers them). */
struct action_tree_totals {
    uint64_t files;
    uint64_t dirs; /* below the subtree's root */
    uint64_t symlinks;
    uint64_t bytes;
    uint32_t height; /* directory levels below the subtree's root */
};

/* Input subtrees checked complete (valid, every blob present) at a store
 * removal generation (cas_store_generation); see tree_cache.c. NULL is an
 * empty cache that remembers nothing. Thread-safe. */
struct exec_tree_cache;
/* At most max_entries Directory digests; 0 gives *out = NULL (off). */
int exec_tree_cache_new(size_t max_entries, struct exec_tree_cache **out);
void exec_tree_cache_free(struct exec_tree_cache *c);
/* True (and *out set) when dir's subtree was found complete at generation. */
bool exec_tree_cache_get(struct exec_tree_cache *c, const struct cas_digest *dir,
                         uint64_t generation, struct action_tree_totals *out);
/* Records dir's subtree complete at generation, read before it was checked. */
void exec_tree_cache_put(struct exec_tree_cache *c, const struct cas_digest *dir,
                         uint64_t generation, const struct action_tree_totals *totals);

struct action_lazy_dirs;

struct action {
    struct cas_digest digest; /* of the Action */
    struct cas_digest command_digest;
    struct cas_digest input_root_digest;
    Build__Bazel__Remote__Execution__V2__Action *action;
    Build__Bazel__Remote__Execution__V2__Command *command;

    const char *working_directory; /* normalised ("." and empty components dropped); "" for
                                      the input root */
    char *working_directory_buf;   /* private: what working_directory points to */
    struct action_output *outputs; /* output_paths, else output_files then output_directories */
    size_t n_outputs;
    bool output_paths_api; /* the Command used output_paths */

    bool network; /* platform property network=on (only when the config allows it) */
    /* The platform property container-image when it names one of the
     * config's execution environments (the action runs on its root); NULL:
     * the host's allow-list. Points into the Action or Command. */
    const char *container_image;
    uint64_t timeout_ms; /* Action.timeout rounded up to ms; 0 when none was asked */

    /* Every distinct Directory the load walked; dirs[0] is the input root.
     * Subtrees the tree cache knew complete are not walked: their
     * Directories are read when action_input_dir_find first asks. */
    struct action_input_dir *dirs;
    size_t n_dirs;
    struct action_digest_map *dir_index; /* private: digest -> index in dirs */
    struct action_lazy_dirs *lazy;       /* private: Directories read later */
    bool tree_cached;                    /* the input root was known complete: nothing walked */

    /* The staged tree's size, every repeat of a shared subtree counted. */
    uint64_t input_files;
    uint64_t input_dirs; /* not counting the root */
    uint64_t input_symlinks;
    uint64_t input_bytes;
};

/* Reads the Action, its Command and every Directory reachable from the input
 * root, and checks that every input file blob is present. All missing blobs
 * are listed in st (FAILED_PRECONDITION). Validates the Command (arguments,
 * environment, output paths, working directory), the platform properties
 * against cfg (OSFamily=Linux; network=on|off, on only when
 * cfg->exec_allow_network; container-image naming an execution environment's
 * image, else FAILED_PRECONDITION listing the known images unless
 * container-image is in cfg->exec_accepted_properties; anything else only
 * when named in cfg->exec_accepted_properties; names compared
 * case-insensitively), the timeout, and every Directory (canonical names and
 * order, digests, symlink targets: not empty; absolute ones allowed).
 * Computes the normalised working directory and each output's path from the
 * exec root (action_output.full). Bounded by the ACTION_MAX_* constants
 * above; input bytes are not bounded. */
int action_load(struct cas_store *cas, const struct cas_digest *action_digest,
                const struct casbox_config *cfg, struct action **out, struct reapi_status *st);
/* action_load that skips subtrees trees knows complete at the store's
 * current generation and remembers those it checks (trees may be NULL). */
int action_load_cached(struct cas_store *cas, struct exec_tree_cache *trees,
                       const struct cas_digest *action_digest, const struct casbox_config *cfg,
                       struct action **out, struct reapi_status *st);
void action_free(struct action *act);

/* The decoded Directory with this digest, or NULL (not in the input tree,
 * or no longer readable). A Directory of a subtree the load did not walk is
 * read from the CAS on first use. Not thread-safe: one caller per action. */
const struct action_input_dir *action_input_dir_find(const struct action *act,
                                                     const struct cas_digest *digest);

/* The pure checks action_load uses, for other callers and tests. `where`
 * names the directory in messages ("" for the input root). */
int action_validate_directory(const Build__Bazel__Remote__Execution__V2__Directory *dir,
                              const char *where, struct reapi_status *st);
/* A symlink target as the staged tree allows it: not empty, shorter than
 * PATH_MAX. Absolute targets and ones climbing out of the input root are
 * allowed (the server advertises SymlinkAbsolutePathStrategy ALLOWED): the
 * sandbox resolves them inside the action's own root, and nothing on the
 * host follows them. */
int action_validate_symlink_target(const char *target, const char *where, struct reapi_status *st);
/* Arguments, environment, outputs, working directory, output_node_properties. */
int action_validate_command(const Build__Bazel__Remote__Execution__V2__Command *cmd,
                            struct reapi_status *st);
/* Flags of action_validate_relative_path. */
#define ACTION_PATH_EMPTY_OK          1u /* "" is allowed */
#define ACTION_PATH_TRAILING_SLASH_OK 2u /* "a/" is allowed (a working directory) */
/* 0 when path is relative (no leading slash), has no ".." component, no
 * component over NAME_MAX, no trailing slash and is not "" (unless flags
 * say); "." and empty components are allowed (action_path_normalize drops
 * them). *why gets a short reason. */
int action_validate_relative_path(const char *path, unsigned flags, const char **why);
/* A relative path without its "." and empty components ("./a//b/." is "a/b",
 * "." is ""); malloc'd, NULL on ENOMEM. */
char *action_path_normalize(const char *path);
/* Platform properties; sets *network. p may be NULL (no properties). */
int action_validate_platform(const Build__Bazel__Remote__Execution__V2__Platform *p,
                             const struct casbox_config *cfg, bool *network,
                             struct reapi_status *st);
/* Action.timeout: 0 ms when d is NULL or zero; INVALID_ARGUMENT when negative
 * or malformed. */
int action_validate_timeout(const Google__Protobuf__Duration *d, uint64_t *timeout_ms,
                            struct reapi_status *st);

/* --- the scratch directory and staging (action_stage.c) --- */

/* <base>/<id>/ holds, for one action:
 *   lower/   the staged input root (the overlay's lower layer, never written
 *            by the action); also holds the working directory and the parent
 *            directories of every declared output, created by staging
 *   upper/   the overlay's upper layer (empty; takes the action's writes)
 *   work/    the overlay's work directory (empty)
 *   stdout, stderr  files the sandbox writes (not created here)
 * base must be on the CAS's filesystem so that staging can hardlink and
 * output collection can rename. */
struct action_scratch {
    char *root;
    char *lower;
    char *upper;
    char *work;
    char *stdout_path;
    char *stderr_path;
};

/* Creates <base>/<id> (mode 0700, -EEXIST when present) and lower/upper/work.
 * id must be one path component. On failure nothing is left behind. */
int action_scratch_create(const char *base, const char *id, struct action_scratch *out);
/* Removes <base>/<id> recursively (util_remove_tree) and frees the
 * strings; safe on a zeroed struct and when called twice. */
int action_scratch_remove(struct action_scratch *scratch);

struct action_stage_stats {
    uint64_t files;
    uint64_t dirs;
    uint64_t symlinks;
    uint64_t bytes;           /* sum of staged file sizes */
    uint64_t exec_copies;     /* executable copies made in exec_blob_dir by this call */
    uint64_t exec_copy_bytes; /* their total size */
    uint64_t copies;          /* files copied instead of linked (EMLINK) */
    uint64_t micros;          /* wall time of action_stage_inputs */
};

/* Materialises the input root under lower_dir (an existing, empty
 * directory): directories 0755, files hardlinked from the CAS blob files
 * (mode 0444), executable files hardlinked from a 0555 copy of the blob kept
 * in exec_blob_dir/<aa>/<hash> (created on demand with a temp file and
 * rename; exec_blob_dir must exist on the CAS's filesystem and is a cache the
 * caller may empty while no staging runs), symlinks as declared. When a file
 * has too many links (EMLINK) it is copied instead. Then creates the working
 * directory and the parent directories of every declared output (not the
 * output directories themselves, as the REAPI says); a parent that is an
 * input symlink is left alone, one that is an input file is INVALID_ARGUMENT.
 * Blobs evicted since action_load are all listed (FAILED_PRECONDITION). */
int action_stage_inputs(struct cas_store *cas, const struct action *act, const char *lower_dir,
                        const char *exec_blob_dir, struct action_stage_stats *stats,
                        struct reapi_status *st);
/* The same, counting every blob read into fetch (found in the store, fetched
 * from its upstream, failed; NULL: not counted). */
int action_stage_inputs_counted(struct cas_store *cas, const struct action *act,
                                const char *lower_dir, const char *exec_blob_dir,
                                struct cas_fetch_counters *fetch, struct action_stage_stats *stats,
                                struct reapi_status *st);

/* For a read-only lower layer (FUSE staging): creates the working directory
 * and the parent directories of every declared output in upper_dir (an
 * existing directory, the overlay's upper layer), with the same rules as
 * action_stage_inputs, deciding from the decoded input tree whether a
 * component is an input directory, file or symlink. Counts the directories
 * made in stats->dirs (stats is not reset). */
int action_stage_output_dirs(const struct action *act, const char *upper_dir,
                             struct action_stage_stats *stats, struct reapi_status *st);

/* --- the sandbox spec (action_spec.c) --- */

struct action_spec_notes {
    uint64_t requested_timeout_ms; /* Action.timeout, 0 when none */
    uint64_t timeout_ms;           /* what the spec got */
    bool timeout_capped;           /* requested above cfg->exec_max_timeout: capped to it */
};

/* Note: the REAPI says a server MUST reject a timeout above its maximum;
 * casbox caps it instead and says so in notes (the caller may refuse when
 * notes->timeout_capped).
 *
 * Fills spec (which must be sandbox_spec_init'ed; the caller frees it with
 * sandbox_spec_free) for act: argv = Command.arguments, envp = exactly
 * Command.environment_variables, the exec root from scratch's lower, upper
 * and work dirs at SANDBOX_EXEC_ROOT, cwd = SANDBOX_EXEC_ROOT/<working
 * directory>, the timeout (Action.timeout, else cfg->exec_default_timeout;
 * capped at cfg->exec_max_timeout), memory, pids and stdio limits from cfg,
 * stdout/stderr to the scratch files, stdin /dev/null, the caller's uid,
 * network per the platform property, seccomp per cfg->exec_seccomp
 * ("default", "strict", "none" or an absolute policy file path), the root
 * filesystem from the execution environment act->container_image selects
 * (FAILED_PRECONDITION when a reload removed it), else the host's. */
int action_spec_build(const struct action *act, const struct casbox_config *cfg,
                      const struct action_scratch *scratch, struct sandbox_spec *spec,
                      struct action_spec_notes *notes, struct reapi_status *st);

/* --- output collection (action_outputs.c, action_tree.c) --- */

struct action_output_limits {
    uint64_t max_bytes;   /* total bytes of output files; 0 = none (exec_max_output_bytes) */
    uint64_t max_entries; /* files + dirs + symlinks, inside Trees too; 0 = none
                           * (exec_max_output_files) */
};

struct action_output_stats {
    uint64_t files;
    uint64_t dirs;
    uint64_t symlinks;
    uint64_t bytes;
    uint64_t micros;
};

/* Builds a new ActionResult from the exec root the command left: each
 * declared output is looked up through the overlay's layers as the command
 * saw them (upper first; lower unless hidden by a whiteout, an opaque or
 * replaced directory), following symlinks in its parents only inside the
 * exec root (leaving it is INVALID_ARGUMENT naming the output). Regular files
 * go to the CAS (renamed from upper, linked or copied from lower) as
 * output_files with the executable bit (mode & 0100); directories become a
 * Tree blob (children deduplicated, sorted by digest) as output_directories;
 * symlinks are returned as symlinks (output_symlinks for output_paths, else
 * output_file_symlinks / output_directory_symlinks) with their targets as
 * they are, absolute ones too, never followed; an output of the wrong type or
 * a special file is FAILED_PRECONDITION. Outputs not produced are absent.
 * stdout and stderr go to the CAS and their digests are always set (the
 * empty digest for no output). exit_code and execution_metadata are left for
 * the caller. limits: exceeding one is RESOURCE_EXHAUSTED naming it; stats
 * may be NULL. */
int action_outputs_collect(struct cas_store *cas, const struct action *act,
                           const struct action_scratch *scratch,
                           const struct action_output_limits *limits,
                           Build__Bazel__Remote__Execution__V2__ActionResult **out,
                           struct action_output_stats *stats, struct reapi_status *st);

/* The same, with the batch ingestion engine's options (cas.h: mode, hashing
 * threads, io_uring queue depth; the [cas] ingest_* keys). NULL, as in
 * action_outputs_collect, means the defaults: auto, one thread per CPU, 64.
 * Files are ingested in one batch after the walk (see action_internal.h). */
int action_outputs_collect_opts(struct cas_store *cas, const struct action *act,
                                const struct action_scratch *scratch,
                                const struct action_output_limits *limits,
                                const struct cas_ingest_options *ingest,
                                Build__Bazel__Remote__Execution__V2__ActionResult **out,
                                struct action_output_stats *stats, struct reapi_status *st);

/* Frees a result from action_outputs_collect with protobuf-c's free_unpacked
 * and the default allocator: whatever the caller adds to it (exit_code,
 * execution_metadata, ...) must be plain malloc'd fields, one allocation
 * each (not reapi_digest_new, which shares one). NULL is fine. */
void action_result_free(Build__Bazel__Remote__Execution__V2__ActionResult *result);

/* --- the pipeline (exec_pipeline.c, exec_copies.c, exec_cleaner.c) --- */

/* The executable-copy cache of hardlink staging (exec_copies.c): an input
 * declared executable is linked from a 0555 copy of its blob kept in
 * exec_env.exec_blob_dir, emptied when more than max_bytes were copied. */
struct exec_copies {
    pthread_rwlock_t lock; /* shared while staging, exclusive to empty it */
    uint64_t bytes;        /* copied since it was last emptied (atomic) */
    uint64_t max_bytes;    /* execution.exec_copy_cache_bytes */
};

void exec_copies_init(struct exec_copies *c, uint64_t max_bytes);
void exec_copies_destroy(struct exec_copies *c);
/* Stages an input root by hardlinks (action_stage_inputs_counted, counting
 * into fetch, which may be NULL) with dir as the cache, and empties the cache
 * afterwards when it has grown past its bound. */
int exec_copies_stage(struct exec_copies *c, struct cas_store *cas, const struct action *act,
                      const char *lower_dir, const char *dir, struct cas_fetch_counters *fetch,
                      struct action_stage_stats *stats, struct reapi_status *st);

/* --- inputs read through an upstream CAS (action_fetch.c) --- */

/* Pins every Directory and file blob of act in cas against eviction, also
 * those not fetched yet (cas_store_pin); -ENOMEM with nothing pinned. Every
 * successful pin needs one action_unpin_inputs. exec_run does both. */
int action_pin_inputs(struct cas_store *cas, const struct action *act);
void action_unpin_inputs(struct cas_store *cas, const struct action *act);
/* Sets st for a failed read (rc) of blob d, named `what` in the message:
 * -ENOENT adds a MISSING violation (FAILED_PRECONDITION); a failed fetch
 * from the upstream is UNAVAILABLE with its reason (the digest and the
 * upstream's status); anything else INTERNAL. Returns rc. */
int action_fetch_status(struct cas_store *cas, const struct cas_digest *d, int rc, const char *what,
                        struct reapi_status *st);
/* After a run: when a fetch failed while it ran (a FUSE open of an input),
 * sets st as action_fetch_status would for the first failure. */
void action_fetch_outcome(const struct cas_fetch_stats *fs, struct reapi_status *st);

/* What one front end has to run actions with. Read-only to exec_run, shared
 * by every slot; it must outlive every run and the cleaner. */
struct exec_env {
    struct cas_store *store;
    struct sandbox_spawner *spawner; /* may be NULL for dry runs only */
    struct casfs *fs;                /* the FUSE input-tree mount; NULL: hardlink staging */
    struct exec_copies *copies;      /* hardlink staging's executable-copy cache */
    const char *scratch_dir;         /* existing; scratch directories go here (<state>/cas/exec) */
    const char *exec_blob_dir; /* existing; the executable-copy cache (<state>/cas/exec-blobs) */
    struct exec_tree_cache *trees; /* input subtrees checked complete; NULL: none */
};

/* The steps of a run exec_run reports as each begins. */
enum exec_step { EXEC_STEP_INPUT_FETCH, EXEC_STEP_EXECUTION, EXEC_STEP_OUTPUT_UPLOAD };

/* Wall-clock microseconds of each step, for ExecutedActionMetadata. The
 * caller sets queued and worker_start; exec_run the others. on_step, when
 * set (zero-initialise the struct), is called on exec_run's thread as each
 * step begins, so that a running action's step can be shown while it runs;
 * it must return quickly. */
struct exec_times {
    uint64_t queued;
    uint64_t worker_start;
    uint64_t input_fetch_start, input_fetch_end;
    uint64_t execution_start, execution_end;
    uint64_t output_upload_start, output_upload_end;
    uint64_t worker_end;
    void (*on_step)(void *ctx, enum exec_step step);
    void *on_step_ctx;
};

/* What a run leaves behind (its scratch directory, its FUSE tree) until
 * exec_leftovers_remove. */
struct exec_leftovers;

/* Everything one run produced. */
struct exec_outcome {
    /* The ActionResult (exit code, outputs, stdio, execution_metadata), or
     * NULL when the run failed before there was one. Free with
     * exec_outcome_free (or take it and set the field to NULL). */
    Build__Bazel__Remote__Execution__V2__ActionResult *result;
    /* OK; DEADLINE_EXCEEDED after a timeout; FAILED_PRECONDITION with every
     * missing blob, INVALID_ARGUMENT, INTERNAL... when the run failed. */
    struct reapi_status status;
    /* The runner's one-line verdict ("casbox: killed after the timeout of
     * ..."), "" when the command ran normally. Appended to the action's
     * stderr as well. */
    char verdict[512];
    /* Only a clean success goes to the ActionCache: exit 0, no limit hit,
     * outputs accepted, status OK, and not Action.do_not_cache. */
    bool cacheable;
    bool ran;                 /* the sandbox ran the command (sandbox is then valid) */
    struct sandbox_spec spec; /* what ran, or would run (dry run) */
    struct sandbox_result sandbox;
    struct action_spec_notes notes;
    struct action_stage_stats stage;
    struct action_output_stats outputs;
    bool fuse;                          /* staged through the FUSE mount */
    struct casfs_tree_stats fuse_stats; /* fuse only */
    struct exec_leftovers *left;        /* for exec_leftovers_remove */
    /* Input blobs found in the store, fetched from its upstream, or whose
     * fetch failed (hardlink staging counts into fetch; fetch_stats adds
     * the FUSE tree's at the end). */
    struct cas_fetch_counters fetch;
    struct cas_fetch_stats fetch_stats;
    bool upstream; /* the store is a cache of an upstream CAS */
};

void exec_outcome_init(struct exec_outcome *o);
/* Frees the result, the spec and the status (not the leftovers). */
void exec_outcome_free(struct exec_outcome *o);

/* Runs one loaded action to completion on the calling thread, the one
 * pipeline every front end uses: creates a scratch directory under
 * env->scratch_dir, stages the input root (a tree of env->fs when set, else
 * hardlinks through env->copies), builds the sandbox spec from cfg, runs it
 * with env->spawner, appends the verdict to stderr, collects the outputs
 * into env->store with cfg's limits and ingestion options, and fills
 * ExecutedActionMetadata (worker = cfg->worker_name). dry_run stops after
 * the spec is built. Returns 0 when out->status is OK, else a negative
 * errno (out->status says why, in the user's words). out->left always needs
 * exec_leftovers_remove, whatever the return. */
int exec_run(const struct exec_env *env, const struct casbox_config *cfg, const struct action *act,
             bool dry_run, struct exec_times *times, struct exec_outcome *out);

/* exec_run, with the sandbox killed when cancel (may be NULL) fires (a
 * fleet worker whose action the scheduler gave up): out->status is then
 * CANCELLED and no output is collected. */
int exec_run_cancellable(const struct exec_env *env, const struct casbox_config *cfg,
                         const struct action *act, bool dry_run,
                         const struct sandbox_cancel *cancel, struct exec_times *times,
                         struct exec_outcome *out);

/* Removes and frees what a run left (NULL is fine). The daemon calls it
 * after publishing the result: the client does not wait for the clean-up. */
void exec_leftovers_remove(const struct exec_env *env, struct exec_leftovers *left);

/* Removes leftovers on a thread of its own (exec_cleaner.c): at most
 * max_pending wait; past that exec_cleaner_put removes them in the caller.
 * exec_cleaner_stop removes every pending one, then joins the thread. */
struct exec_cleaner;
int exec_cleaner_start(const struct exec_env *env, size_t max_pending, struct exec_cleaner **out);
void exec_cleaner_put(struct exec_cleaner *c, struct exec_leftovers *left);
void exec_cleaner_stop(struct exec_cleaner *c);

#endif
