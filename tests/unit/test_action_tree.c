/*
 * test_action_tree.c - output collection from an overlay's two layers: Tree
 * messages for output directories (deduplicated children, a digest checked
 * against an independent hand encoding of the protobuf wire format, stable
 * across runs), the executable bit, symlinks, whiteouts and opaque
 * directories, symlinked parents, limits and type errors.
 *
 * The overlay itself is not mounted: the tests write into upper/ what the
 * kernel would have (files, 0:0 character devices for deletions, the
 * user.overlay.opaque xattr), which is what collection reads after the
 * sandbox is gone.
 */
#include "exec/exec.h"
#include "test_action_helpers.h"

#include <sys/sysmacros.h>
#include <sys/xattr.h>

/* --- an independent protobuf encoder, just enough for Tree --- */

struct pbuf {
    uint8_t *p;
    size_t n, cap;
};

static void pb_bytes(struct pbuf *b, const void *data, size_t len)
{
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (len > 0)
        memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void pb_varint(struct pbuf *b, uint64_t v)
{
    do {
        uint8_t byte = (uint8_t)(v & 0x7f);

        v >>= 7;
        if (v != 0)
            byte |= 0x80;
        pb_bytes(b, &byte, 1);
    } while (v != 0);
}

/* A length-delimited field (wire type 2). */
static void pb_field(struct pbuf *b, unsigned field, const void *data, size_t len)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, len);
    pb_bytes(b, data, len);
}

/* A submessage field, consuming inner. */
static void pb_message(struct pbuf *b, unsigned field, struct pbuf *inner)
{
    pb_field(b, field, inner->p, inner->n);
    free(inner->p);
    memset(inner, 0, sizeof(*inner));
}

static void pb_string(struct pbuf *b, unsigned field, const char *s)
{
    if (s[0] != '\0') /* proto3: empty strings are not written */
        pb_field(b, field, s, strlen(s));
}

static void enc_digest(struct pbuf *b, unsigned field, const char *content)
{
    struct pbuf d = {0};
    struct cas_digest dg;
    char hex[CAS_HASH_HEX + 1];

    cas_digest_buffer(content, strlen(content), &dg);
    cas_digest_hex(&dg, hex);
    pb_string(&d, 1, hex);
    if (dg.size != 0) {
        pb_varint(&d, 2 << 3 | 0);
        pb_varint(&d, (uint64_t)dg.size);
    }
    pb_message(b, field, &d);
}

static void enc_digest_of(struct pbuf *b, unsigned field, const struct pbuf *blob)
{
    struct pbuf d = {0};
    struct cas_digest dg;
    char hex[CAS_HASH_HEX + 1];

    cas_digest_buffer(blob->p, blob->n, &dg);
    cas_digest_hex(&dg, hex);
    pb_string(&d, 1, hex);
    if (dg.size != 0) {
        pb_varint(&d, 2 << 3 | 0);
        pb_varint(&d, (uint64_t)dg.size);
    }
    pb_message(b, field, &d);
}

/* Directory.files (1): FileNode{name 1, digest 2, is_executable 4} */
static void enc_file(struct pbuf *dir, const char *name, const char *content, bool exec)
{
    struct pbuf f = {0};

    pb_string(&f, 1, name);
    enc_digest(&f, 2, content);
    if (exec) {
        pb_varint(&f, 4 << 3 | 0);
        pb_varint(&f, 1);
    }
    pb_message(dir, 1, &f);
}

/* Directory.directories (2): DirectoryNode{name 1, digest 2} */
static void enc_dirnode(struct pbuf *dir, const char *name, const struct pbuf *child)
{
    struct pbuf n = {0};

    pb_string(&n, 1, name);
    enc_digest_of(&n, 2, child);
    pb_message(dir, 2, &n);
}

/* Directory.symlinks (3): SymlinkNode{name 1, target 2} */
static void enc_symlink(struct pbuf *dir, const char *name, const char *target)
{
    struct pbuf s = {0};

    pb_string(&s, 1, name);
    pb_string(&s, 2, target);
    pb_message(dir, 3, &s);
}

