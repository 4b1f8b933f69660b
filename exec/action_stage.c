/*
 * action_stage.c - the per-action scratch directory, and staging an input
 * root into it as hardlinks of the CAS's blob files.
 *
 * Why hardlinks are safe: the staged tree is only ever the overlay's lower
 * layer, which the kernel never writes (a write copies the file up into the
 * upper layer first), and CAS blob files are mode 0444. Why executables get a
 * copy: a blob is one inode shared by every use, and its mode cannot be both
 * 0444 and 0555, so executable uses link a 0555 copy kept in exec_blob_dir.
 *
 * Staging walks the decoded Directory messages with one directory fd per
 * level (*at() calls, O_NOFOLLOW), so nothing the client named can redirect
 * a write outside the staged tree.
 */
#include "action_internal.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct stage_ctx {
    struct cas_store *cas;
    const struct action *act;
    const char *exec_blob_dir;
    int exec_dir_fd;
    struct action_stage_stats *stats;
    struct cas_fetch_counters *fetch; /* may be NULL */
    struct reapi_status *st;
};

/* --- copying --- */

static int copy_fd_data(int in, int out)
{
    char buf[65536];
    ssize_t n;
    int rc;

    for (;;) {
        n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)
                break;
            return -errno;
        }
    }
    /* Plain read/write from the current offsets. */
    for (;;) {
        n = read(in, buf, sizeof(buf));
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        rc = util_write_all(out, buf, (size_t)n);
        if (rc != 0)
            return rc;
    }
}

/* Creates name in dir_fd as a copy of the file at src_path with mode. */
static int copy_file_at(const char *src_path, int dir_fd, const char *name, mode_t mode)
{
    int in = -1, out = -1, rc;

    in = open(src_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0)
        return -errno;
    out = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        rc = -errno;
        goto out;
    }
    rc = copy_fd_data(in, out);
    if (rc == 0 && fchmod(out, mode) < 0)
        rc = -errno;
out:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0 && rc == 0)
        rc = -errno;
    if (rc != 0 && out >= 0)
        unlinkat(dir_fd, name, 0);
    return rc;
}

/* --- staging files --- */

static int stage_error(struct stage_ctx *c, const char *path, const char *name, const char *what,
                       int rc)
{
    reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "staging input '%s%s%s': %s: %s", path,
                     path[0] ? "/" : "", name, what, strerror(-rc));
    return rc;
}

static int stage_missing(struct stage_ctx *c, const struct cas_digest *d)
{
    if (reapi_status_add_missing(c->st, d) != 0) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return -ENOENT;
}

