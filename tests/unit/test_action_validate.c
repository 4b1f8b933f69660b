/*
 * test_action_validate.c - the rules action_load enforces on a client's
 * Directory, Command, platform and timeout, and that every missing blob is
 * listed, not only the first.
 */
#include "exec/exec.h"
#include "test_action_helpers.h"

static void expect_invalid(struct reapi_status *st, int rc, const char *needle)
{
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(st->code, GRPC_STATUS_INVALID_ARGUMENT);
    if (strstr(st->message, needle) == NULL)
        fail_msg("message '%s' does not contain '%s'", st->message, needle);
}

static int check_dir(Directory *d, struct reapi_status *st)
{
    int rc;

    reapi_status_init(st);
    rc = action_validate_directory(d, "pkg/sub", st);
    th_dir_free(d);
    return rc;
}

static void test_directory_names(void **state)
{
    static const char *const bad[] = {"", ".", "..", "a/b", "/abs"};
    struct reapi_status st;
    Directory *d;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* the same bad name as a file, a directory and a symlink */
        d = th_dir_new();
        th_dir_add_file(NULL, d, bad[i], "x", false);
        expect_invalid(&st, check_dir(d, &st), "pkg/sub");
        assert_non_null(strstr(st.message, "file name"));
        reapi_status_free(&st);

        d = th_dir_new();
        th_dir_add_dir(d, bad[i], cas_digest_empty());
        expect_invalid(&st, check_dir(d, &st), "directory name");
        reapi_status_free(&st);

        d = th_dir_new();
        th_dir_add_symlink(d, bad[i], "target");
        expect_invalid(&st, check_dir(d, &st), "symlink name");
        reapi_status_free(&st);
    }
    d = th_dir_new();
    th_dir_add_file(NULL, d, "a/b", "x", false);
    expect_invalid(&st, check_dir(d, &st), "'a/b'");
    reapi_status_free(&st);

    /* valid: one of each kind */
    d = th_dir_new();
    th_dir_add_file(NULL, d, "a", "x", false);
    th_dir_add_file(NULL, d, "b", "y", true);
    th_dir_add_dir(d, "c", cas_digest_empty());
    th_dir_add_symlink(d, "d", "a");
    assert_int_equal(check_dir(d, &st), 0);
    assert_int_equal(st.code, GRPC_STATUS_OK);
    reapi_status_free(&st);
}

static void test_directory_order(void **state)
{
    struct reapi_status st;
    Directory *d;

    (void)state;
    d = th_dir_new();
    th_dir_add_file(NULL, d, "b", "x", false);
    th_dir_add_file(NULL, d, "a", "x", false);
    expect_invalid(&st, check_dir(d, &st), "not sorted");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_file(NULL, d, "a", "x", false);
    th_dir_add_file(NULL, d, "a", "y", false);
    expect_invalid(&st, check_dir(d, &st), "appears twice");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_dir(d, "z", cas_digest_empty());
    th_dir_add_dir(d, "y", cas_digest_empty());
    expect_invalid(&st, check_dir(d, &st), "directory names are not sorted");
    reapi_status_free(&st);

    /* byte order: "B" (0x42) sorts before "a" (0x61) */
    d = th_dir_new();
    th_dir_add_symlink(d, "B", "x");
    th_dir_add_symlink(d, "a", "x");
    assert_int_equal(check_dir(d, &st), 0);
    reapi_status_free(&st);

    /* the same name used by two kinds */
    d = th_dir_new();
    th_dir_add_file(NULL, d, "a", "x", false);
    th_dir_add_file(NULL, d, "m", "x", false);
    th_dir_add_dir(d, "b", cas_digest_empty());
    th_dir_add_dir(d, "m", cas_digest_empty());
    expect_invalid(&st, check_dir(d, &st), "'m' is both a file and a directory");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_dir(d, "q", cas_digest_empty());
    th_dir_add_symlink(d, "q", "x");
    expect_invalid(&st, check_dir(d, &st), "both a directory and a symlink");
    reapi_status_free(&st);
}

