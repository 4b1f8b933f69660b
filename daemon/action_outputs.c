/*
 * action_outputs.c - turns what a command left in its exec root into an
 * ActionResult: output files, directories (as Trees, see action_tree.c) and
 * symlinks, stdout and stderr, all stored in the CAS.
 *
 * The exec root was an overlay mount inside the sandbox, gone by now; what is
 * left on the host are its two layers. Lookups here replay the overlay's
 * rules on them: a name is looked up in upper/ first; a character device 0:0
 * there is a whiteout (the command deleted the name); an upper directory
 * hides the lower one when it is opaque (xattr user.overlay.opaque = "y",
 * the overlay being mounted with userxattr; trusted.overlay.opaque is
 * honoured too) or when the lower name is not a directory; otherwise the two
 * directories merge. The rules assume the overlay ran without redirect_dir
 * and metacopy, which userxattr mounts do not allow.
 *
 * Nothing on the host follows a symlink the command made: every lookup is an
 * *at() call with AT_SYMLINK_NOFOLLOW/O_NOFOLLOW from a directory fd, and a
 * symlink in an output's parents is resolved here, by hand, inside the exec
 * root (an absolute target counts as inside only under SANDBOX_EXEC_ROOT).
 */
#include "action_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

/* --- the overlay view --- */

void action_view_dir_close(struct action_view_dir *d)
{
    if (d->upper >= 0)
        close(d->upper);
    if (d->lower >= 0)
        close(d->lower);
    d->upper = d->lower = -1;
}

static bool xattr_is_y(int fd, const char *name)
{
    char v[4];
    ssize_t n = fgetxattr(fd, name, v, sizeof(v));

    return n == 1 && v[0] == 'y';
}

bool action_view_is_opaque(int upper_fd)
{
    return xattr_is_y(upper_fd, "user.overlay.opaque") ||
           xattr_is_y(upper_fd, "trusted.overlay.opaque");
}

