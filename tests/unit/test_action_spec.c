/*
 * test_action_spec.c - the sandbox spec built for an action: argv, exactly
 * the Command's environment (nothing from the daemon), the exec root layers,
 * the working directory, timeout defaults and capping, limits, network and
 * seccomp from the config, and the printed form.
 */
#include "exec/exec.h"
#include "test_action_helpers.h"

struct spec_fixture {
    struct th_env env;
    struct action *act;
    struct action_scratch scratch;
};

/* image non-NULL: the config gets the execution environment "sid" with that
 * image (its root: the test's temp dir) and the action asks for it. */
static void fixture_setup_image(struct spec_fixture *f, int64_t timeout_s, const char *wd,
                                bool network, const char *image)
{
    static const char *const argv[] = {"/usr/bin/gcc", "-c", "hello world.c", "-o", "a.o", NULL};
    struct reapi_status st;
    struct cas_digest root, ad;
    Command *cmd;
    Platform *platform;

    memset(f, 0, sizeof(*f));
    th_env_setup(&f->env);
    f->env.cfg.exec_allow_network = true;
    th_dir_put(f->env.cas, th_dir_new(), &root);
    cmd = th_cmd_new(argv);
    th_cmd_add_env(cmd, "LANG", "C");
    th_cmd_add_env(cmd, "PATH", "/bin:/usr/bin:/usr/local/bin");
    th_cmd_add_env(cmd, "QUOTE", "a \"b\"");
    if (wd != NULL)
        cmd->working_directory = strdup(wd);
    platform = network ? th_platform_new("network", "on") : NULL;
    if (image != NULL) {
        struct casbox_environment *e = &f->env.cfg.environments[0];

        f->env.cfg.n_environments = 1;
        snprintf(e->name, sizeof(e->name), "sid");
        snprintf(e->image, sizeof(e->image), "%s", image);
        snprintf(e->root, sizeof(e->root), "%s", f->env.dir);
        if (platform == NULL)
            platform = th_platform_new("container-image", image);
        else
            th_platform_add(platform, "container-image", image);
    }
    th_action_put(f->env.cas, cmd, &root, timeout_s, platform, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(f->env.cas, &ad, &f->env.cfg, &f->act, &st), 0);
    reapi_status_free(&st);
    assert_int_equal(action_scratch_create(f->env.dir, "sp", &f->scratch), 0);
}

static void fixture_setup(struct spec_fixture *f, int64_t timeout_s, const char *wd, bool network)
{
    fixture_setup_image(f, timeout_s, wd, network, NULL);
}

static void fixture_teardown(struct spec_fixture *f)
{
    assert_int_equal(action_scratch_remove(&f->scratch), 0);
    action_free(f->act);
    th_env_teardown(&f->env);
}

static char *print_spec(const struct sandbox_spec *spec)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    assert_non_null(out);
    sandbox_spec_print(spec, out);
    assert_int_equal(fclose(out), 0);
    return text;
}

/* line must be one whole line of text. */
static void expect_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    }
    fail_msg("line '%s' not in:\n%s", line, text);
}

