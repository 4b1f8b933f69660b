/*
 * test_util_file.c - util/'s file helpers: mkdir -p, write-all, and
 * remove-tree's handling of a mount point inside the tree (left as it is,
 * mode included, and -EXDEV). Deep and hostile trees are covered by
 * test_action_stage's scratch removal.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/util.h"

struct fixture {
    char dir[PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/test_util_file.XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    int rc = util_remove_tree(f->dir);

    free(f);
    return rc == 0 ? 0 : -1;
}

static int make_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return -errno;
    close(fd);
    return 0;
}

static void test_mkdir_p(void **state)
{
    struct fixture *f = *state;
    char p[PATH_MAX + 64], *longp;
    struct stat st;

    snprintf(p, sizeof(p), "%s/a/b/c", f->dir);
    assert_int_equal(util_mkdir_p(p, 0755), 0);
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* Again: everything exists already. A trailing slash is fine too. */
    assert_int_equal(util_mkdir_p(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/a/b/c/", f->dir);
    assert_int_equal(util_mkdir_p(p, 0755), 0);
    /* A file in the way of a parent. */
    snprintf(p, sizeof(p), "%s/a/file", f->dir);
    assert_int_equal(make_file(p), 0);
    snprintf(p, sizeof(p), "%s/a/file/below", f->dir);
    assert_int_equal(util_mkdir_p(p, 0755), -ENOTDIR);
    /* Too long for the stack buffer. */
    longp = malloc(PATH_MAX + 1);
    assert_non_null(longp);
    memset(longp, 'x', PATH_MAX);
    longp[0] = '/';
    longp[PATH_MAX] = '\0';
    assert_int_equal(util_mkdir_p(longp, 0755), -ENAMETOOLONG);
    free(longp);
}

static void test_write_all(void **state)
{
    struct fixture *f = *state;
    size_t len = 3 * 1024 * 1024 + 17;
    char p[PATH_MAX + 64];
    unsigned char *buf = malloc(len), *back = malloc(len);
    int fd;

    assert_non_null(buf);
    assert_non_null(back);
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 7);
    snprintf(p, sizeof(p), "%s/data", f->dir);
    fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(util_write_all(fd, buf, len), 0);
    assert_int_equal(util_write_all(fd, buf, 0), 0);
    assert_int_equal(pread(fd, back, len, 0), (ssize_t)len);
    assert_memory_equal(buf, back, len);
    close(fd);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(util_write_all(fd, buf, 1), -EBADF);
    close(fd);
    free(buf);
    free(back);
}

/* In a child of our own user and mount namespace: a tmpfs (mode 0500, one
 * file) mounted inside the tree. The removal must leave it alone, mode
 * included, remove everything else, and say -EXDEV. Exits 0 ok, 1 failed,
 * 77 no namespaces here. */
static int mount_point_child(const char *dir)
{
    char root[PATH_MAX + 64], mnt[PATH_MAX + 64], p[PATH_MAX + 64], map[64];
    uid_t uid = getuid();
    gid_t gid = getgid();
    struct stat st;
    int fd;

    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
        return 77;
    fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, "deny", 4);
        close(fd);
    }
    /* Both ids mapped, or creating a file fails with EOVERFLOW. */
    for (int i = 0; i < 2; i++) {
        snprintf(map, sizeof(map), "0 %u 1\n", i == 0 ? (unsigned)uid : (unsigned)gid);
        fd = open(i == 0 ? "/proc/self/uid_map" : "/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || util_write_all(fd, map, strlen(map)) != 0)
            return 77;
        close(fd);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return 77;
    snprintf(root, sizeof(root), "%s/tree", dir);
    snprintf(mnt, sizeof(mnt), "%s/tree/sub/mnt", dir);
    if (util_mkdir_p(mnt, 0755) != 0)
        return 1;
    snprintf(p, sizeof(p), "%s/tree/sub/gone", dir);
    if (make_file(p) != 0)
        return 1;
    if (mount("tmpfs", mnt, "tmpfs", 0, "mode=0500") != 0)
        return 77;
    snprintf(p, sizeof(p), "%s/kept", mnt);
    if (make_file(p) != 0)
        return 1;
    if (util_remove_tree(root) != -EXDEV)
        return 1;
    if (stat(p, &st) != 0 || stat(mnt, &st) != 0 || (st.st_mode & 07777) != 0500)
        return 1;
    snprintf(p, sizeof(p), "%s/tree/sub/gone", dir);
    if (lstat(p, &st) == 0 || errno != ENOENT)
        return 1;
    if (umount2(mnt, MNT_DETACH) != 0)
        return 1;
    return util_remove_tree(root) == 0 ? 0 : 1;
}

static void test_remove_tree_mount_point(void **state)
{
    struct fixture *f = *state;
    int status;
    pid_t pid;

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(mount_point_child(f->dir));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        print_message("no user namespaces here: skipped\n");
        return;
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mkdir_p, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_tree_mount_point, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
