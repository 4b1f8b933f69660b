/*
 * test_cas_ac.c - unit tests for the action cache (cas/action_cache.c):
 * round trips under empty and multi-segment instance names, isolation between
 * instances and action digests, updates, absent and damaged entries.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cas/cas.h"

struct fixture {
    char dir[64];
    struct cas_store *store;
};

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-test-ac-XXXXXX");
    if (mkdtemp(f->dir) == NULL || cas_store_open(f->dir, NULL, &f->store) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    cas_store_close(f->store);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void action_digest(const char *text, struct cas_digest *d)
{
    cas_digest_buffer(text, strlen(text), d);
}

static void assert_ac_equals(struct cas_store *s, const char *instance, const struct cas_digest *a,
                             const char *want)
{
    void *buf = NULL;
    size_t len = 999;

    assert_int_equal(cas_ac_get(s, instance, a, &buf, &len), 0);
    assert_non_null(buf);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void assert_ac_absent(struct cas_store *s, const char *instance, const struct cas_digest *a)
{
    void *buf = NULL;
    size_t len = 999;

    assert_int_equal(cas_ac_get(s, instance, a, &buf, &len), -ENOENT);
    assert_null(buf);
    assert_int_equal(len, 999);
}

/* Counts the files under ac/<shard>/; out receives the last one's path. */
static int list_entries(const struct fixture *f, char *out)
{
    int found = 0;

    for (int shard = 0; shard < 256; shard++) {
        char dir[128];
        struct dirent *de;
        DIR *d;

        snprintf(dir, sizeof(dir), "%s/ac/%02x", f->dir, shard);
        d = opendir(dir);
        if (d == NULL && errno == ENOENT)
            continue; /* shards are created on first use */
        assert_non_null(d);
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(out, PATH_MAX, "%s/%s", dir, de->d_name);
            found++;
        }
        closedir(d);
    }
    return found;
}

/* The single file under ac/, for tests that damage it. */
static void find_only_entry(const struct fixture *f, char *out)
{
    assert_int_equal(list_entries(f, out), 1);
}

static void test_round_trip_instances(void **state)
{
    struct fixture *f = *state;
    const char *const instances[] = {"", "main", "a/b/c", "../../etc", "x/../y", "with space"};
    const size_t n = sizeof(instances) / sizeof(instances[0]);
    struct cas_digest a;
    struct cas_store_stats stats;

    action_digest("action-1", &a);
    for (size_t i = 0; i < n; i++)
        assert_ac_absent(f->store, instances[i], &a);
    for (size_t i = 0; i < n; i++) {
        char value[64];

        snprintf(value, sizeof(value), "result for <%s>", instances[i]);
        assert_int_equal(cas_ac_put(f->store, instances[i], &a, value, strlen(value)), 0);
    }
    /* each instance sees its own entry */
    for (size_t i = 0; i < n; i++) {
        char value[64];

        snprintf(value, sizeof(value), "result for <%s>", instances[i]);
        assert_ac_equals(f->store, instances[i], &a, value);
    }
    /* NULL is the empty instance */
    assert_ac_equals(f->store, NULL, &a, "result for <>");
    /* one fixed-name file per instance, inside ac/ (even for "../../etc"),
     * and AC entries are not CAS bytes */
    char path[PATH_MAX];
    assert_int_equal(list_entries(f, path), (int)n);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 0);
    assert_int_equal(stats.bytes, 0);
}

static void test_keys_distinct(void **state)
{
    struct fixture *f = *state;
    struct cas_digest a, b, a_bigger;

    action_digest("action-a", &a);
    action_digest("action-b", &b);
    a_bigger = a;
    a_bigger.size++;
    assert_int_equal(cas_ac_put(f->store, "inst", &a, "A", 1), 0);
    assert_ac_absent(f->store, "inst", &b);
    assert_ac_absent(f->store, "inst", &a_bigger);
    assert_ac_absent(f->store, "inst/", &a);
    assert_ac_absent(f->store, "ins", &a);
    assert_ac_absent(f->store, "", &a);
    assert_ac_equals(f->store, "inst", &a, "A");
}

