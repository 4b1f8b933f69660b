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

int action_view_resolve(const struct action_view_dir *root, const char *path, const char *output,
                        struct action_view_entry *e, struct reapi_status *st)
{
    char *todo = strdup(path), *canon = calloc(1, PATH_MAX);
    struct action_view_dir cur = {-1, -1}, next;
    size_t canon_len = 0, pos = 0;
    int hops = 0, rc;

    e->parent.upper = e->parent.lower = -1;
    if (todo == NULL || canon == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
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
        struct stat sb;
        bool in_upper;
        ssize_t n;

        pos += len + (last ? 0 : 1);
        if (len > NAME_MAX) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
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
            rc = view_lookup(&cur, name, &sb, &in_upper);
            if (rc == -ENOENT || (rc == 0 && !S_ISDIR(sb.st_mode) && !S_ISLNK(sb.st_mode))) {
                rc = 1; /* a parent is missing or not a directory: not produced */
                goto out;
            }
            if (rc != 0)
                goto io_error;
            if (S_ISDIR(sb.st_mode)) {
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
                    reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
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
                    reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
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
    reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                     "output '%s' resolves outside the exec root through a symlink in its path",
                     output);
    rc = -EINVAL;
    goto out;
io_error:
    reapi_status_set(st, GRPC_STATUS_INTERNAL, "looking up output '%s': %s", output, strerror(-rc));
out:
    action_view_dir_close(&cur);
    free(todo);
    free(canon);
    return rc;
}
