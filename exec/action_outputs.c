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
#include "util/util.h"

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
    /* A lower directory is only looked into (fstatat, openat of a file,
     * readlinkat): O_PATH, which costs a FUSE lower no OPENDIR round trip;
     * list_layer opens one for reading when it lists it. */
    const int flags = (upper ? O_RDONLY : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
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

/* Grows the batch arrays for one more file (and fd). */
static int batch_reserve(struct action_collect *c, bool fd)
{
    if (c->n_files == c->files_cap) {
        size_t cap = c->files_cap ? c->files_cap * 2 : 64;
        struct cas_ingest_file *files = realloc(c->files, cap * sizeof(*files));
        struct action_pending_dest *dests;

        if (files == NULL)
            return -ENOMEM;
        c->files = files;
        dests = realloc(c->dests, cap * sizeof(*dests));
        if (dests == NULL)
            return -ENOMEM;
        c->dests = dests;
        c->files_cap = cap;
    }
    if (fd)
        return array_reserve((void **)&c->fds, &c->fds_cap, c->n_fds, sizeof(*c->fds));
    return 0;
}

/* Forgets the queued files (names, paths, fds) and starts a new batch. */
static void batch_clear(struct action_collect *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        free((char *)c->files[i].name);
        free(c->dests[i].path);
    }
    for (size_t i = 0; i < c->n_fds; i++)
        close(c->fds[i]);
    c->n_files = c->n_fds = 0;
    c->batch++;
}

static void batch_free(struct action_collect *c)
{
    batch_clear(c);
    free(c->files);
    free(c->dests);
    free(c->fds);
    cas_ingest_free(c->engine);
}

/* Queues name in dir_fd (AT_FDCWD: a path of ours) with its destination. */
static int batch_add(struct action_collect *c, int dir_fd, const char *name, bool move,
                     const char *path, Digest **dest, bool missing_ok)
{
    struct cas_ingest_file *f;
    struct action_pending_dest *d;

    if (batch_reserve(c, false) != 0)
        return -ENOMEM;
    f = &c->files[c->n_files];
    d = &c->dests[c->n_files];
    memset(f, 0, sizeof(*f));
    f->dir_fd = dir_fd;
    f->move = move;
    f->name = strdup(name);
    d->path = strdup(path);
    d->digest = dest;
    d->missing_ok = missing_ok;
    c->n_files++; /* freed with the batch from now on */
    return f->name && d->path ? 0 : -ENOMEM;
}

int action_collect_file(struct action_collect *c, int dir_fd, struct action_batch_fd *bfd,
                        const char *name, const struct stat *st, bool upper, const char *path,
                        Digest **dest)
{
    int rc;

    if (c->n_files >= ACTION_BATCH_FILES || c->n_fds >= ACTION_BATCH_FDS) {
        rc = action_collect_flush(c);
        if (rc != 0)
            return rc;
    }
    if (bfd->fd < 0 || bfd->batch != c->batch) {
        if (batch_reserve(c, true) != 0)
            goto nomem;
        bfd->fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
        if (bfd->fd < 0) {
            rc = -errno;
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "queueing output file '%s': %s", path,
                             strerror(-rc));
            return rc;
        }
        bfd->batch = c->batch;
        c->fds[c->n_fds++] = bfd->fd;
    }
    /* A file the command made unreadable: it is scratch, and ours. */
    if (upper && (st->st_mode & 0400) == 0)
        fchmodat(dir_fd, name, (st->st_mode & 07777) | 0400, AT_SYMLINK_NOFOLLOW);
    if (batch_add(c, bfd->fd, name, upper, path, dest, false) != 0)
        goto nomem;
    return 0;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
}

static void stats_add(struct cas_ingest_stats *sum, const struct cas_ingest_stats *s)
{
    sum->mode = s->mode;
    sum->threads = s->threads;
    sum->files += s->files;
    sum->bytes += s->bytes;
    sum->renamed += s->renamed;
    sum->copied += s->copied;
    sum->present += s->present;
    sum->retries += s->retries;
    sum->micros += s->micros;
}

int action_collect_flush(struct action_collect *c)
{
    struct cas_ingest_stats stats;
    int rc = 0;

    if (c->n_files == 0)
        goto out;
    if (c->engine == NULL) {
        rc = cas_ingest_new(c->cas, c->ingest_opt, &c->engine);
        if (rc != 0) {
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL,
                             "cannot set up output ingestion ([cas] ingest_*): %s", strerror(-rc));
            goto out;
        }
    }
    cas_ingest_run(c->engine, c->files, c->n_files, &stats);
    stats_add(&c->ingest, &stats);
    for (size_t i = 0; i < c->n_files; i++) {
        const struct cas_ingest_file *f = &c->files[i];
        const struct action_pending_dest *d = &c->dests[i];
        struct cas_digest digest = f->digest;

        rc = f->error;
        if (rc == -ENOENT && d->missing_ok) {
            digest = *cas_digest_empty();
            rc = 0;
        }
        if (rc != 0) {
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "storing output '%s' in the CAS: %s",
                             d->path, strerror(-rc));
            goto out;
        }
        *d->digest = action_digest_proto_new(&digest);
        if (*d->digest == NULL) {
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
    }
out:
    batch_clear(c);
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
                                  const struct action_output *o, const struct view_entry *e)
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
    struct view_entry e = {.parent = {-1, -1}};
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

/* stdout/stderr: moved into the CAS with the outputs; a file never created
 * is empty output. */
static int collect_stdio(struct action_collect *c, const char *path, const char *what, Digest **out)
{
    if (batch_add(c, AT_FDCWD, path, true, what, out, true) != 0) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
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
        rc = collect_stdio(&c, scratch->stdout_path, "stdout", &b.r->stdout_digest);
    if (rc == 0)
        rc = collect_stdio(&c, scratch->stderr_path, "stderr", &b.r->stderr_digest);
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
    batch_free(&c);
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
