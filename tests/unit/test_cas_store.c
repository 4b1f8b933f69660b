/*
 * test_cas_store.c - unit tests for the blob store (cas/store.c, cas/writer.c,
 * cas/store_index.c): round trips, rejected uploads leaving nothing behind,
 * concurrent writers, LRU eviction, corruption and truncation found on first
 * read, start-up clean-up, and ingesting files by rename, link and copy.
 * Every test works in its own mkdtemp directory under /tmp.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
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

/* --- helpers --- */

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

static uint8_t *make_blob(size_t len, uint32_t seed, struct cas_digest *d)
{
    uint8_t *buf = malloc(len ? len : 1);

    assert_non_null(buf);
    fill_pattern(buf, len, seed);
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

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_in(const struct fixture *f, const char *rel, char *out)
{
    snprintf(out, PATH_MAX, "%s/%s", f->dir, rel);
}

static void blob_file(const struct fixture *f, const struct cas_digest *d, char *out)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(d, hex);
    snprintf(out, PATH_MAX, "%s/blobs/%.2s/%s", f->dir, hex, hex);
}

static bool file_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

/* Regular files (and other non-directories) below dir, recursively. */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
        assert_int_equal(lstat(sub, &st), 0);
        n += S_ISDIR(st.st_mode) ? count_files(sub) : 1;
    }
    closedir(d);
    return n;
}

static int count_in(const struct fixture *f, const char *rel)
{
    char path[PATH_MAX];

    path_in(f, rel, path);
    return count_files(path);
}

/* Writes a file, creating its parent (a shard directory the store may not
 * have made yet). */
static void write_file(const char *path, const void *buf, size_t len)
{
    char parent[PATH_MAX];
    int fd;

    snprintf(parent, sizeof(parent), "%s", path);
    *strrchr(parent, '/') = '\0';
    assert_true(mkdir(parent, 0755) == 0 || errno == EEXIST);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void assert_get_equals(struct cas_store *s, const struct cas_digest *d, const void *want,
                              size_t len)
{
    void *buf = NULL;
    size_t got = 12345;

    assert_int_equal(cas_store_get(s, d, &buf, &got), 0);
    assert_int_equal(got, len);
    assert_non_null(buf);
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void reopen(struct fixture *f, uint64_t max_bytes)
{
    struct cas_store_options opt = {.max_bytes = max_bytes};

    cas_store_close(f->store);
    f->store = NULL;
    assert_int_equal(cas_store_open(f->dir, &opt, &f->store), 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    /* The store directory itself does not exist yet: open creates it. */
    strcat(f->dir, "/store");
    if (cas_store_open(f->dir, NULL, &f->store) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    cas_store_close(f->store);
    *strrchr(f->dir, '/') = '\0';
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* --- tests --- */

static void test_open_layout(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX];
    struct stat st;

    path_in(f, "blobs", path);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    path_in(f, "tmp", path);
    assert_string_equal(cas_store_tmp_dir(f->store), path);
    assert_int_equal(stat(path, &st), 0);
    path_in(f, "ac", path);
    assert_int_equal(stat(path, &st), 0);
    /* one process per store directory */
    struct cas_store *second = NULL;
    assert_int_equal(cas_store_open(f->dir, NULL, &second), -EBUSY);
    assert_null(second);
}

static void test_put_get_round_trip(void **state)
{
    struct fixture *f = *state;
    const size_t sizes[] = {1, 5, 4096, 1024 * 1024 + 17, 3 * 1024 * 1024};
    struct cas_store_stats stats;
    uint64_t total = 0;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct cas_digest d;
        uint8_t *buf = make_blob(sizes[i], (uint32_t)i + 1, &d);
        char path[PATH_MAX], want_path[PATH_MAX];
        uint8_t *back = malloc(sizes[i]);
        struct stat st;
        int fd;

        assert_int_equal(cas_store_contains(f->store, &d), 0);
        assert_int_equal(cas_store_get(f->store, &d, (void **)&back, &(size_t){0}), -ENOENT);
        assert_int_equal(cas_store_put(f->store, &d, buf, sizes[i]), 0);
        assert_int_equal(cas_store_put(f->store, &d, buf, sizes[i]), 0); /* again: fine */
        assert_int_equal(cas_store_contains(f->store, &d), 1);
        assert_get_equals(f->store, &d, buf, sizes[i]);

        fd = cas_store_open_blob(f->store, &d);
        assert_true(fd >= 0);
        assert_int_equal(read(fd, back, sizes[i]), (ssize_t)sizes[i]);
        assert_memory_equal(back, buf, sizes[i]);
        assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        close(fd);

        assert_int_equal(cas_store_blob_path(f->store, &d, path, sizeof(path)), 0);
        blob_file(f, &d, want_path);
        assert_string_equal(path, want_path);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0444);
        assert_int_equal(st.st_size, (off_t)sizes[i]);
        assert_int_equal(cas_store_blob_path(f->store, &d, path, 10), -ENAMETOOLONG);
        total += sizes[i];
        free(back);
        free(buf);
    }
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 5);
    assert_int_equal(stats.bytes, total);
    assert_int_equal(stats.evicted_blobs, 0);
    assert_int_equal(stats.corrupt_blobs, 0);
    assert_int_equal(count_in(f, "tmp"), 0);

    /* The index survives a restart (rebuilt by the scan), unverified blobs
     * are re-hashed and served. */
    reopen(f, 0);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 5);
    assert_int_equal(stats.bytes, total);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct cas_digest d;
        uint8_t *buf = make_blob(sizes[i], (uint32_t)i + 1, &d);

        assert_int_equal(cas_store_contains(f->store, &d), 1);
        assert_get_equals(f->store, &d, buf, sizes[i]);
        free(buf);
    }
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 0);
}