static int compare_blob_digest(const struct pbuf *a, const struct pbuf *b)
{
    struct cas_digest da, db;

    cas_digest_buffer(a->p, a->n, &da);
    cas_digest_buffer(b->p, b->n, &db);
    return memcmp(da.hash, db.hash, CAS_HASH_BYTES);
}

/* --- fixtures --- */

struct tree_fixture {
    struct th_env env;
    char exec_dir[PATH_MAX + 16];
    struct action *act;
    struct action_scratch scratch;
};

/* Loads an action over input root `root` with the given outputs
 * (old API: files and dirs; new API: paths) and stages it. */
static void fixture_setup(struct tree_fixture *f, Directory *root, const char *const *files,
                          const char *const *dirs, const char *const *paths, const char *wd)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct action_stage_stats stats;
    struct reapi_status st;
    struct cas_digest rd, ad;
    Command *cmd;

    memset(f, 0, sizeof(*f));
    th_env_setup(&f->env);
    snprintf(f->exec_dir, sizeof(f->exec_dir), "%s/exec-blobs", f->env.dir);
    assert_int_equal(mkdir(f->exec_dir, 0700), 0);
    if (root == NULL)
        root = th_dir_new();
    th_dir_put(f->env.cas, root, &rd);
    cmd = th_cmd_new(argv);
    if (wd != NULL)
        cmd->working_directory = strdup(wd);
    for (size_t i = 0; files && files[i]; i++)
        TH_APPEND(cmd->output_files, cmd->n_output_files, strdup(files[i]));
    for (size_t i = 0; dirs && dirs[i]; i++)
        TH_APPEND(cmd->output_directories, cmd->n_output_directories, strdup(dirs[i]));
    for (size_t i = 0; paths && paths[i]; i++)
        TH_APPEND(cmd->output_paths, cmd->n_output_paths, strdup(paths[i]));
    th_action_put(f->env.cas, cmd, &rd, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(f->env.cas, &ad, &f->env.cfg, &f->act, &st), 0);
    assert_int_equal(action_scratch_create(f->env.dir, "s", &f->scratch), 0);
    assert_int_equal(
        action_stage_inputs(f->env.cas, f->act, f->scratch.lower, f->exec_dir, &stats, &st), 0);
    reapi_status_free(&st);
}

static void fixture_teardown(struct tree_fixture *f)
{
    assert_int_equal(action_scratch_remove(&f->scratch), 0);
    action_free(f->act);
    th_env_teardown(&f->env);
}

static Build__Bazel__Remote__Execution__V2__ActionResult *
collect(struct tree_fixture *f, const struct action_output_limits *limits, int want_rc,
        struct reapi_status *st)
{
    static const struct action_output_limits none = {0, 0};
    Build__Bazel__Remote__Execution__V2__ActionResult *r = NULL;
    struct action_output_stats stats;
    int rc;

    reapi_status_init(st);
    rc = action_outputs_collect(f->env.cas, f->act, &f->scratch, limits ? limits : &none, &r,
                                &stats, st);
    if (rc != want_rc)
        fail_msg("collect: %d (%s), wanted %d", rc, st->message, want_rc);
    if (rc != 0)
        assert_null(r);
    return r;
}

static const Build__Bazel__Remote__Execution__V2__OutputFile *
find_file(const Build__Bazel__Remote__Execution__V2__ActionResult *r, const char *path)
{
    for (size_t i = 0; i < r->n_output_files; i++) {
        if (strcmp(r->output_files[i]->path, path) == 0)
            return r->output_files[i];
    }
    return NULL;
}

static const Build__Bazel__Remote__Execution__V2__OutputDirectory *
find_dir(const Build__Bazel__Remote__Execution__V2__ActionResult *r, const char *path)
{
    for (size_t i = 0; i < r->n_output_directories; i++) {
        if (strcmp(r->output_directories[i]->path, path) == 0)
            return r->output_directories[i];
    }
    return NULL;
}

static void expect_digest_of(const Build__Bazel__Remote__Execution__V2__Digest *pd,
                             const char *content)
{
    struct cas_digest want;
    char hex[CAS_HASH_HEX + 1];

    assert_non_null(pd);
    cas_digest_buffer(content, strlen(content), &want);
    cas_digest_hex(&want, hex);
    assert_string_equal(pd->hash, hex);
    assert_int_equal(pd->size_bytes, want.size);
}