/* Makes exec_blob_dir/<aa>/<hex>, a 0555 copy of the (verified) blob. */
static int make_exec_copy(struct stage_ctx *c, const struct cas_digest *d, const char *rel)
{
    char tmp[PATH_MAX], shard[3] = {rel[0], rel[1], '\0'};
    int src = -1, out = -1, rc;

    src = cas_store_open_blob_counted(c->cas, d, c->fetch);
    if (src < 0)
        return src;
    if (mkdirat(c->exec_dir_fd, shard, 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        goto out;
    }
    if (snprintf(tmp, sizeof(tmp), "%s/%s/.tmp-XXXXXX", c->exec_blob_dir, shard) >=
        (int)sizeof(tmp)) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    out = mkostemp(tmp, O_CLOEXEC);
    if (out < 0) {
        rc = -errno;
        goto out;
    }
    rc = copy_fd_data(src, out);
    if (rc == 0 && fchmod(out, 0555) < 0)
        rc = -errno;
    if (close(out) < 0 && rc == 0)
        rc = -errno;
    /* Another action may have made the same copy meanwhile: same bytes. */
    if (rc == 0 && renameat(AT_FDCWD, tmp, c->exec_dir_fd, rel) < 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    else {
        c->stats->exec_copies++;
        c->stats->exec_copy_bytes += (uint64_t)d->size;
    }
out:
    close(src);
    return rc;
}

static int stage_file(struct stage_ctx *c, int dir_fd, const FileNode *f, const char *path)
{
    char src[PATH_MAX], hex[CAS_HASH_HEX + 1], rel[3 + CAS_HASH_HEX + 1];
    struct cas_digest d;
    int rc;

    action_digest_valid(f->digest, &d);
    if (f->is_executable) {
        cas_digest_hex(&d, hex);
        snprintf(rel, sizeof(rel), "%.2s/%s", hex, hex);
        rc = linkat(c->exec_dir_fd, rel, dir_fd, f->name, 0) < 0 ? -errno : 0;
        if (rc == -ENOENT) {
            rc = make_exec_copy(c, &d, rel);
            if (rc == -ENOENT)
                return stage_missing(c, &d);
            if (rc != 0 && cas_store_fetch_error(c->cas, &d, NULL, 0) != 0)
                return action_fetch_status(c->cas, &d, rc, "input", c->st);
            if (rc != 0)
                return stage_error(c, path, f->name, "making its executable copy", rc);
            rc = linkat(c->exec_dir_fd, rel, dir_fd, f->name, 0) < 0 ? -errno : 0;
        }
        snprintf(src, sizeof(src), "%s/%s", c->exec_blob_dir, rel);
    } else {
        rc = cas_store_blob_path_counted(c->cas, &d, src, sizeof(src), c->fetch);
        if (rc == -ENOENT)
            return stage_missing(c, &d);
        if (rc != 0 && cas_store_fetch_error(c->cas, &d, NULL, 0) != 0)
            return action_fetch_status(c->cas, &d, rc, "input", c->st);
        if (rc != 0)
            return stage_error(c, path, f->name, "finding its blob", rc);
        rc = linkat(AT_FDCWD, src, dir_fd, f->name, 0) < 0 ? -errno : 0;
        if (rc == -ENOENT) /* evicted in between */
            return stage_missing(c, &d);
    }
    if (rc == -EMLINK) {
        /* The filesystem's link count limit (65000 on ext4): copy. */
        rc = copy_file_at(src, dir_fd, f->name, f->is_executable ? 0555 : 0444);
        if (rc == 0)
            c->stats->copies++;
    }
    if (rc != 0)
        return stage_error(c, path, f->name, "linking", rc);
    c->stats->files++;
    c->stats->bytes += (uint64_t)d.size;
    return 0;
}

/* --- staging directories --- */

/* mkdir + open, 0755 whatever the umask. */
static int make_dir_at(int dir_fd, const char *name)
{
    int fd;

    if (mkdirat(dir_fd, name, 0755) < 0)
        return -errno;
    fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, 0755) < 0) {
        int rc = -errno;

        close(fd);
        return rc;
    }
    return fd;
}

static int stage_dir(struct stage_ctx *c, int dir_fd, const Directory *dir, const char *path)
{
    int rc = 0, first = 0;

    for (size_t i = 0; i < dir->n_files; i++) {
        rc = stage_file(c, dir_fd, dir->files[i], path);
        if (rc == -ENOENT)
            continue; /* listed as missing; go on to find the others */
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < dir->n_symlinks; i++) {
        const SymlinkNode *s = dir->symlinks[i];

        if (symlinkat(s->target, dir_fd, s->name) < 0)
            return stage_error(c, path, s->name, "creating the symlink", -errno);
        c->stats->symlinks++;
    }
    for (size_t i = 0; i < dir->n_directories; i++) {
        const DirectoryNode *n = dir->directories[i];
        const struct action_input_dir *child;
        struct cas_digest d;
        char *child_path;
        int fd;

        action_digest_valid(n->digest, &d);
        child = action_input_dir_find(c->act, &d);
        if (child == NULL || child->dir == NULL) {
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "staging '%s': directory not loaded",
                             n->name);
            return -EINVAL;
        }
        fd = make_dir_at(dir_fd, n->name);
        if (fd < 0)
            return stage_error(c, path, n->name, "creating the directory", fd);
        c->stats->dirs++;
        child_path = action_path_join(path, n->name);
        rc = child_path ? stage_dir(c, fd, child->dir, child_path) : -ENOMEM;
        if (child_path == NULL)
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        free(child_path);
        close(fd);
        if (rc != 0 && rc != -ENOENT)
            return rc;
        if (rc == -ENOENT)
            first = rc;
    }
    return first;
}

/* Creates the directories of rel under root_fd (the last component too when
 * include_last). Stops quietly below an input symlink; an input file in the
 * way is INVALID_ARGUMENT. what names rel in messages. */