static void test_directory_digests(void **state)
{
    struct reapi_status st;
    Directory *d;

    (void)state;
    d = th_dir_new();
    th_dir_add_file(NULL, d, "f", "x", false);
    strcpy(d->files[0]->digest->hash, "zz");
    expect_invalid(&st, check_dir(d, &st), "file 'f'");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_file(NULL, d, "f", "x", false);
    d->files[0]->digest->size_bytes = -1;
    expect_invalid(&st, check_dir(d, &st), "negative size");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_dir(d, "s", cas_digest_empty());
    d->directories[0]->digest->hash[10] = 'g';
    expect_invalid(&st, check_dir(d, &st), "directory 's'");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_file(NULL, d, "f", "x", false);
    d->files[0]->digest->size_bytes = 0;
    expect_invalid(&st, check_dir(d, &st), "size 0");
    reapi_status_free(&st);

    d = th_dir_new();
    th_dir_add_symlink(d, "l", "");
    expect_invalid(&st, check_dir(d, &st), "empty target");
    reapi_status_free(&st);
}

static void test_symlink_targets(void **state)
{
    struct reapi_status st;

    (void)state;
    reapi_status_init(&st);
    assert_int_equal(action_validate_symlink_target("a/b", 0, "l", &st), 0);
    assert_int_equal(action_validate_symlink_target("../x", 1, "d/l", &st), 0);
    assert_int_equal(action_validate_symlink_target("./a/../b", 0, "l", &st), 0);
    expect_invalid(&st, action_validate_symlink_target("../x", 0, "l", &st), "outside");
    reapi_status_free(&st);
    expect_invalid(&st, action_validate_symlink_target("a/../../x", 0, "l", &st), "outside");
    reapi_status_free(&st);
    expect_invalid(&st, action_validate_symlink_target("/etc/passwd", 3, "a/b/c/l", &st),
                   "absolute target '/etc/passwd'");
    reapi_status_free(&st);
}

static void test_relative_paths(void **state)
{
    static const char *const bad[] = {"/a", "a/", "a//b", "./a", "a/./b", "a/..", "../a", ""};
    const char *why;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (action_validate_relative_path(bad[i], false, &why) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(why);
    }
    assert_int_equal(action_validate_relative_path("", true, &why), 0);
    assert_int_equal(action_validate_relative_path("a", false, &why), 0);
    assert_int_equal(action_validate_relative_path("bazel-out/k8/bin/x.o", false, &why), 0);
    assert_int_equal(action_validate_relative_path("..a/b..", false, &why), 0);
}

static Command *cmd_basic(void)
{
    static const char *const argv[] = {"/bin/true", NULL};

    return th_cmd_new(argv);
}

static int check_cmd(Command *c, struct reapi_status *st)
{
    int rc;

    reapi_status_init(st);
    rc = action_validate_command(c, st);
    build__bazel__remote__execution__v2__command__free_unpacked(c, NULL);
    return rc;
}

static void test_command(void **state)
{
    static const char *const none[] = {NULL};
    struct reapi_status st;
    Command *c;

    (void)state;
    c = th_cmd_new(none);
    expect_invalid(&st, check_cmd(c, &st), "Command.arguments is empty");
    reapi_status_free(&st);

    c = cmd_basic();
    th_cmd_add_env(c, "A=B", "x");
    expect_invalid(&st, check_cmd(c, &st), "contains '='");
    reapi_status_free(&st);

    c = cmd_basic();
    th_cmd_add_env(c, "PATH", "/bin");
    th_cmd_add_env(c, "PATH", "/usr/bin");
    expect_invalid(&st, check_cmd(c, &st), "'PATH' is set twice");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("out/../../etc/x"));
    expect_invalid(&st, check_cmd(c, &st), "output_files[0] 'out/../../etc/x' has a '..'");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("/tmp/x"));
    expect_invalid(&st, check_cmd(c, &st), "is absolute");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("a//b"));
    expect_invalid(&st, check_cmd(c, &st), "empty component");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("x"));
    TH_APPEND(c->output_files, c->n_output_files, strdup("x"));
    expect_invalid(&st, check_cmd(c, &st), "'x' appears twice");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("a/b"));
    TH_APPEND(c->output_files, c->n_output_files, strdup("a-c"));
    TH_APPEND(c->output_files, c->n_output_files, strdup("a"));
    expect_invalid(&st, check_cmd(c, &st), "'a' is a parent of 'a/b'");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_files, c->n_output_files, strdup("o"));
    TH_APPEND(c->output_directories, c->n_output_directories, strdup("o"));
    expect_invalid(&st, check_cmd(c, &st), "both an output file and an output directory");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_paths, c->n_output_paths, strdup(""));
    expect_invalid(&st, check_cmd(c, &st), "output_paths[0] '' is empty");
    reapi_status_free(&st);

    c = cmd_basic();
    c->working_directory = strdup("../up");
    expect_invalid(&st, check_cmd(c, &st), "working_directory '../up'");
    reapi_status_free(&st);

    c = cmd_basic();
    TH_APPEND(c->output_node_properties, c->n_output_node_properties, strdup("mtime"));
    expect_invalid(&st, check_cmd(c, &st), "'mtime'");
    reapi_status_free(&st);

    /* valid: nested directories, "" for the whole working directory, a file in one */
    c = cmd_basic();
    th_cmd_add_env(c, "PATH", "/bin");
    c->working_directory = strdup("pkg");
    TH_APPEND(c->output_files, c->n_output_files, strdup("out/a.o"));
    TH_APPEND(c->output_files, c->n_output_files, strdup("out/b.o"));
    TH_APPEND(c->output_directories, c->n_output_directories, strdup(""));
    TH_APPEND(c->output_directories, c->n_output_directories, strdup("out"));
    TH_APPEND(c->output_directories, c->n_output_directories, strdup("out/sub"));
    assert_int_equal(check_cmd(c, &st), 0);
    reapi_status_free(&st);
}

