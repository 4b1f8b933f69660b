/*
 * test_casfs.c - the casfs FUSE filesystem, really mounted (root and a usable
 * /dev/fuse needed, else every test is skipped): modes, the executable bit,
 * symlinks, nested empty directories, zero-byte files, byte-for-byte reads,
 * EROFS for every kind of write, a removed tree disappearing, the per-tree
 * counters, EIO (not a hang) for a missing blob, a Directory that is not in
 * the CAS, and stale-mount cleanup. Every test runs twice: with FUSE
 * passthrough (which must be active as root on Linux >= 6.9) and with it off
 * (the read path); concurrent opens of one file, mmap and an overlay mounted
 * on top (the stack depth passthrough sets) are checked in both.
 */
#include "test_action_helpers.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>

#include "fuse/casfs.h"

struct fs_fixture {
    struct th_env env;
    char mnt[PATH_MAX];
    struct casfs *fs;
    struct cas_digest root, missing, big;
    char *big_data;
    size_t big_len;
    enum casfs_passthrough_mode mode;
    bool pt; /* passthrough active */
    char log[1024];
    char mount_log[1024]; /* the lines casfs_mount logged */
    bool mounting;
    enum casfs_uring_mode uring;
    bool uring_param_set; /* this group turned enable_uring on: restore it */
};

static const char hello_text[] = "hello, casfs\n";
static const char tool_text[] = "#!/bin/sh\necho tool\n";

static void fixture_log(void *arg, const char *line)
{
    struct fs_fixture *f = arg;

    size_t used = strlen(f->mount_log);

    snprintf(f->log, sizeof(f->log), "%s", line);
    if (f->mounting)
        snprintf(f->mount_log + used, sizeof(f->mount_log) - used, "%s\n", line);
}

static const char uring_param[] = "/sys/module/fuse/parameters/enable_uring";

/* Sets the fuse module's enable_uring; false when there is no such knob. */
static bool uring_param_write(bool on)
{
    int fd = open(uring_param, O_WRONLY | O_CLOEXEC);
    bool ok;

    if (fd < 0)
        return false;
    ok = write(fd, on ? "1" : "0", 1) == 1;
    close(fd);
    return ok;
}

