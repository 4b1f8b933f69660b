/*
 * action_internal.h - what the action_*.c files share and nobody else needs:
 * a digest-keyed hash map, wire digest allocation, the overlay view and
 * output collection. (The protobuf-c types' short names are reapi.h's.)
 */
#ifndef CASBOX_ACTION_INTERNAL_H
#define CASBOX_ACTION_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "exec.h"
#include "util/util.h"

/* --- digest-keyed open-addressing map (action_util.c) --- */

struct action_digest_map_slot {
    struct cas_digest key;
    size_t value;
    bool used;
};

struct action_digest_map {
    struct action_digest_map_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
};

/* 1 when inserted, 0 when the key was present (*value_out, if not NULL, then
 * gets the stored value), -ENOMEM. */
int action_digest_map_put(struct action_digest_map *m, const struct cas_digest *key, size_t value,
                          size_t *value_out);
bool action_digest_map_get(const struct action_digest_map *m, const struct cas_digest *key,
                           size_t *value);
void action_digest_map_free(struct action_digest_map *m);

/* action_validate_directory that also stores each file's parsed digest in
 * file_digests[i] (n_files of them; NULL: not wanted). */
int action_validate_directory_digests(const Directory *dir, const char *where,
                                      struct cas_digest *file_digests, struct reapi_status *st);

/* --- small helpers (action_util.c) --- */

/* A wire Digest with its own malloc'd hash string, so that protobuf-c's
 * free_unpacked can free it. NULL on ENOMEM. */
Digest *action_digest_proto_new(const struct cas_digest *d);
/* Parses a wire digest (NULL is invalid); on error sets INVALID_ARGUMENT
 * naming `what` and returns -EINVAL. */
int action_digest_from_proto(const Digest *pd, struct cas_digest *out, const char *what,
                             struct reapi_status *st);
/* The digest of a node action_load has validated (all-zero should it not
 * parse, which cannot happen for a loaded action). */
void action_digest_valid(const Digest *pd, struct cas_digest *out);
/* "a" + "/" + "b", or b when a is empty; malloc'd. */
char *action_path_join(const char *a, const char *b);

/* --- the overlay view (action_view.c) --- */

/* A directory as the command saw it: the same name in the upper layer and
 * in the lower one, each an O_RDONLY directory fd or -1. lower is -1 when
 * the upper directory is opaque or the name is something else there. */
struct action_view_dir {
    int upper;
    int lower;
};

void action_view_dir_close(struct action_view_dir *d);
/* Whether the upper-layer directory fd is opaque (user. or trusted.overlay.opaque = "y"). */
bool action_view_is_opaque(int upper_fd);
/* A char device 0:0: the overlay's mark for a deleted name. */
static inline bool action_view_is_whiteout(const struct stat *st)
{
    return S_ISCHR(st->st_mode) && st->st_rdev == 0;
}
/* Opens child directory name of parent in one layer (O_RDONLY|O_DIRECTORY|
 * O_NOFOLLOW); in the upper layer a directory the command made unreadable is
 * made u+rwx first (it is scratch). */
int action_view_open_dir(int parent_fd, const char *name, bool upper);

/* Opens the merged child directory name of dir, a directory in the upper
 * layer when in_upper, else in the lower one; child's lower side is set only
 * where the overlay would merge it. */
int action_view_descend(const struct action_view_dir *dir, const char *name, bool in_upper,
                        struct action_view_dir *child);

/* An output path's final entry: parent (owned) and name in it, or the
 * directory itself when name is "" (the output is the exec root). */
struct action_view_entry {
    struct action_view_dir parent;
    char name[NAME_MAX + 1];
    struct stat st;
    bool in_upper;
};

/* Resolves path (relative to the exec root) through the view, following
 * symlinks in every component but the last, inside the exec root only;
 * output names it in messages. 0 and *e filled; 1 when the output does not
 * exist; <0 with st set. */
int action_view_resolve(const struct action_view_dir *root, const char *path, const char *output,
                        struct action_view_entry *e, struct reapi_status *st);