static void test_put_rejects_mismatch(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d, wrong;
    uint8_t *buf = make_blob(1000, 7, &d);
    struct cas_store_stats stats;

    wrong = d;
    wrong.size = 999;
    assert_int_equal(cas_store_put(f->store, &wrong, buf, 1000), -EINVAL);
    assert_int_equal(cas_store_put(f->store, &wrong, buf, 999), -EINVAL);
    wrong = d;
    wrong.hash[5] ^= 0x40;
    assert_int_equal(cas_store_put(f->store, &wrong, buf, 1000), -EINVAL);
    wrong = d;
    wrong.size = -1;
    assert_int_equal(cas_store_put(f->store, &wrong, buf, 1000), -EINVAL);
    buf[999] ^= 1; /* right digest, wrong bytes */
    assert_int_equal(cas_store_put(f->store, &d, buf, 1000), -EINVAL);

    assert_int_equal(cas_store_contains(f->store, &d), 0);
    assert_int_equal(cas_store_contains(f->store, &wrong), -EINVAL);
    assert_int_equal(count_in(f, "blobs"), 0);
    assert_int_equal(count_in(f, "tmp"), 0);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 0);
    assert_int_equal(stats.bytes, 0);
    free(buf);
}

static void test_empty_blob(void **state)
{
    struct fixture *f = *state;
    const struct cas_digest *empty = cas_digest_empty();
    struct cas_digest not_empty = *empty;
    char path[PATH_MAX];
    struct stat st;
    void *buf = NULL;
    size_t len = 99;
    int fd;

    not_empty.hash[0] ^= 1;
    assert_int_equal(cas_store_contains(f->store, empty), 1);
    assert_int_equal(cas_store_contains(f->store, &not_empty), 0);
    assert_int_equal(cas_store_put(f->store, empty, "", 0), 0);
    assert_int_equal(cas_store_put(f->store, &not_empty, "", 0), -EINVAL);
    assert_int_equal(cas_store_get(f->store, empty, &buf, &len), 0);
    assert_int_equal(len, 0);
    free(buf);
    assert_int_equal(cas_store_get(f->store, &not_empty, &buf, &len), -ENOENT);
    assert_int_equal(cas_store_open_blob(f->store, &not_empty), -ENOENT);

    /* A real file, even after someone removed it. */
    for (int round = 0; round < 2; round++) {
        assert_int_equal(cas_store_blob_path(f->store, empty, path, sizeof(path)), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_size, 0);
        fd = cas_store_open_blob(f->store, empty);
        assert_true(fd >= 0);
        assert_int_equal(read(fd, path, 1), 0);
        close(fd);
        assert_int_equal(unlink(path), 0);
    }

    /* Someone wrote into the empty blob's file: it is replaced, not served. */
    assert_int_equal(cas_store_blob_path(f->store, empty, path, sizeof(path)), 0);
    assert_int_equal(chmod(path, 0644), 0);
    write_file(path, "oops", 4);
    fd = cas_store_open_blob(f->store, empty);
    assert_true(fd > 2);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 0);
    close(fd);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);

    /* Empty uploads through the writer commit fine. */
    struct cas_writer *w;
    assert_int_equal(cas_writer_begin(f->store, empty, &w), 0);
    assert_int_equal(cas_writer_append(w, "", 0), 0);
    assert_int_equal(cas_writer_commit(w), 0);
    assert_int_equal(count_in(f, "tmp"), 0);
}

