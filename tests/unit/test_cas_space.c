/*
 * test_cas_space.c - the store against its filesystem (cas/store_space.c)
 * and what a media error on a read does (cas_store_read_failed).
 *
 * Real ENOSPC and EIO need a small or failing filesystem, which needs root:
 * tests/e2e/test_disk_full.py and test_io_errors.py do that. Here, on the
 * temp dir's filesystem: the effective limit is min(max_bytes, what the
 * filesystem holds minus the headroom); many small blobs are counted in
 * disk blocks, so reopening a store never evicts them for want of room; an
 * EIO from a read drops the blob and another error does not; a waiting
 * lock gives up with -EBUSY after lock_wait_ms; fsync modes parse; an
 * output over max_blob_percent does not fit; a store
 * indexed in the background answers right meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "cas/cas.h"
#include "store_internal.h" /* white-box: the scanning flag */

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
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-test-space-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    strcat(f->dir, "/store");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    cas_store_close(f->store);
    *strrchr(f->dir, '/') = '\0';
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void put_blob(struct cas_store *s, uint32_t seed, size_t len, struct cas_digest *d)
{
    uint8_t *buf = malloc(len);

    assert_non_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7);
    memcpy(buf, &seed, len < sizeof(seed) ? len : sizeof(seed));
    cas_digest_buffer(buf, len, d);
    assert_int_equal(cas_store_put(s, d, buf, len), 0);
    free(buf);
}

static void test_limit_follows_filesystem(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {
        .max_bytes = 0, .disk_headroom_bytes = 1 << 20, .disk_headroom_percent = 50};
    struct cas_store_stats st;
    struct statvfs sv;

    /* No configured limit: the filesystem's free space (minus 1 MiB) is. */
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    assert_int_equal(statvfs(f->dir, &sv), 0);
    cas_store_get_stats(f->store, &st);
    assert_true(st.limit_bytes > 0);
    assert_true(st.limit_bytes <= (uint64_t)sv.f_bavail * sv.f_frsize);
    cas_store_close(f->store);

    /* A configured limit smaller than the disk wins. */
    opt.max_bytes = 12345;
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    cas_store_get_stats(f->store, &st);
    assert_int_equal(st.limit_bytes, 12345);
}

static void test_small_blobs_survive_reopen(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {
        .max_bytes = 0, .disk_headroom_bytes = 1 << 20, .disk_headroom_percent = 5};
    struct cas_store_stats st;
    struct cas_digest d;

    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    for (uint32_t i = 0; i < 300; i++)
        put_blob(f->store, i + 1, 10, &d);
    cas_store_close(f->store);
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    cas_store_get_stats(f->store, &st);
    assert_int_equal(st.blobs, 300);
    assert_int_equal(st.evicted_blobs, 0);
}

/* max_blob_percent: an output over that share of max_bytes is refused
 * (and counted); one under it fits. */
static void test_blob_bound(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {.max_bytes = 100000, .max_blob_percent = 40};
    struct cas_store_stats st;

    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    assert_int_equal(cas_store_max_blob_bytes(f->store), 40000);
    assert_int_equal(cas_store_blob_fits(f->store, 40000), 0);
    assert_int_equal(cas_store_blob_fits(f->store, 40001), -EFBIG);
    cas_store_get_stats(f->store, &st);
    assert_int_equal(st.refused_blobs, 1);
    assert_int_equal(st.max_blob_bytes, 40000);
    cas_store_close(f->store);
    opt.max_blob_percent = 100; /* no bound */
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    assert_int_equal(cas_store_blob_fits(f->store, UINT64_MAX), 0);
}

/* scan_in_background: every blob is found at once, whether the scan has
 * reached it or the lookup finds its file; the count ends right (nothing
 * indexed twice); and while the flag is up a file the index lacks is found
 * on disk (deterministically, with the flag raised by hand). */
