/*
 * test_action_stage.c - staging an input root by hardlinks from a real CAS
 * into a scratch directory: files, the executable bit (a separate inode),
 * symlinks, empty directories, zero-byte files, output parents; every blob
 * evicted before staging listed; and removing scratch trees an action left
 * hard to remove.
 */
#include "test_action_helpers.h"

#include <sys/sysmacros.h>

#include "exec/exec.h"

struct stage_fixture {
    struct th_env env;
    char exec_dir[PATH_MAX + 16];
    char base[PATH_MAX + 16];
    struct cas_digest hello, tool, root;
    struct action *act;
};

static const char hello_text[] = "hello, world\n";
static const char tool_text[] = "#!/bin/sh\necho tool\n";

static void fixture_setup(struct stage_fixture *f, bool wd)
{
    static const char *const argv[] = {"./tool.sh", NULL};
    struct reapi_status st;
    struct cas_digest sub, empty_dir, ad;
    Directory *d;
    Command *cmd;

    memset(f, 0, sizeof(*f));
    th_env_setup(&f->env);
    snprintf(f->exec_dir, sizeof(f->exec_dir), "%s/exec-blobs", f->env.dir);
    snprintf(f->base, sizeof(f->base), "%s/scratch", f->env.dir);
    assert_int_equal(mkdir(f->exec_dir, 0700), 0);
    assert_int_equal(mkdir(f->base, 0700), 0);

    d = th_dir_new(); /* an empty directory: the empty blob as its digest */
    th_dir_put(f->env.cas, d, &empty_dir);
    assert_true(cas_digest_equal(&empty_dir, cas_digest_empty()));
    d = th_dir_new();
    th_dir_add_file(f->env.cas, d, "hello.txt", hello_text, false);
    th_dir_add_file(f->env.cas, d, "tool.sh", tool_text, true);
    th_dir_put(f->env.cas, d, &sub);
    d = th_dir_new();
    th_dir_add_file(f->env.cas, d, "empty.txt", "", false);
    th_dir_add_file(f->env.cas, d, "hello.txt", hello_text, false);
    th_dir_add_file(f->env.cas, d, "tool.sh", tool_text, true);
    th_dir_add_file(f->env.cas, d, "tool_data.sh", tool_text, false); /* same blob, not +x */
    th_dir_add_dir(d, "emptydir", &empty_dir);
    th_dir_add_dir(d, "sub", &sub);
    th_dir_add_dir(d, "sub2", &sub);
    th_dir_add_symlink(d, "link", "sub/hello.txt");
    th_dir_add_symlink(d, "linkdir", "sub");
    th_dir_put(f->env.cas, d, &f->root);
    cas_digest_buffer(hello_text, strlen(hello_text), &f->hello);
    cas_digest_buffer(tool_text, strlen(tool_text), &f->tool);

    cmd = th_cmd_new(argv);
    if (wd)
        cmd->working_directory = strdup("work/dir");
    TH_APPEND(cmd->output_files, cmd->n_output_files, strdup("out/obj/a.o"));
    TH_APPEND(cmd->output_files, cmd->n_output_files, strdup("linkdir/made.txt"));
    TH_APPEND(cmd->output_directories, cmd->n_output_directories, strdup("gen/tree"));
    th_action_put(f->env.cas, cmd, &f->root, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(f->env.cas, &ad, &f->env.cfg, &f->act, &st), 0);
    reapi_status_free(&st);
}

static void fixture_teardown(struct stage_fixture *f)
{
    action_free(f->act);
    th_env_teardown(&f->env);
}

static void lstat_at(const char *dir, const char *rel, struct stat *st)
{
    char path[PATH_MAX * 2];

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    if (lstat(path, st) != 0)
        fail_msg("%s: %s", path, strerror(errno));
}