static void test_writer_commit(void **state)
{
    struct fixture *f = *state;
    const size_t len = 2 * 1024 * 1024 + 4321;
    struct cas_digest d;
    uint8_t *buf = make_blob(len, 11, &d);
    struct cas_writer *w = NULL;
    size_t off = 0, step = 1;

    assert_int_equal(cas_writer_begin(f->store, &d, &w), 0);
    assert_non_null(w);
    assert_int_equal(count_in(f, "tmp"), 1);
    /* odd chunk sizes, both smaller and larger than the writer's buffer */
    while (off < len) {
        size_t n = step < len - off ? step : len - off;

        assert_int_equal(cas_writer_append(w, buf + off, n), 0);
        off += n;
        assert_int_equal(cas_writer_offset(w), (int64_t)off);
        step = step * 5 + 3;
    }
    assert_int_equal(cas_store_contains(f->store, &d), 0); /* not before commit */
    assert_int_equal(cas_writer_append(w, buf, 1), -EFBIG);
    assert_int_equal(cas_writer_offset(w), (int64_t)len);
    assert_int_equal(cas_writer_commit(w), 0);
    assert_int_equal(cas_store_contains(f->store, &d), 1);
    assert_get_equals(f->store, &d, buf, len);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "blobs"), 1);
    free(buf);
}

static void test_writer_abort_and_mismatch(void **state)
{
    struct fixture *f = *state;
    const size_t len = 100000;
    struct cas_digest d;
    uint8_t *buf = make_blob(len, 12, &d);
    struct cas_writer *w = NULL;

    /* abort halfway */
    assert_int_equal(cas_writer_begin(f->store, &d, &w), 0);
    assert_int_equal(cas_writer_append(w, buf, len / 2), 0);
    cas_writer_abort(w);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "blobs"), 0);

    /* too few bytes */
    assert_int_equal(cas_writer_begin(f->store, &d, &w), 0);
    assert_int_equal(cas_writer_append(w, buf, len - 1), 0);
    assert_int_equal(cas_writer_commit(w), -EINVAL);
    assert_int_equal(count_in(f, "tmp"), 0);

    /* too many bytes: refused on append, then commit of the rest is fine */
    assert_int_equal(cas_writer_begin(f->store, &d, &w), 0);
    assert_int_equal(cas_writer_append(w, buf, len - 10), 0);
    assert_int_equal(cas_writer_append(w, buf, 11), -EFBIG);
    assert_int_equal(cas_writer_offset(w), (int64_t)(len - 10));
    cas_writer_abort(w);
    assert_int_equal(count_in(f, "tmp"), 0);

    /* right size, wrong bytes */
    assert_int_equal(cas_writer_begin(f->store, &d, &w), 0);
    assert_int_equal(cas_writer_append(w, buf, len / 2), 0);
    buf[len / 2] ^= 0x80;
    assert_int_equal(cas_writer_append(w, buf + len / 2, len - len / 2), 0);
    buf[len / 2] ^= 0x80;
    assert_int_equal(cas_writer_commit(w), -EINVAL);

    /* negative expected size */
    struct cas_digest bad = d;
    bad.size = -3;
    assert_int_equal(cas_writer_begin(f->store, &bad, &w), -EINVAL);

    assert_int_equal(cas_store_contains(f->store, &d), 0);
    assert_int_equal(count_in(f, "tmp"), 0);
    assert_int_equal(count_in(f, "blobs"), 0);
    free(buf);
}

struct race {
    struct cas_store *store;
    const uint8_t *buf;
    size_t len;
    struct cas_digest d;
    int index;
    int result;
};

