/*
 * test_action_tree_cache.c - the cache of input subtrees checked complete
 * (exec/tree_cache.c) and action_load_cached over a real CAS: a remembered
 * root is not walked again, its subdirectories are read lazily, and any
 * removal from the store (a new generation) makes the next load walk the tree
 * and list the missing blob.
 */
#include "test_action_helpers.h"

#include "action_internal.h"

static void digest_of_text(const char *text, struct cas_digest *d)
{
    cas_digest_buffer(text, strlen(text), d);
}

static void test_cache_generation_and_bound(void **state)
{
    struct exec_tree_cache *c = NULL;
    struct action_tree_totals t = {.files = 3, .dirs = 1, .bytes = 10, .height = 1}, got;
    struct cas_digest a, b, x;

    (void)state;
    assert_int_equal(exec_tree_cache_new(0, &c), 0);
    assert_null(c); /* off */
    assert_false(exec_tree_cache_get(NULL, &a, 0, &got));
    assert_int_equal(exec_tree_cache_new(2, &c), 0);
    digest_of_text("a", &a);
    digest_of_text("b", &b);
    digest_of_text("x", &x);
    exec_tree_cache_put(c, &a, 5, &t);
    assert_true(exec_tree_cache_get(c, &a, 5, &got));
    assert_int_equal(got.files, 3);
    assert_int_equal(got.height, 1);
    assert_false(exec_tree_cache_get(c, &b, 5, &got));
    /* another generation: nothing is known */
    assert_false(exec_tree_cache_get(c, &a, 6, &got));
    /* an entry checked before a removal the cache has seen is refused */
    exec_tree_cache_put(c, &b, 6, &t);
    exec_tree_cache_put(c, &x, 5, &t);
    assert_false(exec_tree_cache_get(c, &x, 5, &got));
    assert_false(exec_tree_cache_get(c, &a, 6, &got)); /* the move to 6 dropped a */
    assert_true(exec_tree_cache_get(c, &b, 6, &got));
    /* bounded: a third entry empties the table first */
    exec_tree_cache_put(c, &a, 6, &t);
    exec_tree_cache_put(c, &x, 6, &t);
    assert_true(exec_tree_cache_get(c, &x, 6, &got));
    assert_false(exec_tree_cache_get(c, &b, 6, &got));
    exec_tree_cache_free(c);
}

struct tree_fixture {
    struct th_env env;
    struct cas_digest hello, deep, sub, root, action;
};

/* root { a.txt, sub { deep.txt } }, and a `cat` action over it. */
static void tree_setup(struct tree_fixture *f)
{
    const char *argv[] = {"/bin/cat", "a.txt", NULL};
    Directory *sub = th_dir_new(), *root = th_dir_new();

    th_env_setup(&f->env);
    th_dir_add_file(f->env.cas, sub, "deep.txt", "deep\n", false);
    digest_of_text("deep\n", &f->deep);
    th_dir_put(f->env.cas, sub, &f->sub);
    th_dir_add_file(f->env.cas, root, "a.txt", "hello\n", false);
    digest_of_text("hello\n", &f->hello);
    th_dir_add_dir(root, "sub", &f->sub);
    th_dir_put(f->env.cas, root, &f->root);
    th_action_put(f->env.cas, th_cmd_new(argv), &f->root, -1, NULL, &f->action);
}

static void test_load_remembers_and_forgets(void **state)
{
    struct tree_fixture f;
    struct exec_tree_cache *trees = NULL;
    struct action *act = NULL;
    const struct action_input_dir *in;
    struct reapi_status st;
    char path[PATH_MAX * 2], hex[CAS_HASH_HEX + 1];
    void *buf = NULL;
    size_t len;

    (void)state;
    tree_setup(&f);
    assert_int_equal(exec_tree_cache_new(16, &trees), 0);

    reapi_status_init(&st);
    assert_int_equal(action_load_cached(f.env.cas, trees, &f.action, &f.env.cfg, &act, &st), 0);
    assert_false(act->tree_cached);
    assert_int_equal(act->n_dirs, 2);
    assert_int_equal(act->input_files, 2);
    action_free(act);

    /* the second load reads the root Directory only */
    assert_int_equal(action_load_cached(f.env.cas, trees, &f.action, &f.env.cfg, &act, &st), 0);
    assert_true(act->tree_cached);
    assert_int_equal(act->n_dirs, 1);
    assert_int_equal(act->input_files, 2);
    assert_int_equal(act->input_dirs, 1);
    in = action_input_dir_find(act, &f.sub); /* read now, lazily */
    assert_non_null(in);
    assert_int_equal(in->dir->n_files, 1);
    assert_string_equal(in->dir->files[0]->name, "deep.txt");
    assert_ptr_equal(action_input_dir_find(act, &f.sub), in);
    action_free(act);

    /* deep.txt leaves the store (its file vanishes; a read notices) */
    cas_digest_hex(&f.deep, hex);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f.env.cas_dir, hex, hex);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(cas_store_get(f.env.cas, &f.deep, &buf, &len), -ENOENT);
    assert_int_equal(action_load_cached(f.env.cas, trees, &f.action, &f.env.cfg, &act, &st),
                     -ENOENT);
    assert_null(act);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(st.n_missing, 1);
    assert_true(cas_digest_equal(&st.missing[0], &f.deep));
    reapi_status_free(&st);

    exec_tree_cache_free(trees);
    th_env_teardown(&f.env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_generation_and_bound),
        cmocka_unit_test(test_load_remembers_and_forgets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