static void test_platform(void **state)
{
    struct casbox_config cfg;
    struct reapi_status st;
    Build__Bazel__Remote__Execution__V2__Platform *p;
    bool network = true;

    (void)state;
    config_init_defaults(&cfg);
    reapi_status_init(&st);
    assert_int_equal(action_validate_platform(NULL, &cfg, &network, &st), 0);
    assert_false(network);

    p = th_platform_new("OSFamily", "linux");
    th_platform_add(p, "network", "off");
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), 0);
    assert_false(network);
    build__bazel__remote__execution__v2__platform__free_unpacked(p, NULL);

    p = th_platform_new("OSFamily", "Windows");
    expect_invalid(&st, action_validate_platform(p, &cfg, &network, &st), "OSFamily=Windows");
    build__bazel__remote__execution__v2__platform__free_unpacked(p, NULL);
    reapi_status_free(&st);

    p = th_platform_new("network", "on");
    expect_invalid(&st, action_validate_platform(p, &cfg, &network, &st), "network=on");
    reapi_status_free(&st);
    cfg.exec_allow_network = true;
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), 0);
    assert_true(network);
    build__bazel__remote__execution__v2__platform__free_unpacked(p, NULL);

    p = th_platform_new("network", "maybe");
    expect_invalid(&st, action_validate_platform(p, &cfg, &network, &st), "on or off");
    build__bazel__remote__execution__v2__platform__free_unpacked(p, NULL);
    reapi_status_free(&st);

    /* container-image names an execution environment; an unknown image is
     * FAILED_PRECONDITION naming it and listing the known ones */
    p = th_platform_new("OSFamily", "Linux");
    th_platform_add(p, "container-image", "docker://x");
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "container-image=docker://x"));
    assert_non_null(strstr(st.message, "known images: none"));
    reapi_status_free(&st);
    cfg.n_environments = 2;
    snprintf(cfg.environments[0].image, sizeof(cfg.environments[0].image), "debian-sid");
    snprintf(cfg.environments[1].image, sizeof(cfg.environments[1].image), "docker://y");
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "known images: 'debian-sid', 'docker://y'"));
    reapi_status_free(&st);
    snprintf(cfg.environments[1].image, sizeof(cfg.environments[1].image), "docker://x");
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), 0);
    cfg.n_environments = 0;
    /* named in accepted_properties: any image is accepted onto the host's root */
    snprintf(cfg.exec_accepted_properties, sizeof(cfg.exec_accepted_properties),
             "Pool, container-image ,dockerNetwork");
    assert_int_equal(action_validate_platform(p, &cfg, &network, &st), 0);
    th_platform_add(p, "gpu", "1");
    expect_invalid(&st, action_validate_platform(p, &cfg, &network, &st), "'gpu'");
    build__bazel__remote__execution__v2__platform__free_unpacked(p, NULL);
    reapi_status_free(&st);
}