static void expect_content(const char *dir, const char *rel, const char *want)
{
    char path[PATH_MAX * 2], buf[256];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_stage_tree(void **state)
{
    struct stage_fixture f;
    struct action_scratch scratch;
    struct action_stage_stats stats;
    struct reapi_status st;
    struct stat s, blob, s2;
    char blob_path[PATH_MAX], target[64];
    ssize_t n;

    (void)state;
    fixture_setup(&f, false);
    assert_int_equal(action_scratch_create(f.base, "a1", &scratch), 0);
    assert_int_equal(action_scratch_create(f.base, "a1", &(struct action_scratch){0}), -EEXIST);
    assert_int_equal(action_scratch_create(f.base, "../x", &(struct action_scratch){0}), -EINVAL);
    lstat_at(scratch.root, "upper", &s);
    assert_true(S_ISDIR(s.st_mode));
    lstat_at(scratch.root, "work", &s);
    assert_true(S_ISDIR(s.st_mode));

    reapi_status_init(&st);
    assert_int_equal(action_stage_inputs(f.env.cas, f.act, scratch.lower, f.exec_dir, &stats, &st),
                     0);
    assert_int_equal(st.code, GRPC_STATUS_OK);

    /* plain files are the CAS blob's inode, read-only */
    assert_int_equal(cas_store_blob_path(f.env.cas, &f.hello, blob_path, sizeof(blob_path)), 0);
    assert_int_equal(stat(blob_path, &blob), 0);
    lstat_at(scratch.lower, "hello.txt", &s);
    assert_int_equal(s.st_ino, blob.st_ino);
    assert_int_equal(s.st_mode & 07777, 0444);
    lstat_at(scratch.lower, "sub2/hello.txt", &s);
    assert_int_equal(s.st_ino, blob.st_ino);
    expect_content(scratch.lower, "sub/hello.txt", hello_text);

    /* executable files: another inode, 0555, same bytes; the plain use keeps 0444 */
    lstat_at(scratch.lower, "tool.sh", &s);
    assert_int_equal(s.st_mode & 07777, 0555);
    lstat_at(scratch.lower, "tool_data.sh", &s2);
    assert_int_equal(s2.st_mode & 07777, 0444);
    assert_true(s.st_ino != s2.st_ino);
    lstat_at(scratch.lower, "sub/tool.sh", &s2);
    assert_int_equal(s2.st_ino, s.st_ino); /* one executable copy shared */
    expect_content(scratch.lower, "tool.sh", tool_text);
    assert_int_equal(stats.exec_copies, 1);

    /* zero-byte file, empty directory, symlinks as declared */
    lstat_at(scratch.lower, "empty.txt", &s);
    assert_true(S_ISREG(s.st_mode));
    assert_int_equal(s.st_size, 0);
    lstat_at(scratch.lower, "emptydir", &s);
    assert_true(S_ISDIR(s.st_mode));
    assert_int_equal(s.st_mode & 07777, 0755);
    lstat_at(scratch.lower, "link", &s);
    assert_true(S_ISLNK(s.st_mode));
    {
        char path[PATH_MAX * 2];

        snprintf(path, sizeof(path), "%s/link", scratch.lower);
        n = readlink(path, target, sizeof(target) - 1);
        assert_true(n > 0);
        target[n] = '\0';
        assert_string_equal(target, "sub/hello.txt");
    }

    /* output parents: made, the output directory itself not; none through a symlink */
    lstat_at(scratch.lower, "out/obj", &s);
    assert_true(S_ISDIR(s.st_mode));
    assert_int_equal(s.st_mode & 07777, 0755);
    lstat_at(scratch.lower, "gen", &s);
    assert_true(S_ISDIR(s.st_mode));
    {
        char path[PATH_MAX * 2];

        snprintf(path, sizeof(path), "%s/gen/tree", scratch.lower);
        assert_int_equal(lstat(path, &s), -1);
        snprintf(path, sizeof(path), "%s/sub/made.txt", scratch.lower);
        assert_int_equal(lstat(path, &s), -1);
    }

    /* stats: 4 + 2 * 2 files, emptydir sub sub2 + out out/obj gen, 2 symlinks */
    assert_int_equal(stats.files, 8);
    assert_int_equal(stats.dirs, 6);
    assert_int_equal(stats.symlinks, 2);
    assert_int_equal(stats.bytes, 3 * strlen(hello_text) + 4 * strlen(tool_text));
    reapi_status_free(&st);

    /* a second staging reuses the executable copy */
    {
        struct action_scratch s2c;

        assert_int_equal(action_scratch_create(f.base, "a2", &s2c), 0);
        reapi_status_init(&st);
        assert_int_equal(action_stage_inputs(f.env.cas, f.act, s2c.lower, f.exec_dir, &stats, &st),
                         0);
        assert_int_equal(stats.exec_copies, 0);
        reapi_status_free(&st);
        assert_int_equal(action_scratch_remove(&s2c), 0);
    }

    assert_int_equal(action_scratch_remove(&scratch), 0);
    assert_null(scratch.root);
    assert_int_equal(action_scratch_remove(&scratch), 0); /* twice is fine */
    {
        char path[PATH_MAX * 2];

        snprintf(path, sizeof(path), "%s/a1", f.base);
        assert_int_equal(lstat(path, &s), -1);
        assert_int_equal(errno, ENOENT);
    }
    fixture_teardown(&f);
}

static void test_stage_working_directory(void **state)
{
    struct stage_fixture f;
    struct action_scratch scratch;
    struct action_stage_stats stats;
    struct reapi_status st;
    struct stat s;

    (void)state;
    fixture_setup(&f, true);
    assert_int_equal(action_scratch_create(f.base, "wd", &scratch), 0);
    reapi_status_init(&st);
    assert_int_equal(action_stage_inputs(f.env.cas, f.act, scratch.lower, f.exec_dir, &stats, &st),
                     0);
    lstat_at(scratch.lower, "work/dir", &s);
    assert_true(S_ISDIR(s.st_mode));
    lstat_at(scratch.lower, "work/dir/out/obj", &s); /* outputs are relative to it */
    assert_true(S_ISDIR(s.st_mode));
    lstat_at(scratch.lower, "work/dir/gen", &s);
    assert_true(S_ISDIR(s.st_mode));
    reapi_status_free(&st);
    assert_int_equal(action_scratch_remove(&scratch), 0);
    fixture_teardown(&f);
}

static void test_stage_lists_evicted_blobs(void **state)
{
    struct stage_fixture f;
    struct action_scratch scratch;
    struct action_stage_stats stats;
    struct reapi_status st;
    char hex[CAS_HASH_HEX + 1], path[PATH_MAX * 2];

    (void)state;
    fixture_setup(&f, false);
    /* both blobs vanish from the store between load and staging */
    cas_digest_hex(&f.hello, hex);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f.env.cas_dir, hex, hex);
    assert_int_equal(unlink(path), 0);
    cas_digest_hex(&f.tool, hex);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f.env.cas_dir, hex, hex);
    assert_int_equal(unlink(path), 0);

    assert_int_equal(action_scratch_create(f.base, "ev", &scratch), 0);
    reapi_status_init(&st);
    assert_int_equal(action_stage_inputs(f.env.cas, f.act, scratch.lower, f.exec_dir, &stats, &st),
                     -ENOENT);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(st.n_missing, 2);
    assert_true(cas_digest_equal(&st.missing[0], &f.hello) ||
                cas_digest_equal(&st.missing[1], &f.hello));
    assert_true(cas_digest_equal(&st.missing[0], &f.tool) ||
                cas_digest_equal(&st.missing[1], &f.tool));
    reapi_status_free(&st);
    assert_int_equal(action_scratch_remove(&scratch), 0);
    fixture_teardown(&f);
}