static bool uring_param_on(void)
{
    char c = 0;
    int fd = open(uring_param, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return false;
    if (read(fd, &c, 1) != 1)
        c = 0;
    close(fd);
    return c == 'Y' || c == '1';
}

static bool fuse_usable(void)
{
    int fd;

    if (geteuid() != 0)
        return false;
    fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static int setup_modes(void **state, enum casfs_passthrough_mode mode, enum casfs_uring_mode uring)
{
    bool param_set = false;
    struct fs_fixture *f;
    struct cas_digest empty_dir, nested, sub;
    struct casfs_options opt = {0};
    Directory *d;

    if (!fuse_usable()) {
        *state = NULL;
        return 0;
    }
    if (uring == CASFS_URING_ON && !uring_param_on()) {
        if (!uring_param_write(true)) {
            fprintf(stderr, "SKIP: FUSE over io_uring: the kernel has no %s\n", uring_param);
            *state = NULL;
            return 0;
        }
        param_set = true;
    }
    f = calloc(1, sizeof(*f));
    f->uring_param_set = param_set;
    f->uring = uring;
    assert_non_null(f);
    th_env_setup(&f->env);
    snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->env.dir);

    f->big_len = 3 * 1024 * 1024 + 17;
    f->big_data = malloc(f->big_len);
    assert_non_null(f->big_data);
    for (size_t i = 0; i < f->big_len; i++)
        f->big_data[i] = (char)(i * 7 + i / 4096);
    th_put(f->env.cas, f->big_data, f->big_len, &f->big);

    d = th_dir_new();
    th_dir_put(f->env.cas, d, &empty_dir);
    d = th_dir_new();
    th_dir_add_dir(d, "e2", &empty_dir);
    th_dir_put(f->env.cas, d, &nested);
    d = th_dir_new();
    th_dir_add_dir(d, "e1", &nested);
    th_dir_add_file(f->env.cas, d, "hello.txt", hello_text, false);
    th_dir_put(f->env.cas, d, &sub);

    cas_digest_buffer("not stored", 10, &f->missing);
    d = th_dir_new();
    th_dir_add_dir(d, "emptydir", &empty_dir);
    th_dir_add_dir(d, "sub", &sub);
    th_dir_add_file_digest(d, "big.bin", &f->big, false);
    th_dir_add_file(f->env.cas, d, "empty.txt", "", false);
    th_dir_add_file(f->env.cas, d, "hello.txt", hello_text, false);
    th_dir_add_file_digest(d, "missing.bin", &f->missing, false);
    th_dir_add_file(f->env.cas, d, "tool.sh", tool_text, true);
    th_dir_add_symlink(d, "link", "sub/hello.txt");
    th_dir_add_symlink(d, "linkdir", "sub");
    th_dir_put(f->env.cas, d, &f->root);

    opt.mountpoint = f->mnt;
    opt.threads = 4;
    opt.dir_cache = 2; /* small: exercises eviction */
    opt.log = fixture_log;
    opt.log_arg = f;
    opt.passthrough = mode;
    opt.uring = uring;
    f->mode = mode;
    f->mounting = true;
    assert_int_equal(casfs_mount(f->env.cas, &opt, &f->fs), 0);
    f->mounting = false;
    f->pt = casfs_passthrough_active(f->fs);
    assert_int_equal(casfs_tree_add(f->fs, "t1", &f->root), 0);
    *state = f;
    return 0;
}

/* /dev/fuse reads, whatever enable_uring says. */
static int setup_auto(void **state)
{
    return setup_modes(state, CASFS_PASSTHROUGH_AUTO, CASFS_URING_OFF);
}

static int setup_off(void **state)
{
    return setup_modes(state, CASFS_PASSTHROUGH_OFF, CASFS_URING_OFF);
}

/* io_uring required (enable_uring turned on for the group, then restored). */
static int setup_uring(void **state)
{
    return setup_modes(state, CASFS_PASSTHROUGH_AUTO, CASFS_URING_ON);
}

static int setup_uring_off(void **state)
{
    return setup_modes(state, CASFS_PASSTHROUGH_OFF, CASFS_URING_ON);
}

static int teardown(void **state)
{
    struct fs_fixture *f = *state;

    if (f == NULL)
        return 0;
    casfs_unmount(f->fs);
    if (f->uring_param_set && !uring_param_write(false))
        fprintf(stderr, "test_casfs: could not restore %s to N\n", uring_param);
    free(f->big_data);
    th_env_teardown(&f->env);
    free(f);
    return 0;
}

#define NEED_FUSE(f)                                                                               \
    do {                                                                                           \
        if ((f) == NULL)                                                                           \
            skip();                                                                                \
    } while (0)

/* One STATFS request (never cached by the kernel); 0 or -errno. */
static int statfs_count(const char *mnt)
{
    struct statvfs sv;

    return statvfs(mnt, &sv) == 0 ? 0 : -errno;
}

static void path_in(const struct fs_fixture *f, const char *rel, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", f->mnt, rel);
}

static void test_attributes(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64], target[64];
    struct stat st;
    struct casfs_tree_stats before, after;
    ssize_t n;

    NEED_FUSE(f);
    path_in(f, "t1", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(st.st_uid, getuid());

    path_in(f, "t1/hello.txt", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0444);
    assert_int_equal(st.st_size, strlen(hello_text));
    assert_int_equal(st.st_mtime, CASFS_MTIME);

    path_in(f, "t1/tool.sh", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0555);

    path_in(f, "t1/empty.txt", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 0);

    path_in(f, "t1/sub/e1/e2", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    path_in(f, "t1/link", p, sizeof(p));
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    n = readlink(p, target, sizeof(target));
    assert_int_equal(n, strlen("sub/hello.txt"));
    assert_memory_equal(target, "sub/hello.txt", (size_t)n);
    assert_int_equal(stat(p, &st), 0); /* followed inside the tree */
    assert_int_equal(st.st_size, strlen(hello_text));

    path_in(f, "t1/nothere", p, sizeof(p));
    assert_int_equal(casfs_tree_stats(f->fs, "t1", &before), 0);
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, ENOENT);
    /* negative entries are cached: asking again costs no LOOKUP */
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(casfs_tree_stats(f->fs, "t1", &after), 0);
    assert_int_equal(after.lookups - before.lookups, 1);
    path_in(f, "t1/hello.txt/x", p, sizeof(p));
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, ENOTDIR);
}

