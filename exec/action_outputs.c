/*
 * action_outputs.c - turns what a command left in its exec root into an
 * ActionResult: output files, directories (as Trees, see action_tree.c) and
 * symlinks, stdout and stderr, all stored in the CAS. Each output is found
 * through the overlay view (action_view.c: the overlay's rules replayed on
 * its two layers, symlinks in an output's parents resolved inside the exec
 * root), counted and queued for ingestion (action_collect.c).
 */
#include "action_internal.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- the ActionResult --- */

/* An output directory waiting for its Tree. */
struct pending_tree {
    struct action_tree *tree;
    OutputDirectory *out;
    const char *path; /* the Command's */
};

struct result_builder {
    ActionResult *r;
    size_t files_cap, dirs_cap, symlinks_cap, file_symlinks_cap, dir_symlinks_cap;
    struct pending_tree *trees;
    size_t n_trees, trees_cap;
};

/* Adds output file path; its digest comes with the batch (*out->digest). */
static int add_output_file(struct result_builder *b, const char *path, bool executable,
                           OutputFile **out)
{
    ActionResult *r = b->r;
    OutputFile *f;

    if (array_reserve((void **)&r->output_files, &b->files_cap, r->n_output_files,
                      sizeof(*r->output_files)) != 0)
        return -ENOMEM;
    f = malloc(sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__output_file__init(f);
    f->path = strdup(path);
    f->is_executable = executable;
    r->output_files[r->n_output_files++] = f; /* freed with the result from now on */
    *out = f;
    return f->path ? 0 : -ENOMEM;
}

/* Adds output directory path; its Tree digest comes after the batch. */
static int add_output_directory(struct result_builder *b, const char *path, OutputDirectory **out)
{
    ActionResult *r = b->r;
    OutputDirectory *o;

    if (array_reserve((void **)&r->output_directories, &b->dirs_cap, r->n_output_directories,
                      sizeof(*r->output_directories)) != 0)
        return -ENOMEM;
    o = malloc(sizeof(*o));
    if (o == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__output_directory__init(o);
    o->path = strdup(path);
    r->output_directories[r->n_output_directories++] = o;
    *out = o;
    return o->path ? 0 : -ENOMEM;
}

static int add_output_symlink(OutputSymlink ***arr, size_t *n, size_t *cap, const char *path,
                              const char *target)
{
    OutputSymlink *s;

    if (array_reserve((void **)arr, cap, *n, sizeof(**arr)) != 0)
        return -ENOMEM;
    s = malloc(sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__output_symlink__init(s);
    s->path = strdup(path);
    s->target = strdup(target);
    (*arr)[(*n)++] = s;
    return s->path && s->target ? 0 : -ENOMEM;
}

static int collect_symlink_output(struct action_collect *c, struct result_builder *b,
                                  const struct action_output *o, const struct action_view_entry *e)
{
    ActionResult *r = b->r;
    char *target = NULL;
    int rc;

    rc = action_collect_account(c, 0, false, true, o->path);
    if (rc == 0)
        rc = action_collect_symlink(c, e->in_upper ? e->parent.upper : e->parent.lower, e->name,
                                    o->path, &target);
    if (rc != 0)
        return rc;
    switch (o->kind) {
    case ACTION_OUTPUT_PATH:
        rc = add_output_symlink(&r->output_symlinks, &r->n_output_symlinks, &b->symlinks_cap,
                                o->path, target);
        break;
    case ACTION_OUTPUT_FILE:
        rc = add_output_symlink(&r->output_file_symlinks, &r->n_output_file_symlinks,
                                &b->file_symlinks_cap, o->path, target);
        break;
    case ACTION_OUTPUT_DIRECTORY:
        rc = add_output_symlink(&r->output_directory_symlinks, &r->n_output_directory_symlinks,
                                &b->dir_symlinks_cap, o->path, target);
        break;
    }
    free(target);
    if (rc != 0)
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return rc;
}

static int collect_one(struct action_collect *c, struct result_builder *b,
                       const struct action_view_dir *root, const struct action *act,
                       const struct action_output *o)
{
    struct action_view_dir dir = {-1, -1};
    struct action_view_entry e = {.parent = {-1, -1}};
    OutputDirectory *od = NULL;
    OutputFile *of = NULL;
    struct action_tree *tree = NULL;
    char *full = action_path_join(act->working_directory, o->path);
    struct stat pst;
    int parent, rc;

    if (full == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = action_view_resolve(root, full, o->path, &e, c->st);
    if (rc == 1) {
        rc = 0; /* not produced: absent from the result */
        goto out;
    }
    if (rc != 0)
        goto out;
    if (S_ISREG(e.st.st_mode)) {
        if (o->kind == ACTION_OUTPUT_DIRECTORY) {
            reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                             "output directory '%s' is a regular file", o->path);
            rc = -EINVAL;
            goto out;
        }
        rc = action_collect_account(c, (uint64_t)e.st.st_size, true, false, o->path);
        if (rc != 0)
            goto out;
        if (add_output_file(b, o->path, (e.st.st_mode & 0100) != 0, &of) != 0)
            goto nomem;
        parent = e.in_upper ? e.parent.upper : e.parent.lower;
        /* Outputs in one directory share one fd in the batch. */
        if (fstat(parent, &pst) < 0) {
            rc = -errno;
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "looking up output '%s': %s", o->path,
                             strerror(-rc));
            goto out;
        }
        if (pst.st_dev != c->parent_dev || pst.st_ino != c->parent_ino || c->parent_bfd.fd < 0) {
            c->parent_dev = pst.st_dev;
            c->parent_ino = pst.st_ino;
            c->parent_bfd = (struct action_batch_fd){-1, 0};
        }
        rc = action_collect_file(c, parent, &c->parent_bfd, e.name, &e.st, e.in_upper, o->path,
                                 &of->digest);
    } else if (S_ISDIR(e.st.st_mode)) {
        if (o->kind == ACTION_OUTPUT_FILE) {
            reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                             "output file '%s' is a directory", o->path);
            rc = -EINVAL;
            goto out;
        }
        if (e.name[0] == '\0') {
            dir = e.parent;
            e.parent.upper = e.parent.lower = -1;
        } else {
            rc = action_view_descend(&e.parent, e.name, e.in_upper, &dir);
            if (rc != 0) {
                reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "opening output directory '%s': %s",
                                 o->path, strerror(-rc));
                goto out;
            }
        }
        rc = action_tree_walk(c, &dir, o->path, &tree);
        if (rc != 0)
            goto out;
        if (add_output_directory(b, o->path, &od) != 0 ||
            array_reserve((void **)&b->trees, &b->trees_cap, b->n_trees, sizeof(*b->trees)) != 0) {
            action_tree_free(tree);
            goto nomem;
        }
        b->trees[b->n_trees++] = (struct pending_tree){tree, od, o->path};
    } else if (S_ISLNK(e.st.st_mode)) {
        rc = collect_symlink_output(c, b, o, &e);
    } else {
        reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                         "output '%s' is not a regular file, directory or symlink", o->path);
        rc = -EINVAL;
    }
    goto out;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = -ENOMEM;