static void test_timeout(void **state)
{
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    struct reapi_status st;
    uint64_t ms = 1;

    (void)state;
    reapi_status_init(&st);
    assert_int_equal(action_validate_timeout(NULL, &ms, &st), 0);
    assert_int_equal(ms, 0);
    d.seconds = 60;
    d.nanos = 1;
    assert_int_equal(action_validate_timeout(&d, &ms, &st), 0);
    assert_int_equal(ms, 60001);
    d.seconds = -1;
    d.nanos = 0;
    expect_invalid(&st, action_validate_timeout(&d, &ms, &st), "Action.timeout");
    reapi_status_free(&st);
    d.seconds = 1;
    d.nanos = 1000000000;
    expect_invalid(&st, action_validate_timeout(&d, &ms, &st), "malformed");
    reapi_status_free(&st);
    d.seconds = 1;
    d.nanos = -5;
    expect_invalid(&st, action_validate_timeout(&d, &ms, &st), "malformed");
    reapi_status_free(&st);
    d.seconds = INT64_MAX;
    d.nanos = 0;
    expect_invalid(&st, action_validate_timeout(&d, &ms, &st), "range");
    reapi_status_free(&st);
}

/* --- through action_load, against a real CAS --- */

static void test_load_lists_every_missing_blob(void **state)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct th_env env;
    struct reapi_status st;
    struct action *act = NULL;
    struct cas_digest missing_dir, missing_file1, missing_file2, sub, root, ad, cmd_digest;
    Directory *d;
    Command *cmd;

    (void)state;
    th_env_setup(&env);
    /* sub/ is present but its two files are not; gone/ is not present at all */
    d = th_dir_new();
    th_dir_add_file(NULL, d, "m1", "never uploaded 1", false);
    th_dir_add_file(NULL, d, "m2", "never uploaded 2", true);
    th_dir_add_file(env.cas, d, "ok", "present", false);
    cas_digest_buffer("never uploaded 1", 16, &missing_file1);
    cas_digest_buffer("never uploaded 2", 16, &missing_file2);
    th_dir_put(env.cas, d, &sub);
    d = th_dir_new();
    th_dir_add_file(NULL, d, "x", "in a missing dir", false);
    th_msg_digest(&d->base, &missing_dir);
    th_dir_free(d);
    d = th_dir_new();
    th_dir_add_dir(d, "gone", &missing_dir);
    th_dir_add_dir(d, "sub", &sub);
    th_dir_add_dir(d, "sub2", &sub); /* repeated: listed once */
    th_dir_put(env.cas, d, &root);

    /* the Command is missing too: compute its digest without storing it */
    cmd = th_cmd_new(argv);
    th_msg_digest(&cmd->base, &cmd_digest);
    {
        Action a = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION__INIT;

        a.command_digest = th_digest_new(&cmd_digest);
        a.input_root_digest = th_digest_new(&root);
        th_put_msg(env.cas, &a.base, &ad);
        free(a.command_digest->hash);
        free(a.command_digest);
        free(a.input_root_digest->hash);
        free(a.input_root_digest);
    }
    build__bazel__remote__execution__v2__command__free_unpacked(cmd, NULL);

    reapi_status_init(&st);
    assert_int_equal(action_load(env.cas, &ad, &env.cfg, &act, &st), -ENOENT);
    assert_null(act);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(st.n_missing, 4);
    {
        const struct cas_digest *want[] = {&cmd_digest, &missing_dir, &missing_file1,
                                           &missing_file2};

        for (size_t w = 0; w < 4; w++) {
            bool found = false;

            for (size_t i = 0; i < st.n_missing; i++)
                found = found || cas_digest_equal(&st.missing[i], want[w]);
            if (!found)
                fail_msg("missing blob %zu not listed", w);
        }
    }
    reapi_status_free(&st);

    /* the Action itself missing: just that one */
    {
        struct cas_digest nowhere;

        cas_digest_buffer("no such action", 14, &nowhere);
        reapi_status_init(&st);
        assert_int_equal(action_load(env.cas, &nowhere, &env.cfg, &act, &st), -ENOENT);
        assert_int_equal(st.n_missing, 1);
        assert_true(cas_digest_equal(&st.missing[0], &nowhere));
        reapi_status_free(&st);
    }
    th_env_teardown(&env);
}