static void test_readdir(void **state)
{
    static const char *const want[] = {"emptydir",  "sub",       "big.bin",
                                       "empty.txt", "hello.txt", "missing.bin",
                                       "tool.sh",   "link",      "linkdir"};
    static const unsigned char types[] = {DT_DIR, DT_DIR, DT_REG, DT_REG, DT_REG,
                                          DT_REG, DT_REG, DT_LNK, DT_LNK};
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64];
    struct dirent *de;
    size_t n = 0;
    DIR *dir;

    NEED_FUSE(f);
    path_in(f, "t1", p, sizeof(p));
    dir = opendir(p);
    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        assert_true(n < 9);
        assert_string_equal(de->d_name, want[n]);
        assert_int_equal(de->d_type, types[n]);
        n++;
    }
    closedir(dir);
    assert_int_equal(n, 9);

    path_in(f, "t1/emptydir", p, sizeof(p));
    dir = opendir(p);
    assert_non_null(dir);
    n = 0;
    while ((de = readdir(dir)) != NULL)
        n++;
    closedir(dir);
    assert_int_equal(n, 2); /* . and .. */

    /* The mount root lists the trees. */
    dir = opendir(f->mnt);
    assert_non_null(dir);
    n = 0;
    while ((de = readdir(dir)) != NULL)
        if (strcmp(de->d_name, "t1") == 0)
            n++;
    closedir(dir);
    assert_int_equal(n, 1);
}

/* A listing answers READDIRPLUS: every entry comes with its node and
 * attributes, so stat of each name afterwards asks casfs nothing (no LOOKUP),
 * and the nodes are the ones a LOOKUP gives (the same inode number). */
static void test_readdirplus(void **state)
{
    struct fs_fixture *f = *state;
    struct casfs_tree_stats s;
    char p[PATH_MAX + 64], q[PATH_MAX + 320];
    struct dirent *de;
    struct stat st;
    size_t n = 0;
    DIR *dir;

    NEED_FUSE(f);
    assert_int_equal(casfs_tree_add(f->fs, "rdp", &f->root), 0);
    path_in(f, "rdp", p, sizeof(p));
    dir = opendir(p);
    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(q, sizeof(q), "%s/%s", p, de->d_name);
        assert_int_equal(lstat(q, &st), 0);
        assert_int_equal(st.st_ino, de->d_ino);
        if (strcmp(de->d_name, "hello.txt") == 0)
            assert_int_equal(st.st_size, sizeof(hello_text) - 1);
        n++;
    }
    closedir(dir);
    assert_int_equal(n, 9);
    assert_int_equal(casfs_tree_stats(f->fs, "rdp", &s), 0);
    assert_int_equal(s.lookups, 0);
    /* A name looked up before a listing keeps its node: a second listing of
     * a directory whose names are all known changes nothing. */
    snprintf(q, sizeof(q), "%s/sub/hello.txt", p);
    assert_int_equal(stat(q, &st), 0);
    snprintf(q, sizeof(q), "%s/sub", p);
    dir = opendir(q);
    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL)
        if (strcmp(de->d_name, "hello.txt") == 0)
            assert_int_equal(de->d_ino, st.st_ino);
    closedir(dir);
    assert_int_equal(casfs_tree_remove(f->fs, "rdp", NULL), 0);
}