static void *race_writer(void *arg)
{
    struct race *r = arg;
    struct cas_writer *w = NULL;
    size_t chunk = 65536 + (size_t)r->index * 1000;

    if (r->index % 3 == 2) {
        r->result = cas_store_put(r->store, &r->d, r->buf, r->len);
        return NULL;
    }
    r->result = cas_writer_begin(r->store, &r->d, &w);
    for (size_t off = 0; r->result == 0 && off < r->len; off += chunk) {
        size_t n = chunk < r->len - off ? chunk : r->len - off;

        r->result = cas_writer_append(w, r->buf + off, n);
    }
    if (r->result == 0)
        r->result = cas_writer_commit(w);
    else if (w != NULL)
        cas_writer_abort(w);
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, ROUNDS = 5 };
    const size_t len = 2 * 1024 * 1024 + 5;
    struct race races[THREADS];
    pthread_t threads[THREADS];
    struct cas_store_stats stats;

    for (int round = 0; round < ROUNDS; round++) {
        struct cas_digest d;
        uint8_t *buf = make_blob(len, 100 + (uint32_t)round, &d);

        for (int i = 0; i < THREADS; i++) {
            races[i] = (struct race){
                .store = f->store, .buf = buf, .len = len, .d = d, .index = i, .result = 1};
            assert_int_equal(pthread_create(&threads[i], NULL, race_writer, &races[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) {
            assert_int_equal(pthread_join(threads[i], NULL), 0);
            assert_int_equal(races[i].result, 0);
        }
        assert_int_equal(cas_store_contains(f->store, &d), 1);
        assert_get_equals(f->store, &d, buf, len);
        free(buf);
    }
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, ROUNDS);
    assert_int_equal(stats.bytes, (uint64_t)ROUNDS * len);
    assert_int_equal(count_in(f, "blobs"), ROUNDS);
    assert_int_equal(count_in(f, "tmp"), 0);
}

static void set_blob_time(const struct fixture *f, const struct cas_digest *d, time_t when)
{
    struct timespec times[2] = {{.tv_sec = when}, {.tv_sec = when}};
    char path[PATH_MAX];

    blob_file(f, d, path);
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
}

static void test_eviction(void **state)
{
    struct fixture *f = *state;
    struct cas_digest a, b, c, d, big;
    uint8_t *ba, *bb, *bc, *bd, *bbig;
    struct cas_store_stats stats;
    char path[PATH_MAX];
    int fd;

    reopen(f, 3000);
    ba = make_blob(1000, 21, &a);
    bb = make_blob(1000, 22, &b);
    bc = make_blob(1000, 23, &c);
    bd = make_blob(1000, 24, &d);
    assert_int_equal(cas_store_put(f->store, &a, ba, 1000), 0);
    assert_int_equal(cas_store_put(f->store, &b, bb, 1000), 0);
    assert_int_equal(cas_store_put(f->store, &c, bc, 1000), 0);
    /* At the limit, nothing goes. Touch a: b is now the oldest
     * (newest first: a, c, b). */
    assert_int_equal(cas_store_contains(f->store, &a), 1);
    blob_file(f, &b, path);
    fd = open(path, O_RDONLY | O_CLOEXEC); /* an open fd outlives eviction */
    assert_true(fd >= 0);
    assert_int_equal(cas_store_put(f->store, &d, bd, 1000), 0);

    assert_int_equal(cas_store_contains(f->store, &b), 0);
    blob_file(f, &b, path);
    assert_false(file_exists(path));
    assert_int_equal(cas_store_contains(f->store, &a), 1);
    assert_int_equal(cas_store_contains(f->store, &c), 1);
    assert_int_equal(cas_store_contains(f->store, &d), 1);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 3);
    assert_int_equal(stats.bytes, 3000);
    assert_int_equal(stats.evicted_blobs, 1);
    assert_int_equal(stats.evicted_bytes, 1000);
    {
        uint8_t back[1000];

        assert_int_equal(pread(fd, back, sizeof(back), 0), 1000);
        assert_memory_equal(back, bb, 1000);
        close(fd);
    }

    /* get touches too: newest first d, c, a; putting b evicts a. */
    assert_get_equals(f->store, &c, bc, 1000);
    assert_get_equals(f->store, &d, bd, 1000);
    assert_int_equal(cas_store_put(f->store, &b, bb, 1000), 0);
    assert_int_equal(cas_store_contains(f->store, &a), 0);
    assert_int_equal(cas_store_contains(f->store, &b), 1);

    /* A blob larger than the limit is kept (never evict what was just
     * inserted); everything else goes. */
    bbig = make_blob(5000, 25, &big);
    assert_int_equal(cas_store_put(f->store, &big, bbig, 5000), 0);
    assert_int_equal(cas_store_contains(f->store, &big), 1);
    assert_get_equals(f->store, &big, bbig, 5000);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 1);
    assert_int_equal(stats.bytes, 5000);
    assert_int_equal(stats.evicted_blobs, 5);
    assert_int_equal(stats.evicted_bytes, 5000);
    assert_int_equal(count_in(f, "blobs"), 1);

    /* Reopening with a lower limit evicts at start-up. */
    reopen(f, 0);
    assert_int_equal(cas_store_put(f->store, &a, ba, 1000), 0);
    assert_int_equal(cas_store_put(f->store, &b, bb, 1000), 0);
    assert_int_equal(cas_store_put(f->store, &c, bc, 1000), 0);
    assert_int_equal(cas_store_put(f->store, &d, bd, 1000), 0);
    assert_int_equal(count_in(f, "blobs"), 5);
    /* The scan restores the LRU order from the files' access times. */
    set_blob_time(f, &big, 100);
    set_blob_time(f, &a, 200);
    set_blob_time(f, &b, 300);
    set_blob_time(f, &c, 400);
    set_blob_time(f, &d, 500);
    reopen(f, 2000);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 2);
    assert_int_equal(stats.bytes, 2000);
    assert_int_equal(stats.evicted_blobs, 3);
    assert_int_equal(count_in(f, "blobs"), 2);
    assert_int_equal(cas_store_contains(f->store, &c), 1);
    assert_int_equal(cas_store_contains(f->store, &d), 1);
    free(ba);
    free(bb);
    free(bc);
    free(bd);
    free(bbig);
}