static Build__Bazel__Remote__Execution__V2__Tree *
fetch_tree(struct cas_store *cas, const Build__Bazel__Remote__Execution__V2__Digest *pd)
{
    Build__Bazel__Remote__Execution__V2__Tree *t;
    struct cas_digest d;
    void *buf;
    size_t len;

    assert_int_equal(cas_digest_parse(pd->hash, pd->size_bytes, &d), 0);
    assert_int_equal(cas_store_get(cas, &d, &buf, &len), 0);
    t = build__bazel__remote__execution__v2__tree__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(t);
    return t;
}

/* The output tree of test_tree_dedup, written into upper/<at>. */
static void write_out_tree(const char *upper, const char *at)
{
    char base[PATH_MAX * 2];

    snprintf(base, sizeof(base), "%s/%s", upper, at);
    assert_int_equal(mkdir(base, 0755), 0);
    th_mkdir(base, "a");
    th_write_file(base, "a/f1", "one", 0644);
    th_write_file(base, "a/exe", "exe", 0755);
    th_mkdir(base, "a/deep");
    th_write_file(base, "a/deep/g", "g", 0644);
    th_mkdir(base, "b");
    th_write_file(base, "b/f1", "one", 0600);
    th_write_file(base, "b/exe", "exe", 0700);
    th_mkdir(base, "b/deep");
    th_write_file(base, "b/deep/g", "g", 0444);
    th_mkdir(base, "empty");
    th_symlink(base, "link", "a/f1");
}

