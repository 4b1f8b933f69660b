/*
 * action_view.c - the overlay view: the exec root as the command saw it,
 * read back from the overlay's two layers.
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
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

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

/* --- resolving an output's path ---
 *
 * One step a component, each returning 0 to go on, 1 when the output does
 * not exist (not an error: it was not produced) or a negative errno with st
 * set; action_view_resolve alone sets up and cleans up. */

/* A resolution in progress: the path still to walk (todo from pos), the
 * part walked so far without symlinks (canon) and its directory (cur). */
struct view_resolver {
    const struct action_view_dir *root;
    const char *output; /* names the output in messages */
    struct reapi_status *st;
    char *todo;
    size_t pos;
    char *canon; /* PATH_MAX bytes */
    size_t canon_len;
    struct action_view_dir cur;
    int hops;  /* symlinks spliced in */
    bool done; /* the entry is filled */
};

static int resolve_io_error(struct view_resolver *r, int rc)
{
    reapi_status_set(r->st, GRPC_STATUS_INTERNAL, "looking up output '%s': %s", r->output,
                     strerror(-rc));
    return rc;
}

static int resolve_escape(struct view_resolver *r)
{
    reapi_status_set(r->st, GRPC_STATUS_INVALID_ARGUMENT,
                     "output '%s' resolves outside the exec root through a symlink in its path",
                     r->output);
    return -EINVAL;
}

