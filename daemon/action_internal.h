/*
 * action_internal.h - what the action_*.c files share and nobody else needs:
 * short names for the protobuf-c types, a digest-keyed hash map, wire digest
 * allocation, and the overlay view used by output collection.
 */
#ifndef CASBOX_ACTION_INTERNAL_H
#define CASBOX_ACTION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "action.h"

typedef Build__Bazel__Remote__Execution__V2__Action pb_action_t;
typedef Build__Bazel__Remote__Execution__V2__Command pb_command_t;
typedef Build__Bazel__Remote__Execution__V2__Directory pb_directory_t;
typedef Build__Bazel__Remote__Execution__V2__FileNode pb_file_node_t;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode pb_directory_node_t;
typedef Build__Bazel__Remote__Execution__V2__SymlinkNode pb_symlink_node_t;
typedef Build__Bazel__Remote__Execution__V2__Digest pb_digest_t;
typedef Build__Bazel__Remote__Execution__V2__Platform pb_platform_t;
typedef Build__Bazel__Remote__Execution__V2__Tree pb_tree_t;
typedef Build__Bazel__Remote__Execution__V2__ActionResult pb_action_result_t;
typedef Build__Bazel__Remote__Execution__V2__OutputFile pb_output_file_t;
typedef Build__Bazel__Remote__Execution__V2__OutputDirectory pb_output_directory_t;
typedef Build__Bazel__Remote__Execution__V2__OutputSymlink pb_output_symlink_t;

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

/* --- small helpers (action_util.c) --- */

/* A wire Digest with its own malloc'd hash string, so that protobuf-c's
 * free_unpacked can free it. NULL on ENOMEM. */
pb_digest_t *action_digest_proto_new(const struct cas_digest *d);
/* Parses a wire digest (NULL is invalid); on error sets INVALID_ARGUMENT
 * naming `what` and returns -EINVAL. */
int action_digest_from_proto(const pb_digest_t *pd, struct cas_digest *out, const char *what,
                             struct reapi_status *st);
/* The digest of a node action_load has validated (all-zero should it not
 * parse, which cannot happen for a loaded action). */
void action_digest_valid(const pb_digest_t *pd, struct cas_digest *out);
/* "a" + "/" + "b", or b when a is empty; malloc'd. */
char *action_path_join(const char *a, const char *b);
/* Microseconds on CLOCK_MONOTONIC. */
uint64_t action_now_us(void);
/* Grows *arr (elements of size elem) so that it holds at least n + 1. */
int action_array_reserve(void **arr, size_t *cap, size_t n, size_t elem);

/* --- the overlay view (action_outputs.c, action_tree.c) --- */

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

/* Output collection state shared with action_tree.c. */
struct action_collect {
    struct cas_store *cas;
    const struct action_output_limits *limits;
    struct action_output_stats stats;
    struct reapi_status *st;
};

/* Counts one more entry (and bytes) against the limits; RESOURCE_EXHAUSTED
 * naming the limit and the output when over. */
int action_collect_account(struct action_collect *c, uint64_t bytes, bool is_file, bool is_symlink,
                           const char *path);
/* Ingests the regular file name in dir_fd into the CAS (renamed when from
 * the upper layer); fills *d. path names it in messages. */
int action_collect_file(struct action_collect *c, int dir_fd, const char *name, bool upper,
                        const char *path, struct cas_digest *d);
/* Reads a symlink's target, refusing absolute ones; *target is malloc'd. */
int action_collect_symlink(struct action_collect *c, int dir_fd, const char *name, const char *path,
                           char **target);

/* Builds the Tree of the directory dir (path names it in messages), stores
 * it in the CAS and fills *tree_digest (action_tree.c). */
int action_tree_collect(struct action_collect *c, const struct action_view_dir *dir,
                        const char *path, struct cas_digest *tree_digest);

#endif