static void test_tree_dedup(void **state)
{
    static const char *const files[] = {"bin/tool", "in.txt", "never", NULL};
    static const char *const dirs[] = {"out", NULL};
    Build__Bazel__Remote__Execution__V2__ActionResult *r, *r2;
    const Build__Bazel__Remote__Execution__V2__OutputFile *of;
    Build__Bazel__Remote__Execution__V2__Tree *t;
    struct tree_fixture f;
    struct reapi_status st;
    struct pbuf dir_a = {0}, deep = {0}, empty = {0}, root = {0}, tree = {0};
    struct pbuf *children[3] = {&dir_a, &deep, &empty};
    struct cas_digest want;
    char want_hex[CAS_HASH_HEX + 1], path[PATH_MAX * 2];
    struct stat s;

    (void)state;
    fixture_setup(&f, NULL, files, dirs, NULL, NULL);

    snprintf(path, sizeof(path), "%s/bin", f.scratch.upper);
    assert_int_equal(mkdir(path, 0755), 0);
    th_write_file(f.scratch.upper, "bin/tool", "#!/bin/sh\n", 0755);
    write_out_tree(f.scratch.upper, "out");
    th_write_file(f.scratch.root, "stdout", "some output\n", 0644);
    /* in.txt: unchanged input, found in lower */
    th_write_file(f.scratch.lower, "in.txt", "input", 0444);

    r = collect(&f, NULL, 0, &st);
    of = find_file(r, "bin/tool");
    assert_non_null(of);
    assert_true(of->is_executable);
    expect_digest_of(of->digest, "#!/bin/sh\n");
    of = find_file(r, "in.txt");
    assert_non_null(of);
    assert_false(of->is_executable);
    expect_digest_of(of->digest, "input");
    assert_null(find_file(r, "never"));
    assert_int_equal(r->n_output_files, 2);
    assert_int_equal(r->n_output_file_symlinks + r->n_output_symlinks, 0);
    expect_digest_of(r->stdout_digest, "some output\n");
    expect_digest_of(r->stderr_digest, "");
    /* upper files were moved into the CAS, lower ones left alone */
    snprintf(path, sizeof(path), "%s/bin/tool", f.scratch.upper);
    assert_int_equal(lstat(path, &s), -1);
    snprintf(path, sizeof(path), "%s/in.txt", f.scratch.lower);
    assert_int_equal(lstat(path, &s), 0);

    /* the expected Tree, encoded by hand */
    enc_file(&deep, "g", "g", false);
    enc_file(&dir_a, "exe", "exe", true);
    enc_file(&dir_a, "f1", "one", false);
    enc_dirnode(&dir_a, "deep", &deep);
    enc_dirnode(&root, "a", &dir_a);
    enc_dirnode(&root, "b", &dir_a);
    enc_dirnode(&root, "empty", &empty);
    enc_symlink(&root, "link", "a/f1");
    pb_field(&tree, 1, root.p, root.n);
    /* children: each distinct Directory once, in digest order */
    for (int i = 0; i < 3; i++) {
        for (int j = i + 1; j < 3; j++) {
            if (compare_blob_digest(children[j], children[i]) < 0) {
                struct pbuf *tmp = children[i];

                children[i] = children[j];
                children[j] = tmp;
            }
        }
    }
    for (int i = 0; i < 3; i++)
        pb_field(&tree, 2, children[i]->p, children[i]->n);
    cas_digest_buffer(tree.p, tree.n, &want);
    cas_digest_hex(&want, want_hex);
    /* The same Tree built with Python's protobuf 4.21 (SerializeToString(
     * deterministic=True), children sorted by digest) hashes to this: */
    assert_string_equal(want_hex,
                        "509a6e0353e0a9e3b5b33e7364feb0956387e96ef95ee661cb7ec14eb6c3de04");
    assert_int_equal(tree.n, 561);
    assert_int_equal(r->n_output_directories, 1);
    assert_string_equal(find_dir(r, "out")->tree_digest->hash, want_hex);
    assert_int_equal(find_dir(r, "out")->tree_digest->size_bytes, (int64_t)tree.n);

    /* and the stored blob decodes: root with 3 dirs + 1 symlink */
    t = fetch_tree(f.env.cas, find_dir(r, "out")->tree_digest);
    assert_int_equal(t->root->n_directories, 3);
    assert_int_equal(t->root->n_symlinks, 1);
    assert_string_equal(t->root->symlinks[0]->target, "a/f1");
    assert_int_equal(t->n_children, 3); /* a == b, a/deep == b/deep, empty */
    build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);

    /* stable: the same tree written again (other modes, other inodes) */
    write_out_tree(f.scratch.upper, "out2");
    snprintf(path, sizeof(path), "%s/out", f.scratch.upper);
    assert_int_equal(util_remove_tree(path), 0);
    snprintf(path, sizeof(path), "%s/out2", f.scratch.upper);
    {
        char dst[PATH_MAX * 2];

        snprintf(dst, sizeof(dst), "%s/out", f.scratch.upper);
        assert_int_equal(rename(path, dst), 0);
    }
    r2 = collect(&f, NULL, 0, &st);
    assert_string_equal(find_dir(r2, "out")->tree_digest->hash, want_hex);
    action_result_free(r2);

    action_result_free(r);
    free(dir_a.p);
    free(deep.p);
    free(empty.p);
    free(root.p);
    free(tree.p);
    fixture_teardown(&f);
}