static void test_load_valid_and_invalid(void **state)
{
    static const char *const argv[] = {"/usr/bin/gcc", "-c", "a.c", NULL};
    struct th_env env;
    struct reapi_status st;
    struct action *act = NULL;
    struct cas_digest leaf, mid, root, ad, bad_dir, bad_root;
    Directory *d;
    Command *cmd;

    (void)state;
    th_env_setup(&env);
    d = th_dir_new();
    th_dir_add_file(env.cas, d, "a.c", "int main(void) { return 0; }\n", false);
    th_dir_add_symlink(d, "up", "../x"); /* at depth 2: fine */
    th_dir_put(env.cas, d, &leaf);
    d = th_dir_new();
    th_dir_add_dir(d, "l1", &leaf);
    th_dir_add_dir(d, "l2", &leaf);
    th_dir_put(env.cas, d, &mid);
    d = th_dir_new();
    th_dir_add_file(env.cas, d, "x", "", false);
    th_dir_add_dir(d, "m", &mid);
    th_dir_put(env.cas, d, &root);

    cmd = th_cmd_new(argv);
    th_cmd_add_env(cmd, "PATH", "/bin:/usr/bin");
    TH_APPEND(cmd->output_files, cmd->n_output_files, strdup("a.o"));
    /* the platform only on the Command (an old client) */
    cmd->platform = th_platform_new("OSFamily", "Linux");
    th_action_put(env.cas, cmd, &root, 30, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(env.cas, &ad, &env.cfg, &act, &st), 0);
    assert_non_null(act);
    assert_int_equal(act->n_dirs, 3); /* root, mid, leaf: leaf once */
    assert_int_equal(act->input_files, 3);
    assert_int_equal(act->input_dirs, 3);
    assert_int_equal(act->input_symlinks, 2);
    assert_int_equal(act->input_bytes, 2 * 29);
    assert_int_equal(act->timeout_ms, 30000);
    assert_int_equal(act->n_outputs, 1);
    assert_int_equal(act->outputs[0].kind, ACTION_OUTPUT_FILE);
    assert_string_equal(act->outputs[0].path, "a.o");
    assert_non_null(action_input_dir_find(act, &leaf));
    assert_string_equal(action_input_dir_find(act, &leaf)->path, "m/l1");
    assert_int_equal(action_input_dir_find(act, &leaf)->min_depth, 2);
    action_free(act);
    reapi_status_free(&st);

    /* a symlink escaping from the root, two levels down: names the path */
    d = th_dir_new();
    th_dir_add_symlink(d, "esc", "../../..");
    th_dir_put(env.cas, d, &bad_dir);
    d = th_dir_new();
    th_dir_add_dir(d, "deep", &bad_dir);
    th_dir_put(env.cas, d, &bad_root);
    cmd = th_cmd_new(argv);
    th_action_put(env.cas, cmd, &bad_root, -1, NULL, &ad);
    reapi_status_init(&st);
    expect_invalid(&st, action_load(env.cas, &ad, &env.cfg, &act, &st), "'deep/esc'");
    assert_null(act);
    reapi_status_free(&st);

    /* a bad platform property on the Action */
    cmd = th_cmd_new(argv);
    th_action_put(env.cas, cmd, &root, -1, th_platform_new("cpu", "arm64"), &ad);
    reapi_status_init(&st);
    expect_invalid(&st, action_load(env.cas, &ad, &env.cfg, &act, &st), "'cpu'");
    reapi_status_free(&st);

    /* a Command without arguments */
    {
        static const char *const none[] = {NULL};

        cmd = th_cmd_new(none);
        th_action_put(env.cas, cmd, &root, -1, NULL, &ad);
        reapi_status_init(&st);
        expect_invalid(&st, action_load(env.cas, &ad, &env.cfg, &act, &st), "arguments");
        reapi_status_free(&st);
    }

    /* garbage where a Directory should be */
    {
        struct cas_digest junk;

        th_put(env.cas, "\xff\xff\xff", 3, &junk);
        cmd = th_cmd_new(argv);
        th_action_put(env.cas, cmd, &junk, -1, NULL, &ad);
        reapi_status_init(&st);
        expect_invalid(&st, action_load(env.cas, &ad, &env.cfg, &act, &st), "does not decode");
        reapi_status_free(&st);
    }
    th_env_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_directory_names),
        cmocka_unit_test(test_directory_order),
        cmocka_unit_test(test_directory_digests),
        cmocka_unit_test(test_symlink_targets),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_platform),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_load_lists_every_missing_blob),
        cmocka_unit_test(test_load_valid_and_invalid),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