static void test_stage_output_parent_is_file(void **state)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct th_env env;
    struct action_scratch scratch;
    struct action_stage_stats stats;
    struct reapi_status st;
    struct action *act = NULL;
    struct cas_digest root, ad;
    char exec_dir[PATH_MAX + 16];
    Directory *d;
    Command *cmd;

    (void)state;
    th_env_setup(&env);
    snprintf(exec_dir, sizeof(exec_dir), "%s/exec-blobs", env.dir);
    assert_int_equal(mkdir(exec_dir, 0700), 0);
    d = th_dir_new();
    th_dir_add_file(env.cas, d, "f", "data", false);
    th_dir_put(env.cas, d, &root);
    cmd = th_cmd_new(argv);
    TH_APPEND(cmd->output_files, cmd->n_output_files, strdup("f/x/out.o"));
    th_action_put(env.cas, cmd, &root, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(env.cas, &ad, &env.cfg, &act, &st), 0);
    assert_int_equal(action_scratch_create(env.dir, "s", &scratch), 0);
    assert_int_equal(action_stage_inputs(env.cas, act, scratch.lower, exec_dir, &stats, &st),
                     -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "'f/x/out.o'"));
    assert_non_null(strstr(st.message, "'f' is a file"));
    reapi_status_free(&st);
    assert_int_equal(action_scratch_remove(&scratch), 0);
    action_free(act);
    th_env_teardown(&env);
}