static void test_overlay_merge(void **state)
{
    static const char *const paths[] = {"d",         "del.txt",   "keep.txt", "od", "sym",
                                        "via/x.txt", "abs/x.txt", "missing",  NULL};
    Build__Bazel__Remote__Execution__V2__ActionResult *r;
    Build__Bazel__Remote__Execution__V2__Tree *t;
    struct tree_fixture f;
    struct reapi_status st;
    char path[PATH_MAX * 2];
    bool whiteouts = true;

    (void)state;
    fixture_setup(&f, NULL, NULL, NULL, paths, NULL);
    /* lower, written by hand: keep.txt del.txt d/{x.txt,y.txt} od/old.txt */
    th_write_file(f.scratch.lower, "keep.txt", "keep", 0444);
    th_write_file(f.scratch.lower, "del.txt", "del", 0444);
    th_mkdir(f.scratch.lower, "d");
    th_write_file(f.scratch.lower, "d/x.txt", "x", 0444);
    th_write_file(f.scratch.lower, "d/y.txt", "y", 0555);
    th_mkdir(f.scratch.lower, "od");
    th_write_file(f.scratch.lower, "od/old.txt", "old", 0444);

    /* upper: del.txt deleted, d/ merged with new.txt and y.txt deleted,
     * od/ replaced (opaque) with new.txt, sym -> keep.txt, via -> d,
     * abs -> /casbox/exec/d */
    snprintf(path, sizeof(path), "%s/del.txt", f.scratch.upper);
    if (mknod(path, S_IFCHR | 0000, makedev(0, 0)) != 0) {
        print_message("mknod whiteout: %s: whiteout checks skipped\n", strerror(errno));
        whiteouts = false;
    }
    th_mkdir(f.scratch.upper, "d");
    th_write_file(f.scratch.upper, "d/new.txt", "new", 0644);
    snprintf(path, sizeof(path), "%s/d/y.txt", f.scratch.upper);
    if (whiteouts)
        assert_int_equal(mknod(path, S_IFCHR | 0000, makedev(0, 0)), 0);
    th_mkdir(f.scratch.upper, "od");
    th_write_file(f.scratch.upper, "od/new.txt", "new", 0644);
    snprintf(path, sizeof(path), "%s/od", f.scratch.upper);
    assert_int_equal(setxattr(path, "user.overlay.opaque", "y", 1, 0), 0);
    th_symlink(f.scratch.upper, "sym", "keep.txt");
    th_symlink(f.scratch.upper, "via", "d");
    th_symlink(f.scratch.upper, "abs", SANDBOX_EXEC_ROOT "/d");

    r = collect(&f, NULL, 0, &st);
    expect_digest_of(find_file(r, "keep.txt")->digest, "keep");
    if (whiteouts)
        assert_null(find_file(r, "del.txt"));
    expect_digest_of(find_file(r, "via/x.txt")->digest, "x");
    expect_digest_of(find_file(r, "abs/x.txt")->digest, "x");
    assert_null(find_file(r, "missing"));
    assert_int_equal(r->n_output_symlinks, 1);
    assert_string_equal(r->output_symlinks[0]->path, "sym");
    assert_string_equal(r->output_symlinks[0]->target, "keep.txt");
    assert_int_equal(r->n_output_file_symlinks, 0); /* output_paths: only the v2.1 field */

    t = fetch_tree(f.env.cas, find_dir(r, "d")->tree_digest);
    assert_int_equal(t->root->n_files, whiteouts ? 2 : 3);
    assert_string_equal(t->root->files[0]->name, "new.txt");
    assert_string_equal(t->root->files[1]->name, "x.txt");
    build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
    t = fetch_tree(f.env.cas, find_dir(r, "od")->tree_digest);
    assert_int_equal(t->root->n_files, 1);
    assert_string_equal(t->root->files[0]->name, "new.txt");
    build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
    action_result_free(r);
    reapi_status_free(&st);
    fixture_teardown(&f);
}

static void test_whole_working_directory(void **state)
{
    static const char *const dirs[] = {"", NULL};
    Build__Bazel__Remote__Execution__V2__ActionResult *r;
    Build__Bazel__Remote__Execution__V2__Tree *t;
    struct tree_fixture f;
    struct reapi_status st;

    (void)state;
    fixture_setup(&f, NULL, NULL, dirs, NULL, "wd");
    th_write_file(f.scratch.lower, "wd/in", "in", 0444);
    th_mkdir(f.scratch.upper, "wd");
    th_write_file(f.scratch.upper, "wd/made", "made", 0644);
    th_write_file(f.scratch.upper, "outside_wd", "no", 0644);
    r = collect(&f, NULL, 0, &st);
    assert_int_equal(r->n_output_directories, 1);
    assert_string_equal(r->output_directories[0]->path, "");
    t = fetch_tree(f.env.cas, r->output_directories[0]->tree_digest);
    assert_int_equal(t->root->n_files, 2);
    assert_string_equal(t->root->files[0]->name, "in");
    assert_string_equal(t->root->files[1]->name, "made");
    build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
    action_result_free(r);
    fixture_teardown(&f);
}

