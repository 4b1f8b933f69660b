/*
 * mounts.c - the sandbox's root filesystem, built in the child's own mount
 * namespace, then entered with one pivot_root.
 *
 * Phase 1, in the caller before the clone: every host path of the
 * allow-list is looked at and resolved into a plan (a list of operations),
 * so absolute symlinks on the host (/etc/resolv.conf -> /run/...) resolve as
 * on the host, and the child allocates nothing (a written heap page is a
 * copy-on-write fault). The spec's own paths (exec root layers, extra
 * mounts: maybe on the daemon's FUSE filesystem) are resolved by the child,
 * into stack buffers, so that a hung filesystem only hangs its own run.
 * Phase 2, in the child: the new root is a tmpfs mounted over /sys, a host directory that
 * exists everywhere and is never a bind source (host paths under /sys cannot
 * be mounted into a sandbox), so every source keeps its plain host path and
 * one pivot_root suffices. The root gets
 *   /proc           fresh, for the new pid namespace; mounted while the host's
 *                   /proc is still visible, or the kernel refuses it
 *                   (mount_too_revealing); /proc/sys & co. read-only
 *   /usr, /bin...   read-only binds; /bin, /lib* and /sbin mirror the host
 *                   (symlinks on a merged-/usr system)
 *   /etc/...        read-only binds of an allow-list only
 *   or, when spec->root_dir names an execution environment's root tree,
 *   instead of those two: every top-level entry of that tree (its /usr, /etc,
 *   /var, ..., symlinks mirrored) but proc, dev, sys, tmp and the exec
 *   root's first component, which are the sandbox's own
 *   /dev            tmpfs with bound null, zero, full, random, urandom, tty,
 *                   a private devpts, /dev/shm, and /dev/fd -> /proc/self/fd
 *   /tmp            private tmpfs
 *   exec root       overlay of lower_dir (upper/work take the writes), or a
 *                   read-write bind of lower_dir, or an empty tmpfs
 *   extra mounts    in order; their mount points are resolved with
 *                   RESOLVE_IN_ROOT, because they may lie inside the action's
 *                   own (untrusted) tree, whose symlinks must not lead out
 * Then the whole tree is made read-only with one recursive mount_setattr, and
 * the writable mounts (/proc, /tmp, /dev/shm, /dev/pts, the exec root, rw
 * extra mounts) get write access back. mount_setattr changes only the
 * read-only bit, so the flags a user namespace may not drop (nosuid, nodev,
 * noexec, atime, inherited from the host and locked) stay; on kernels without
 * it each mount is remounted with its flags read back from statvfs, as
 * bubblewrap does. Finally pivot_root(".", ".") and a detach of the old root:
 * nothing else of the host is reachable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "internal.h"
#include "util/util.h"

#define NEW_ROOT "/sys"

/* Host /etc entries the sandbox sees; anything else of /etc stays hidden
 * (shadow, ssh keys, the daemon's config). */
static const char *const mounts_etc_allow[] = {
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "mtab",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
};

/* Top-level host entries mirrored as they are: symlinks into /usr on a
 * merged-/usr system, read-only directories otherwise. */
static const char *const mounts_top_allow[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

static const char *const mounts_dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};

/* Mounts inside the new root that stay writable (relative to it). */
static const char *const mounts_writable[] = {"/proc", "/dev/pts", "/dev/shm", "/tmp"};

enum mounts_op_kind {
    MOUNTS_OP_SYMLINK, /* create inside -> source (a symlink target) */
    MOUNTS_OP_BIND,    /* bind source (host path) on inside */
    MOUNTS_OP_TMPFS,   /* fresh tmpfs on inside */
};

struct mounts_op {
    enum mounts_op_kind kind;
    char *source; /* resolved host path, or a symlink's target */
    char *inside; /* where, inside the new root */
    bool is_dir;  /* bind of a directory (recursive), else of a file */
};

/* The base operations (usr, top level, etc): host paths the caller looks at
 * (the allow-list, local system directories). The spec's own paths (exec
 * root layers, extra mounts: possibly on FUSE, possibly slow) are resolved
 * in the child, so that a hung filesystem only hangs its own run; it keeps
 * the fds of the extra mounts in its copy of extra_fds. */
