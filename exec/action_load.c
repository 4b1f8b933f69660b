/*
 * action_load.c - reads an Action, its Command and its whole input tree from
 * the CAS, and validates them (with the rules in action_validate.c).
 *
 * The input tree is walked breadth first over distinct Directory digests, so
 * a subtree repeated a thousand times is fetched and checked once, and the
 * first time a Directory is met is at its shallowest depth. The walk does
 * not stop at the first missing blob: every missing Directory and file blob
 * reachable is listed, because Bazel uploads exactly what the
 * FAILED_PRECONDITION names and then retries.
 * Sizes (repeats counted) are then summed bottom-up with memoisation, which
 * bounds the staging work before any of it is done.
 *
 * That walk is linear in the tree, so a subtree already found complete at
 * the store's current removal generation (the tree cache, tree_cache.c) is
 * not walked again: its sizes come from the cache, and its Directories are
 * read only if staging asks for them (action_input_dir_find, lazily). When
 * the input root itself is known complete, Execute reads one Directory.
 * Presence of a Directory's files is one batch lookup in the store's
 * in-memory index (cas_store_contains_many), never a stat.
 */
#include "action_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct subtree_size {
    uint64_t files;
    uint64_t dirs;
    uint64_t symlinks;
    uint64_t bytes;
    uint32_t height; /* directory levels below */
    uint8_t state;   /* 0 not yet, 1 in progress, 2 done */
};

/* File blobs not in the store, to ask its upstream about in one batch. */
struct load_pending {
    struct cas_digest *digests;
    size_t n, cap;
};

/* One walk of an input tree. */
struct tree_walk {
    struct exec_tree_cache *trees;       /* may be NULL */
    uint64_t generation;                 /* the store's, read before anything was checked */
    struct action_digest_map files_seen; /* missing files already listed */
    /* Subdirectories the cache knew complete: digest -> index in known[]. */
    struct action_digest_map known_index;
    struct action_tree_totals *known;
    size_t n_known, cap_known;
    /* Scratch for one Directory's file digests and presence. */
    struct cas_digest *digests;
    bool *present;
    size_t cap_files;
    struct load_pending pending;
};

/* Directories read after the load (subtrees the walk skipped). Each is
 * allocated alone so that pointers handed out stay valid. */
struct action_lazy_dirs {
    struct cas_store *cas;
    struct action_digest_map index; /* digest -> index in dirs */
    struct action_input_dir **dirs;
    size_t n, cap;
};

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Fetches and decodes one blob. -ENOENT (listed in st) when absent. */
static int load_message(struct cas_store *cas, const struct cas_digest *d,
                        const ProtobufCMessageDescriptor *desc, const char *what,
                        ProtobufCMessage **out, struct reapi_status *st)
{
    char hex[CAS_HASH_HEX + 1];
    void *buf = NULL;
    size_t len = 0;
    int rc = 0;

    *out = NULL;
    cas_digest_hex(d, hex);
    if (d->size > (int64_t)ACTION_MAX_PROTO_BYTES) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s blobs/%s/%" PRId64 " is larger than the %u bytes allowed", what, hex,
                         d->size, ACTION_MAX_PROTO_BYTES);
        return -EINVAL;
    }
    if (d->size > 0) {
        rc = cas_store_get(cas, d, &buf, &len);
        if (rc == -ENOENT) {
            if (reapi_status_add_missing(st, d) != 0) {
                reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                rc = -ENOMEM;
            }
            goto out;
        }
        if (rc != 0 && cas_store_fetch_error(cas, d, NULL, 0) != 0) {
            action_fetch_status(cas, d, rc, what, st); /* the upstream failed: UNAVAILABLE */
            goto out;
        }
        if (rc != 0) {
            reapi_status_set(st, GRPC_STATUS_INTERNAL, "reading %s blobs/%s/%" PRId64 ": %s", what,
                             hex, d->size, strerror(-rc));
            goto out;
        }
    }
    *out = protobuf_c_message_unpack(desc, NULL, len, buf);
    if (*out == NULL) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s blobs/%s/%" PRId64 " does not decode as a %s message", what, hex,
                         d->size, desc->name);
        rc = -EINVAL;
    }
out:
    free(buf);
    return rc;
}