static void read_all(const char *path, char **buf, size_t *len)
{
    size_t cap = 1 << 20, used = 0;
    char *out = malloc(cap);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    assert_non_null(out);
    assert_true(fd >= 0);
    for (;;) {
        if (used == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        n = read(fd, out + used, cap - used);
        assert_true(n >= 0);
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    *buf = out;
    *len = used;
}

static void test_read_and_counters(void **state)
{
    struct fs_fixture *f = *state;
    struct casfs_tree_stats s;
    char p[PATH_MAX + 64], *buf;
    size_t len;

    NEED_FUSE(f);
    assert_int_equal(casfs_tree_add(f->fs, "t2", &f->root), 0);
    assert_int_equal(casfs_tree_stats(f->fs, "t2", &s), 0);
    assert_int_equal(s.files_opened, 0);
    assert_int_equal(s.bytes_read, 0);

    path_in(f, "t2/sub/hello.txt", p, sizeof(p));
    read_all(p, &buf, &len);
    assert_int_equal(len, strlen(hello_text));
    assert_memory_equal(buf, hello_text, len);
    free(buf);

    path_in(f, "t2/big.bin", p, sizeof(p));
    read_all(p, &buf, &len);
    assert_int_equal(len, f->big_len);
    assert_memory_equal(buf, f->big_data, len);
    free(buf);

    path_in(f, "t2/empty.txt", p, sizeof(p));
    read_all(p, &buf, &len);
    assert_int_equal(len, 0);
    free(buf);

    assert_int_equal(casfs_tree_stats(f->fs, "t2", &s), 0);
    assert_int_equal(s.files_opened, 3);
    if (f->pt) {
        /* The kernel read the blob files itself. */
        assert_int_equal(s.files_passthrough, 3);
        assert_int_equal(s.bytes_read, 0);
    } else {
        assert_int_equal(s.files_passthrough, 0);
        assert_int_equal(s.bytes_read, strlen(hello_text) + f->big_len);
    }
    /* Counters are per tree: t1 untouched by this. */
    assert_int_equal(casfs_tree_remove(f->fs, "t2", &s), 0);
    assert_int_equal(s.files_opened, 3);
    assert_int_equal(casfs_tree_stats(f->fs, "t2", &s), -ENOENT);
}

/* Linux >= 6.9 has FUSE passthrough (CONFIG_FUSE_PASSTHROUGH is on in the
 * kernels the project runs on). */
static bool kernel_has_passthrough(void)
{
    struct utsname u;
    unsigned major = 0, minor = 0;

    if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 9);
}

/* Root of the initial user namespace (not a namespace's root): what
 * backing files need, with CAP_SYS_ADMIN. */
static bool initial_userns(void)
{
    unsigned long inside, outside, count;
    FILE *f = fopen("/proc/self/uid_map", "re");
    int n;

    if (f == NULL)
        return false;
    n = fscanf(f, "%lu %lu %lu", &inside, &outside, &count);
    fclose(f);
    return n == 3 && inside == 0 && outside == 0 && count == 4294967295UL;
}

static void test_passthrough_mode(void **state)
{
    struct fs_fixture *f = *state;

    NEED_FUSE(f);
    if (f->mode == CASFS_PASSTHROUGH_OFF) {
        assert_false(f->pt);
        assert_non_null(strstr(f->mount_log, "passthrough off (execution.fuse_passthrough = off)"));
        return;
    }
    if (!kernel_has_passthrough() || !initial_userns()) {
        assert_false(f->pt);
        assert_non_null(strstr(f->mount_log, "passthrough off"));
        skip();
    }
    /* Root (NEED_FUSE) of the initial user namespace on a kernel with
     * passthrough: it must be on. */
    if (!f->pt)
        fail_msg("passthrough is off as root on this kernel: %s", f->mount_log);
    assert_non_null(strstr(f->mount_log, "passthrough on"));
}

/* The configuration's words (no mount needed). */
/* Which path served: with io_uring on, requests come through the rings
 * (the counter moves, and /dev/fuse serves only INIT, FORGET and the like);
 * with it off, never. */
static void test_uring_mode(void **state)
{
    struct fs_fixture *f = *state;
    struct casfs_stats before, after;
    char p[PATH_MAX + 64];
    struct stat st;

    NEED_FUSE(f);
    assert_int_equal(casfs_tree_add(f->fs, "um", &f->root), 0);
    casfs_get_stats(f->fs, &before);
    path_in(f, "um/sub/e1", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(statfs_count(f->mnt), 0);
    casfs_get_stats(f->fs, &after);
    assert_int_equal(casfs_tree_remove(f->fs, "um", NULL), 0);
    if (f->uring == CASFS_URING_OFF) {
        assert_false(casfs_uring_active(f->fs));
        assert_non_null(strstr(f->mount_log, "FUSE over io_uring off"));
        assert_int_equal(after.ring_requests, 0);
        return;
    }
    if (!casfs_uring_active(f->fs))
        fail_msg("io_uring is off with fuse_uring = on: %s", f->mount_log);
    assert_non_null(strstr(f->mount_log, "FUSE over io_uring on"));
    /* three LOOKUPs (um, sub, e1) and a STATFS, all through the rings */
    assert_true(after.ring_requests - before.ring_requests >= 4);
}

static void test_uring_parse(void **state)
{
    enum casfs_uring_mode m = CASFS_URING_OFF;

    (void)state;
    assert_int_equal(casfs_uring_parse("auto", &m), 0);
    assert_int_equal(m, CASFS_URING_AUTO);
    assert_int_equal(casfs_uring_parse("on", &m), 0);
    assert_int_equal(m, CASFS_URING_ON);
    assert_int_equal(casfs_uring_parse("off", &m), 0);
    assert_int_equal(m, CASFS_URING_OFF);
    assert_int_equal(casfs_uring_parse("yes", &m), -EINVAL);
}

static void test_passthrough_parse(void **state)
{
    enum casfs_passthrough_mode m = CASFS_PASSTHROUGH_OFF;

    (void)state;
    assert_int_equal(casfs_passthrough_parse("auto", &m), 0);
    assert_int_equal(m, CASFS_PASSTHROUGH_AUTO);
    assert_int_equal(casfs_passthrough_parse("off", &m), 0);
    assert_int_equal(m, CASFS_PASSTHROUGH_OFF);
    assert_int_equal(casfs_passthrough_parse("on", &m), -EINVAL);
    assert_int_equal(casfs_passthrough_parse("", &m), -EINVAL);
}

/* Two opens of one file at once (one backing file per inode), mmap, close
 * and reopen (a new backing file): the same bytes every way. */
static void test_concurrent_opens_mmap(void **state)
{
    struct fs_fixture *f = *state;
    struct casfs_tree_stats s;
    char p[PATH_MAX + 64], *buf = malloc(f->big_len);
    int fd1, fd2;
    void *map;

    NEED_FUSE(f);
    assert_non_null(buf);
    assert_int_equal(casfs_tree_add(f->fs, "t4", &f->root), 0);
    path_in(f, "t4/big.bin", p, sizeof(p));
    fd1 = open(p, O_RDONLY | O_CLOEXEC);
    fd2 = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd1 >= 0 && fd2 >= 0);
    assert_int_equal(pread(fd1, buf, f->big_len, 0), f->big_len);
    assert_memory_equal(buf, f->big_data, f->big_len);
    map = mmap(NULL, f->big_len, PROT_READ, MAP_PRIVATE, fd2, 0);
    assert_true(map != MAP_FAILED);
    assert_memory_equal(map, f->big_data, f->big_len);
    munmap(map, f->big_len);
    close(fd1);
    memset(buf, 0, f->big_len);
    assert_int_equal(pread(fd2, buf, 4096, f->big_len - 4096), 4096);
    assert_memory_equal(buf, f->big_data + f->big_len - 4096, 4096);
    close(fd2);
    fd1 = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd1 >= 0);
    assert_int_equal(pread(fd1, buf, f->big_len, 0), f->big_len);
    assert_memory_equal(buf, f->big_data, f->big_len);
    close(fd1);
    assert_int_equal(casfs_tree_remove(f->fs, "t4", &s), 0);
    assert_int_equal(s.files_opened, 3);
    assert_int_equal(s.files_passthrough, f->pt ? 3 : 0);
    free(buf);
}