static void test_remove_tree_hostile(void **state)
{
    struct th_env env;
    char root[PATH_MAX + 16], path[PATH_MAX * 2], outside[PATH_MAX + 16];
    struct stat s;
    int fd;

    (void)state;
    th_env_setup(&env);
    snprintf(root, sizeof(root), "%s/victim", env.dir);
    snprintf(outside, sizeof(outside), "%s/outside", env.dir);
    assert_int_equal(mkdir(root, 0755), 0);
    assert_int_equal(mkdir(outside, 0755), 0);
    th_write_file(outside, "keep", "must survive", 0644);
    /* a mode 000 file, a read-only directory, a 000 directory, a symlink out */
    th_write_file(root, "noperm", "x", 0000);
    th_mkdir(root, "ro");
    th_write_file(root, "ro/f", "x", 0644);
    snprintf(path, sizeof(path), "%s/ro", root);
    assert_int_equal(chmod(path, 0555), 0);
    th_mkdir(root, "closed");
    th_write_file(root, "closed/f", "x", 0644);
    snprintf(path, sizeof(path), "%s/closed", root);
    assert_int_equal(chmod(path, 0000), 0);
    th_symlink(root, "escape", outside);
    th_symlink(root, "escape_dir", "../outside");
    /* a whiteout-like char device, when allowed (root, or a 0:0 whiteout) */
    snprintf(path, sizeof(path), "%s/wh", root);
    if (mknod(path, S_IFCHR | 0000, makedev(0, 0)) != 0)
        print_message("mknod whiteout: %s (skipped)\n", strerror(errno));
    /* a chain deeper than the fds the removal holds */
    fd = open(root, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    for (int i = 0; i < 200; i++) {
        int next;

        assert_int_equal(mkdirat(fd, "d", 0755), 0);
        next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        assert_true(next >= 0);
        if (i % 50 == 0)
            assert_int_equal(symlinkat("/", next, "root_link"), 0);
        close(fd);
        fd = next;
    }
    assert_int_equal(fchmod(fd, 0500), 0);
    close(fd);

    assert_int_equal(util_remove_tree(root), 0);
    assert_int_equal(lstat(root, &s), -1);
    assert_int_equal(errno, ENOENT);
    expect_content(outside, "keep", "must survive");
    assert_int_equal(util_remove_tree(root), -ENOENT);
    th_env_teardown(&env);
}

/* Counts the entries of the executable-copy cache (its <aa> shards' files). */
static int count_exec_copies(const char *dir)
{
    char cmd[PATH_MAX + 64];
    int n = -1;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "find '%s' -type f | wc -l", dir);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* exec_copies_stage into lower, which must succeed. */
static void stage_with_copies(struct exec_copies *copies, struct stage_fixture *f,
                              const char *lower, struct action_stage_stats *stats)
{
    struct reapi_status st;

    reapi_status_init(&st);
    assert_int_equal(
        exec_copies_stage(copies, f->env.cas, f->act, lower, f->exec_dir, NULL, stats, &st), 0);
    reapi_status_free(&st);
}

/* The cache keeps copies under its bound and is emptied past it, while the
 * staged trees keep working 0555 files with the right bytes. */
static void test_stage_exec_copy_bound(void **state)
{
    struct stage_fixture f;
    struct action_scratch s1, s2;
    struct action_stage_stats stats;
    struct exec_copies copies;
    struct stat s;

    (void)state;
    fixture_setup(&f, false);
    /* Bound above one copy: the copy stays and is reused by the next stage. */
    exec_copies_init(&copies, strlen(tool_text));
    assert_int_equal(action_scratch_create(f.base, "b1", &s1), 0);
    stage_with_copies(&copies, &f, s1.lower, &stats);
    assert_int_equal(stats.exec_copies, 1);
    assert_int_equal(stats.exec_copy_bytes, strlen(tool_text));
    assert_int_equal(count_exec_copies(f.exec_dir), 1);
    exec_copies_destroy(&copies);

    /* Bound 0: the cache is emptied after each stage; staged links survive. */
    exec_copies_init(&copies, 0);
    assert_int_equal(action_scratch_create(f.base, "b2", &s2), 0);
    stage_with_copies(&copies, &f, s2.lower, &stats);
    assert_int_equal(stats.exec_copies, 0); /* linked from the copy the first stage made */
    assert_int_equal(count_exec_copies(f.exec_dir), 1);
    assert_int_equal(action_scratch_remove(&s2), 0);
    assert_int_equal(action_scratch_create(f.base, "b3", &s2), 0);
    stage_with_copies(&copies, &f, s2.lower, &stats);
    assert_int_equal(stats.exec_copies, 0);
    assert_int_equal(count_exec_copies(f.exec_dir), 1); /* nothing new copied: no trim */
    exec_copies_destroy(&copies);

    /* A fresh copy past a bound of 0 empties the cache. */
    assert_int_equal(util_remove_tree(f.exec_dir), 0);
    assert_int_equal(mkdir(f.exec_dir, 0700), 0);
    exec_copies_init(&copies, 0);
    assert_int_equal(action_scratch_remove(&s2), 0);
    assert_int_equal(action_scratch_create(f.base, "b4", &s2), 0);
    stage_with_copies(&copies, &f, s2.lower, &stats);
    assert_int_equal(stats.exec_copies, 1);
    assert_int_equal(count_exec_copies(f.exec_dir), 0);
    lstat_at(s2.lower, "tool.sh", &s);
    assert_int_equal(s.st_mode & 07777, 0555);
    expect_content(s2.lower, "tool.sh", tool_text);
    expect_content(s1.lower, "sub/tool.sh", tool_text);
    exec_copies_destroy(&copies);

    assert_int_equal(action_scratch_remove(&s1), 0);
    assert_int_equal(action_scratch_remove(&s2), 0);
    fixture_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_tree),
        cmocka_unit_test(test_stage_exec_copy_bound),
        cmocka_unit_test(test_stage_working_directory),
        cmocka_unit_test(test_stage_lists_evicted_blobs),
        cmocka_unit_test(test_stage_output_parent_is_file),
        cmocka_unit_test(test_remove_tree_hostile),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