static int add_dir(struct action *act, size_t *cap, const struct cas_digest *d, char *path,
                   uint32_t depth, struct reapi_status *st)
{
    struct action_input_dir *e;
    int rc;

    if (act->n_dirs >= ACTION_MAX_INPUT_NODES) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "the input tree has more than %u distinct directories",
                         ACTION_MAX_INPUT_NODES);
        rc = -E2BIG;
        goto fail;
    }
    rc = array_reserve((void **)&act->dirs, cap, act->n_dirs, sizeof(*act->dirs));
    if (rc == 0)
        rc = action_digest_map_put(act->dir_index, d, act->n_dirs, NULL) < 0 ? -ENOMEM : 0;
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "out of memory loading the input tree");
        goto fail;
    }
    e = &act->dirs[act->n_dirs++];
    memset(e, 0, sizeof(*e));
    e->digest = *d;
    e->path = path;
    e->min_depth = depth;
    return 0;
fail:
    free(path);
    return rc;
}

static int walk_reserve_files(struct tree_walk *w, size_t n)
{
    struct cas_digest *d;
    bool *p;

    if (n <= w->cap_files)
        return 0;
    d = realloc(w->digests, n * sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    w->digests = d;
    p = realloc(w->present, n * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    w->present = p;
    w->cap_files = n;
    return 0;
}

/* True when d is a subtree the cache knows complete (recorded in w). */
static int walk_known_subtree(struct tree_walk *w, const struct cas_digest *d)
{
    struct action_tree_totals t;
    int rc;

    if (action_digest_map_get(&w->known_index, d, NULL))
        return 1;
    if (!exec_tree_cache_get(w->trees, d, w->generation, &t))
        return 0;
    rc = array_reserve((void **)&w->known, &w->cap_known, w->n_known, sizeof(*w->known));
    if (rc == 0)
        rc = action_digest_map_put(&w->known_index, d, w->n_known, NULL) < 0 ? -ENOMEM : 0;
    if (rc != 0)
        return rc;
    w->known[w->n_known++] = t;
    return 1;
}

/* Checks one loaded Directory and queues its unseen subdirectories. */
static int visit_dir(struct cas_store *cas, struct action *act, size_t index, size_t *cap,
                     struct tree_walk *w, struct reapi_status *st)
{
    const Directory *dir = act->dirs[index].dir;
    const char *path = act->dirs[index].path;
    uint32_t depth = act->dirs[index].min_depth;
    struct cas_digest d;
    char *child = NULL;
    size_t n_new = 0;
    int rc;

    if (walk_reserve_files(w, dir->n_files) != 0)
        goto nomem;
    rc = action_validate_directory_digests(dir, path, w->digests, st);
    if (rc != 0)
        return rc;
    /* One index lookup for all the files, repeats and all: a map to skip
     * repeated digests first cost more than the lookups it saved (20% of a
     * cold Execute's CPU over 100,000 distinct files: a 14 MB table of cache
     * misses and page faults). Only the missing are deduplicated, below. */
    n_new = dir->n_files;
    rc = cas_store_contains_many(cas, w->digests, n_new, w->present);
    if (rc < 0) {
        reapi_status_set(st, GRPC_STATUS_INTERNAL,
                         "looking up the files of input directory "
                         "'%.600s': %s",
                         path, strerror(-rc));
        return rc;
    }
    for (size_t i = 0; rc > 0 && i < n_new; i++) {
        struct load_pending *pending = &w->pending;

        int added;

        if (w->present[i])
            continue;
        added = action_digest_map_put(&w->files_seen, &w->digests[i], 0, NULL);
        if (added < 0)
            goto nomem;
        if (added == 0)
            continue; /* already listed */
        if (cas_store_has_upstream(cas)) {
            if (array_reserve((void **)&pending->digests, &pending->cap, pending->n,
                              sizeof(*pending->digests)) != 0)
                goto nomem;
            pending->digests[pending->n++] = w->digests[i];
        } else if (reapi_status_add_missing(st, &w->digests[i]) != 0) {
            goto nomem;
        }
    }
    for (size_t i = 0; i < dir->n_symlinks; i++) {
        child = action_path_join(path, dir->symlinks[i]->name);
        if (child == NULL)
            goto nomem;
        rc = action_validate_symlink_target(dir->symlinks[i]->target, child, st);
        free(child);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < dir->n_directories; i++) {
        action_digest_valid(dir->directories[i]->digest, &d);
        if (action_digest_map_get(act->dir_index, &d, NULL))
            continue;
        rc = walk_known_subtree(w, &d);
        if (rc < 0)
            goto nomem;
        if (rc == 1)
            continue;
        child = action_path_join(path, dir->directories[i]->name);
        if (child == NULL)
            goto nomem;
        rc = add_dir(act, cap, &d, child, depth + 1, st);
        if (rc != 0)
            return rc;
    }
    return 0;
nomem:
    reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory loading the input tree");
    return -ENOMEM;
}

/* Sizes of the subtree at index, repeats counted, memoised in sizes[]. */
static int size_subtree(const struct action *act, const struct tree_walk *w, size_t index,
                        uint32_t depth, struct subtree_size *sizes, struct reapi_status *st)
{
    struct subtree_size *s = &sizes[index];
    const Directory *dir = act->dirs[index].dir;
    int rc;

    if (s->state == 2)
        return 0;
    if (s->state == 1 || depth > ACTION_MAX_INPUT_DEPTH) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "the input tree is deeper than %d levels (at '%.600s')",
                         ACTION_MAX_INPUT_DEPTH, act->dirs[index].path);
        return -EINVAL;
    }
    s->state = 1;
    s->files = dir->n_files;
    s->symlinks = dir->n_symlinks;
    s->dirs = dir->n_directories;
    for (size_t i = 0; i < dir->n_files; i++)
        s->bytes = add_saturating(s->bytes, (uint64_t)dir->files[i]->digest->size_bytes);
    for (size_t i = 0; i < dir->n_directories; i++) {
        struct cas_digest d;
        size_t child;
        struct subtree_size known = {0};
        const struct subtree_size *c;

        action_digest_valid(dir->directories[i]->digest, &d);
        if (action_digest_map_get(&w->known_index, &d, &child)) {
            known.files = w->known[child].files;
            known.dirs = w->known[child].dirs;
            known.symlinks = w->known[child].symlinks;
            known.bytes = w->known[child].bytes;
            known.height = w->known[child].height;
            c = &known;
        } else if (action_digest_map_get(act->dir_index, &d, &child)) {
            rc = size_subtree(act, w, child, depth + 1, sizes, st);
            if (rc != 0)
                return rc;
            c = &sizes[child];
        } else {
            reapi_status_set(st, GRPC_STATUS_INTERNAL, "input directory '%.600s/%s' was not loaded",
                             act->dirs[index].path, dir->directories[i]->name);
            return -EINVAL;
        }
        s->files = add_saturating(s->files, c->files);
        s->dirs = add_saturating(s->dirs, c->dirs);
        s->symlinks = add_saturating(s->symlinks, c->symlinks);
        s->bytes = add_saturating(s->bytes, c->bytes);
        if (c->height + 1 > s->height)
            s->height = c->height + 1;
        if (add_saturating(add_saturating(s->files, s->dirs), s->symlinks) >
            ACTION_MAX_INPUT_NODES) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "the input tree has more than %u entries (files, directories and "
                             "symlinks, repeats counted)",
                             ACTION_MAX_INPUT_NODES);
            return -E2BIG;
        }
    }
    if (depth + s->height > ACTION_MAX_INPUT_DEPTH) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "the input tree is deeper than %d levels (below '%.600s')",
                         ACTION_MAX_INPUT_DEPTH, act->dirs[index].path);
        return -EINVAL;
    }
    s->state = 2;
    return 0;
}