out:
    action_view_dir_close(&dir);
    action_view_dir_close(&e.parent);
    free(full);
    return rc;
}

/* After the batch: each output directory's Tree. */
static int finish_trees(struct action_collect *c, struct result_builder *b)
{
    int rc = 0;

    for (size_t i = 0; i < b->n_trees; i++) {
        struct pending_tree *t = &b->trees[i];
        struct cas_digest d;

        if (rc == 0) {
            rc = action_tree_finish(c, t->tree, t->path, &d);
            if (rc == 0) {
                t->out->tree_digest = action_digest_proto_new(&d);
                if (t->out->tree_digest == NULL) {
                    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                    rc = -ENOMEM;
                }
            }
        } else {
            action_tree_free(t->tree);
        }
        t->tree = NULL;
    }
    return rc;
}

int action_outputs_collect_opts(struct cas_store *cas, const struct action *act,
                                const struct action_scratch *scratch,
                                const struct action_output_limits *limits,
                                const struct cas_ingest_options *ingest, ActionResult **out,
                                struct action_output_stats *stats, struct reapi_status *st)
{
    struct action_collect c = {
        .cas = cas, .limits = limits, .st = st, .ingest_opt = ingest, .parent_bfd = {-1, 0}};
    struct action_view_dir root = {-1, -1};
    struct result_builder b = {0};
    uint64_t start = clock_mono_us();
    int rc = 0;

    *out = NULL;
    b.r = malloc(sizeof(*b.r));
    if (b.r == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    build__bazel__remote__execution__v2__action_result__init(b.r);
    root.upper = open(scratch->upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root.upper < 0)
        goto io_error;
    root.lower = open(scratch->lower, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root.lower < 0)
        goto io_error;
    if (action_view_is_opaque(root.upper)) {
        close(root.lower);
        root.lower = -1;
    }
    for (size_t i = 0; rc == 0 && i < act->n_outputs; i++)
        rc = collect_one(&c, &b, &root, act, &act->outputs[i]);
    if (rc == 0)
        rc = action_collect_stdio(&c, scratch->stdout_path, "stdout", &b.r->stdout_digest);
    if (rc == 0)
        rc = action_collect_stdio(&c, scratch->stderr_path, "stderr", &b.r->stderr_digest);
    if (rc == 0)
        rc = action_collect_flush(&c);
    if (rc == 0)
        rc = finish_trees(&c, &b);
    goto out;
io_error:
    rc = -errno;
    reapi_status_set(st, GRPC_STATUS_INTERNAL, "opening the exec root's layers under %s: %s",
                     scratch->root, strerror(-rc));
out:
    for (size_t i = 0; i < b.n_trees; i++)
        action_tree_free(b.trees[i].tree);
    free(b.trees);
    action_collect_free(&c);
    action_view_dir_close(&root);
    c.stats.micros = clock_mono_us() - start;
    if (stats != NULL)
        *stats = c.stats;
    if (rc != 0) {
        action_result_free(b.r);
        return rc;
    }
    *out = b.r;
    return 0;
}

int action_outputs_collect(struct cas_store *cas, const struct action *act,
                           const struct action_scratch *scratch,
                           const struct action_output_limits *limits, ActionResult **out,
                           struct action_output_stats *stats, struct reapi_status *st)
{
    return action_outputs_collect_opts(cas, act, scratch, limits, NULL, out, stats, st);
}

void action_result_free(ActionResult *result)
{
    if (result != NULL)
        build__bazel__remote__execution__v2__action_result__free_unpacked(result, NULL);
}
