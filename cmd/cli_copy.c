/*
 * cli_copy.c - copying the outputs of `casbox run` out of the exec root the
 * command left behind.
 *
 * With --input the exec root was an overlay: the command's writes, deletions
 * and chmods live in the upper layer as overlayfs records them (whiteouts,
 * opaque directories, copied-up files). Rather than re-implementing those
 * rules, a helper process mounts the same layers again, read-only
 * (lowerdir=UPPER:LOWER,userxattr), in a user and mount namespace of its own,
 * and copies from that merged view: exactly what the command saw. Without an
 * overlay it copies from the directory itself.
 *
 * The helper is uid 0 of its namespace with the caller's uid mapped to
 * itself, so it may read the caller's own files whatever their mode (a
 * command may leave mode 000 files), and nothing else. Source paths are
 * resolved inside the exec root (openat2 RESOLVE_IN_ROOT): a symlink the
 * command made cannot lead the copy outside it. In DEST nothing is followed:
 * files and symlinks replace what was there, directories merge into
 * directories, anything else in the way is an error.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "cli.h"
#include "util/util.h"

#define COPY_MAX_DEPTH 256
#define COPY_CHUNK     (1 << 20)

struct copy_state {
    char path[PATH_MAX]; /* the entry being copied, relative to the exec root */
    char *err;
    size_t err_len;
};

static int copy_fail(struct copy_state *cs, int rc, const char *what)
{
    snprintf(cs->err, cs->err_len, "%s %s: %s", what, cs->path[0] ? cs->path : ".", strerror(-rc));
    return rc;
}

/* Appends "/name" to cs->path; returns the old length to restore. */
static size_t copy_path_push(struct copy_state *cs, const char *name)
{
    size_t len = strlen(cs->path);

    snprintf(cs->path + len, sizeof(cs->path) - len, "%s%s", len > 0 ? "/" : "", name);
    return len;
}