static void test_update_and_empty_value(void **state)
{
    struct fixture *f = *state;
    struct cas_digest a;
    void *buf = NULL;
    size_t len = 5;

    action_digest("action-u", &a);
    assert_int_equal(cas_ac_put(f->store, "i", &a, "first", 5), 0);
    assert_ac_equals(f->store, "i", &a, "first");
    assert_int_equal(cas_ac_put(f->store, "i", &a, "second value", 12), 0);
    assert_ac_equals(f->store, "i", &a, "second value");
    assert_int_equal(cas_ac_put(f->store, "i", &a, NULL, 0), 0);
    assert_int_equal(cas_ac_get(f->store, "i", &a, &buf, &len), 0);
    assert_int_equal(len, 0);
    free(buf);

    /* Survives a restart. */
    assert_int_equal(cas_ac_put(f->store, "i/j", &a, "kept", 4), 0);
    cas_store_close(f->store);
    f->store = NULL;
    assert_int_equal(cas_store_open(f->dir, NULL, &f->store), 0);
    assert_ac_equals(f->store, "i/j", &a, "kept");

    /* Bad arguments. */
    struct cas_digest bad = a;
    bad.size = -1;
    assert_int_equal(cas_ac_put(f->store, "i", &bad, "x", 1), -EINVAL);
    assert_int_equal(cas_ac_get(f->store, "i", &bad, &buf, &len), -EINVAL);
    assert_int_equal(cas_ac_put(f->store, "i", &a, NULL, 3), -EINVAL);
}

static void test_large_value(void **state)
{
    struct fixture *f = *state;
    const size_t len = 3 * 1024 * 1024 + 7;
    char *value = malloc(len + 1);
    struct cas_digest a;

    assert_non_null(value);
    for (size_t i = 0; i < len; i++)
        value[i] = (char)('a' + i % 26);
    value[len] = '\0';
    action_digest("action-large", &a);
    assert_int_equal(cas_ac_put(f->store, "big", &a, value, len), 0);
    assert_ac_equals(f->store, "big", &a, value);
    free(value);
}

/* Damage the entry's file (a power loss leaving it short, a flipped bit):
 * the get must miss, never return bytes that were not put, and remove it. */
static void check_damaged(struct fixture *f, off_t truncate_to, off_t flip_at)
{
    const char *value = "a serialized ActionResult, more or less";
    char path[PATH_MAX];
    struct cas_digest a;
    int fd;

    action_digest("action-damaged", &a);
    assert_int_equal(cas_ac_put(f->store, "d", &a, value, strlen(value)), 0);
    find_only_entry(f, path);
    assert_int_equal(chmod(path, 0644), 0);
    fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    if (flip_at >= 0) {
        char c;

        assert_int_equal(pread(fd, &c, 1, flip_at), 1);
        c ^= 0x20;
        assert_int_equal(pwrite(fd, &c, 1, flip_at), 1);
    }
    if (truncate_to >= 0)
        assert_int_equal(ftruncate(fd, truncate_to), 0);
    close(fd);
    assert_ac_absent(f->store, "d", &a);
    assert_int_equal(access(path, F_OK), -1);
    /* and a new put works */
    assert_int_equal(cas_ac_put(f->store, "d", &a, value, strlen(value)), 0);
    assert_ac_equals(f->store, "d", &a, value);
    assert_int_equal(unlink(path), 0);
}

static void test_damaged_entries(void **state)
{
    struct fixture *f = *state;

    check_damaged(f, 0, -1);  /* empty file: would parse as an empty ActionResult */
    check_damaged(f, 20, -1); /* short header */
    check_damaged(f, 60, -1); /* short payload */
    check_damaged(f, -1, 0);  /* bad magic */
    check_damaged(f, -1, 70); /* payload bit flip */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_instances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_distinct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_and_empty_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_entries, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