/* overlayfs over casfs, as the sandbox mounts it: passthrough sets the FUSE
 * mount's stack depth to 1, and overlay on top must still mount (2). */
static void test_overlay_on_top(void **state)
{
    struct fs_fixture *f = *state;
    char lower[PATH_MAX + 64], upper[PATH_MAX + 64], work[PATH_MAX + 64], merged[PATH_MAX + 64];
    char opts[4 * PATH_MAX + 256], p[PATH_MAX + 128], *buf;
    size_t len;
    void *map;
    int fd;

    NEED_FUSE(f);
    path_in(f, "t1", lower, sizeof(lower));
    snprintf(upper, sizeof(upper), "%s/ov-upper", f->env.dir);
    snprintf(work, sizeof(work), "%s/ov-work", f->env.dir);
    snprintf(merged, sizeof(merged), "%s/ov", f->env.dir);
    assert_int_equal(mkdir(upper, 0755), 0);
    assert_int_equal(mkdir(work, 0755), 0);
    assert_int_equal(mkdir(merged, 0755), 0);
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    if (mount("overlay", merged, "overlay", 0, opts) != 0)
        fail_msg("overlay over casfs (passthrough %s): %s", f->pt ? "on" : "off", strerror(errno));
    snprintf(p, sizeof(p), "%s/big.bin", merged);
    read_all(p, &buf, &len);
    assert_int_equal(len, f->big_len);
    assert_memory_equal(buf, f->big_data, len);
    free(buf);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    map = mmap(NULL, f->big_len, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    assert_memory_equal(map, f->big_data, f->big_len);
    munmap(map, f->big_len);
    close(fd);
    snprintf(p, sizeof(p), "%s/sub/hello.txt", merged);
    read_all(p, &buf, &len);
    assert_int_equal(len, strlen(hello_text));
    assert_memory_equal(buf, hello_text, len);
    free(buf);
    assert_int_equal(umount2(merged, MNT_DETACH), 0);
}

static void test_writes_fail(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64], q[PATH_MAX + 64];

    NEED_FUSE(f);
    path_in(f, "t1/hello.txt", p, sizeof(p));
    assert_int_equal(open(p, O_WRONLY | O_CLOEXEC), -1);
    assert_int_equal(errno, EROFS);
    assert_int_equal(open(p, O_RDWR | O_CLOEXEC), -1);
    assert_int_equal(errno, EROFS);
    assert_int_equal(chmod(p, 0777), -1);
    assert_int_equal(errno, EROFS);
    assert_int_equal(truncate(p, 0), -1);
    assert_int_equal(errno, EROFS);
    path_in(f, "t1/renamed", q, sizeof(q));
    assert_int_equal(rename(p, q), -1);
    assert_int_equal(errno, EROFS);
    assert_int_equal(unlink(p), -1);
    assert_int_equal(errno, EROFS);
    path_in(f, "t1/newdir", q, sizeof(q));
    assert_int_equal(mkdir(q, 0755), -1);
    assert_int_equal(errno, EROFS);
    path_in(f, "t1/newfile", q, sizeof(q));
    assert_int_equal(open(q, O_CREAT | O_WRONLY | O_CLOEXEC, 0644), -1);
    assert_int_equal(errno, EROFS);
    path_in(f, "t3", q, sizeof(q));
    assert_int_equal(mkdir(q, 0755), -1);
    assert_int_equal(errno, EROFS);
}