static int resolve_no_memory(struct view_resolver *r)
{
    reapi_status_set(r->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
}

/* The last component, a name: the entry is its parent and name. */
static int resolve_last(struct view_resolver *r, const char *name, struct action_view_entry *e)
{
    int rc = view_lookup(&r->cur, name, &e->st, &e->in_upper);

    if (rc == -ENOENT)
        return 1;
    if (rc != 0)
        return resolve_io_error(r, rc);
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->parent = r->cur;
    r->cur.upper = r->cur.lower = -1;
    r->done = true;
    return 0;
}

/* The path names a directory itself ("" or the exec root): the entry is
 * that directory. */
static int resolve_self(struct view_resolver *r, struct action_view_entry *e)
{
    if (fstat(r->cur.upper >= 0 ? r->cur.upper : r->cur.lower, &e->st) < 0)
        return resolve_io_error(r, -errno);
    e->in_upper = r->cur.upper >= 0;
    e->name[0] = '\0';
    e->parent = r->cur;
    r->cur.upper = r->cur.lower = -1;
    r->done = true;
    return 0;
}

/* "..": one directory up, walked again from the root; never above it. */
static int resolve_up(struct view_resolver *r)
{
    char *up;
    int rc;

    if (r->canon_len == 0)
        return resolve_escape(r);
    up = strrchr(r->canon, '/');
    r->canon_len = up ? (size_t)(up - r->canon) : 0;
    r->canon[r->canon_len] = '\0';
    action_view_dir_close(&r->cur);
    rc = view_walk(r->root, r->canon, &r->cur);
    return rc != 0 ? resolve_io_error(r, rc) : 0;
}

/* A directory in the parents: into it. */
static int resolve_enter(struct view_resolver *r, const char *name, bool in_upper)
{
    struct action_view_dir next;
    int rc;

    if (r->canon_len + 1 + strlen(name) >= PATH_MAX)
        return resolve_io_error(r, -ENAMETOOLONG);
    r->canon_len += (size_t)snprintf(r->canon + r->canon_len, PATH_MAX - r->canon_len, "%s%s",
                                     r->canon_len ? "/" : "", name);
    rc = action_view_descend(&r->cur, name, in_upper, &next);
    if (rc != 0)
        return resolve_io_error(r, rc);
    action_view_dir_close(&r->cur);
    r->cur = next;
    return 0;
}

/* A symlink in the parents: its target takes its place in the path still
 * to walk; an absolute one restarts from the root, if it lies inside. */
static int resolve_splice(struct view_resolver *r, const char *name, bool in_upper)
{
    size_t rl = strlen(SANDBOX_EXEC_ROOT);
    char target[PATH_MAX], *spliced;
    ssize_t n;
    int rc;

    if (++r->hops > ACTION_MAX_SYMLINK_HOPS) {
        reapi_status_set(r->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "output '%s': more than %d symlinks in its path", r->output,
                         ACTION_MAX_SYMLINK_HOPS);
        return -ELOOP;
    }
    n = readlinkat(in_upper ? r->cur.upper : r->cur.lower, name, target, sizeof(target));
    if (n < 0 || n == (ssize_t)sizeof(target))
        return resolve_io_error(r, n < 0 ? -errno : -ENAMETOOLONG);
    target[n] = '\0';
    if (target[0] == '/') {
        if (strncmp(target, SANDBOX_EXEC_ROOT, rl) != 0 ||
            (target[rl] != '/' && target[rl] != '\0'))
            return resolve_escape(r);
        memmove(target, target + rl, (size_t)n - rl + 1);
        r->canon_len = 0;
        r->canon[0] = '\0';
        action_view_dir_close(&r->cur);
        rc = view_dup(r->root, &r->cur);
        if (rc != 0)
            return resolve_io_error(r, rc);
    }
    if (asprintf(&spliced, "%s/%s", target, r->todo + r->pos) < 0)
        return resolve_no_memory(r);
    free(r->todo);
    r->todo = spliced;
    r->pos = 0;
    return 0;
}

/* The next component of the path. */
static int resolve_step(struct view_resolver *r, struct action_view_entry *e)
{
    const char *comp = r->todo + r->pos;
    const char *slash = strchr(comp, '/');
    size_t len = slash ? (size_t)(slash - comp) : strlen(comp);
    bool last = slash == NULL, in_upper;
    char name[NAME_MAX + 1];
    struct stat sb;
    int rc = 0;

    r->pos += len + (last ? 0 : 1);
    if (len > NAME_MAX) {
        reapi_status_set(r->st, GRPC_STATUS_INVALID_ARGUMENT,
                         "output '%s': a symlink in its path has a component longer than "
                         "255 bytes",
                         r->output);
        return -EINVAL;
    }
    snprintf(name, sizeof(name), "%.*s", (int)len, comp);
    if (last && len > 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
        return resolve_last(r, name, e);
    if (strcmp(name, "..") == 0) {
        rc = resolve_up(r);
    } else if (len > 0 && strcmp(name, ".") != 0) {
        rc = view_lookup(&r->cur, name, &sb, &in_upper);
        if (rc == -ENOENT || (rc == 0 && !S_ISDIR(sb.st_mode) && !S_ISLNK(sb.st_mode)))
            return 1; /* a parent is missing or not a directory: not produced */
        if (rc != 0)
            return resolve_io_error(r, rc);
        if (S_ISLNK(sb.st_mode))
            return resolve_splice(r, name, in_upper);
        rc = resolve_enter(r, name, in_upper);
    }
    if (rc != 0 || !last)
        return rc;
    return resolve_self(r, e);
}

int action_view_resolve(const struct action_view_dir *root, const char *path, const char *output,
                        struct action_view_entry *e, struct reapi_status *st)
{
    struct view_resolver r = {.root = root, .output = output, .st = st, .cur = {-1, -1}};
    int rc;

    e->parent.upper = e->parent.lower = -1;
    r.todo = strdup(path);
    r.canon = calloc(1, PATH_MAX);
    if (r.todo == NULL || r.canon == NULL) {
        rc = resolve_no_memory(&r);
    } else {
        rc = view_dup(root, &r.cur);
        if (rc != 0)
            resolve_io_error(&r, rc);
    }
    while (rc == 0 && !r.done)
        rc = resolve_step(&r, e);
    action_view_dir_close(&r.cur);
    free(r.todo);
    free(r.canon);
    return rc;
}
