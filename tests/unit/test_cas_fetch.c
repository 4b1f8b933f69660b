/*
 * test_cas_fetch.c - the store's read-through hook (cas/fetch.c) and pins
 * (cas/pin.c): a miss in cas_store_get, cas_store_open_blob and
 * cas_store_blob_path calls the fetcher, whose bytes go through a verifying
 * cas_writer; concurrent misses of one digest share one fetch; a failure
 * reaches every waiter and leaves its reason; counters per caller; pinned
 * blobs survive eviction. The upstream here is a second real store in its own
 * directory, copied from with cas_writer as remote/ does over gRPC.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cas/cas.h"

#define N_THREADS 8

struct upstream {
    struct cas_store *store;
    atomic_int calls;
    int fail;         /* negative errno to fail with; 0: copy */
    bool corrupt;     /* send other bytes of the right size */
    useconds_t delay; /* hold the fetch open, so that others pile up */
};

struct fixture {
    char dir[64];
    struct cas_store *local;
    struct upstream up;
};

static uint8_t *make_blob(size_t len, uint32_t seed, struct cas_digest *d)
{
    uint8_t *buf = malloc(len ? len : 1);
    uint32_t x = seed ? seed : 1;

    assert_non_null(buf);
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
    cas_digest_buffer(buf, len, d);
    return buf;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* The fetcher: copies d from the upstream store through a cas_writer. */
static int upstream_fetch(void *ctx, struct cas_store *s, const struct cas_digest *d, char *reason,
                          size_t reason_len)
{
    struct upstream *up = ctx;
    struct cas_writer *w = NULL;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    atomic_fetch_add(&up->calls, 1);
    if (up->delay)
        usleep(up->delay);
    if (up->fail) {
        snprintf(reason, reason_len, "upstream says %d", up->fail);
        return up->fail;
    }
    rc = cas_store_get(up->store, d, &buf, &len);
    if (rc != 0) {
        snprintf(reason, reason_len, "upstream has no such blob");
        return rc;
    }
    if (up->corrupt && len > 0)
        ((uint8_t *)buf)[len / 2] ^= 0xff;
    rc = cas_writer_begin(s, d, &w);
    if (rc == 0)
        rc = cas_writer_append(w, buf, len);
    rc = rc == 0 ? cas_writer_commit(w) : (cas_writer_abort(w), rc);
    if (rc == -EINVAL) {
        snprintf(reason, reason_len, "bytes do not match the digest");
        rc = -EBADMSG;
    }
    free(buf);
    return rc;
}

static int upstream_find_missing(void *ctx, const struct cas_digest *digests, size_t n,
                                 bool *missing, char *reason, size_t reason_len)
{
    struct upstream *up = ctx;

    (void)reason;
    (void)reason_len;
    for (size_t i = 0; i < n; i++)
        missing[i] = cas_store_contains(up->store, &digests[i]) != 1;
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[128];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-fetch-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(path, sizeof(path), "%s/local", f->dir);
    assert_int_equal(cas_store_open(path, NULL, &f->local), 0);
    snprintf(path, sizeof(path), "%s/upstream", f->dir);
    assert_int_equal(cas_store_open(path, NULL, &f->up.store), 0);
    cas_store_set_fetcher(f->local, upstream_fetch, &f->up);
    cas_store_set_find_missing(f->local, upstream_find_missing, &f->up);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    cas_store_close(f->local);
    cas_store_close(f->up.store);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void test_read_through(void **state)
{
    struct fixture *f = *state;
    struct cas_fetch_counters c = {0};
    struct cas_digest d;
    uint8_t *data = make_blob(100000, 7, &d);
    char path[4096];
    void *got = NULL;
    size_t len = 0;
    int fd;

    assert_true(cas_store_has_upstream(f->local));
    assert_int_equal(cas_store_put(f->up.store, &d, data, 100000), 0);
    assert_int_equal(cas_store_contains(f->local, &d), 0);
    assert_int_equal(cas_store_get_counted(f->local, &d, &got, &len, &c), 0);
    assert_int_equal(len, 100000);
    assert_memory_equal(got, data, len);
    assert_int_equal(atomic_load(&c.fetched_blobs), 1);
    assert_int_equal(atomic_load(&c.fetched_bytes), 100000);
    assert_int_equal(atomic_load(&c.local_hits), 0);
    /* Now local: a hit, no second fetch. */
    fd = cas_store_open_blob_counted(f->local, &d, &c);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(atomic_load(&c.local_hits), 1);
    assert_int_equal(atomic_load(&f->up.calls), 1);
    assert_int_equal(cas_store_blob_path(f->local, &d, path, sizeof(path)), 0);
    assert_int_equal(atomic_load(&f->up.calls), 1);
    free(got);
    free(data);
}

static void test_gone_file_falls_through(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d;
    uint8_t *data = make_blob(5000, 9, &d);
    char path[4096];
    int fd;

    assert_int_equal(cas_store_put(f->up.store, &d, data, 5000), 0);
    assert_int_equal(cas_store_put(f->local, &d, data, 5000), 0);
    /* The index says present, the file is gone: fetch, do not fail. */
    assert_int_equal(cas_store_blob_path(f->local, &d, path, sizeof(path)), 0);
    assert_int_equal(unlink(path), 0);
    fd = cas_store_open_blob(f->local, &d);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(atomic_load(&f->up.calls), 1);
    free(data);
}

struct opener {
    struct fixture *f;
    struct cas_digest d;
    struct cas_fetch_counters *c;
    int rc;
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    int fd = cas_store_open_blob_counted(o->f->local, &o->d, o->c);

    if (fd >= 0)
        close(fd);
    o->rc = fd < 0 ? fd : 0;
    return NULL;
}

static void run_openers(struct fixture *f, const struct cas_digest *d, struct cas_fetch_counters *c,
                        int *rcs)
{
    pthread_t t[N_THREADS];
    struct opener o[N_THREADS];

    for (int i = 0; i < N_THREADS; i++) {
        o[i] = (struct opener){.f = f, .d = *d, .c = c};
        assert_int_equal(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        rcs[i] = o[i].rc;
    }
}

static void test_singleflight(void **state)
{
    struct fixture *f = *state;
    struct cas_fetch_counters c = {0};
    struct cas_digest d;
    uint8_t *data = make_blob(1 << 20, 11, &d);
    int rcs[N_THREADS];

    assert_int_equal(cas_store_put(f->up.store, &d, data, 1 << 20), 0);
    f->up.delay = 200000; /* all threads arrive while the first fetch runs */
    run_openers(f, &d, &c, rcs);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(rcs[i], 0);
    /* Normally one; a thread that came after the fetch ended finds it local
     * (a hit), so never more than one fetch for a digest present at once. */
    assert_int_equal(atomic_load(&f->up.calls), 1);
    assert_int_equal(atomic_load(&c.fetched_blobs) + atomic_load(&c.local_hits), N_THREADS);
    free(data);
}

static void test_failure_shared_and_reason(void **state)
{
    struct fixture *f = *state;
    struct cas_fetch_counters c = {0};
    struct cas_digest d;
    uint8_t *data = make_blob(4096, 13, &d);
    int rcs[N_THREADS];
    char reason[512];

    assert_int_equal(cas_store_put(f->up.store, &d, data, 4096), 0);
    f->up.fail = -EHOSTUNREACH;
    f->up.delay = 200000;
    run_openers(f, &d, &c, rcs);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(rcs[i], -EHOSTUNREACH);
    assert_true(atomic_load(&f->up.calls) < N_THREADS);
    assert_int_equal(atomic_load(&c.failures), N_THREADS);
    assert_int_equal(atomic_load(&c.first_error), -EHOSTUNREACH);
    assert_true(cas_digest_equal(&c.first_digest, &d));
    assert_int_equal(cas_store_fetch_error(f->local, &d, reason, sizeof(reason)), -EHOSTUNREACH);
    assert_non_null(strstr(reason, "upstream says"));
    /* Back: the next read works and the failure is forgotten. */
    f->up.fail = 0;
    f->up.delay = 0;
    assert_int_equal(cas_store_contains(f->local, &d), 0);
    int fd = cas_store_open_blob(f->local, &d);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(cas_store_fetch_error(f->local, &d, reason, sizeof(reason)), 0);
    free(data);
}

static void test_missing_upstream(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d;
    uint8_t *data = make_blob(300, 17, &d);
    char reason[512];
    void *got;
    size_t len;

    assert_int_equal(cas_store_get(f->local, &d, &got, &len), -ENOENT);
    assert_int_equal(cas_store_fetch_error(f->local, &d, reason, sizeof(reason)), -ENOENT);
    assert_non_null(strstr(reason, "no such blob"));
    free(data);
}

static void test_corrupt_rejected(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d;
    uint8_t *data = make_blob(70000, 19, &d);
    char reason[512];
    int fd;

    assert_int_equal(cas_store_put(f->up.store, &d, data, 70000), 0);
    f->up.corrupt = true;
    fd = cas_store_open_blob(f->local, &d);
    assert_int_equal(fd, -EBADMSG);
    assert_int_equal(cas_store_contains(f->local, &d), 0);
    assert_int_equal(cas_store_fetch_error(f->local, &d, reason, sizeof(reason)), -EBADMSG);
    free(data);
}

static void test_find_missing(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d[3];
    uint8_t *b0 = make_blob(10, 1, &d[0]), *b1 = make_blob(20, 2, &d[1]),
            *b2 = make_blob(30, 3, &d[2]);
    bool missing[3];

    assert_int_equal(cas_store_put(f->local, &d[0], b0, 10), 0);
    assert_int_equal(cas_store_put(f->up.store, &d[1], b1, 20), 0);
    assert_int_equal(cas_store_find_missing(f->local, d, 3, missing), 0);
    assert_false(missing[0]);
    assert_false(missing[1]);
    assert_true(missing[2]);
    assert_int_equal(cas_store_contains(f->local, &d[1]), 0); /* not fetched */
    free(b0);
    free(b1);
    free(b2);
}

static void test_pins_survive_eviction(void **state)
{
    struct fixture *f = *state;
    struct cas_store *small;
    struct cas_store_options opt = {.max_bytes = 30000};
    struct cas_digest d[6];
    uint8_t *b[6];
    char path[128];

    snprintf(path, sizeof(path), "%s/small", f->dir);
    assert_int_equal(cas_store_open(path, &opt, &small), 0);
    for (int i = 0; i < 6; i++)
        b[i] = make_blob(10000, 100 + (uint32_t)i, &d[i]);
    /* Pinned before it exists, as an action's inputs are. */
    assert_int_equal(cas_store_pin(small, &d[0]), 0);
    assert_int_equal(cas_store_pin(small, &d[0]), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(cas_store_put(small, &d[i], b[i], 10000), 0);
    assert_int_equal(cas_store_contains(small, &d[0]), 1);
    assert_int_equal(cas_store_contains(small, &d[1]), 0); /* the oldest unpinned went */
    cas_store_unpin(small, &d[0]);
    for (int i = 1; i < 6; i++)
        assert_int_equal(cas_store_put(small, &d[i], b[i], 10000), 0);
    assert_int_equal(cas_store_contains(small, &d[0]), 1); /* one pin left */
    cas_store_unpin(small, &d[0]);
    for (int i = 1; i < 6; i++)
        assert_int_equal(cas_store_put(small, &d[i], b[i], 10000), 0);
    assert_int_equal(cas_store_contains(small, &d[0]), 0);
    for (int i = 0; i < 6; i++)
        free(b[i]);
    cas_store_close(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_file_falls_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_singleflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_shared_and_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pins_survive_eviction, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