int action_view_open_dir(int parent_fd, const char *name, bool upper)
{
    const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    struct stat st;
    int fd, rc;

    fd = openat(parent_fd, name, flags);
    if (fd < 0 && errno == EACCES && upper) {
        if (fchmodat(parent_fd, name, 0700, AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
        fd = openat(parent_fd, name, flags);
    }
    if (fd < 0)
        return -errno;
    /* Collection renames files out of upper directories: make them ours. */
    if (upper) {
        if (fstat(fd, &st) < 0 ||
            ((st.st_mode & 0700) != 0700 && fchmod(fd, st.st_mode | 0700) < 0)) {
            rc = -errno;
            close(fd);
            return rc;
        }
    }
    return fd;
}

/* Looks name up in the merged directory. -ENOENT when absent or whited out. */
static int view_lookup(const struct action_view_dir *dir, const char *name, struct stat *st,
                       bool *in_upper)
{
    if (dir->upper >= 0) {
        if (fstatat(dir->upper, name, st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (action_view_is_whiteout(st))
                return -ENOENT;
            *in_upper = true;
            return 0;
        }
        if (errno != ENOENT)
            return -errno;
    }
    if (dir->lower >= 0) {
        if (fstatat(dir->lower, name, st, AT_SYMLINK_NOFOLLOW) == 0) {
            *in_upper = false;
            return 0;
        }
        if (errno != ENOENT)
            return -errno;
    }
    return -ENOENT;
}

int action_view_descend(const struct action_view_dir *dir, const char *name, bool in_upper,
                        struct action_view_dir *child)
{
    struct stat st;
    int fd;

    child->upper = child->lower = -1;
    if (in_upper) {
        fd = action_view_open_dir(dir->upper, name, true);
        if (fd < 0)
            return fd;
        child->upper = fd;
        if (dir->lower < 0 || action_view_is_opaque(fd))
            return 0;
        if (fstatat(dir->lower, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            return 0;
    }
    fd = action_view_open_dir(dir->lower, name, false);
    if (fd < 0) {
        action_view_dir_close(child);
        return fd;
    }
    child->lower = fd;
    return 0;
}

static int view_dup(const struct action_view_dir *from, struct action_view_dir *to)
{
    to->upper = from->upper >= 0 ? fcntl(from->upper, F_DUPFD_CLOEXEC, 0) : -1;
    to->lower = from->lower >= 0 ? fcntl(from->lower, F_DUPFD_CLOEXEC, 0) : -1;
    if ((from->upper >= 0 && to->upper < 0) || (from->lower >= 0 && to->lower < 0)) {
        action_view_dir_close(to);
        return -EMFILE;
    }
    return 0;
}

/* An output path's final entry: parent (owned) and name in it, or the
 * directory itself when name is "" (the output is the exec root). */
struct view_entry {
    struct action_view_dir parent;
    char name[NAME_MAX + 1];
    struct stat st;
    bool in_upper;
};

/* Walks canon (components without symlinks) from the root. */
static int view_walk(const struct action_view_dir *root, const char *canon,
                     struct action_view_dir *out)
{
    struct action_view_dir cur, next;
    const char *p = canon;
    int rc;

    rc = view_dup(root, &cur);
    if (rc != 0)
        return rc;
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        char name[NAME_MAX + 1];
        struct stat st;
        bool in_upper;

        snprintf(name, sizeof(name), "%.*s", (int)len, p);
        rc = view_lookup(&cur, name, &st, &in_upper);
        if (rc == 0 && !S_ISDIR(st.st_mode))
            rc = -ENOTDIR;
        if (rc == 0)
            rc = action_view_descend(&cur, name, in_upper, &next);
        action_view_dir_close(&cur);
        if (rc != 0)
            return rc;
        cur = next;
        p += len;
        if (*p == '/')
            p++;
    }
    *out = cur;
    return 0;
}

/*
 * Resolves path (relative to the exec root) through the view, following
 * symlinks in every component but the last, inside the exec root only.
 * 0 and *e filled; 1 when the output does not exist; <0 with st set.
 */
static int view_resolve(struct action_collect *c, const struct action_view_dir *root,
                        const char *path, const char *output, struct view_entry *e)
{
    char *todo = strdup(path), *canon = calloc(1, PATH_MAX);
    struct action_view_dir cur = {-1, -1}, next;
    size_t canon_len = 0, pos = 0;
    int hops = 0, rc;

    e->parent.upper = e->parent.lower = -1;
    if (todo == NULL || canon == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    rc = view_dup(root, &cur);
    if (rc != 0)
        goto io_error;
    for (;;) {
        const char *comp = todo + pos;
        const char *slash = strchr(comp, '/');
        size_t len = slash ? (size_t)(slash - comp) : strlen(comp);
        bool last = slash == NULL;
        char name[NAME_MAX + 1], target[PATH_MAX];
        struct stat st;
        bool in_upper;
        ssize_t n;

        pos += len + (last ? 0 : 1);
        if (len > NAME_MAX) {
            reapi_status_set(c->st, GRPC_STATUS_INVALID_ARGUMENT,
                             "output '%s': a symlink in its path has a component longer than "
                             "255 bytes",
                             output);
            rc = -EINVAL;
            goto out;
        }
        snprintf(name, sizeof(name), "%.*s", (int)len, comp);
        if (last && len > 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            rc = view_lookup(&cur, name, &e->st, &e->in_upper);
            if (rc == -ENOENT) {
                rc = 1;
                goto out;
            }
            if (rc != 0)
                goto io_error;
            memcpy(e->name, name, len + 1);
            e->parent = cur;
            cur.upper = cur.lower = -1;
            goto out;
        }
        if (len == 0 || strcmp(name, ".") == 0) {
            /* nothing to do */
        } else if (strcmp(name, "..") == 0) {
            char *up;

            if (canon_len == 0)
                goto escape;
            up = strrchr(canon, '/');
            canon_len = up ? (size_t)(up - canon) : 0;
            canon[canon_len] = '\0';
            action_view_dir_close(&cur);
            rc = view_walk(root, canon, &cur);
            if (rc != 0)
                goto io_error;
        } else {
            rc = view_lookup(&cur, name, &st, &in_upper);
            if (rc == -ENOENT || (rc == 0 && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode))) {
                rc = 1; /* a parent is missing or not a directory: not produced */
                goto out;
            }
            if (rc != 0)
                goto io_error;
            if (S_ISDIR(st.st_mode)) {
                if (canon_len + 1 + len >= PATH_MAX) {
                    rc = -ENAMETOOLONG;
                    goto io_error;
                }
                canon_len += (size_t)snprintf(canon + canon_len, PATH_MAX - canon_len, "%s%s",
                                              canon_len ? "/" : "", name);
                rc = action_view_descend(&cur, name, in_upper, &next);
                if (rc != 0)
                    goto io_error;
                action_view_dir_close(&cur);
                cur = next;
            } else {
                /* A symlink in the parents: splice its target in. */
                char *spliced;

                if (++hops > ACTION_MAX_SYMLINK_HOPS) {
                    reapi_status_set(c->st, GRPC_STATUS_INVALID_ARGUMENT,
                                     "output '%s': more than %d symlinks in its path", output,
                                     ACTION_MAX_SYMLINK_HOPS);
                    rc = -ELOOP;
                    goto out;
                }
                n = readlinkat(in_upper ? cur.upper : cur.lower, name, target, sizeof(target));
                if (n < 0 || n == (ssize_t)sizeof(target)) {
                    rc = n < 0 ? -errno : -ENAMETOOLONG;
                    goto io_error;
                }
                target[n] = '\0';
                if (target[0] == '/') {
                    size_t rl = strlen(SANDBOX_EXEC_ROOT);

                    if (strncmp(target, SANDBOX_EXEC_ROOT, rl) != 0 ||
                        (target[rl] != '/' && target[rl] != '\0'))
                        goto escape;
                    memmove(target, target + rl, (size_t)n - rl + 1);
                    canon_len = 0;
                    canon[0] = '\0';
                    action_view_dir_close(&cur);
                    rc = view_dup(root, &cur);
                    if (rc != 0)
                        goto io_error;
                }
                if (asprintf(&spliced, "%s/%s", target, todo + pos) < 0) {
                    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                    rc = -ENOMEM;
                    goto out;
                }
                free(todo);
                todo = spliced;
                pos = 0;
                continue;
            }
        }
        if (last) {
            /* The path names a directory itself ("" or the exec root). */
            if (fstat(cur.upper >= 0 ? cur.upper : cur.lower, &e->st) < 0) {
                rc = -errno;
                goto io_error;
            }
            e->in_upper = cur.upper >= 0;
            e->name[0] = '\0';
            e->parent = cur;
            cur.upper = cur.lower = -1;
            rc = 0;
            goto out;
        }
    }
escape:
    reapi_status_set(c->st, GRPC_STATUS_INVALID_ARGUMENT,
                     "output '%s' resolves outside the exec root through a symlink in its path",
                     output);
    rc = -EINVAL;
    goto out;
io_error:
    reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "looking up output '%s': %s", output,
                     strerror(-rc));
out:
    action_view_dir_close(&cur);
    free(todo);
    free(canon);
    return rc;
}

/* --- collecting entries --- */

int action_collect_account(struct action_collect *c, uint64_t bytes, bool is_file, bool is_symlink,
                           const char *path)
{
    struct action_output_stats *s = &c->stats;
    uint64_t entries;

    if (is_file) {
        s->files++;
        s->bytes += bytes;
    } else if (is_symlink) {
        s->symlinks++;
    } else {
        s->dirs++;
    }
    entries = s->files + s->dirs + s->symlinks;
    if (c->limits->max_entries != 0 && entries > c->limits->max_entries) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "the action's outputs have more than %" PRIu64
                         " files, directories and symlinks (execution max_output_files), at '%s'",
                         c->limits->max_entries, path);
        return -E2BIG;
    }
    if (c->limits->max_bytes != 0 && s->bytes > c->limits->max_bytes) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "the action's output files exceed %" PRIu64
                         " bytes (execution max_output_bytes), at '%s'",
                         c->limits->max_bytes, path);
        return -EFBIG;
    }
    return 0;
}