/* The pending file blobs the upstream lacks too are missing. Present there
 * is enough: they are fetched when the action opens them (and the upstream's
 * FindMissingBlobs keeps them alive meanwhile). */
static int check_pending(struct cas_store *cas, const struct load_pending *pending,
                         struct reapi_status *st)
{
    bool *missing;
    int rc;

    if (pending->n == 0)
        return 0;
    missing = calloc(pending->n, sizeof(*missing));
    if (missing == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = cas_store_find_missing(cas, pending->digests, pending->n, missing);
    if (rc < 0) {
        action_fetch_status(cas, &pending->digests[0], rc == -ENOENT ? -EIO : rc, "checking input",
                            st);
        goto out;
    }
    for (size_t i = 0; i < pending->n; i++) {
        if (missing[i] && reapi_status_add_missing(st, &pending->digests[i]) != 0) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
    }
out:
    free(missing);
    return rc;
}

static void walk_free(struct tree_walk *w)
{
    action_digest_map_free(&w->files_seen);
    action_digest_map_free(&w->known_index);
    free(w->known);
    free(w->digests);
    free(w->present);
    free(w->pending.digests);
}

/* Remembers every walked subtree complete (the walk found nothing missing).
 * Not when some file was present only in the store's upstream: the local
 * removal generation says nothing about what the upstream keeps. */
static void walk_remember(const struct tree_walk *w, const struct action *act,
                          const struct subtree_size *sizes)
{
    if (w->pending.n > 0)
        return;
    for (size_t i = 0; w->trees != NULL && i < act->n_dirs; i++) {
        const struct subtree_size *s = &sizes[i];
        struct action_tree_totals t = {s->files, s->dirs, s->symlinks, s->bytes, s->height};

        exec_tree_cache_put(w->trees, &act->dirs[i].digest, w->generation, &t);
    }
}

/* The input root is known complete: read its Directory only. */
static int load_root_only(struct cas_store *cas, struct action *act,
                          const struct action_tree_totals *t, struct reapi_status *st)
{
    size_t cap = 0;
    char *root_path = strdup("");
    int rc;

    if (root_path == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = add_dir(act, &cap, &act->input_root_digest, root_path, 0, st);
    if (rc == 0)
        rc = load_message(cas, &act->dirs[0].digest,
                          &build__bazel__remote__execution__v2__directory__descriptor,
                          "input root directory", (ProtobufCMessage **)&act->dirs[0].dir, st);
    if (rc != 0)
        return rc; /* -ENOENT: evicted since the generation was read; listed */
    act->tree_cached = true;
    act->input_files = t->files;
    act->input_dirs = t->dirs;
    act->input_symlinks = t->symlinks;
    act->input_bytes = t->bytes;
    return 0;
}

static int load_tree(struct cas_store *cas, struct exec_tree_cache *trees, struct action *act,
                     struct reapi_status *st)
{
    struct tree_walk w = {.trees = trees};
    struct action_tree_totals root_totals;
    struct subtree_size *sizes = NULL;
    bool missing = false;
    size_t cap = 0;
    char *root_path;
    int rc;

    /* Before any presence check: a removal during the walk then leaves
     * everything remembered below stale on arrival. */
    if (trees != NULL)
        w.generation = cas_store_generation(cas);
    if (exec_tree_cache_get(trees, &act->input_root_digest, w.generation, &root_totals))
        return load_root_only(cas, act, &root_totals, st);
    root_path = strdup("");
    if (root_path == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = add_dir(act, &cap, &act->input_root_digest, root_path, 0, st);
    if (rc != 0)
        goto out;
    /* act->dirs grows while this loop runs: a queue. */
    for (size_t i = 0; i < act->n_dirs; i++) {
        char what[1024];

        snprintf(what, sizeof(what), "input directory '%.900s'",
                 act->dirs[i].path[0] ? act->dirs[i].path : ".");
        rc = load_message(cas, &act->dirs[i].digest,
                          &build__bazel__remote__execution__v2__directory__descriptor, what,
                          (ProtobufCMessage **)&act->dirs[i].dir, st);
        if (rc == -ENOENT) {
            missing = true;
            continue;
        }
        if (rc == 0)
            rc = visit_dir(cas, act, i, &cap, &w, st);
        if (rc != 0)
            goto out;
    }
    rc = check_pending(cas, &w.pending, st);
    if (rc != 0)
        goto out;
    if (missing || st->n_missing > 0) {
        rc = -ENOENT;
        goto out;
    }
    sizes = calloc(act->n_dirs, sizeof(*sizes));
    if (sizes == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    rc = size_subtree(act, &w, 0, 0, sizes, st);
    if (rc != 0)
        goto out;
    act->input_files = sizes[0].files;
    act->input_dirs = sizes[0].dirs;
    act->input_symlinks = sizes[0].symlinks;
    act->input_bytes = sizes[0].bytes;
    walk_remember(&w, act, sizes);
out:
    free(sizes);
    walk_free(&w);
    return rc;
}

/* Joins each output to the working directory, normalised. */
static int outputs_join(struct action *act, struct reapi_status *st)
{
    for (size_t i = 0; i < act->n_outputs; i++) {
        char *joined = action_path_join(act->working_directory, act->outputs[i].path);

        act->outputs[i].full = joined ? action_path_normalize(joined) : NULL;
        free(joined);
        if (act->outputs[i].full == NULL) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return -ENOMEM;
        }
    }
    return 0;
}

static int build_outputs(struct action *act, struct reapi_status *st)
{
    const Command *cmd = act->command;
    size_t n = 0;

    act->output_paths_api = cmd->n_output_paths > 0;
    if (act->output_paths_api)
        n = cmd->n_output_paths;
    else
        n = cmd->n_output_files + cmd->n_output_directories;
    if (n == 0)
        return 0;
    act->outputs = calloc(n, sizeof(*act->outputs));
    if (act->outputs == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    if (act->output_paths_api) {
        for (size_t i = 0; i < cmd->n_output_paths; i++)
            act->outputs[act->n_outputs++] =
                (struct action_output){cmd->output_paths[i], NULL, ACTION_OUTPUT_PATH};
        return outputs_join(act, st);
    }
    for (size_t i = 0; i < cmd->n_output_files; i++)
        act->outputs[act->n_outputs++] =
            (struct action_output){cmd->output_files[i], NULL, ACTION_OUTPUT_FILE};
    for (size_t i = 0; i < cmd->n_output_directories; i++)
        act->outputs[act->n_outputs++] =
            (struct action_output){cmd->output_directories[i], NULL, ACTION_OUTPUT_DIRECTORY};
    return outputs_join(act, st);
}

/* The value of the (validated) property container-image when it selects
 * one of cfg's execution environments, else NULL (none, or an image that
 * execution accepted_properties lets through onto the host's root). */
static const char *platform_environment(const Platform *p, const struct casbox_config *cfg)
{
    for (size_t i = 0; p != NULL && i < p->n_properties; i++) {
        const char *name = p->properties[i]->name ? p->properties[i]->name : "";
        const char *value = p->properties[i]->value ? p->properties[i]->value : "";

        if (strcasecmp(name, "container-image") == 0 && config_environment_find(cfg, value))
            return value;
    }
    return NULL;
}

/* The Command: decoded, validated, its outputs listed. -ENOENT when absent. */
static int load_command(struct cas_store *cas, struct action *act, const struct casbox_config *cfg,
                        struct reapi_status *st)
{
    const Platform *platform = act->action->platform;
    int rc;

    rc = load_message(cas, &act->command_digest,
                      &build__bazel__remote__execution__v2__command__descriptor, "Command",
                      (ProtobufCMessage **)&act->command, st);
    if (rc != 0)
        return rc;
    rc = action_validate_command(act->command, st);
    if (rc != 0)
        return rc;
    act->working_directory_buf = action_path_normalize(
        act->command->working_directory ? act->command->working_directory : "");
    if (act->working_directory_buf == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    act->working_directory = act->working_directory_buf;
    /* Platform moved to the Action in v2.2; older clients set the Command's. */
    if (platform == NULL || platform->n_properties == 0)
        platform = act->command->platform;
    rc = action_validate_platform(platform, cfg, &act->network, st);
    if (rc != 0)
        return rc;
    act->container_image = platform_environment(platform, cfg);
    return build_outputs(act, st);
}

int action_load(struct cas_store *cas, const struct cas_digest *action_digest,
                const struct casbox_config *cfg, struct action **out, struct reapi_status *st)
{
    return action_load_cached(cas, NULL, action_digest, cfg, out, st);
}

int action_load_cached(struct cas_store *cas, struct exec_tree_cache *trees,
                       const struct cas_digest *action_digest, const struct casbox_config *cfg,
                       struct action **out, struct reapi_status *st)
{
    struct action *act = calloc(1, sizeof(*act));
    bool command_missing = false;
    int rc;

    *out = NULL;
    if (act == NULL || (act->dir_index = calloc(1, sizeof(*act->dir_index))) == NULL ||
        (act->lazy = calloc(1, sizeof(*act->lazy))) == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    act->lazy->cas = cas;
    act->digest = *action_digest;
    act->working_directory = "";
    rc = load_message(cas, action_digest, &build__bazel__remote__execution__v2__action__descriptor,
                      "Action", (ProtobufCMessage **)&act->action, st);
    if (rc != 0)
        goto out;
    rc = action_digest_from_proto(act->action->command_digest, &act->command_digest,
                                  "Action.command_digest", st);
    if (rc == 0)
        rc = action_digest_from_proto(act->action->input_root_digest, &act->input_root_digest,
                                      "Action.input_root_digest", st);
    if (rc == 0)
        rc = action_validate_timeout(act->action->timeout, &act->timeout_ms, st);
    if (rc != 0)
        goto out;
    rc = load_command(cas, act, cfg, st);
    if (rc == -ENOENT) {
        command_missing = true;
        /* Still check the Action's own platform: a wrong one is final. */
        rc = action_validate_platform(act->action->platform, cfg, &act->network, st);
    }
    if (rc != 0)
        goto out;
    rc = load_tree(cas, trees, act, st);
    if (rc == 0 && command_missing)
        rc = -ENOENT;
out:
    if (rc != 0) {
        action_free(act);
        return rc;
    }
    *out = act;
    return 0;
}

static void lazy_dirs_free(struct action_lazy_dirs *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        if (l->dirs[i]->dir != NULL)
            build__bazel__remote__execution__v2__directory__free_unpacked(l->dirs[i]->dir, NULL);
        free(l->dirs[i]->path);
        free(l->dirs[i]);
    }
    free(l->dirs);
    action_digest_map_free(&l->index);
    free(l);
}

void action_free(struct action *act)
{
    if (act == NULL)
        return;
    for (size_t i = 0; i < act->n_dirs; i++) {
        if (act->dirs[i].dir != NULL)
            build__bazel__remote__execution__v2__directory__free_unpacked(act->dirs[i].dir, NULL);
        free(act->dirs[i].path);
    }
    free(act->dirs);
    lazy_dirs_free(act->lazy);
    for (size_t i = 0; i < act->n_outputs; i++)
        free(act->outputs[i].full);
    free(act->working_directory_buf);
    if (act->dir_index != NULL)
        action_digest_map_free(act->dir_index);
    free(act->dir_index);
    free(act->outputs);
    if (act->command != NULL)
        build__bazel__remote__execution__v2__command__free_unpacked(act->command, NULL);
    if (act->action != NULL)
        build__bazel__remote__execution__v2__action__free_unpacked(act->action, NULL);
    free(act);
}

/* Reads and decodes a Directory of a subtree the load did not walk (it was
 * checked by an earlier load). NULL when it cannot be read any more. */
static const struct action_input_dir *lazy_dir_load(struct action_lazy_dirs *l,
                                                    const struct cas_digest *digest)
{
    struct action_input_dir *e = NULL;
    struct reapi_status st;
    size_t i;

    if (action_digest_map_get(&l->index, digest, &i))
        return l->dirs[i];
    reapi_status_init(&st);
    if (array_reserve((void **)&l->dirs, &l->cap, l->n, sizeof(*l->dirs)) != 0)
        goto fail;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->path = strdup("")) == NULL)
        goto fail;
    e->digest = *digest;
    if (load_message(l->cas, digest, &build__bazel__remote__execution__v2__directory__descriptor,
                     "input directory", (ProtobufCMessage **)&e->dir, &st) != 0)
        goto fail;
    if (action_digest_map_put(&l->index, digest, l->n, NULL) < 0)
        goto fail;
    l->dirs[l->n++] = e;
    reapi_status_free(&st);
    return e;
fail:
    if (e != NULL) {
        if (e->dir != NULL)
            build__bazel__remote__execution__v2__directory__free_unpacked(e->dir, NULL);
        free(e->path);
        free(e);
    }
    reapi_status_free(&st);
    return NULL;
}

const struct action_input_dir *action_input_dir_find(const struct action *act,
                                                     const struct cas_digest *digest)
{
    size_t i;

    if (action_digest_map_get(act->dir_index, digest, &i))
        return &act->dirs[i];
    if (act->lazy == NULL)
        return NULL;
    return lazy_dir_load(act->lazy, digest);
}