static void test_spec_from_command(void **state)
{
    struct spec_fixture f;
    struct sandbox_spec spec;
    struct action_spec_notes notes;
    struct reapi_status st;
    char *text, line[PATH_MAX * 2];

    (void)state;
    /* the daemon's own environment must not leak in */
    setenv("CASBOX_TEST_SECRET", "leak", 1);
    fixture_setup(&f, 60, "pkg/sub", true);
    sandbox_spec_init(&spec);
    reapi_status_init(&st);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), 0);

    assert_string_equal(spec.argv[0], "/usr/bin/gcc");
    assert_string_equal(spec.argv[2], "hello world.c");
    assert_null(spec.argv[5]);
    assert_string_equal(spec.envp[0], "LANG=C");
    assert_string_equal(spec.envp[1], "PATH=/bin:/usr/bin:/usr/local/bin");
    assert_string_equal(spec.envp[2], "QUOTE=a \"b\"");
    assert_null(spec.envp[3]);
    assert_string_equal(spec.cwd, SANDBOX_EXEC_ROOT "/pkg/sub");
    assert_string_equal(spec.exec_root_path, SANDBOX_EXEC_ROOT);
    assert_string_equal(spec.lower_dir, f.scratch.lower);
    assert_string_equal(spec.upper_dir, f.scratch.upper);
    assert_string_equal(spec.work_dir, f.scratch.work);
    assert_string_equal(spec.stdout_path, f.scratch.stdout_path);
    assert_string_equal(spec.stderr_path, f.scratch.stderr_path);
    assert_true(spec.stdin_null);
    assert_true(spec.network);
    assert_null(spec.root_dir); /* no container-image: the host's allow-list */
    assert_false(spec.uid0);
    assert_int_equal(spec.seccomp, SANDBOX_SECCOMP_DEFAULT);
    assert_int_equal(spec.limits.timeout_ms, 60000);
    assert_false(notes.timeout_capped);
    assert_int_equal(spec.limits.memory_bytes, f.env.cfg.exec_memory_bytes);
    assert_int_equal(spec.limits.pids_max, f.env.cfg.exec_pids_max);
    assert_int_equal(spec.limits.output_bytes, f.env.cfg.exec_stdio_bytes);

    text = print_spec(&spec);
    expect_line(text, "argv: \"/usr/bin/gcc\" \"-c\" \"hello world.c\" \"-o\" \"a.o\"");
    expect_line(text, "env: \"LANG=C\"");
    expect_line(text, "env: \"QUOTE=a \\\"b\\\"\"");
    expect_line(text, "cwd: \"" SANDBOX_EXEC_ROOT "/pkg/sub\"");
    expect_line(text, "timeout_ms: 60000");
    expect_line(text, "network: true");
    expect_line(text, "seccomp: default");
    snprintf(line, sizeof(line), "lower_dir: \"%s\"", f.scratch.lower);
    expect_line(text, line);
    snprintf(line, sizeof(line), "stdout_path: \"%s\"", f.scratch.stdout_path);
    expect_line(text, line);
    assert_null(strstr(text, "CASBOX_TEST_SECRET"));
    assert_null(strstr(text, "HOME="));
    /* exactly three env lines */
    {
        int n = 0;

        for (const char *p = text; (p = strstr(p, "\nenv: ")) != NULL; p++)
            n++;
        assert_int_equal(n, 3);
    }
    free(text);
    sandbox_spec_free(&spec);
    reapi_status_free(&st);
    fixture_teardown(&f);
}

static void test_spec_timeouts_and_config(void **state)
{
    struct spec_fixture f;
    struct sandbox_spec spec;
    struct action_spec_notes notes;
    struct reapi_status st;
    char *text;

    (void)state;
    /* above the maximum: capped, and said so */
    fixture_setup(&f, 7200, NULL, false);
    f.env.cfg.exec_max_timeout = 3600;
    snprintf(f.env.cfg.exec_seccomp, sizeof(f.env.cfg.exec_seccomp), "strict");
    sandbox_spec_init(&spec);
    reapi_status_init(&st);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), 0);
    assert_int_equal(notes.requested_timeout_ms, 7200000);
    assert_int_equal(notes.timeout_ms, 3600000);
    assert_true(notes.timeout_capped);
    assert_int_equal(spec.limits.timeout_ms, 3600000);
    assert_string_equal(spec.cwd, SANDBOX_EXEC_ROOT);
    assert_false(spec.network);
    assert_int_equal(spec.seccomp, SANDBOX_SECCOMP_STRICT);
    text = print_spec(&spec);
    expect_line(text, "timeout_ms: 3600000");
    expect_line(text, "cwd: \"" SANDBOX_EXEC_ROOT "\"");
    expect_line(text, "seccomp: strict");
    expect_line(text, "network: false");
    free(text);
    sandbox_spec_free(&spec);
    fixture_teardown(&f);

    /* none asked: the default; seccomp from a policy file */
    fixture_setup(&f, -1, NULL, false);
    f.env.cfg.exec_default_timeout = 123;
    snprintf(f.env.cfg.exec_seccomp, sizeof(f.env.cfg.exec_seccomp), "/etc/casbox/seccomp.policy");
    sandbox_spec_init(&spec);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), 0);
    assert_int_equal(notes.requested_timeout_ms, 0);
    assert_int_equal(spec.limits.timeout_ms, 123000);
    assert_false(notes.timeout_capped);
    assert_int_equal(spec.seccomp, SANDBOX_SECCOMP_FILE);
    assert_string_equal(spec.seccomp_file, "/etc/casbox/seccomp.policy");
    sandbox_spec_free(&spec);

    /* a seccomp setting that is neither */
    snprintf(f.env.cfg.exec_seccomp, sizeof(f.env.cfg.exec_seccomp), "paranoid");
    sandbox_spec_init(&spec);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), -EINVAL);
    assert_non_null(strstr(st.message, "'paranoid'"));
    sandbox_spec_free(&spec);
    reapi_status_free(&st);

    /* network=on in the action but no longer allowed: never granted */
    f.env.cfg.exec_allow_network = false;
    snprintf(f.env.cfg.exec_seccomp, sizeof(f.env.cfg.exec_seccomp), "none");
    f.act->network = true;
    sandbox_spec_init(&spec);
    reapi_status_init(&st);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), 0);
    assert_false(spec.network);
    assert_int_equal(spec.seccomp, SANDBOX_SECCOMP_NONE);
    sandbox_spec_free(&spec);
    reapi_status_free(&st);
    fixture_teardown(&f);
}