static void test_missing_blob_eio(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64], hex[CAS_HASH_HEX + 1];
    struct stat st;

    NEED_FUSE(f);
    path_in(f, "t1/missing.bin", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0); /* attributes need no content */
    assert_int_equal(open(p, O_RDONLY | O_CLOEXEC), -1);
    assert_int_equal(errno, EIO);
    cas_digest_hex(&f->missing, hex);
    assert_non_null(strstr(f->log, hex));
}

/* A blob that fails to read once opened (here: cut short under casfs, as a
 * damaged disk would answer EIO) gives the reader EIO, and on the read path
 * the store is told: the blob is missing afterwards. With passthrough the
 * kernel reads the blob file itself and casfs never sees the read. */
static void test_read_error_reported(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64], blob[PATH_MAX + 160], hex[CAS_HASH_HEX + 1], data[20000], c;
    struct casfs_tree_stats s;
    struct cas_digest d, root;
    Directory *dir;
    int fd;

    NEED_FUSE(f);
    if (f->pt)
        skip(); /* passthrough: the kernel reads the blob file, not casfs */
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 13 + (f->uring == CASFS_URING_OFF ? 1 : 2) + f->mode);
    th_put(f->env.cas, data, sizeof(data), &d);
    dir = th_dir_new();
    th_dir_add_file_digest(dir, "damaged.bin", &d, false);
    th_dir_put(f->env.cas, dir, &root);
    assert_int_equal(casfs_tree_add(f->fs, "rerr", &root), 0);
    path_in(f, "rerr/damaged.bin", p, sizeof(p));
    fd = open(p, O_RDONLY | O_CLOEXEC); /* the store verifies the blob here */
    assert_true(fd >= 0);
    cas_digest_hex(&d, hex);
    snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", f->env.cas_dir, hex, hex);
    assert_int_equal(truncate(blob, 100), 0);
    assert_int_equal(pread(fd, &c, 1, 10000), -1);
    assert_int_equal(errno, EIO);
    close(fd);
    assert_int_equal(cas_store_contains(f->env.cas, &d), 0);
    assert_non_null(strstr(f->log, hex));
    assert_non_null(strstr(f->log, "missing from the store now"));
    assert_int_equal(casfs_tree_stats(f->fs, "rerr", &s), 0);
    assert_true(s.read_errors >= 1); /* the kernel may have read ahead too */
    assert_int_equal(casfs_tree_remove(f->fs, "rerr", NULL), 0);
}