static int copy_data(int in, int out)
{
    char buf[64 * 1024];
    bool plain = false;

    for (;;) {
        ssize_t n;

        if (!plain) {
            n = copy_file_range(in, NULL, out, NULL, COPY_CHUNK, 0);
            if (n < 0 &&
                (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                plain = true;
                continue;
            }
        } else {
            n = read(in, buf, sizeof(buf));
            if (n > 0) {
                int rc = util_write_all(out, buf, (size_t)n);

                if (rc != 0)
                    return rc;
            }
        }
        if (n == 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Makes room for a file or symlink called name in dir: removes a file or
 * symlink there, refuses a directory. */
static int copy_make_room(int dir, const char *name)
{
    struct stat st;

    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    return unlinkat(dir, name, 0) == 0 ? 0 : -errno;
}

static int copy_times(int fd, const struct stat *st)
{
    const struct timespec times[2] = {st->st_atim, st->st_mtim};

    return futimens(fd, times) == 0 ? 0 : -errno;
}

static int copy_file(struct copy_state *cs, int src_dir, const char *name, int dst_dir,
                     const struct stat *st)
{
    int in, out = -1, rc;

    in = openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return copy_fail(cs, -errno, "read");
    rc = copy_make_room(dst_dir, name);
    if (rc != 0) {
        copy_fail(cs, rc, "replace");
        goto out;
    }
    out = openat(dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = copy_fail(cs, -errno, "create");
        goto out;
    }
    rc = copy_data(in, out);
    if (rc == 0 && fchmod(out, st->st_mode & 0777) != 0)
        rc = -errno;
    if (rc == 0)
        rc = copy_times(out, st);
    if (rc != 0)
        copy_fail(cs, rc, "copy");
out:
    if (out >= 0 && close(out) != 0 && rc == 0)
        rc = copy_fail(cs, -errno, "write");
    close(in);
    return rc;
}

static int copy_symlink(struct copy_state *cs, int src_dir, const char *name, int dst_dir)
{
    char target[PATH_MAX];
    ssize_t n = readlinkat(src_dir, name, target, sizeof(target) - 1);
    int rc;

    if (n < 0)
        return copy_fail(cs, -errno, "read link");
    target[n] = '\0';
    rc = copy_make_room(dst_dir, name);
    if (rc != 0)
        return copy_fail(cs, rc, "replace");
    if (symlinkat(target, dst_dir, name) != 0)
        return copy_fail(cs, -errno, "create link");
    return 0;
}

static int copy_entry(struct copy_state *cs, int src_dir, const char *name, int dst_dir,
                      const struct stat *st, int depth);

static int copy_dir_entries(struct copy_state *cs, int src, int dst, int depth)
{
    struct dirent *de;
    DIR *d;
    int fd, rc = 0;

    fd = openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return copy_fail(cs, -errno, "open");
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return copy_fail(cs, -errno, "open");
    }
    while (rc == 0) {
        struct stat st;
        size_t len;

        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0)
                rc = copy_fail(cs, -errno, "list");
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        len = copy_path_push(cs, de->d_name);
        if (fstatat(src, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            rc = copy_fail(cs, -errno, "stat");
        else
            rc = copy_entry(cs, src, de->d_name, dst, &st, depth + 1);
        if (rc == 0)
            cs->path[len] = '\0';
    }
    closedir(d);
    return rc;
}

static int copy_dir(struct copy_state *cs, int src_dir, const char *name, int dst_dir,
                    const struct stat *st, int depth)
{
    struct stat dst_st;
    int src = -1, dst = -1, rc;

    if (depth > COPY_MAX_DEPTH)
        return copy_fail(cs, -ELOOP, "copy (too deep)");
    if (mkdirat(dst_dir, name, 0700) != 0) {
        if (errno != EEXIST)
            return copy_fail(cs, -errno, "create directory");
        if (fstatat(dst_dir, name, &dst_st, AT_SYMLINK_NOFOLLOW) != 0)
            return copy_fail(cs, -errno, "stat");
        if (!S_ISDIR(dst_st.st_mode))
            return copy_fail(cs, -ENOTDIR, "replace");
    }
    src = openat(src_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0) {
        rc = copy_fail(cs, -errno, "open");
        goto out;
    }
    dst = openat(dst_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dst < 0) {
        rc = copy_fail(cs, -errno, "open the copy of");
        goto out;
    }
    rc = copy_dir_entries(cs, src, dst, depth);
    if (rc == 0 && fchmod(dst, st->st_mode & 07777 & ~(mode_t)S_ISUID) != 0)
        rc = copy_fail(cs, -errno, "chmod");
    if (rc == 0 && copy_times(dst, st) != 0)
        rc = copy_fail(cs, -errno, "set times of");
out:
    if (src >= 0)
        close(src);
    if (dst >= 0)
        close(dst);
    return rc;
}

static int copy_entry(struct copy_state *cs, int src_dir, const char *name, int dst_dir,
                      const struct stat *st, int depth)
{
    if (S_ISREG(st->st_mode))
        return copy_file(cs, src_dir, name, dst_dir, st);
    if (S_ISLNK(st->st_mode))
        return copy_symlink(cs, src_dir, name, dst_dir);
    if (S_ISDIR(st->st_mode))
        return copy_dir(cs, src_dir, name, dst_dir, st, depth);
    return 0; /* sockets, fifos, devices: not outputs */
}

/* mkdir -p below dir, following nothing; returns an fd of the last one. */
static int copy_open_dest(int dir, const char *path, struct copy_state *cs)
{
    char buf[PATH_MAX], *save = NULL;
    int fd = dup(dir);

    if (fd < 0)
        return copy_fail(cs, -errno, "dup");
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *part = strtok_r(buf, "/", &save); part != NULL; part = strtok_r(NULL, "/", &save)) {
        int next;

        if (mkdirat(fd, part, 0755) != 0 && errno != EEXIST) {
            close(fd);
            return copy_fail(cs, -errno, "create the directory of");
        }
        next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        if (next < 0)
            return copy_fail(cs, -errno, "open the directory of");
        fd = next;
    }
    return fd;
}

/* One --output path; *copied says whether it existed. */
static int copy_one(struct copy_state *cs, int root, int dest, const char *path, bool *copied)
{
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/'), *base;
    int src = -1, dst = -1, rc = 0;
    struct stat st;

    *copied = false;
    snprintf(cs->path, sizeof(cs->path), "%s", path);
    if (path[0] == '\0') { /* the whole exec root */
        *copied = true;
        return copy_dir_entries(cs, root, dest, 0);
    }
    snprintf(parent, sizeof(parent), "%.*s", slash != NULL ? (int)(slash - path) : 1,
             slash != NULL ? path : ".");
    base = slash != NULL ? slash + 1 : path;
    src = (int)syscall(SYS_openat2, root, parent, &how, sizeof(how));
    if (src < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        return copy_fail(cs, -errno, "open the directory of");
    }
    if (fstatat(src, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        rc = errno == ENOENT ? 0 : copy_fail(cs, -errno, "stat");
        goto out;
    }
    dst = copy_open_dest(dest, slash != NULL ? parent : "", cs);
    if (dst < 0) {
        rc = dst;
        goto out;
    }
    *copied = true;
    rc = copy_entry(cs, src, base, dst, &st, 0);
out:
    if (src >= 0)
        close(src);
    if (dst >= 0)
        close(dst);
    return rc;
}

static int copy_write_file(const char *path, const char *data)
{
    size_t len = strlen(data);
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;

    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* In the helper: our own user and mount namespace, and the merged view. */
static int copy_enter(const struct cli_copy_source *src, struct copy_state *cs)
{
    char map[64], upper[PATH_MAX + 32], lower[PATH_MAX + 32], *opts = NULL;
    unsigned uid = getuid(), gid = getgid();
    int rc;

    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
        return copy_fail(cs, -errno, "unshare user and mount namespaces for");
    snprintf(map, sizeof(map), "%u %u 1\n", uid, uid);
    rc = copy_write_file("/proc/self/uid_map", map);
    if (rc == 0)
        rc = copy_write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof(map), "%u %u 1\n", gid, gid);
    if (rc == 0)
        rc = copy_write_file("/proc/self/gid_map", map);
    if (rc != 0)
        return copy_fail(cs, rc, "map ids for");
    if (src->upper == NULL)
        return 0;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return copy_fail(cs, -errno, "make / private for");
    rc = sandbox_overlay_escape(upper, sizeof(upper), src->upper);
    if (rc == 0)
        rc = sandbox_overlay_escape(lower, sizeof(lower), src->lower);
    if (rc == 0 && asprintf(&opts, "lowerdir=%s:%s,userxattr", upper, lower) < 0) {
        opts = NULL;
        rc = -ENOMEM;
    }
    if (rc == 0 &&
        mount("overlay", src->mount_point, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts) != 0)
        rc = -errno;
    free(opts);
    if (rc != 0)
        return copy_fail(cs, rc, "mount the merged view of the exec root for");
    return 0;
}

static _Noreturn void copy_helper(const struct cli_copy_source *src, char *const *paths, size_t n,
                                  const char *dest, int report)
{
    char err[512] = "";
    struct copy_state cs = {.path = "", .err = err, .err_len = sizeof(err)};
    bool *copied = calloc(n ? n : 1, sizeof(*copied));
    int root = -1, dest_fd = -1, rc = 0;

    if (copied == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        rc = -ENOMEM;
    }
    if (rc == 0)
        rc = copy_enter(src, &cs);
    if (rc == 0) {
        root = open(src->upper != NULL ? src->mount_point : src->lower,
                    O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
            rc = copy_fail(&cs, -errno, "open the exec root for");
    }
    if (rc == 0) {
        rc = util_mkdir_p(dest, 0755); /* DEST may well lead through symlinks */
        if (rc == 0) {
            dest_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            rc = dest_fd < 0 ? -errno : 0;
        }
        if (rc != 0)
            snprintf(err, sizeof(err), "--output-dir %s: %s", dest, strerror(-rc));
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = copy_one(&cs, root, dest_fd, paths[i], &copied[i]);
    if (rc != 0 && strncmp(err, "--output-dir", 12) != 0) {
        char tmp[sizeof(err)];

        snprintf(tmp, sizeof(tmp), "copying outputs back: %s", err);
        snprintf(err, sizeof(err), "%s", tmp);
    }
    for (size_t i = 0; copied != NULL && i < n; i++) {
        char c = copied[i] ? 1 : 0;

        if (write(report, &c, 1) != 1)
            _exit(1);
    }
    if (rc != 0 && write(report, err, strlen(err)) < 0)
        _exit(1);
    _exit(rc == 0 ? 0 : 1);
}

int cli_copy_outputs(const struct cli_copy_source *src, char *const *paths, size_t n,
                     const char *dest, bool *copied, char *err, size_t err_len)
{
    char buf[1024];
    size_t got = 0, want = n + sizeof(buf);
    char *answer = NULL;
    int p[2], status, rc = 0;
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(err, err_len, "pipe: %s", strerror(errno));
        return -errno;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        snprintf(err, err_len, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return rc;
    }
    if (pid == 0) {
        close(p[0]);
        copy_helper(src, paths, n, dest, p[1]);
    }
    close(p[1]);
    answer = malloc(want + 1);
    while (answer != NULL && got < want) {
        ssize_t r = read(p[0], answer + got, want - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(p[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (answer == NULL) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        copied[i] = i < got && answer[i] == 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got < n) {
        answer[got] = '\0';
        snprintf(err, err_len, "%s",
                 got > n ? answer + n : "copying outputs back: the helper process failed");
        rc = -EIO;
    }
    free(answer);
    return rc;
}