struct churn {
    struct cas_store *store;
    uint8_t **bufs;
    struct cas_digest *digests;
    size_t *lens;
    int blobs;
    int index;
    int bad_reads;
    int errors;
};

static void *churn_worker(void *arg)
{
    struct churn *c = arg;
    uint32_t x = 2463534242u + (uint32_t)c->index * 7919u;

    for (int i = 0; i < 400; i++) {
        int k, op;

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        k = (int)(x % (uint32_t)c->blobs);
        op = (int)((x >> 8) % 5);
        if (op == 0) {
            if (cas_store_put(c->store, &c->digests[k], c->bufs[k], c->lens[k]) != 0)
                c->errors++;
        } else if (op == 1) {
            struct cas_writer *w;

            if (cas_writer_begin(c->store, &c->digests[k], &w) != 0 ||
                cas_writer_append(w, c->bufs[k], c->lens[k]) != 0 || cas_writer_commit(w) != 0)
                c->errors++;
        } else if (op == 2) {
            void *buf = NULL;
            size_t len = 0;
            int rc = cas_store_get(c->store, &c->digests[k], &buf, &len);

            if (rc == 0 && (len != c->lens[k] || memcmp(buf, c->bufs[k], len) != 0))
                c->bad_reads++;
            else if (rc != 0 && rc != -ENOENT)
                c->errors++;
            free(buf);
        } else if (op == 3) {
            int fd = cas_store_open_blob(c->store, &c->digests[k]);

            if (fd >= 0) {
                struct cas_digest got;

                if (cas_digest_fd(fd, &got) != 0 || !cas_digest_equal(&got, &c->digests[k]))
                    c->bad_reads++;
                close(fd);
            } else if (fd != -ENOENT) {
                c->errors++;
            }
        } else if (cas_store_contains(c->store, &c->digests[k]) < 0) {
            c->errors++;
        }
    }
    return NULL;
}

/* Many threads putting, streaming, reading and checking a small set of blobs
 * while eviction runs all the time: every successful read has the right
 * bytes, and afterwards the index and the files on disk agree. */