static int make_parents(struct stage_ctx *c, int root_fd, const char *rel, bool include_last,
                        const char *what)
{
    const char *p = rel;
    int fd = -1, rc = 0;

    fd = dup(root_fd);
    if (fd < 0)
        return stage_error(c, "", rel, "dup", -errno);
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        char name[NAME_MAX + 1];
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        int next;

        if (slash == NULL && !include_last)
            break;
        memcpy(name, p, len); /* components are <= NAME_MAX: validated */
        name[len] = '\0';
        next = make_dir_at(fd, name);
        if (next == -EEXIST) {
            next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            next = next < 0 ? -errno : next;
        } else if (next >= 0) {
            c->stats->dirs++;
        }
        if (next == -ELOOP || next == -ENOTDIR) {
            /* O_DIRECTORY|O_NOFOLLOW gives ENOTDIR for a symlink too. */
            struct stat st;

            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                goto out; /* an input symlink: the action sees what it points to */
            next = -ENOTDIR;
        }
        if (next == -ENOTDIR) {
            reapi_status_set(c->st, GRPC_STATUS_INVALID_ARGUMENT,
                             "%s '%s': '%.*s' is a file in the input root", what, rel,
                             (int)(p + len - rel), rel);
            rc = -EINVAL;
            goto out;
        }
        if (next < 0) {
            rc = stage_error(c, "", rel, "creating its parent directories", next);
            goto out;
        }
        close(fd);
        fd = next;
        p += len;
        if (*p == '/')
            p++;
    }
out:
    close(fd);
    return rc;
}

static int stage_output_parents(struct stage_ctx *c, int root_fd)
{
    const struct action *act = c->act;
    int rc = 0;

    if (act->working_directory[0] != '\0')
        rc = make_parents(c, root_fd, act->working_directory, true, "working directory");
    for (size_t i = 0; rc == 0 && i < act->n_outputs; i++)
        rc = make_parents(c, root_fd, act->outputs[i].full, false, "output path");
    return rc;
}

/* The input node called name in dir: 'd' a directory (*child set), 'f' a
 * file, 'l' a symlink, 0 none. Linear: this runs for a few path components. */
static char input_node(const struct action *act, const Directory *dir, const char *name,
                       const Directory **child)
{
    for (size_t i = 0; i < dir->n_directories; i++) {
        if (strcmp(dir->directories[i]->name, name) == 0) {
            const struct action_input_dir *in;
            struct cas_digest d;

            action_digest_valid(dir->directories[i]->digest, &d);
            in = action_input_dir_find(act, &d);
            *child = in ? in->dir : NULL;
            return 'd';
        }
    }
    for (size_t i = 0; i < dir->n_files; i++)
        if (strcmp(dir->files[i]->name, name) == 0)
            return 'f';
    for (size_t i = 0; i < dir->n_symlinks; i++)
        if (strcmp(dir->symlinks[i]->name, name) == 0)
            return 'l';
    return 0;
}

/* make_parents for a read-only lower layer: the directories are made in the
 * upper layer, and the input tree is consulted from the decoded Directory
 * messages instead of the disk. */
static int make_parents_upper(struct stage_ctx *c, int root_fd, const char *rel, bool include_last,
                              const char *what)
{
    const Directory *in = c->act->dirs[0].dir;
    const char *p = rel;
    int fd, rc = 0;

    fd = dup(root_fd);
    if (fd < 0)
        return stage_error(c, "", rel, "dup", -errno);
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        const Directory *child = NULL;
        char name[NAME_MAX + 1];
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        char kind = 0;
        int next;

        if (slash == NULL && !include_last)
            break;
        memcpy(name, p, len); /* components are <= NAME_MAX: validated */
        name[len] = '\0';
        if (in != NULL)
            kind = input_node(c->act, in, name, &child);
        if (kind == 'l')
            goto out; /* an input symlink: the action sees what it points to */
        if (kind == 'f') {
            reapi_status_set(c->st, GRPC_STATUS_INVALID_ARGUMENT,
                             "%s '%s': '%.*s' is a file in the input root", what, rel,
                             (int)(p + len - rel), rel);
            rc = -EINVAL;
            goto out;
        }
        in = child;
        next = make_dir_at(fd, name);
        if (next == -EEXIST) {
            next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            next = next < 0 ? -errno : next;
        } else if (next >= 0) {
            c->stats->dirs++;
        }
        if (next < 0) {
            rc = stage_error(c, "", rel, "creating its parent directories", next);
            goto out;
        }
        close(fd);
        fd = next;
        p += len;
        if (*p == '/')
            p++;
    }
out:
    close(fd);
    return rc;
}