static void test_escapes_and_errors(void **state)
{
    static const char *const esc_paths[] = {"esc/f", NULL};
    static const char *const abs_paths[] = {"abs/passwd", NULL};
    static const char *const files[] = {"out", NULL};
    static const char *const dirs[] = {"f", NULL};
    static const char *const link_paths[] = {"l", NULL};
    struct tree_fixture f;
    struct reapi_status st;

    (void)state;
    fixture_setup(&f, NULL, NULL, NULL, esc_paths, NULL);
    th_symlink(f.scratch.upper, "esc", "../..");
    collect(&f, NULL, -EINVAL, &st);
    assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "output 'esc/f' resolves outside the exec root"));
    reapi_status_free(&st);
    fixture_teardown(&f);

    fixture_setup(&f, NULL, NULL, NULL, abs_paths, NULL);
    th_symlink(f.scratch.upper, "abs", "/etc");
    collect(&f, NULL, -EINVAL, &st);
    assert_non_null(strstr(st.message, "'abs/passwd' resolves outside"));
    reapi_status_free(&st);
    fixture_teardown(&f);

    /* an output file that is a directory, an output directory that is a file */
    fixture_setup(&f, NULL, files, NULL, NULL, NULL);
    th_mkdir(f.scratch.upper, "out");
    collect(&f, NULL, -EINVAL, &st);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "output file 'out' is a directory"));
    reapi_status_free(&st);
    fixture_teardown(&f);

    fixture_setup(&f, NULL, NULL, dirs, NULL, NULL);
    th_write_file(f.scratch.upper, "f", "x", 0644);
    collect(&f, NULL, -EINVAL, &st);
    assert_non_null(strstr(st.message, "output directory 'f' is a regular file"));
    reapi_status_free(&st);
    fixture_teardown(&f);

    /* an absolute output symlink: the server advertises DISALLOWED */
    fixture_setup(&f, NULL, NULL, NULL, link_paths, NULL);
    th_symlink(f.scratch.upper, "l", "/usr/bin/gcc");
    collect(&f, NULL, -EINVAL, &st);
    assert_non_null(strstr(st.message, "absolute target '/usr/bin/gcc'"));
    reapi_status_free(&st);
    fixture_teardown(&f);
}

static void test_old_api_symlinks(void **state)
{
    static const char *const files[] = {"fl", NULL};
    static const char *const dirs[] = {"dl", NULL};
    Build__Bazel__Remote__Execution__V2__ActionResult *r;
    struct tree_fixture f;
    struct reapi_status st;

    (void)state;
    fixture_setup(&f, NULL, files, dirs, NULL, NULL);
    th_write_file(f.scratch.upper, "target", "t", 0644);
    th_mkdir(f.scratch.upper, "tdir");
    th_symlink(f.scratch.upper, "fl", "target");
    th_symlink(f.scratch.upper, "dl", "tdir");
    r = collect(&f, NULL, 0, &st);
    assert_int_equal(r->n_output_file_symlinks, 1);
    assert_string_equal(r->output_file_symlinks[0]->target, "target");
    assert_int_equal(r->n_output_directory_symlinks, 1);
    assert_string_equal(r->output_directory_symlinks[0]->path, "dl");
    assert_int_equal(r->n_output_symlinks, 0);
    assert_int_equal(r->n_output_files + r->n_output_directories, 0);
    action_result_free(r);
    fixture_teardown(&f);
}

static void test_limits(void **state)
{
    static const char *const dirs[] = {"out", NULL};
    struct action_output_limits few = {.max_bytes = 0, .max_entries = 3};
    struct action_output_limits small = {.max_bytes = 5, .max_entries = 0};
    struct tree_fixture f;
    struct reapi_status st;

    (void)state;
    fixture_setup(&f, NULL, NULL, dirs, NULL, NULL);
    write_out_tree(f.scratch.upper, "out");
    collect(&f, &few, -E2BIG, &st);
    assert_int_equal(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.message, "more than 3"));
    assert_non_null(strstr(st.message, "max_output_files"));
    reapi_status_free(&st);
    fixture_teardown(&f);

    fixture_setup(&f, NULL, NULL, dirs, NULL, NULL);
    write_out_tree(f.scratch.upper, "out");
    collect(&f, &small, -EFBIG, &st);
    assert_non_null(strstr(st.message, "exceed 5 bytes"));
    assert_non_null(strstr(st.message, "max_output_bytes"));
    reapi_status_free(&st);
    fixture_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_dedup),
        cmocka_unit_test(test_overlay_merge),
        cmocka_unit_test(test_whole_working_directory),
        cmocka_unit_test(test_escapes_and_errors),
        cmocka_unit_test(test_old_api_symlinks),
        cmocka_unit_test(test_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