/* --- output collection (action_collect.c) ---
 *
 * Its state, shared by action_outputs.c and action_tree.c.
 *
 * Collection is two passes. The walk resolves every output, lists output
 * directories, checks the limits and queues each regular file (a dup of its
 * directory fd and its name) in a batch, leaving a slot for its digest in
 * the result or the Directory being built. Then the batch engine (cas.h,
 * cas_ingest_run) ingests them all at once, the slots are filled, and the
 * Trees are finished bottom-up from the digests. A batch that grows past
 * ACTION_BATCH_FILES files or ACTION_BATCH_FDS directory fds is ingested
 * early, which bounds the fds held. */
#define ACTION_BATCH_FILES 65536
#define ACTION_BATCH_FDS   256

/* A queued file's directory fd, dup'ed once per directory and batch. */
struct action_batch_fd {
    int fd;
    uint64_t batch; /* the batch it belongs to */
};

struct action_pending_dest {
    Digest **digest; /* gets the wire digest */
    char *path;      /* names the output in messages */
    bool missing_ok; /* absent means empty (stdout, stderr) */
};

struct action_collect {
    struct cas_store *cas;
    const struct action_output_limits *limits;
    struct action_output_stats stats;
    struct reapi_status *st;

    const struct cas_ingest_options *ingest_opt; /* NULL: defaults */
    struct cas_ingest *engine;                   /* made by the first flush */
    struct cas_ingest_stats ingest;              /* summed over flushes */
    uint64_t batch;                              /* current batch number */
    struct cas_ingest_file *files;
    struct action_pending_dest *dests;
    size_t n_files, files_cap;
    int *fds; /* owned by the batch */
    size_t n_fds, fds_cap;
    /* the parent directory of the last top-level output file, whose batch
     * fd the next one in the same directory shares */
    dev_t parent_dev;
    ino_t parent_ino;
    struct action_batch_fd parent_bfd;
};

/* Counts one more entry (and bytes) against the limits; RESOURCE_EXHAUSTED
 * naming the limit and the output when over. */
int action_collect_account(struct action_collect *c, uint64_t bytes, bool is_file, bool is_symlink,
                           const char *path);
/* Queues the regular file name in dir_fd (of the upper layer when upper:
 * then it may be moved into the CAS), whose lstat is st, for ingestion;
 * *dest gets its digest when the batch is flushed. bfd caches the batch's
 * dup of dir_fd for the directory's other files ({-1, 0} at first). path
 * names it in messages. */
int action_collect_file(struct action_collect *c, int dir_fd, struct action_batch_fd *bfd,
                        const char *name, const struct stat *st, bool upper, const char *path,
                        Digest **dest);
/* Ingests the queued files and fills their digests; sets st on failure. */
int action_collect_flush(struct action_collect *c);
/* Reads a symlink's target (absolute ones too; an empty one is refused);
 * *target is malloc'd. */
int action_collect_symlink(struct action_collect *c, int dir_fd, const char *name, const char *path,
                           char **target);
/* Queues stdout or stderr (a file of ours at path, what names it): moved into
 * the CAS with the outputs; a file never created is empty output. */
int action_collect_stdio(struct action_collect *c, const char *path, const char *what,
                         Digest **out);
/* Frees the batch and the ingestion engine, at the end of collection. */
void action_collect_free(struct action_collect *c);

/* --- output directories (action_tree.c) ---
 *
 * An output directory between the walk and its Tree. */
struct action_tree;

/* Walks the directory dir (path names it in messages): lists it, checks
 * limits, queues its files and keeps the Directory skeleton in *out. */
int action_tree_walk(struct action_collect *c, const struct action_view_dir *dir, const char *path,
                     struct action_tree **out);
/* After the flush: computes the Directory digests bottom-up, stores the
 * Tree blob and fills *tree_digest. Frees tree in every case. */
int action_tree_finish(struct action_collect *c, struct action_tree *tree, const char *path,
                       struct cas_digest *tree_digest);
void action_tree_free(struct action_tree *tree);

#endif