static void test_missing_directory_eio(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64];
    struct cas_digest nodir;
    struct stat st;
    DIR *dir;

    NEED_FUSE(f);
    cas_digest_buffer("no such Directory", 17, &nodir);
    assert_int_equal(casfs_tree_add(f->fs, "nodir", &nodir), 0);
    assert_int_equal(casfs_tree_add(f->fs, "nodir", &nodir), -EEXIST);
    assert_int_equal(casfs_tree_add(f->fs, "a/b", &nodir), -EINVAL);
    path_in(f, "nodir", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    dir = opendir(p); /* opendir needs no content: readdir gives EIO */
    assert_non_null(dir);
    errno = 0;
    assert_null(readdir(dir));
    assert_int_equal(errno, EIO);
    closedir(dir);
    path_in(f, "nodir/x", p, sizeof(p));
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(casfs_tree_remove(f->fs, "nodir", NULL), 0);
}

static void test_remove_tree(void **state)
{
    struct fs_fixture *f = *state;
    char p[PATH_MAX + 64], buf[64];
    struct stat st;
    int fd;

    NEED_FUSE(f);
    assert_int_equal(casfs_tree_add(f->fs, "gone", &f->root), 0);
    path_in(f, "gone/hello.txt", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(casfs_tree_remove(f->fs, "gone", NULL), 0);
    assert_int_equal(casfs_tree_remove(f->fs, "gone", NULL), -ENOENT);
    /* The name is gone at once, despite the long entry timeout... */
    path_in(f, "gone", p, sizeof(p));
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, ENOENT);
    path_in(f, "gone/hello.txt", p, sizeof(p));
    assert_int_equal(stat(p, &st), -1);
    assert_int_equal(errno, ENOENT);
    /* ...and a file still open keeps working. */
    assert_int_equal(pread(fd, buf, sizeof(buf), 0), strlen(hello_text));
    close(fd);
    /* The name can be used again. */
    assert_int_equal(casfs_tree_add(f->fs, "gone", &f->root), 0);
    path_in(f, "gone/tool.sh", p, sizeof(p));
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(casfs_tree_remove(f->fs, "gone", NULL), 0);
}

static void test_stale_mount_cleanup(void **state)
{
    struct fs_fixture *f = *state;
    struct casfs_options opt = {0};
    struct casfs *fs2 = NULL;
    char p[PATH_MAX + 64];

    NEED_FUSE(f);
    /* Nothing mounted: nothing to do. */
    snprintf(p, sizeof(p), "%s/not-a-mount", f->env.dir);
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(casfs_cleanup_stale(p), -EINVAL);
    /* A second mount on the same point replaces (detaches) the first one's
     * view, as a restart after a crash does. */
    snprintf(p, sizeof(p), "%s/mnt2", f->env.dir);
    opt.mountpoint = p;
    opt.threads = 1;
    assert_int_equal(casfs_mount(f->env.cas, &opt, &fs2), 0);
    assert_int_equal(casfs_tree_add(fs2, "x", &f->root), 0);
    assert_int_equal(casfs_cleanup_stale(p), 0);
    casfs_unmount(fs2); /* unmounting a detached mount still stops cleanly */
    assert_int_equal(umount2(p, MNT_DETACH), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attributes),
        cmocka_unit_test(test_readdir),
        cmocka_unit_test(test_readdirplus),
        cmocka_unit_test(test_read_and_counters),
        cmocka_unit_test(test_passthrough_mode),
        cmocka_unit_test(test_passthrough_parse),
        cmocka_unit_test(test_concurrent_opens_mmap),
        cmocka_unit_test(test_overlay_on_top),
        cmocka_unit_test(test_writes_fail),
        cmocka_unit_test(test_missing_blob_eio),
        cmocka_unit_test(test_missing_directory_eio),
        cmocka_unit_test(test_remove_tree),
        cmocka_unit_test(test_stale_mount_cleanup),
        cmocka_unit_test(test_uring_mode),
        cmocka_unit_test(test_read_error_reported),
        cmocka_unit_test(test_uring_parse),
    };
    int failed;

    failed = cmocka_run_group_tests_name("casfs, passthrough auto", tests, setup_auto, teardown);
    failed += cmocka_run_group_tests_name("casfs, passthrough off", tests, setup_off, teardown);
    failed += cmocka_run_group_tests_name("casfs, io_uring, passthrough auto", tests, setup_uring,
                                          teardown);
    failed += cmocka_run_group_tests_name("casfs, io_uring, passthrough off", tests,
                                          setup_uring_off, teardown);
    return failed;
}