static void test_concurrent_churn(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 6, BLOBS = 24 };
    uint8_t *bufs[BLOBS];
    struct cas_digest digests[BLOBS];
    size_t lens[BLOBS];
    struct churn work[THREADS];
    pthread_t threads[THREADS];
    struct cas_store_stats stats;
    uint64_t on_disk = 0;

    reopen(f, 200000);
    for (int i = 0; i < BLOBS; i++) {
        lens[i] = 1000 + (size_t)i * 3000;
        bufs[i] = make_blob(lens[i], 500 + (uint32_t)i, &digests[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        work[i] = (struct churn){.store = f->store,
                                 .bufs = bufs,
                                 .digests = digests,
                                 .lens = lens,
                                 .blobs = BLOBS,
                                 .index = i};
        assert_int_equal(pthread_create(&threads[i], NULL, churn_worker, &work[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(work[i].bad_reads, 0);
        assert_int_equal(work[i].errors, 0);
    }
    cas_store_get_stats(f->store, &stats);
    assert_true(stats.evicted_blobs > 0);
    assert_int_equal(stats.corrupt_blobs, 0);
    assert_int_equal(count_in(f, "blobs"), (int)stats.blobs);
    assert_int_equal(count_in(f, "tmp"), 0);
    for (int i = 0; i < BLOBS; i++) {
        char path[PATH_MAX];
        struct stat st;
        int present = cas_store_contains(f->store, &digests[i]);

        blob_file(f, &digests[i], path);
        assert_int_equal(present, lstat(path, &st) == 0 ? 1 : 0);
        if (present)
            on_disk += (uint64_t)st.st_size;
        free(bufs[i]);
    }
    assert_int_equal(on_disk, stats.bytes);
    assert_true(stats.bytes <= 200000 + lens[BLOBS - 1]);
}

/* Overwrites a stored blob's file in place, as a disk error or a careless
 * admin would. */
static void damage_blob(const struct fixture *f, const struct cas_digest *d, off_t new_size,
                        bool flip)
{
    char path[PATH_MAX];
    int fd;

    blob_file(f, d, path);
    assert_int_equal(chmod(path, 0644), 0);
    fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    if (flip) {
        uint8_t byte;

        assert_int_equal(pread(fd, &byte, 1, d->size / 2), 1);
        byte ^= 0x01;
        assert_int_equal(pwrite(fd, &byte, 1, d->size / 2), 1);
    }
    if (new_size >= 0)
        assert_int_equal(ftruncate(fd, new_size), 0);
    close(fd);
    assert_int_equal(chmod(path, 0444), 0);
}

static void test_corrupt_detected_after_restart(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d1, d2, d3, ok;
    uint8_t *b1 = make_blob(300000, 31, &d1);
    uint8_t *b2 = make_blob(5000, 32, &d2);
    uint8_t *b3 = make_blob(7000, 33, &d3);
    uint8_t *bok = make_blob(4000, 34, &ok);
    struct cas_store_stats stats;
    char path[PATH_MAX];
    void *buf = NULL;
    size_t len = 0;

    assert_int_equal(cas_store_put(f->store, &d1, b1, d1.size), 0);
    assert_int_equal(cas_store_put(f->store, &d2, b2, d2.size), 0);
    assert_int_equal(cas_store_put(f->store, &d3, b3, d3.size), 0);
    assert_int_equal(cas_store_put(f->store, &ok, bok, ok.size), 0);
    cas_store_close(f->store);
    f->store = NULL;
    damage_blob(f, &d1, -1, true);
    damage_blob(f, &d2, -1, true);
    damage_blob(f, &d3, -1, true);
    reopen(f, 0);

    /* The index does not know yet; the first read finds out. */
    assert_int_equal(cas_store_contains(f->store, &d1), 1);
    assert_int_equal(cas_store_get(f->store, &d1, &buf, &len), -ENOENT);
    assert_null(buf);
    blob_file(f, &d1, path);
    assert_false(file_exists(path));
    assert_int_equal(cas_store_contains(f->store, &d1), 0);

    /* The same through open_blob and blob_path (hardlink staging must not
     * get a path to bad bytes either). */
    assert_int_equal(cas_store_open_blob(f->store, &d2), -ENOENT);
    blob_file(f, &d2, path);
    assert_false(file_exists(path));
    assert_int_equal(cas_store_blob_path(f->store, &d3, path, sizeof(path)), -ENOENT);
    blob_file(f, &d3, path);
    assert_false(file_exists(path));

    /* The undamaged blob is fine. */
    assert_get_equals(f->store, &ok, bok, ok.size);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 3);
    assert_int_equal(stats.blobs, 1);
    assert_int_equal(stats.bytes, (uint64_t)ok.size);

    /* Uploading again works. */
    assert_int_equal(cas_store_put(f->store, &d1, b1, d1.size), 0);
    assert_get_equals(f->store, &d1, b1, d1.size);
    free(b1);
    free(b2);
    free(b3);
    free(bok);
}

static void test_truncated_detected(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d, e, g;
    uint8_t *bd = make_blob(10000, 41, &d);
    uint8_t *be = make_blob(10000, 42, &e);
    uint8_t *bg = make_blob(10000, 43, &g);
    struct cas_store_stats stats;
    char path[PATH_MAX];
    void *buf = NULL;
    size_t len = 0;

    assert_int_equal(cas_store_put(f->store, &d, bd, d.size), 0);
    assert_int_equal(cas_store_put(f->store, &e, be, e.size), 0);
    assert_int_equal(cas_store_put(f->store, &g, bg, g.size), 0);
    cas_store_close(f->store);
    f->store = NULL;
    damage_blob(f, &d, 4000, false);
    damage_blob(f, &e, 0, false);
    reopen(f, 0);

    assert_int_equal(cas_store_get(f->store, &d, &buf, &len), -ENOENT);
    blob_file(f, &d, path);
    assert_false(file_exists(path));
    assert_int_equal(cas_store_open_blob(f->store, &e), -ENOENT);
    blob_file(f, &e, path);
    assert_false(file_exists(path));
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 2);

    /* A verified blob truncated behind our back while the store runs: the
     * size check on open catches it. */
    assert_get_equals(f->store, &g, bg, g.size); /* now verified */
    damage_blob(f, &g, 9999, false);
    assert_int_equal(cas_store_open_blob(f->store, &g), -ENOENT);
    blob_file(f, &g, path);
    assert_false(file_exists(path));
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 3);
    assert_int_equal(stats.blobs, 0);
    free(bd);
    free(be);
    free(bg);
}

static void test_wrong_size_request_keeps_good_blob(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d, asked;
    uint8_t *bd = make_blob(2000, 44, &d);
    struct cas_store_stats stats;

    assert_int_equal(cas_store_put(f->store, &d, bd, d.size), 0);
    reopen(f, 0); /* unverified again */
    asked = d;
    asked.size = 1999;
    assert_int_equal(cas_store_contains(f->store, &asked), 0);
    assert_int_equal(cas_store_open_blob(f->store, &asked), -ENOENT);
    assert_get_equals(f->store, &d, bd, d.size);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 0);
    free(bd);
}