struct sandbox_mounts_plan {
    struct mounts_op *ops;
    size_t n;
    size_t cap;
    int *extra_fds; /* one per spec mount, -1 before it is mounted */
    size_t n_extra;
    bool root_dir; /* built from spec->root_dir: /etc is one of its binds */
};

struct mounts_state {
    int root_fd; /* O_PATH of NEW_ROOT */
    char *err;
    size_t err_len;
};

/* --- small helpers --- */

static int mounts_fail(char *err, size_t err_len, int rc, const char *what, const char *path)
{
    sandbox_error_set(err, err_len, "%s %s: %s", what, path, strerror(-rc));
    return rc;
}

/* An empty file to bind a file on: one mknod instead of open + close. */
static int mounts_touch(const char *path)
{
    if (mknod(path, S_IFREG | 0444, 0) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int mounts_join(char *out, const char *a, const char *b)
{
    int n = snprintf(out, PATH_MAX, "%s%s", a, b);

    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static void mounts_fd_path(char *out, int fd)
{
    snprintf(out, PATH_MAX, NEW_ROOT "/proc/self/fd/%d", fd);
}

/* --- read-only or writable, keeping every other flag --- */

static unsigned long mounts_statvfs_flags(const struct statvfs *st)
{
    static const struct {
        unsigned long st_flag;
        unsigned long ms_flag;
    } map[] = {
        {ST_NOSUID, MS_NOSUID},   {ST_NODEV, MS_NODEV},           {ST_NOEXEC, MS_NOEXEC},
        {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
    };
    unsigned long flags = 0;

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (st->f_flag & map[i].st_flag)
            flags |= map[i].ms_flag;
    return flags;
}

/* The fallback for one mount: a bind remount with the current flags. */
static int mounts_remount_one(const char *path, bool read_only)
{
    struct statvfs st;

    if (statvfs(path, &st) != 0)
        return -errno;
    if (mount(NULL, path, NULL,
              MS_REMOUNT | MS_BIND | (read_only ? MS_RDONLY : 0) | mounts_statvfs_flags(&st),
              NULL) != 0)
        return -errno;
    return 0;
}

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void mounts_unescape(char *s)
{
    char *w = s;

    for (char *r = s; *r != '\0'; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* The fallback for a tree: every mount at or below path (as mountinfo
 * names it, relative to our root) is remounted. A /proc/self/fd link is
 * read to get that name. */
static int mounts_remount_tree(const char *link_or_path, bool read_only)
{
    char path[PATH_MAX];
    ssize_t n = readlink(link_or_path, path, sizeof(path) - 1);
    size_t len;
    char *line = NULL;
    size_t cap = 0;
    FILE *f;
    int rc = 0;

    if (n > 0)
        path[n] = '\0';
    else
        snprintf(path, sizeof(path), "%s", link_or_path);
    len = strlen(path);
    f = fopen(NEW_ROOT "/proc/self/mountinfo", "re");
    if (f == NULL)
        return -errno;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        char *mnt = line;

        for (int i = 0; i < 4 && mnt != NULL; i++) { /* field 5: the mount point */
            mnt = strchr(mnt, ' ');
            if (mnt != NULL)
                mnt++;
        }
        if (mnt == NULL)
            continue;
        mnt[strcspn(mnt, " ")] = '\0';
        mounts_unescape(mnt);
        if (strncmp(mnt, path, len) != 0 || (mnt[len] != '\0' && mnt[len] != '/'))
            continue;
        rc = mounts_remount_one(mnt, read_only);
        /* The host's own mounts under /sys are listed too, hidden under our
         * root: their names lead nowhere (ENOENT) or not to a mount (EINVAL). */
        if (rc == -ENOENT || rc == -EINVAL)
            rc = 0;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Sets or clears read-only on the mount at path (and, recursively, on
 * every mount below it); path may be a /proc/self/fd link. */
static int mounts_set_read_only(const char *path, bool read_only, bool recursive)
{
    struct mount_attr attr = {0};

    if (read_only)
        attr.attr_set = MOUNT_ATTR_RDONLY;
    else
        attr.attr_clr = MOUNT_ATTR_RDONLY;
    if (mount_setattr(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof(attr)) == 0)
        return 0;
    if (errno != ENOSYS)
        return -errno;
    return recursive ? mounts_remount_tree(path, read_only) : mounts_remount_one(path, read_only);
}

/* --- phase 1: the plan, built while the host's root is visible --- */

static struct mounts_op *mounts_plan_add(struct sandbox_mounts_plan *plan)
{
    struct mounts_op *op;

    if (plan->n == plan->cap) {
        size_t cap = plan->cap ? plan->cap * 2 : 48;
        struct mounts_op *grown = realloc(plan->ops, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        plan->ops = grown;
        plan->cap = cap;
    }
    op = &plan->ops[plan->n++];
    memset(op, 0, sizeof(*op));
    return op;
}

/* Does a symlink at host with this target resolve, by its text alone, under
 * /usr or /proc, which look the same inside? (bin -> usr/bin, localtime ->
 * /usr/share/zoneinfo/..., mtab -> ../proc/self/mounts) */
static bool mounts_link_stays_valid(const char *host, const char *target)
{
    char buf[PATH_MAX], *parts[128];
    char *save = NULL, *part;
    size_t n = 0;
    int len;

    if (target[0] == '/')
        len = snprintf(buf, sizeof(buf), "%s", target);
    else
        len = snprintf(buf, sizeof(buf), "%.*s/%s", (int)(strrchr(host, '/') - host), host, target);
    if (len < 0 || len >= (int)sizeof(buf))
        return false;
    for (part = strtok_r(buf, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            if (n > 0)
                n--;
            continue;
        }
        if (n == sizeof(parts) / sizeof(parts[0]))
            return false;
        parts[n++] = part;
    }
    return n >= 2 && (strcmp(parts[0], "usr") == 0 || strcmp(parts[0], "proc") == 0);
}

/* Plans one host entry at the same place inside: a symlink is mirrored when
 * it will resolve inside too (or dangles anyway); otherwise what it points
 * to is bound (resolv.conf -> /run/systemd/resolve/...). Absent: nothing. */
static int mounts_plan_mirror(struct sandbox_mounts_plan *plan, const char *host, char *err,
                              size_t err_len)
{
    char target[PATH_MAX], resolved[PATH_MAX];
    const char *source = host;
    struct mounts_op *op;
    struct stat st;

    if (lstat(host, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return mounts_fail(err, err_len, -errno, "stat", host);
    }
    if (S_ISLNK(st.st_mode)) {
        ssize_t n = readlink(host, target, sizeof(target) - 1);

        if (n < 0)
            return mounts_fail(err, err_len, -errno, "readlink", host);
        target[n] = '\0';
        if (!mounts_link_stays_valid(host, target) && realpath(host, resolved) != NULL &&
            stat(resolved, &st) == 0 && (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
            source = resolved;
        } else {
            op = mounts_plan_add(plan);
            if (op == NULL)
                return -ENOMEM;
            op->kind = MOUNTS_OP_SYMLINK;
            op->inside = strdup(host);
            op->source = strdup(target);
            return op->inside == NULL || op->source == NULL ? -ENOMEM : 0;
        }
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return 0; /* sockets, devices: not part of the allow-list */
    op = mounts_plan_add(plan);
    if (op == NULL)
        return -ENOMEM;
    op->kind = MOUNTS_OP_BIND;
    op->is_dir = S_ISDIR(st.st_mode);
    op->inside = strdup(host);
    op->source = strdup(source);
    return op->inside == NULL || op->source == NULL ? -ENOMEM : 0;
}

/* In the child, on the host's tree: a spec path, fully resolved into out
 * (PATH_MAX bytes). */
static int mounts_resolve(const char *path, char *out, const char *what, char *err, size_t err_len)
{
    if (realpath(path, out) == NULL)
        return mounts_fail(err, err_len, -errno, what, path);
    if (strcmp(out, NEW_ROOT) == 0 || strncmp(out, NEW_ROOT "/", strlen(NEW_ROOT) + 1) == 0) {
        sandbox_error_set(err, err_len,
                          "%s %s: host paths under " NEW_ROOT " cannot be mounted into a sandbox",
                          what, path);
        return -EINVAL;
    }
    return 0;
}

int sandbox_overlay_escape(char *out, size_t cap, const char *path)
{
    size_t n = 0;

    for (const char *p = path; *p != '\0'; p++) {
        if (n + 3 >= cap)
            return -ENAMETOOLONG;
        if (*p == ',' || *p == ':' || *p == '\\')
            out[n++] = '\\';
        out[n++] = *p;
    }
    out[n] = '\0';
    return 0;
}

/* Names of a root tree's top level that the sandbox makes itself. */
static bool mounts_root_dir_skips(const char *name, const struct sandbox_spec *spec)
{
    static const char *const own[] = {".", "..", "proc", "dev", "sys", "tmp"};
    const char *exec_root = sandbox_spec_exec_root(spec) + 1;
    size_t len = strcspn(exec_root, "/");

    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strcmp(name, own[i]) == 0)
            return true;
    return strlen(name) == len && strncmp(name, exec_root, len) == 0;
}

/* One top-level entry of a root tree at /NAME: a symlink is mirrored as it
 * is (bin -> usr/bin, or an absolute target, resolves inside the new root as
 * in the tree); a directory or file is bound; anything else is left out. */
static int mounts_plan_root_entry(struct sandbox_mounts_plan *plan, const char *root,
                                  const char *name, char *err, size_t err_len)
{
    char path[PATH_MAX], target[PATH_MAX];
    struct mounts_op *op;
    struct stat st;
    ssize_t n;
    int len = snprintf(path, sizeof(path), "%s/%s", root, name);

    if (len < 0 || len >= (int)sizeof(path))
        return mounts_fail(err, err_len, -ENAMETOOLONG, "root_dir entry", name);
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : mounts_fail(err, err_len, -errno, "stat", path);
    if (!S_ISLNK(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return 0;
    op = mounts_plan_add(plan);
    if (op == NULL)
        return -ENOMEM;
    if (asprintf(&op->inside, "/%s", name) < 0) {
        op->inside = NULL;
        return -ENOMEM;
    }
    if (S_ISLNK(st.st_mode)) {
        n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
            return mounts_fail(err, err_len, -errno, "readlink", path);
        target[n] = '\0';
        op->kind = MOUNTS_OP_SYMLINK;
        op->source = strdup(target);
    } else {
        op->kind = MOUNTS_OP_BIND;
        op->is_dir = S_ISDIR(st.st_mode);
        op->source = strdup(path);
    }
    return op->source == NULL ? -ENOMEM : 0;
}

/* The base plan of an execution environment: the top level of
 * spec->root_dir, in name order. */
static int mounts_plan_root_dir(struct sandbox_mounts_plan *plan, const struct sandbox_spec *spec,
                                char *err, size_t err_len)
{
    char root[PATH_MAX];
    struct dirent **names = NULL;
    int n, rc = 0;

    if (realpath(spec->root_dir, root) == NULL)
        return mounts_fail(err, err_len, -errno, "root_dir", spec->root_dir);
    if (strcmp(root, "/") == 0 || strcmp(root, NEW_ROOT) == 0 ||
        strncmp(root, NEW_ROOT "/", strlen(NEW_ROOT) + 1) == 0) {
        sandbox_error_set(err, err_len, "root_dir %s: cannot be / or under " NEW_ROOT,
                          spec->root_dir);
        return -EINVAL;
    }
    n = scandir(root, &names, NULL, alphasort);
    if (n < 0)
        return mounts_fail(err, err_len, -errno, "read root_dir", root);
    for (int i = 0; i < n; i++) {
        if (rc == 0 && !mounts_root_dir_skips(names[i]->d_name, spec))
            rc = mounts_plan_root_entry(plan, root, names[i]->d_name, err, err_len);
        free(names[i]);
    }
    free(names);
    plan->root_dir = true;
    return rc;
}

/* The base plan, in the caller. */
static int mounts_plan_build(struct sandbox_mounts_plan *plan, const struct sandbox_spec *spec,
                             char *err, size_t err_len)
{
    char path[PATH_MAX];
    int rc;

    if (spec->root_dir != NULL) {
        rc = mounts_plan_root_dir(plan, spec, err, err_len);
        goto extra;
    }
    rc = mounts_plan_mirror(plan, "/usr", err, err_len);
    for (size_t i = 0; rc == 0 && i < sizeof(mounts_top_allow) / sizeof(mounts_top_allow[0]); i++) {
        snprintf(path, sizeof(path), "/%s", mounts_top_allow[i]);
        rc = mounts_plan_mirror(plan, path, err, err_len);
    }
    for (size_t i = 0; rc == 0 && i < sizeof(mounts_etc_allow) / sizeof(mounts_etc_allow[0]); i++) {
        snprintf(path, sizeof(path), "/etc/%s", mounts_etc_allow[i]);
        rc = mounts_plan_mirror(plan, path, err, err_len);
    }
extra:
    if (rc == 0 && spec->n_mounts > 0) {
        plan->extra_fds = malloc(spec->n_mounts * sizeof(*plan->extra_fds));
        if (plan->extra_fds == NULL)
            rc = -ENOMEM;
        for (size_t i = 0; rc == 0 && i < spec->n_mounts; i++)
            plan->extra_fds[i] = -1;
        plan->n_extra = spec->n_mounts;
    }
    if (rc == -ENOMEM)
        sandbox_error_set(err, err_len, "planning the root: out of memory");
    return rc;
}

int sandbox_mounts_plan(struct sandbox_mounts_plan **out, const struct sandbox_spec *spec,
                        char *err, size_t err_len)
{
    struct sandbox_mounts_plan *plan = calloc(1, sizeof(*plan));
    int rc;

    *out = NULL;
    if (plan == NULL) {
        sandbox_error_set(err, err_len, "planning the root: out of memory");
        return -ENOMEM;
    }
    rc = mounts_plan_build(plan, spec, err, err_len);
    if (rc != 0) {
        sandbox_mounts_plan_free(plan);
        return rc;
    }
    *out = plan;
    return 0;
}

void sandbox_mounts_plan_free(struct sandbox_mounts_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; i < plan->n; i++) {
        free(plan->ops[i].source);
        free(plan->ops[i].inside);
    }
    free(plan->ops);
    free(plan->extra_fds);
    free(plan);
}

/* --- phase 2: applying it --- */

static int mounts_openat2(int root_fd, const char *path)
{
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));

    return fd >= 0 ? fd : -errno;
}

/* Opens (creating it, and its parents, when missing) the mount point path
 * under root_fd without leaving the root: symlinks in the action's tree
 * resolve inside it. path is normalised (no empty components). */
static int mounts_open_in_root(int root_fd, const char *path, bool is_dir)
{
    char buf[PATH_MAX];
    char *slash;
    int fd, parent, rc;

    fd = mounts_openat2(root_fd, path);
    if (fd != -ENOENT)
        return fd;
    if (strlen(path) >= sizeof(buf))
        return -ENAMETOOLONG;
    strcpy(buf, path);
    slash = strrchr(buf, '/');
    if (slash == NULL || slash[1] == '\0')
        return -EINVAL;
    *slash = '\0';
    parent = mounts_open_in_root(root_fd, buf[0] != '\0' ? buf : "/", true);
    if (parent < 0)
        return parent;
    /* An O_PATH directory fd is a valid dirfd for creating entries. */
    if (is_dir)
        rc = mkdirat(parent, slash + 1, 0755);
    else
        rc = mknodat(parent, slash + 1, S_IFREG | 0444, 0);
    rc = rc == 0 || errno == EEXIST ? 0 : -errno;
    close(parent);
    if (rc != 0)
        return rc;
    return mounts_openat2(root_fd, path);
}

/* Copies path without repeated or trailing slashes. */
static int mounts_normalise(char *out, const char *path)
{
    size_t n = 0;

    for (const char *p = path; *p != '\0'; p++) {
        if (*p == '/' && n > 0 && out[n - 1] == '/')
            continue;
        if (n + 1 >= PATH_MAX)
            return -ENAMETOOLONG;
        out[n++] = *p;
    }
    while (n > 1 && out[n - 1] == '/')
        n--;
    out[n] = '\0';
    return 0;
}

/* A base operation: the mount point is in our own fresh tmpfs, whose
 * parents (/ and /etc) exist already. */
static int mounts_apply_base(struct mounts_state *s, const struct mounts_op *op)
{
    char target[PATH_MAX];
    int rc;

    rc = mounts_join(target, NEW_ROOT, op->inside);
    if (rc == 0 && op->kind == MOUNTS_OP_SYMLINK)
        rc = symlink(op->source, target) == 0 ? 0 : -errno;
    else if (rc == 0)
        rc = op->is_dir ? (mkdir(target, 0755) == 0 ? 0 : -errno) : mounts_touch(target);
    if (rc != 0)
        return mounts_fail(s->err, s->err_len, rc, "create", op->inside);
    if (op->kind == MOUNTS_OP_SYMLINK)
        return 0;
    if (mount(op->source, target, NULL, MS_BIND | (op->is_dir ? MS_REC : 0), NULL) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "bind", op->source);
    return 0;
}

/* One of the spec's mounts. Its source is resolved on the host's tree, its
 * mount point inside the root, and it is mounted on through the mount
 * point's fd; *mount_fd then names the new mount, for the read-only pass. */
static int mounts_apply_extra(struct mounts_state *s, const struct sandbox_mount *m, int *mount_fd)
{
    char target[PATH_MAX], inside[PATH_MAX], source[PATH_MAX];
    bool is_dir = true;
    struct stat st;
    int fd, rc;

    if (m->kind != SANDBOX_MOUNT_TMPFS) {
        rc = mounts_resolve(m->host, source, "mount source", s->err, s->err_len);
        if (rc != 0)
            return rc;
        if (stat(source, &st) != 0)
            return mounts_fail(s->err, s->err_len, -errno, "mount source", m->host);
        is_dir = S_ISDIR(st.st_mode);
    }
    rc = mounts_normalise(inside, m->inside);
    fd = rc == 0 ? mounts_open_in_root(s->root_fd, inside, is_dir) : rc;
    if (fd < 0)
        return mounts_fail(s->err, s->err_len, fd, "mount point", m->inside);
    mounts_fd_path(target, fd);
    if (m->kind == SANDBOX_MOUNT_TMPFS)
        rc = mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    else
        rc = mount(source, target, NULL, MS_BIND | (is_dir ? MS_REC : 0), NULL);
    rc = rc == 0 ? 0 : -errno;
    close(fd);
    if (rc != 0)
        return mounts_fail(s->err, s->err_len, rc, "mount on", m->inside);
    /* The old fd names the mount point under the new mount: reopen. */
    *mount_fd = mounts_open_in_root(s->root_fd, inside, is_dir);
    if (*mount_fd < 0)
        return mounts_fail(s->err, s->err_len, *mount_fd, "reopen", m->inside);
    return 0;
}

/* /proc for the new pid namespace; the host's /proc is still visible, which
 * the kernel requires of a proc mount in a user namespace. The files that
 * act on the host (sysctls, sysrq) get read-only binds of their own: the
 * command may be uid 0 of the host when the caller is root. */
static int mounts_setup_proc(struct mounts_state *s)
{
    static const char *const ro[] = {"sys", "sysrq-trigger", "irq", "bus", "fs"};
    char path[PATH_MAX];
    struct stat st;

    if (mkdir(NEW_ROOT "/proc", 0555) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mkdir", "/proc");
    if (mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mount proc on", "/proc");
    for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
        snprintf(path, sizeof(path), NEW_ROOT "/proc/%s", ro[i]);
        if (lstat(path, &st) != 0)
            continue;
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0)
            return mounts_fail(s->err, s->err_len, -errno, "bind", path + strlen(NEW_ROOT));
    }
    return 0;
}

static int mounts_setup_dev(struct mounts_state *s)
{
    static const char *const links[][2] = {
        {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},         {"core", "/proc/kcore"},
    };
    char target[PATH_MAX], source[PATH_MAX];
    int rc;

    if (mkdir(NEW_ROOT "/dev", 0755) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mkdir", "/dev");
    if (mount("tmpfs", NEW_ROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755") != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mount tmpfs on", "/dev");
    /* No mknod of devices in a user namespace: bind the host's nodes. Writes
     * to a device are allowed on a read-only mount. */
    for (size_t i = 0; i < sizeof(mounts_dev_nodes) / sizeof(mounts_dev_nodes[0]); i++) {
        snprintf(source, sizeof(source), "/dev/%s", mounts_dev_nodes[i]);
        snprintf(target, sizeof(target), NEW_ROOT "/dev/%s", mounts_dev_nodes[i]);
        rc = mounts_touch(target);
        if (rc == 0 && mount(source, target, NULL, MS_BIND, NULL) != 0)
            rc = -errno;
        if (rc != 0)
            return mounts_fail(s->err, s->err_len, rc, "bind", source);
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        snprintf(target, sizeof(target), NEW_ROOT "/dev/%s", links[i][0]);
        if (symlink(links[i][1], target) != 0)
            return mounts_fail(s->err, s->err_len, -errno, "symlink", target + strlen(NEW_ROOT));
    }
    if (mkdir(NEW_ROOT "/dev/pts", 0755) != 0 || mkdir(NEW_ROOT "/dev/shm", 01777) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mkdir", "/dev/pts");
    if (mount("devpts", NEW_ROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=620") != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mount devpts on", "/dev/pts");
    if (mount("tmpfs", NEW_ROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mount tmpfs on", "/dev/shm");
    return 0;
}

/* The overlay's options, lower/upper/work resolved and escaped, into out. */
static int mounts_overlay_options(struct mounts_state *s, const struct sandbox_spec *spec,
                                  const char *lower, char *out, size_t cap)
{
    char path[PATH_MAX], esc[3][PATH_MAX + 32];
    int n, rc;

    rc = sandbox_overlay_escape(esc[0], sizeof(esc[0]), lower);
    if (rc == 0)
        rc = mounts_resolve(spec->upper_dir, path, "upper_dir", s->err, s->err_len);
    if (rc == 0)
        rc = sandbox_overlay_escape(esc[1], sizeof(esc[1]), path);
    if (rc == 0)
        rc = mounts_resolve(spec->work_dir, path, "work_dir", s->err, s->err_len);
    if (rc == 0)
        rc = sandbox_overlay_escape(esc[2], sizeof(esc[2]), path);
    if (rc != 0)
        return rc == -ENAMETOOLONG ? mounts_fail(s->err, s->err_len, rc, "overlay options for",
                                                 sandbox_spec_exec_root(spec))
                                   : rc;
    /* userxattr: overlayfs keeps its metadata in user.overlay.* xattrs, the
     * only ones a user namespace may set (kernel >= 5.11). */
    n = snprintf(out, cap, "lowerdir=%s,upperdir=%s,workdir=%s,userxattr", esc[0], esc[1], esc[2]);
    if (n < 0 || (size_t)n >= cap)
        return mounts_fail(s->err, s->err_len, -ENAMETOOLONG, "overlay options for",
                           sandbox_spec_exec_root(spec));
    return 0;
}

static int mounts_setup_exec_root(struct mounts_state *s, const struct sandbox_spec *spec,
                                  char *target)
{
    const char *inside = sandbox_spec_exec_root(spec);
    char lower[PATH_MAX], opts[4 * PATH_MAX];
    int rc;

    rc = mounts_join(target, NEW_ROOT, inside);
    if (rc == 0)
        rc = util_mkdir_p(target, 0755);
    if (rc != 0)
        return mounts_fail(s->err, s->err_len, rc, "exec root", inside);
    if (spec->lower_dir == NULL) {
        if (mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
            return mounts_fail(s->err, s->err_len, -errno, "mount tmpfs on", inside);
        return 0;
    }
    rc = mounts_resolve(spec->lower_dir, lower, "lower_dir", s->err, s->err_len);
    if (rc != 0)
        return rc;
    if (spec->upper_dir == NULL) {
        if (mount(lower, target, NULL, MS_BIND | MS_REC, NULL) != 0)
            return mounts_fail(s->err, s->err_len, -errno, "bind lower_dir", lower);
        return 0;
    }
    rc = mounts_overlay_options(s, spec, lower, opts, sizeof(opts));
    if (rc != 0)
        return rc;
    if (mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, opts) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "mount overlay on", inside);
    return 0;
}

/* Everything read-only, then write access back where it belongs, in mount
 * order so that a read-only extra mount inside the exec root stays so. */
static int mounts_seal(struct mounts_state *s, const struct sandbox_spec *spec,
                       const struct sandbox_mounts_plan *plan, const char *exec_root)
{
    char path[PATH_MAX];
    int rc;

    rc = mounts_set_read_only(NEW_ROOT, true, true);
    if (rc != 0)
        return mounts_fail(s->err, s->err_len, rc, "make read-only", "/");
    for (size_t i = 0; i < sizeof(mounts_writable) / sizeof(mounts_writable[0]); i++) {
        snprintf(path, sizeof(path), NEW_ROOT "%s", mounts_writable[i]);
        rc = mounts_set_read_only(path, false, false);
        if (rc != 0)
            return mounts_fail(s->err, s->err_len, rc, "make writable", mounts_writable[i]);
    }
    rc = mounts_set_read_only(exec_root, false, true);
    if (rc != 0)
        return mounts_fail(s->err, s->err_len, rc, "make writable", exec_root);
    for (size_t i = 0; i < plan->n_extra; i++) {
        const struct sandbox_mount *m = &spec->mounts[i];

        mounts_fd_path(path, plan->extra_fds[i]);
        rc = mounts_set_read_only(path, m->kind == SANDBOX_MOUNT_RO, true);
        if (rc != 0)
            return mounts_fail(s->err, s->err_len, rc, "set access of", m->inside);
    }
    return 0;
}

/* pivot_root(".", "."): the host's root ends up stacked on ours, and is
 * detached. */
static int mounts_enter_new_root(struct mounts_state *s)
{
    if (chdir(NEW_ROOT) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "chdir", NEW_ROOT);
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        return mounts_fail(s->err, s->err_len, -errno, "pivot_root", NEW_ROOT);
    if (umount2(".", MNT_DETACH) != 0)
        return mounts_fail(s->err, s->err_len, -errno, "detach", "the host's root");
    if (chdir("/") != 0)
        return mounts_fail(s->err, s->err_len, -errno, "chdir", "/");
    return 0;
}

int sandbox_mounts_build_root(const struct sandbox_spec *spec, struct sandbox_mounts_plan *plan,
                              char *err, size_t err_len)
{
    struct mounts_state s = {.root_fd = -1, .err = err, .err_len = err_len};
    char exec_root[PATH_MAX];
    int rc;

    /* Nothing done here may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        rc = mounts_fail(err, err_len, -errno, "make private", "/");
        goto out;
    }
    if (mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
        rc = mounts_fail(err, err_len, -errno, "mount the root tmpfs on", NEW_ROOT);
        goto out;
    }
    s.root_fd = open(NEW_ROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s.root_fd < 0) {
        rc = mounts_fail(err, err_len, -errno, "open", NEW_ROOT);
        goto out;
    }
    rc = mounts_setup_proc(&s);
    if (rc == 0 && !plan->root_dir && mkdir(NEW_ROOT "/etc", 0755) != 0)
        rc = mounts_fail(err, err_len, -errno, "mkdir", "/etc");
    for (size_t i = 0; rc == 0 && i < plan->n; i++)
        rc = mounts_apply_base(&s, &plan->ops[i]);
    if (rc == 0)
        rc = mounts_setup_dev(&s);
    if (rc == 0) {
        if (mkdir(NEW_ROOT "/tmp", 01777) != 0 ||
            mount("tmpfs", NEW_ROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0)
            rc = mounts_fail(err, err_len, -errno, "mount tmpfs on", "/tmp");
    }
    if (rc == 0)
        rc = mounts_setup_exec_root(&s, spec, exec_root);
    for (size_t i = 0; rc == 0 && i < plan->n_extra; i++)
        rc = mounts_apply_extra(&s, &spec->mounts[i], &plan->extra_fds[i]);
    if (rc == 0)
        rc = mounts_seal(&s, spec, plan, exec_root);
    if (rc == 0)
        rc = mounts_enter_new_root(&s);
    if (rc == 0 && chdir(sandbox_spec_cwd(spec)) != 0)
        rc = mounts_fail(err, err_len, -errno, "chdir to cwd", sandbox_spec_cwd(spec));
out:
    if (s.root_fd >= 0)
        close(s.root_fd);
    return rc;
}