int action_stage_output_dirs(const struct action *act, const char *upper_dir,
                             struct action_stage_stats *stats, struct reapi_status *st)
{
    struct stage_ctx c = {.act = act, .exec_dir_fd = -1, .stats = stats, .st = st};
    int root_fd, rc = 0;

    root_fd = open(upper_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        rc = -errno;
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "opening %s: %s", upper_dir, strerror(-rc));
        return rc;
    }
    if (act->working_directory[0] != '\0')
        rc = make_parents_upper(&c, root_fd, act->working_directory, true, "working directory");
    for (size_t i = 0; rc == 0 && i < act->n_outputs; i++)
        rc = make_parents_upper(&c, root_fd, act->outputs[i].full, false, "output path");
    close(root_fd);
    return rc;
}

int action_stage_inputs(struct cas_store *cas, const struct action *act, const char *lower_dir,
                        const char *exec_blob_dir, struct action_stage_stats *stats,
                        struct reapi_status *st)
{
    return action_stage_inputs_counted(cas, act, lower_dir, exec_blob_dir, NULL, stats, st);
}

int action_stage_inputs_counted(struct cas_store *cas, const struct action *act,
                                const char *lower_dir, const char *exec_blob_dir,
                                struct cas_fetch_counters *fetch, struct action_stage_stats *stats,
                                struct reapi_status *st)
{
    struct stage_ctx c = {
        .cas = cas,
        .act = act,
        .exec_blob_dir = exec_blob_dir,
        .exec_dir_fd = -1,
        .stats = stats,
        .fetch = fetch,
        .st = st,
    };
    uint64_t start = clock_mono_us();
    int root_fd = -1, rc;

    memset(stats, 0, sizeof(*stats));
    root_fd = open(lower_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        rc = -errno;
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "opening staging dir %s: %s", lower_dir,
                         strerror(-rc));
        goto out;
    }
    c.exec_dir_fd = open(exec_blob_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c.exec_dir_fd < 0) {
        rc = -errno;
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "opening %s: %s", exec_blob_dir, strerror(-rc));
        goto out;
    }
    rc = stage_dir(&c, root_fd, act->dirs[0].dir, "");
    if (rc == 0 && st->n_missing > 0)
        rc = -ENOENT;
    if (rc == 0)
        rc = stage_output_parents(&c, root_fd);
out:
    if (root_fd >= 0)
        close(root_fd);
    if (c.exec_dir_fd >= 0)
        close(c.exec_dir_fd);
    stats->micros = clock_mono_us() - start;
    return rc;
}

/* --- the scratch directory --- */

int action_scratch_create(const char *base, const char *id, struct action_scratch *out)
{
    static const char *const subdirs[] = {"lower", "upper", "work"};
    char **dirs[] = {&out->lower, &out->upper, &out->work};
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (id[0] == '\0' || strchr(id, '/') != NULL || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return -EINVAL;
    if (asprintf(&out->root, "%s/%s", base, id) < 0) {
        out->root = NULL;
        return -ENOMEM;
    }
    if (mkdir(out->root, 0700) < 0) {
        rc = -errno;
        free(out->root);
        out->root = NULL;
        return rc;
    }
    for (size_t i = 0; i < 3; i++) {
        if (asprintf(dirs[i], "%s/%s", out->root, subdirs[i]) < 0) {
            *dirs[i] = NULL;
            rc = -ENOMEM;
            goto out;
        }
        if (mkdir(*dirs[i], 0755) < 0 || chmod(*dirs[i], 0755) < 0) {
            rc = -errno;
            goto out;
        }
    }
    if (asprintf(&out->stdout_path, "%s/stdout", out->root) < 0) {
        out->stdout_path = NULL;
        rc = -ENOMEM;
        goto out;
    }
    if (asprintf(&out->stderr_path, "%s/stderr", out->root) < 0) {
        out->stderr_path = NULL;
        rc = -ENOMEM;
    }
out:
    if (rc != 0)
        action_scratch_remove(out);
    return rc;
}

int action_scratch_remove(struct action_scratch *scratch)
{
    int rc = 0;

    if (scratch->root != NULL) {
        rc = util_remove_tree(scratch->root);
        if (rc == -ENOENT)
            rc = 0;
    }
    free(scratch->root);
    free(scratch->lower);
    free(scratch->upper);
    free(scratch->work);
    free(scratch->stdout_path);
    free(scratch->stderr_path);
    memset(scratch, 0, sizeof(*scratch));
    return rc;
}

/* --- removing a tree --- */