static void test_spec_empty_environment(void **state)
{
    static const char *const argv[] = {"tree.sh", NULL};
    struct th_env env;
    struct action *act = NULL;
    struct action_scratch scratch;
    struct sandbox_spec spec;
    struct action_spec_notes notes;
    struct reapi_status st;
    struct cas_digest root, ad;

    (void)state;
    /* Bazel's Starlark actions arrive with no environment at all */
    th_env_setup(&env);
    th_dir_put(env.cas, th_dir_new(), &root);
    th_action_put(env.cas, th_cmd_new(argv), &root, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(env.cas, &ad, &env.cfg, &act, &st), 0);
    assert_int_equal(action_scratch_create(env.dir, "e", &scratch), 0);
    sandbox_spec_init(&spec);
    assert_int_equal(action_spec_build(act, &env.cfg, &scratch, &spec, &notes, &st), 0);
    assert_non_null(spec.envp);
    assert_null(spec.envp[0]);
    assert_string_equal(spec.argv[0], "tree.sh");
    sandbox_spec_free(&spec);
    reapi_status_free(&st);
    assert_int_equal(action_scratch_remove(&scratch), 0);
    action_free(act);
    th_env_teardown(&env);
}

/* container-image selects an execution environment: its root becomes the
 * spec's root_dir; an environment removed by a reload since the action was
 * loaded is FAILED_PRECONDITION naming the image. */
static void test_spec_environment(void **state)
{
    struct spec_fixture f;
    struct sandbox_spec spec;
    struct action_spec_notes notes;
    struct reapi_status st;
    char *text, line[PATH_MAX + 32];

    (void)state;
    fixture_setup_image(&f, 0, NULL, true, "docker://debian:sid");
    assert_string_equal(f.act->container_image, "docker://debian:sid");
    sandbox_spec_init(&spec);
    reapi_status_init(&st);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), 0);
    assert_string_equal(spec.root_dir, f.env.dir);
    assert_true(spec.network);
    assert_string_equal(spec.exec_root_path, SANDBOX_EXEC_ROOT);
    text = print_spec(&spec);
    snprintf(line, sizeof(line), "root_dir: \"%s\"", f.env.dir);
    expect_line(text, line);
    free(text);
    sandbox_spec_free(&spec);

    f.env.cfg.n_environments = 0;
    sandbox_spec_init(&spec);
    assert_int_equal(action_spec_build(f.act, &f.env.cfg, &f.scratch, &spec, &notes, &st), -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "container-image=docker://debian:sid"));
    reapi_status_free(&st);
    sandbox_spec_free(&spec);
    fixture_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_from_command),
        cmocka_unit_test(test_spec_timeouts_and_config),
        cmocka_unit_test(test_spec_empty_environment),
        cmocka_unit_test(test_spec_environment),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