int action_collect_file(struct action_collect *c, int dir_fd, const char *name, bool upper,
                        const char *path, struct cas_digest *d)
{
    char proc[32 + NAME_MAX];
    struct stat st;
    int rc;

    /* The store opens by path: this one cannot be redirected by a symlink. */
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dir_fd, name);
    if (upper && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & 0400) == 0)
        fchmodat(dir_fd, name, (st.st_mode & 07777) | 0400, AT_SYMLINK_NOFOLLOW);
    rc = cas_store_put_file(c->cas, proc, upper, d);
    if (rc != 0)
        reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "storing output file '%s' in the CAS: %s",
                         path, strerror(-rc));
    return rc;
}

int action_collect_symlink(struct action_collect *c, int dir_fd, const char *name, const char *path,
                           char **target)
{
    char buf[PATH_MAX];
    ssize_t n;

    *target = NULL;
    n = readlinkat(dir_fd, name, buf, sizeof(buf));
    if (n < 0 || n == (ssize_t)sizeof(buf)) {
        int rc = n < 0 ? -errno : -ENAMETOOLONG;

        reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "reading output symlink '%s': %s", path,
                         strerror(-rc));
        return rc;
    }
    buf[n] = '\0';
    if (buf[0] == '/') {
        reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                         "output symlink '%s' has the absolute target '%.300s', which this server "
                         "does not return (symlink_absolute_path_strategy DISALLOWED)",
                         path, buf);
        return -EINVAL;
    }
    if (n == 0) {
        reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                         "output symlink '%s' has an empty target", path);
        return -EINVAL;
    }
    *target = strdup(buf);
    if (*target == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* --- the ActionResult --- */

struct result_builder {
    pb_action_result_t *r;
    size_t files_cap, dirs_cap, symlinks_cap, file_symlinks_cap, dir_symlinks_cap;
};

static int add_output_file(struct result_builder *b, const char *path, const struct cas_digest *d,
                           bool executable)
{
    pb_action_result_t *r = b->r;
    pb_output_file_t *f;

    if (action_array_reserve((void **)&r->output_files, &b->files_cap, r->n_output_files,
                             sizeof(*r->output_files)) != 0)
        return -ENOMEM;
    f = malloc(sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__output_file__init(f);
    f->path = strdup(path);
    f->digest = action_digest_proto_new(d);
    f->is_executable = executable;
    r->output_files[r->n_output_files++] = f; /* freed with the result from now on */
    return f->path && f->digest ? 0 : -ENOMEM;
}

static int add_output_directory(struct result_builder *b, const char *path,
                                const struct cas_digest *tree)
{
    pb_action_result_t *r = b->r;
    pb_output_directory_t *o;

    if (action_array_reserve((void **)&r->output_directories, &b->dirs_cap, r->n_output_directories,
                             sizeof(*r->output_directories)) != 0)
        return -ENOMEM;
    o = malloc(sizeof(*o));
    if (o == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__output_directory__init(o);
    o->path = strdup(path);
    o->tree_digest = action_digest_proto_new(tree);
    r->output_directories[r->n_output_directories++] = o;
    return o->path && o->tree_digest ? 0 : -ENOMEM;
}

static int add_output_symlink(pb_output_symlink_t ***arr, size_t *n, size_t *cap, const char *path,
                              const char *target)
{
    pb_output_symlink_t *s;

    if (action_array_reserve((void **)arr, cap, *n, sizeof(**arr)) != 0)
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
                                  const struct action_output *o, const struct view_entry *e)
{
    pb_action_result_t *r = b->r;
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
    struct view_entry e = {.parent = {-1, -1}};
    struct cas_digest d;
    char *full = action_path_join(act->working_directory, o->path);
    int rc;

    if (full == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    rc = view_resolve(c, root, full, o->path, &e);
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
        if (rc == 0)
            rc = action_collect_file(c, e.in_upper ? e.parent.upper : e.parent.lower, e.name,
                                     e.in_upper, o->path, &d);
        if (rc == 0 && add_output_file(b, o->path, &d, (e.st.st_mode & 0100) != 0) != 0) {
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
        }
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
        rc = action_tree_collect(c, &dir, o->path, &d);
        if (rc == 0 && add_output_directory(b, o->path, &d) != 0) {
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
        }
    } else if (S_ISLNK(e.st.st_mode)) {
        rc = collect_symlink_output(c, b, o, &e);
    } else {
        reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                         "output '%s' is not a regular file, directory or symlink", o->path);
        rc = -EINVAL;
    }
out:
    action_view_dir_close(&dir);
    action_view_dir_close(&e.parent);
    free(full);
    return rc;
}

/* stdout/stderr: moved into the CAS; a file never created is empty output. */
static int collect_stdio(struct action_collect *c, const char *path, const char *what,
                         pb_digest_t **out)
{
    struct cas_digest d = *cas_digest_empty();
    int rc;

    rc = cas_store_put_file(c->cas, path, true, &d);
    if (rc == -ENOENT) {
        d = *cas_digest_empty();
        rc = 0;
    }
    if (rc != 0) {
        reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "storing the action's %s in the CAS: %s",
                         what, strerror(-rc));
        return rc;
    }
    *out = action_digest_proto_new(&d);
    if (*out == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int action_outputs_collect(struct cas_store *cas, const struct action *act,
                           const struct action_scratch *scratch,
                           const struct action_output_limits *limits, pb_action_result_t **out,
                           struct action_output_stats *stats, struct reapi_status *st)
{
    struct action_collect c = {.cas = cas, .limits = limits, .st = st};
    struct action_view_dir root = {-1, -1};
    struct result_builder b = {0};
    uint64_t start = action_now_us();
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
    root.lower = open(scratch->lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root.lower < 0)
        goto io_error;
    if (action_view_is_opaque(root.upper)) {
        close(root.lower);
        root.lower = -1;
    }
    for (size_t i = 0; rc == 0 && i < act->n_outputs; i++)
        rc = collect_one(&c, &b, &root, act, &act->outputs[i]);
    if (rc == 0)
        rc = collect_stdio(&c, scratch->stdout_path, "stdout", &b.r->stdout_digest);
    if (rc == 0)
        rc = collect_stdio(&c, scratch->stderr_path, "stderr", &b.r->stderr_digest);
    goto out;
io_error:
    rc = -errno;
    reapi_status_set(st, GRPC_STATUS_INTERNAL, "opening the exec root's layers under %s: %s",
                     scratch->root, strerror(-rc));
out:
    action_view_dir_close(&root);
    c.stats.micros = action_now_us() - start;
    if (stats != NULL)
        *stats = c.stats;
    if (rc != 0) {
        action_result_free(b.r);
        return rc;
    }
    *out = b.r;
    return 0;
}

void action_result_free(pb_action_result_t *result)
{
    if (result != NULL)
        build__bazel__remote__execution__v2__action_result__free_unpacked(result, NULL);
}