static void test_missing_file_dropped(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d;
    uint8_t *bd = make_blob(3000, 45, &d);
    struct cas_store_stats stats;
    char path[PATH_MAX];

    assert_int_equal(cas_store_put(f->store, &d, bd, d.size), 0);
    blob_file(f, &d, path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(cas_store_contains(f->store, &d), 1); /* the index is authoritative */
    assert_int_equal(cas_store_open_blob(f->store, &d), -ENOENT);
    assert_int_equal(cas_store_contains(f->store, &d), 0);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 0);
    assert_int_equal(stats.bytes, 0);
    free(bd);
}

static void test_startup_cleanup(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d, other;
    uint8_t *bd = make_blob(1234, 51, &d);
    uint8_t *bo = make_blob(10, 52, &other);
    char path[PATH_MAX], hex[CAS_HASH_HEX + 1], other_hex[CAS_HASH_HEX + 1];
    struct cas_store_stats stats;
    struct cas_writer *w;

    assert_int_equal(cas_store_put(f->store, &d, bd, d.size), 0);
    /* an upload in flight when the process dies */
    assert_int_equal(cas_writer_begin(f->store, &other, &w), 0);
    assert_int_equal(cas_writer_append(w, bo, 5), 0);
    cas_store_close(f->store); /* as if the process died here */
    f->store = NULL;

    path_in(f, "tmp/upload-stale1", path);
    write_file(path, "partial", 7);
    path_in(f, "tmp/whatever", path);
    write_file(path, "x", 1);
    path_in(f, "tmp/a-dir", path);
    assert_int_equal(mkdir(path, 0755), 0);
    /* junk in blobs/: a name in the wrong shard, a short name, uppercase, a
     * stray file at the top */
    cas_digest_hex(&d, hex);
    cas_digest_hex(&other, other_hex);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f->dir, hex[0] == '0' ? "11" : "00", hex);
    write_file(path, bd, 1234);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%.10s", f->dir, other_hex, other_hex);
    write_file(path, "junk", 4);
    for (int i = 0; other_hex[i]; i++)
        if (other_hex[i] >= 'a')
            other_hex[i] = (char)(other_hex[i] - 32);
    snprintf(path, sizeof(path), "%s/blobs/%.2s/%s", f->dir, hex, other_hex);
    write_file(path, bo, 10);
    path_in(f, "blobs/stray", path);
    write_file(path, "junk", 4);

    assert_int_equal(count_in(f, "tmp"), 3);
    reopen(f, 0);
    assert_int_equal(count_in(f, "tmp"), 0);
    cas_writer_abort(w); /* its temp file is already gone */
    path_in(f, "tmp/a-dir", path);
    assert_true(file_exists(path)); /* directories are left alone */
    assert_int_equal(count_in(f, "blobs"), 1);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 1);
    assert_int_equal(stats.bytes, 1234);
    assert_get_equals(f->store, &d, bd, d.size);
    assert_int_equal(cas_store_contains(f->store, &other), 0);
    free(bd);
    free(bo);
}

