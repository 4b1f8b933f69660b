/*
 * test_casfs_stage.c - the daemon's side of FUSE staging that needs no mount:
 * action_stage_output_dirs makes the working directory and output parents in
 * the overlay's upper layer, following the input tree's decoded Directory
 * messages (an input symlink stops it quietly, an input file in the way is
 * INVALID_ARGUMENT), and never touches the lower layer.
 */
#include "exec/exec.h"
#include "test_action_helpers.h"

struct fixture {
    struct th_env env;
    char upper[PATH_MAX + 16];
    struct cas_digest root;
};

static struct action *load(struct fixture *f, const char *wd, const char *const *outs, size_t n)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct reapi_status st;
    struct cas_digest ad;
    struct action *act = NULL;
    Command *cmd = th_cmd_new(argv);

    if (wd != NULL)
        cmd->working_directory = strdup(wd);
    for (size_t i = 0; i < n; i++)
        TH_APPEND(cmd->output_files, cmd->n_output_files, strdup(outs[i]));
    th_action_put(f->env.cas, cmd, &f->root, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(f->env.cas, &ad, &f->env.cfg, &act, &st), 0);
    reapi_status_free(&st);
    return act;
}

static void setup(struct fixture *f)
{
    struct cas_digest sub;
    Directory *d;

    memset(f, 0, sizeof(*f));
    th_env_setup(&f->env);
    snprintf(f->upper, sizeof(f->upper), "%s/upper", f->env.dir);
    assert_int_equal(mkdir(f->upper, 0755), 0);
    d = th_dir_new();
    th_dir_add_file(f->env.cas, d, "x.c", "int x;\n", false);
    th_dir_put(f->env.cas, d, &sub);
    d = th_dir_new();
    th_dir_add_dir(d, "src", &sub);
    th_dir_add_file(f->env.cas, d, "file", "data", false);
    th_dir_add_symlink(d, "link", "src");
    th_dir_put(f->env.cas, d, &f->root);
}

static bool is_dir(const char *dir, const char *rel)
{
    char p[PATH_MAX * 2];
    struct stat st;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *dir, const char *rel)
{
    char p[PATH_MAX * 2];
    struct stat st;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    return lstat(p, &st) == 0;
}

static void test_parents_in_upper(void **state)
{
    static const char *const outs[] = {"out/obj/a.o", "src/gen/g.h", "link/made.txt", "top.txt"};
    struct action_stage_stats stats;
    struct reapi_status st;
    struct fixture f;
    struct action *act;

    (void)state;
    setup(&f);
    memset(&stats, 0, sizeof(stats));
    act = load(&f, "", outs, 4);
    reapi_status_init(&st);
    assert_int_equal(action_stage_output_dirs(act, f.upper, &stats, &st), 0);
    reapi_status_free(&st);
    assert_true(is_dir(f.upper, "out/obj"));
    assert_false(exists(f.upper, "out/obj/a.o"));
    assert_true(is_dir(f.upper, "src/gen")); /* merged with the input dir src */
    assert_false(exists(f.upper, "link"));   /* an input symlink: left alone */
    assert_false(exists(f.upper, "top.txt"));
    assert_int_equal(stats.dirs, 4); /* out, out/obj, src, src/gen */
    action_free(act);
    act = load(&f, "work/dir", NULL, 0);
    reapi_status_init(&st);
    assert_int_equal(action_stage_output_dirs(act, f.upper, &stats, &st), 0);
    reapi_status_free(&st);
    assert_true(is_dir(f.upper, "work/dir"));
    action_free(act);
    th_env_teardown(&f.env);
}

static void test_input_file_in_the_way(void **state)
{
    static const char *const outs[] = {"file/x.o"};
    struct action_stage_stats stats;
    struct reapi_status st;
    struct fixture f;
    struct action *act;

    (void)state;
    setup(&f);
    act = load(&f, "", outs, 1);
    memset(&stats, 0, sizeof(stats));
    reapi_status_init(&st);
    assert_int_equal(action_stage_output_dirs(act, f.upper, &stats, &st), -EINVAL);
    assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "is a file in the input root"));
    reapi_status_free(&st);
    assert_false(exists(f.upper, "file"));
    action_free(act);
    th_env_teardown(&f.env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parents_in_upper),
        cmocka_unit_test(test_input_file_in_the_way),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