static void test_background_scan(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {.max_bytes = 0, .scan_in_background = true};
    struct cas_store_stats st;
    struct cas_digest d[2000], extra;
    char path[512], hex[CAS_HASH_HEX + 1];
    uint8_t content[] = "written behind the index";
    FILE *fp;

    assert_int_equal(cas_store_open(f->dir, NULL, &f->store), 0);
    for (uint32_t i = 0; i < 2000; i++)
        put_blob(f->store, i + 1, 64, &d[i]);
    cas_store_close(f->store);
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    for (int i = 1999; i >= 0; i--)
        assert_int_equal(cas_store_contains(f->store, &d[i]), 1);
    for (int tries = 0; tries < 2000 && atomic_load(&f->store->scanning); tries++)
        usleep(5000);
    assert_false(atomic_load(&f->store->scanning));
    cas_store_get_stats(f->store, &st);
    assert_int_equal(st.blobs, 2000);

    /* A file the index does not know: missing, unless the scan is on. */
    cas_digest_buffer(content, sizeof(content), &extra);
    cas_digest_hex(&extra, hex);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f->dir, hex, hex);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, sizeof(content), fp), sizeof(content));
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(cas_store_contains(f->store, &extra), 0);
    atomic_store(&f->store->scanning, true);
    assert_int_equal(cas_store_contains(f->store, &extra), 1);
    atomic_store(&f->store->scanning, false);
    assert_int_equal(cas_store_contains(f->store, &extra), 1); /* indexed now */
    cas_store_get_stats(f->store, &st);
    assert_int_equal(st.blobs, 2001);
}

static void test_read_failed_eio_drops_blob(void **state)
{
    struct fixture *f = *state;
    struct cas_digest a, b;
    int fd;

    assert_int_equal(cas_store_open(f->dir, NULL, &f->store), 0);
    put_blob(f->store, 1, 5000, &a);
    put_blob(f->store, 2, 5000, &b);

    /* Not a media error: nothing changes. */
    fd = cas_store_open_blob(f->store, &b);
    assert_true(fd >= 0);
    assert_int_equal(cas_store_read_failed(f->store, &b, fd, -EINTR), -EINTR);
    close(fd);
    assert_int_equal(cas_store_contains(f->store, &b), 1);

    /* EIO: the blob is gone from the index and the disk, and can come back. */
    fd = cas_store_open_blob(f->store, &a);
    assert_true(fd >= 0);
    assert_int_equal(cas_store_read_failed(f->store, &a, fd, -EIO), -ENOENT);
    close(fd);
    assert_int_equal(cas_store_contains(f->store, &a), 0);
    assert_int_equal(cas_store_open_blob(f->store, &a), -ENOENT);
    put_blob(f->store, 1, 5000, &a);
    assert_int_equal(cas_store_contains(f->store, &a), 1);
    fd = cas_store_open_blob(f->store, &a);
    assert_true(fd >= 0);
    close(fd);
}

static void test_lock_wait_gives_up(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {.lock_wait_ms = 200};
    struct cas_store *second = NULL;

    assert_int_equal(cas_store_open(f->dir, NULL, &f->store), 0);
    assert_int_equal(cas_store_open(f->dir, &opt, &second), -EBUSY);
    assert_null(second);
}

static void test_fsync_modes(void **state)
{
    struct fixture *f = *state;
    struct cas_store_options opt = {0};
    struct cas_digest d;
    void *buf;
    size_t len;

    assert_int_equal(cas_fsync_mode_parse("none", &opt.fsync), 0);
    assert_int_equal(opt.fsync, CAS_FSYNC_NONE);
    assert_int_equal(cas_fsync_mode_parse("data", &opt.fsync), 0);
    assert_int_equal(cas_fsync_mode_parse("bogus", &opt.fsync), -EINVAL);
    assert_int_equal(cas_fsync_mode_parse("full", &opt.fsync), 0);
    assert_int_equal(opt.fsync, CAS_FSYNC_FULL);
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
    put_blob(f->store, 9, 70000, &d);
    assert_int_equal(cas_ac_put(f->store, "", &d, "x", 1), 0);
    assert_int_equal(cas_store_get(f->store, &d, &buf, &len), 0);
    assert_int_equal(len, 70000);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_limit_follows_filesystem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_blobs_survive_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_failed_eio_drops_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_wait_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_modes, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