static void test_put_file_rename(void **state)
{
    struct fixture *f = *state;
    struct cas_digest want, got;
    uint8_t *buf = make_blob(500000, 61, &want);
    char src[PATH_MAX], path[PATH_MAX];
    struct cas_store_stats stats;
    struct stat st;

    path_in(f, "out", src);
    write_file(src, buf, want.size);
    assert_int_equal(cas_store_put_file(f->store, src, true, &got), 0);
    assert_true(cas_digest_equal(&want, &got));
    assert_false(file_exists(src));
    blob_file(f, &want, path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0444);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(cas_store_contains(f->store, &want), 1);
    assert_get_equals(f->store, &want, buf, want.size);

    /* Already present: the source just goes away. */
    write_file(src, buf, want.size);
    assert_int_equal(cas_store_put_file(f->store, src, true, &got), 0);
    assert_true(cas_digest_equal(&want, &got));
    assert_false(file_exists(src));

    /* The source is a hardlink of the blob itself (staged input, untouched). */
    assert_int_equal(link(path, src), 0);
    assert_int_equal(cas_store_put_file(f->store, src, true, &got), 0);
    assert_true(cas_digest_equal(&want, &got));
    assert_false(file_exists(src));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_get_equals(f->store, &want, buf, want.size);

    /* Empty file. */
    write_file(src, "", 0);
    assert_int_equal(cas_store_put_file(f->store, src, true, &got), 0);
    assert_true(cas_digest_equal(cas_digest_empty(), &got));
    assert_false(file_exists(src));

    /* Not a regular file; missing file. */
    assert_int_equal(cas_store_put_file(f->store, f->dir, true, &got), -EINVAL);
    assert_int_equal(cas_store_put_file(f->store, src, true, &got), -ENOENT);

    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.blobs, 1);
    assert_int_equal(count_in(f, "tmp"), 0);
    free(buf);
}

static void test_put_file_link(void **state)
{
    struct fixture *f = *state;
    struct cas_digest want, got;
    uint8_t *buf = make_blob(70000, 62, &want);
    char src[PATH_MAX], path[PATH_MAX];
    struct stat src_st, blob_st;

    path_in(f, "out-linked", src);
    write_file(src, buf, want.size);
    assert_int_equal(cas_store_put_file(f->store, src, false, &got), 0);
    assert_true(cas_digest_equal(&want, &got));
    blob_file(f, &want, path);
    assert_int_equal(stat(src, &src_st), 0);
    assert_int_equal(stat(path, &blob_st), 0);
    assert_int_equal(src_st.st_ino, blob_st.st_ino); /* linked, not copied */
    assert_int_equal(blob_st.st_nlink, 2);
    assert_int_equal(blob_st.st_mode & 07777, 0444);
    assert_get_equals(f->store, &want, buf, want.size);
    assert_int_equal(count_in(f, "tmp"), 0);

    /* The source name is still writable by its owner: a linked blob is
     * re-hashed on its first read, so damage done through the other name
     * before that read is caught. */
    struct cas_digest d2;
    uint8_t *b2 = make_blob(9000, 63, &d2);
    char src2[PATH_MAX];
    struct cas_store_stats stats;

    path_in(f, "out-linked-2", src2);
    write_file(src2, b2, d2.size);
    assert_int_equal(cas_store_put_file(f->store, src2, false, &got), 0);
    assert_true(cas_digest_equal(&d2, &got));
    assert_int_equal(chmod(src2, 0644), 0);
    b2[0] ^= 1;
    write_file(src2, b2, d2.size); /* O_TRUNC on the shared inode */
    assert_int_equal(cas_store_open_blob(f->store, &d2), -ENOENT);
    cas_store_get_stats(f->store, &stats);
    assert_int_equal(stats.corrupt_blobs, 1);
    free(b2);
    free(buf);
}

static void test_put_file_copy_other_filesystem(void **state)
{
    struct fixture *f = *state;
    struct cas_digest want, got;
    uint8_t *buf = make_blob(1500000, 64, &want);
    char src[] = "/dev/shm/casbox-test-src-XXXXXX";
    struct stat shm_st, store_st;
    char path[PATH_MAX];
    int fd;

    if (stat("/dev/shm", &shm_st) < 0 || stat(f->dir, &store_st) < 0 ||
        shm_st.st_dev == store_st.st_dev) {
        free(buf);
        skip();
    }
    fd = mkstemp(src);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, want.size), want.size);
    close(fd);
    assert_int_equal(cas_store_put_file(f->store, src, false, &got), 0);
    assert_true(cas_digest_equal(&want, &got));
    assert_true(file_exists(src));
    assert_get_equals(f->store, &want, buf, want.size);
    blob_file(f, &want, path);
    assert_int_equal(stat(path, &store_st), 0);
    assert_int_equal(store_st.st_mode & 07777, 0444);
    assert_int_equal(store_st.st_nlink, 1);

    assert_int_equal(cas_store_put_file(f->store, src, true, &got), 0);
    assert_false(file_exists(src));
    assert_int_equal(count_in(f, "tmp"), 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_rejects_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_abort_and_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_detected_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_size_request_keeps_good_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_startup_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_copy_other_filesystem, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
