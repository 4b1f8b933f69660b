/*
 * test_cas_ingest.c - the batch ingestion engine (cas_ingest_*) on both of
 * its paths, io_uring and the thread pool (small files batched through each
 * worker's ring), and output collection
 * through it: digests against the real sha256sum for 0-byte, 1-byte, 4 KiB,
 * 1 MiB+1 and 256 MiB files and for many small files; stored blobs hashed
 * again by sha256sum; symlinks, directories and FIFOs refused; the mode (and
 * executable bit) reported; hard-linked outputs; a file another process still
 * holds open for writing (its content at ingestion, and the blob untouched by
 * that process's later writes); a later action writing the same path; the
 * byte limit (an error naming it, the store intact); and, through
 * action_outputs_collect, nested directories, symlinks and executables in a
 * Tree with every file digest checked by sha256sum.
 */
#include "test_action_helpers.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include "action_internal.h"
#include "exec/exec.h"
#include "store_internal.h"

#define BIG_FILE_BYTES (256u << 20)

static const enum cas_ingest_mode modes[] = {CAS_INGEST_URING, CAS_INGEST_THREADS};

struct fx {
    char dir[PATH_MAX];
    char cas_dir[PATH_MAX + 8];
    char src[PATH_MAX + 8];
    int src_fd;
    struct cas_store *cas;
};

static void fx_setup(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-test-ingest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->cas_dir, sizeof(f->cas_dir), "%s/cas", f->dir);
    snprintf(f->src, sizeof(f->src), "%s/src", f->dir);
    assert_int_equal(mkdir(f->src, 0755), 0);
    f->src_fd = open(f->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(f->src_fd >= 0);
    assert_int_equal(cas_store_open(f->cas_dir, &(struct cas_store_options){0}, &f->cas), 0);
}

static void fx_teardown(struct fx *f)
{
    close(f->src_fd);
    cas_store_close(f->cas);
    assert_int_equal(util_remove_tree(f->dir), 0);
}

/* Deterministic bytes that do not repeat with a short period. */
static void fill_bytes(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

static void write_file(int dir_fd, const char *name, size_t size, uint64_t seed, mode_t mode)
{
    size_t chunk = 1u << 20, done = 0;
    uint8_t *buf = malloc(chunk);
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    assert_non_null(buf);
    assert_true(fd >= 0);
    while (done < size) {
        size_t n = size - done < chunk ? size - done : chunk;

        fill_bytes(buf, n, seed + done);
        assert_int_equal(write(fd, buf, n), (ssize_t)n);
        done += n;
    }
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    free(buf);
}

static void write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* The real sha256sum of a file. */
static void sha256sum(const char *path, char hex[CAS_HASH_HEX + 1])
{
    char cmd[PATH_MAX + 64], line[256];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(line, sizeof(line), p));
    assert_int_equal(pclose(p), 0);
    memcpy(hex, line, CAS_HASH_HEX);
    hex[CAS_HASH_HEX] = '\0';
}

static void expect_sha256sum(const char *path, const struct cas_digest *d)
{
    char want[CAS_HASH_HEX + 1], got[CAS_HASH_HEX + 1];
    struct stat st;

    sha256sum(path, want);
    cas_digest_hex(d, got);
    assert_string_equal(got, want);
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(d->size, st.st_size);
}

/* The stored blob, hashed by sha256sum through its path. */
static void expect_blob_sha256sum(struct cas_store *cas, const struct cas_digest *d)
{
    char path[PATH_MAX], want[CAS_HASH_HEX + 1], got[CAS_HASH_HEX + 1];
    struct stat st;

    assert_int_equal(cas_store_blob_path(cas, d, path, sizeof(path)), 0);
    sha256sum(path, got);
    cas_digest_hex(d, want);
    assert_string_equal(got, want);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0222, 0); /* read-only in the store */
}

static void ingest(struct cas_store *cas, enum cas_ingest_mode mode, unsigned qd,
                   struct cas_ingest_file *files, size_t n, int want_rc,
                   struct cas_ingest_stats *stats)
{
    struct cas_ingest_options opt = {.mode = mode, .queue_depth = qd};
    struct cas_ingest *ing;
    int rc;

    assert_int_equal(cas_ingest_new(cas, &opt, &ing), 0);
    rc = cas_ingest_run(ing, files, n, stats);
    cas_ingest_free(ing);
    if (rc != want_rc)
        fail_msg("cas_ingest_run: %d (%s), wanted %d", rc, strerror(-rc), want_rc);
    if (stats != NULL && mode != CAS_INGEST_AUTO)
        assert_int_equal(stats->mode, mode);
}

/* --- digests --- */

static void test_sizes_match_sha256sum(void **state)
{
    static const size_t sizes[] = {0, 1, 4096, (1u << 20) + 1, BIG_FILE_BYTES};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file files[N];
        struct cas_ingest_stats stats;
        char names[N][32], paths[N][PATH_MAX + 48];
        struct cas_digest want[N];
        struct fx f;

        fx_setup(&f);
        for (size_t i = 0; i < N; i++) {
            snprintf(names[i], sizeof(names[i]), "f%zu", sizes[i]);
            snprintf(paths[i], sizeof(paths[i]), "%s/%s", f.src, names[i]);
            write_file(f.src_fd, names[i], sizes[i], i + 1, 0644);
            files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
        }
        /* Hash only first: the sources stay where they are. */
        ingest(NULL, modes[m], 0, files, N, 0, &stats);
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(files[i].error, 0);
            expect_sha256sum(paths[i], &files[i].digest);
            assert_true(S_ISREG(files[i].mode));
            want[i] = files[i].digest;
        }
        /* Then into the store, moving them. */
        for (size_t i = 0; i < N; i++)
            files[i].move = true;
        ingest(f.cas, modes[m], 0, files, N, 0, &stats);
        assert_int_equal(stats.files, N);
        assert_int_equal(stats.renamed, N - 1); /* not the empty file */
        assert_int_equal(stats.present, 1);
        for (size_t i = 0; i < N; i++) {
            assert_true(cas_digest_equal(&files[i].digest, &want[i]));
            expect_blob_sha256sum(f.cas, &files[i].digest);
            if (sizes[i] > 0)
                assert_int_equal(faccessat(f.src_fd, names[i], F_OK, 0), -1); /* moved */
        }
        fx_teardown(&f);
    }
}

/* Many files of mixed sizes through few io_uring slots (slot and buffer
 * reuse), checked against one sha256sum over the directory. */
static void test_many_files(void **state)
{
    enum { N = 300 };

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        static struct cas_ingest_file files[N];
        static char names[N][16];
        struct cas_ingest_stats stats;
        char cmd[PATH_MAX + 64], line[PATH_MAX + 128];
        size_t matched = 0;
        struct fx f;
        FILE *p;

        fx_setup(&f);
        for (size_t i = 0; i < N; i++) {
            size_t size = (i * 7919) % (3u << 20) / ((i % 5) + 1) / ((i % 3) ? 1 : 64);

            snprintf(names[i], sizeof(names[i]), "n%03zu", i);
            write_file(f.src_fd, names[i], i % 17 == 0 ? 0 : size, i, 0644);
            files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
        }
        ingest(NULL, modes[m], 8, files, N, 0, &stats);
        snprintf(cmd, sizeof(cmd), "cd '%s' && sha256sum n*", f.src);
        p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof(line), p) != NULL) {
            char hex[CAS_HASH_HEX + 1], *name = line + CAS_HASH_HEX + 2;
            size_t i;

            name[strcspn(name, "\n")] = '\0';
            assert_int_equal(sscanf(name, "n%zu", &i), 1);
            assert_true(i < N);
            cas_digest_hex(&files[i].digest, hex);
            assert_memory_equal(hex, line, CAS_HASH_HEX);
            matched++;
        }
        assert_int_equal(pclose(p), 0);
        assert_int_equal(matched, N);
        for (size_t i = 0; i < N; i++)
            files[i].move = true;
        ingest(f.cas, modes[m], 8, files, N, 0, &stats);
        for (size_t i = 0; i < N; i += 37)
            expect_blob_sha256sum(f.cas, &files[i].digest);
        fx_teardown(&f);
    }
}

/* --- types, modes, errors --- */

static void test_types_and_modes(void **state)
{
    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file files[6];
        struct cas_ingest_stats stats;
        char path[PATH_MAX + 32];
        struct fx f;

        fx_setup(&f);
        write_file(f.src_fd, "exe", 5000, 1, 0755);
        write_file(f.src_fd, "ro", 10, 2, 0400);
        assert_int_equal(symlinkat("exe", f.src_fd, "link"), 0);
        assert_int_equal(mkdirat(f.src_fd, "dir", 0755), 0);
        assert_int_equal(mkfifoat(f.src_fd, "fifo", 0644), 0);
        files[0] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "exe", .move = true};
        files[1] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "link", .move = true};
        files[2] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "dir", .move = true};
        files[3] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "fifo", .move = true};
        files[4] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "missing", .move = true};
        files[5] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "ro", .move = true};
        snprintf(path, sizeof(path), "%s/exe", f.src);
        ingest(f.cas, modes[m], 0, files, 6, -ELOOP, &stats);
        assert_int_equal(files[0].error, 0);
        assert_int_equal(files[0].mode & 07777, 0755);
        assert_int_equal(files[1].error, -ELOOP);
        assert_int_equal(files[2].error, -EINVAL);
        assert_int_equal(files[3].error, -EINVAL);
        assert_int_equal(files[4].error, -ENOENT);
        assert_int_equal(files[5].error, 0);
        assert_int_equal(files[5].mode & 07777, 0400);
        expect_blob_sha256sum(f.cas, &files[0].digest);
        expect_blob_sha256sum(f.cas, &files[5].digest);
        /* The symlink, directory and FIFO are untouched. */
        assert_int_equal(faccessat(f.src_fd, "fifo", F_OK, AT_SYMLINK_NOFOLLOW), 0);
        assert_int_equal(faccessat(f.src_fd, "link", F_OK, AT_SYMLINK_NOFOLLOW), 0);
        fx_teardown(&f);
    }
}

/* The thread pool's batches of small files (taken many at a time, read
 * through each worker's ring) with everything a batch can meet between its
 * small files: a symlink, a directory, a FIFO, a missing name, empty files,
 * files at the batch buffer's edge and larger ones read with pread. Hash
 * only, then moved into the store; digests against sha256sum. */
static void test_batch_mixed(void **state)
{
    enum { N = 96 };

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        static struct cas_ingest_file files[N];
        static char names[N][16];
        static size_t sizes[N];
        struct cas_ingest_stats stats;
        char path[PATH_MAX + 32];
        size_t regular = 0;
        struct fx f;

        fx_setup(&f);
        for (size_t i = 0; i < N; i++) {
            static const size_t edge[] = {
                0, 1, (128u << 10) - 2, (128u << 10) - 1, 128u << 10, (128u << 10) + 1, 300000};

            snprintf(names[i], sizeof(names[i]), "b%03zu", i);
            files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
            sizes[i] = i % 12 < 7 ? edge[i % 12] : 100 + i * 517;
            switch (i % 24) {
            case 7:
                assert_int_equal(symlinkat("b000", f.src_fd, names[i]), 0);
                break;
            case 8:
                assert_int_equal(mkdirat(f.src_fd, names[i], 0755), 0);
                break;
            case 9:
                assert_int_equal(mkfifoat(f.src_fd, names[i], 0644), 0);
                break;
            case 10:
                break; /* missing */
            default:
                write_file(f.src_fd, names[i], sizes[i], i, i % 5 ? 0644 : 0755);
                regular++;
            }
        }
        ingest(NULL, modes[m], 0, files, N, -ELOOP, &stats);
        assert_int_equal(stats.files, regular);
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < N; i++) {
                static const int want[4] = {-ELOOP, -EINVAL, -EINVAL, -ENOENT};

                if (i % 24 >= 7 && i % 24 <= 10) {
                    assert_int_equal(files[i].error, want[i % 24 - 7]);
                    continue;
                }
                assert_int_equal(files[i].error, 0);
                assert_int_equal(files[i].digest.size, (int64_t)sizes[i]);
                assert_int_equal(files[i].mode & 07777, i % 5 ? 0644 : 0755);
                if (pass == 0) {
                    snprintf(path, sizeof(path), "%s/%s", f.src, names[i]);
                    expect_sha256sum(path, &files[i].digest);
                } else if (sizes[i] > 0) {
                    expect_blob_sha256sum(f.cas, &files[i].digest);
                    assert_int_equal(faccessat(f.src_fd, names[i], F_OK, 0), -1); /* moved */
                }
            }
            if (pass == 1)
                break;
            for (size_t i = 0; i < N; i++)
                files[i].move = true;
            ingest(f.cas, modes[m], 0, files, N, -ELOOP, &stats);
            assert_int_equal(stats.files, regular);
            assert_int_equal(stats.copied, 0);
        }
        fx_teardown(&f);
    }
}

/* Size hints only order the work (files hinted large go first, largest
 * first): wrong hints, a missing file hinted large and large files without a
 * hint still give every file its own digest and error, at its own index. */
static void test_large_first_hints(void **state)
{
    enum { N = 40 };
    static struct cas_ingest_file files[N];
    static char names[N][16];
    static size_t sizes[N];
    struct cas_ingest_stats stats;
    char path[PATH_MAX + 32];
    struct fx f;

    (void)state;
    fx_setup(&f);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "h%03zu", i);
        sizes[i] = i % 10 == 3 ? (5u << 20) + i : 100 + i * 37;
        files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
        if (i % 10 == 3 && i != 13)
            files[i].size_hint = sizes[i]; /* right (13: large, no hint) */
        else if (i % 10 == 7)
            files[i].size_hint = (64u << 20) - i; /* small, hinted large */
        if (i != 27)
            write_file(f.src_fd, names[i], sizes[i], i, 0644);
    }
    ingest(NULL, CAS_INGEST_THREADS, 0, files, N, -ENOENT, &stats);
    assert_int_equal(stats.files, N - 1);
    for (size_t i = 0; i < N; i++) {
        if (i == 27) { /* missing, hinted large */
            assert_int_equal(files[i].error, -ENOENT);
            continue;
        }
        assert_int_equal(files[i].error, 0);
        assert_int_equal(files[i].digest.size, (int64_t)sizes[i]);
        snprintf(path, sizeof(path), "%s/%s", f.src, names[i]);
        expect_sha256sum(path, &files[i].digest);
    }
    fx_teardown(&f);
}

/* A moved file goes straight to its blob name; when a file already sits
 * there unverified (found by the start-up scan), it takes the route through
 * tmp/ and replaces it. Either way the blob is the content, read-only, and
 * the source name is gone. */
static void test_commit_routes(void **state)
{
    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file file = {.name = "out", .move = true};
        struct cas_ingest_stats stats;
        struct cas_digest first;
        struct fx f;

        fx_setup(&f);
        file.dir_fd = f.src_fd;
        write_file(f.src_fd, "out", 5000, 7, 0644);
        ingest(f.cas, modes[m], 0, &file, 1, 0, &stats);
        assert_int_equal(stats.renamed, 1);
        first = file.digest;
        expect_blob_sha256sum(f.cas, &first);
        assert_int_equal(faccessat(f.src_fd, "out", F_OK, 0), -1);
        /* Reopened: the blob is known but unverified. */
        cas_store_close(f.cas);
        assert_int_equal(cas_store_open(f.cas_dir, &(struct cas_store_options){0}, &f.cas), 0);
        write_file(f.src_fd, "out", 5000, 7, 0644);
        ingest(f.cas, modes[m], 0, &file, 1, 0, &stats);
        assert_int_equal(stats.renamed, 1);
        assert_true(cas_digest_equal(&file.digest, &first));
        expect_blob_sha256sum(f.cas, &first);
        assert_int_equal(faccessat(f.src_fd, "out", F_OK, 0), -1);
        /* Now verified: a third copy costs nothing and stays. */
        write_file(f.src_fd, "out", 5000, 7, 0644);
        ingest(f.cas, modes[m], 0, &file, 1, 0, &stats);
        assert_int_equal(stats.present, 1);
        assert_int_equal(faccessat(f.src_fd, "out", F_OK, 0), 0);
        fx_teardown(&f);
    }
}

/* One io_uring engine over runs of growing and shrinking size: the ring is
 * sized to a run and made again for a bigger one; digests as the thread
 * pool computes them. */
static void test_uring_ring_sizes(void **state)
{
    enum { N = 100 };
    static const size_t runs[] = {3, N, 10, N};
    static struct cas_ingest_file files[N], want[N];
    static char names[N][16];
    struct cas_ingest_stats stats;
    struct cas_ingest *ing;
    struct fx f;

    (void)state;
    fx_setup(&f);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "r%03zu", i);
        write_file(f.src_fd, names[i], i % 3 ? 3000 + i : 300000 + i, i, 0644);
        files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
        want[i] = files[i];
    }
    ingest(NULL, CAS_INGEST_THREADS, 0, want, N, 0, &stats);
    assert_int_equal(
        cas_ingest_new(NULL, &(struct cas_ingest_options){.mode = CAS_INGEST_URING}, &ing), 0);
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        assert_int_equal(cas_ingest_run(ing, files, runs[r], &stats), 0);
        assert_int_equal(stats.mode, CAS_INGEST_URING);
        assert_int_equal(stats.files, runs[r]);
        for (size_t i = 0; i < runs[r]; i++)
            assert_true(cas_digest_equal(&files[i].digest, &want[i].digest));
    }
    cas_ingest_free(ing);
    fx_teardown(&f);
}

static bool check_fails(const struct stat *st, const void *arg)
{
    (void)st;
    (void)arg;
    return false;
}

static bool check_passes(const struct stat *st, const void *arg)
{
    (void)arg;
    return S_ISREG(st->st_mode);
}

/* The store's one-rename commit: a failed check gives the file its name
 * back and indexes nothing; a passed one indexes the blob; a blob present
 * and verified moves nothing (1). */
static void test_commit_moved_check(void **state)
{
    struct cas_digest d;
    char path[PATH_MAX];
    struct fx f;
    int fd;

    (void)state;
    fx_setup(&f);
    write_file(f.src_fd, "x", 7000, 9, 0444);
    write_file(f.src_fd, "y", 7000, 9, 0444);
    write_file(f.src_fd, "z", 7000, 9, 0444);
    fd = openat(f.src_fd, "x", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(cas_digest_fd(fd, &d), 0);
    close(fd);
    assert_int_equal(cas_store_commit_moved(f.cas, f.src_fd, "x", &d, check_fails, NULL), -ESTALE);
    assert_int_equal(faccessat(f.src_fd, "x", F_OK, 0), 0);
    assert_int_equal(cas_store_contains(f.cas, &d), 0);
    assert_int_equal(cas_store_blob_path(f.cas, &d, path, sizeof(path)), -ENOENT);
    assert_int_equal(cas_store_commit_moved(f.cas, f.src_fd, "y", &d, check_passes, NULL), 0);
    assert_int_equal(faccessat(f.src_fd, "y", F_OK, 0), -1);
    assert_int_equal(cas_store_contains(f.cas, &d), 1);
    expect_blob_sha256sum(f.cas, &d);
    assert_int_equal(cas_store_commit_moved(f.cas, f.src_fd, "z", &d, check_passes, NULL), 1);
    assert_int_equal(faccessat(f.src_fd, "z", F_OK, 0), 0);
    fx_teardown(&f);
}

static void test_mode_parse(void **state)
{
    enum cas_ingest_mode m;
    struct cas_ingest *ing;

    (void)state;
    assert_int_equal(cas_ingest_mode_parse("auto", &m), 0);
    assert_int_equal(m, CAS_INGEST_AUTO);
    assert_int_equal(cas_ingest_mode_parse("", &m), 0);
    assert_int_equal(m, CAS_INGEST_AUTO);
    assert_int_equal(cas_ingest_mode_parse("uring", &m), 0);
    assert_int_equal(m, CAS_INGEST_URING);
    assert_int_equal(cas_ingest_mode_parse("threads", &m), 0);
    assert_int_equal(m, CAS_INGEST_THREADS);
    assert_int_equal(cas_ingest_mode_parse("io_uring", &m), -EINVAL);
    assert_string_equal(cas_ingest_mode_name(CAS_INGEST_URING), "uring");
    assert_int_equal(
        cas_ingest_new(NULL, &(struct cas_ingest_options){.threads = CAS_INGEST_MAX_THREADS + 1},
                       &ing),
        -EINVAL);
    assert_int_equal(
        cas_ingest_new(NULL,
                       &(struct cas_ingest_options){.queue_depth = CAS_INGEST_MAX_QUEUE_DEPTH + 1},
                       &ing),
        -EINVAL);
    /* An empty run. */
    assert_int_equal(cas_ingest_new(NULL, NULL, &ing), 0);
    assert_int_equal(cas_ingest_run(ing, NULL, 0, NULL), 0);
    cas_ingest_free(ing);
}

/* AUTO: the caller alone for a few files, the thread pool for hot files of
 * any size (io_uring is for a cold page cache, which a unit test cannot
 * make without root; docs/ingestion.md). */
static void test_auto_choice(void **state)
{
    enum { N = 100 };
    static struct cas_ingest_file files[N];
    static char names[N][16];
    struct cas_ingest_stats stats;
    struct fx f;

    (void)state;
    fx_setup(&f);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "s%03zu", i);
        write_file(f.src_fd, names[i], 1000 + i, i, 0644);
        files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i]};
    }
    ingest(NULL, CAS_INGEST_AUTO, 0, files, 3, 0, &stats);
    assert_int_equal(stats.mode, CAS_INGEST_THREADS);
    assert_int_equal(stats.threads, 1);
    ingest(NULL, CAS_INGEST_AUTO, 0, files, N, 0, &stats);
    assert_int_equal(stats.mode, CAS_INGEST_THREADS);
    assert_int_equal(stats.files, N);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "l%03zu", i);
        write_file(f.src_fd, names[i], 100000 + i, i, 0644);
    }
    ingest(NULL, CAS_INGEST_AUTO, 0, files, N, 0, &stats);
    assert_int_equal(stats.mode, CAS_INGEST_THREADS);
    fx_teardown(&f);
}

/* --- what can and cannot change a stored blob --- */

/* Two names of one inode: both ingested, one blob, a separate inode from
 * the outputs (copied: the other name could still be written). */
static void test_hard_links(void **state)
{
    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file files[2];
        struct cas_ingest_stats stats;
        char a[PATH_MAX + 8], blob[PATH_MAX];
        struct stat st_a, st_blob;
        struct fx f;

        fx_setup(&f);
        write_file(f.src_fd, "a", 3000, 9, 0755);
        assert_int_equal(linkat(f.src_fd, "a", f.src_fd, "b", 0), 0);
        snprintf(a, sizeof(a), "%s/a", f.src);
        assert_int_equal(stat(a, &st_a), 0);
        files[0] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "a", .move = true};
        files[1] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "b", .move = true};
        /* One at a time: in one batch the second may find the first done. */
        ingest(f.cas, modes[m], 0, &files[0], 1, 0, &stats);
        assert_int_equal(stats.copied, 1);
        ingest(f.cas, modes[m], 0, &files[1], 1, 0, &stats);
        assert_int_equal(stats.present, 1);
        assert_true(cas_digest_equal(&files[0].digest, &files[1].digest));
        expect_sha256sum(a, &files[0].digest);
        assert_int_equal(cas_store_blob_path(f.cas, &files[0].digest, blob, sizeof(blob)), 0);
        assert_int_equal(stat(blob, &st_blob), 0);
        assert_true(st_blob.st_ino != st_a.st_ino);
        /* Writing through either name leaves the blob alone. */
        write_text(a, "changed later");
        expect_blob_sha256sum(f.cas, &files[0].digest);
        fx_teardown(&f);
    }
}

/* A writer that still has the file open when it is ingested: the blob is
 * the content at that moment, and the writer's later writes, through the
 * fd it kept, do not reach it (the file was copied, not moved). Without a
 * writer the file is moved, and a later writer of the same path makes a new
 * file. */
static void test_open_writer(void **state)
{
    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file file;
        struct cas_ingest_stats stats;
        int to_child[2], to_parent[2], status;
        char path[PATH_MAX + 8], c;
        struct cas_digest first;
        struct fx f;
        pid_t pid;

        fx_setup(&f);
        snprintf(path, sizeof(path), "%s/out", f.src);
        assert_int_equal(pipe(to_child), 0);
        assert_int_equal(pipe(to_parent), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

            if (fd < 0 || write(fd, "first", 5) != 5 || write(to_parent[1], "r", 1) != 1 ||
                read(to_child[0], &c, 1) != 1 || write(fd, " and more", 9) != 9)
                _exit(1);
            close(fd);
            _exit(0);
        }
        assert_int_equal(read(to_parent[0], &c, 1), 1);
        file = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "out", .move = true};
        ingest(f.cas, modes[m], 0, &file, 1, 0, &stats);
        assert_int_equal(stats.copied, 1); /* a writer: copied, not moved */
        assert_int_equal(stats.renamed, 0);
        cas_digest_buffer("first", 5, &first);
        assert_true(cas_digest_equal(&file.digest, &first));
        assert_int_equal(write(to_child[1], "w", 1), 1);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        expect_blob_sha256sum(f.cas, &first);

        /* The writer is gone: now it is moved, and a new writer of the
         * path creates a new file. */
        ingest(f.cas, modes[m], 0, &file, 1, 0, &stats);
        assert_int_equal(stats.renamed, 1);
        assert_int_equal(access(path, F_OK), -1);
        write_text(path, "a later action");
        expect_blob_sha256sum(f.cas, &file.digest);
        expect_blob_sha256sum(f.cas, &first);
        close(to_child[0]);
        close(to_child[1]);
        close(to_parent[0]);
        close(to_parent[1]);
        fx_teardown(&f);
    }
}

/* Not moving (move = false): copied, the source stays and its later
 * changes do not reach the blob. */
static void test_no_move(void **state)
{
    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_file files[2];
        struct cas_ingest_stats stats;
        char path[PATH_MAX + 8];
        struct fx f;

        fx_setup(&f);
        write_file(f.src_fd, "small", 100, 3, 0644);
        write_file(f.src_fd, "large", (3u << 20) + 5, 4, 0644);
        files[0] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "small", .move = false};
        files[1] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = "large", .move = false};
        ingest(f.cas, modes[m], 0, files, 2, 0, &stats);
        assert_int_equal(stats.copied, 2);
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof(path), "%s/%s", f.src, files[i].name);
            expect_sha256sum(path, &files[i].digest);
            write_text(path, "overwritten");
            expect_blob_sha256sum(f.cas, &files[i].digest);
        }
        fx_teardown(&f);
    }
}

/* --- limits --- */

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_byte_limit(void **state)
{
    enum { N = 40 };

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct cas_ingest_options opt = {.mode = modes[m], .max_bytes = 10 * 1000};
        struct cas_ingest_file files[N];
        struct cas_store_stats before, after;
        struct cas_ingest_stats stats;
        char names[N][8], tmp[PATH_MAX + 16];
        struct cas_ingest *ing;
        size_t failed = 0, stored = 0;
        struct fx f;

        fx_setup(&f);
        for (size_t i = 0; i < N; i++) {
            snprintf(names[i], sizeof(names[i]), "f%02zu", i);
            write_file(f.src_fd, names[i], 1000, i + 100, 0644);
            files[i] = (struct cas_ingest_file){.dir_fd = f.src_fd, .name = names[i], .move = true};
        }
        cas_store_get_stats(f.cas, &before);
        assert_int_equal(cas_ingest_new(f.cas, &opt, &ing), 0);
        assert_int_equal(cas_ingest_run(ing, files, N, &stats), -EFBIG);
        cas_ingest_free(ing);
        for (size_t i = 0; i < N; i++) {
            if (files[i].error == 0) {
                stored++;
                expect_blob_sha256sum(f.cas, &files[i].digest);
            } else {
                assert_true(files[i].error == -EFBIG || files[i].error == -ECANCELED);
                failed += files[i].error == -EFBIG;
                /* Not stored: its source is where it was. */
                assert_int_equal(faccessat(f.src_fd, names[i], F_OK, 0), 0);
            }
        }
        assert_true(stored <= 10);
        assert_true(failed >= 1);
        cas_store_get_stats(f.cas, &after);
        assert_int_equal(after.blobs - before.blobs, stored);
        assert_int_equal(after.corrupt_blobs, 0);
        snprintf(tmp, sizeof(tmp), "%s/tmp", f.cas_dir);
        assert_int_equal(count_entries(tmp), 0); /* no partial blob left */
        fx_teardown(&f);
    }
}

/* --- through output collection --- */

struct out_fixture {
    struct th_env env;
    char exec_dir[PATH_MAX + 16];
    struct action *act;
    struct action_scratch scratch;
};

static void out_setup(struct out_fixture *f, const char *const *paths)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct action_stage_stats stats;
    struct reapi_status st;
    struct cas_digest rd, ad;
    Command *cmd;
    Directory *root = th_dir_new();

    memset(f, 0, sizeof(*f));
    th_env_setup(&f->env);
    snprintf(f->exec_dir, sizeof(f->exec_dir), "%s/exec-blobs", f->env.dir);
    assert_int_equal(mkdir(f->exec_dir, 0700), 0);
    th_dir_put(f->env.cas, root, &rd);
    cmd = th_cmd_new(argv);
    for (size_t i = 0; paths[i]; i++)
        TH_APPEND(cmd->output_paths, cmd->n_output_paths, strdup(paths[i]));
    th_action_put(f->env.cas, cmd, &rd, -1, NULL, &ad);
    reapi_status_init(&st);
    assert_int_equal(action_load(f->env.cas, &ad, &f->env.cfg, &f->act, &st), 0);
    reapi_status_free(&st);
    assert_int_equal(action_scratch_create(f->env.dir, "s1", &f->scratch), 0);
    reapi_status_init(&st);
    assert_int_equal(
        action_stage_inputs(f->env.cas, f->act, f->scratch.lower, f->exec_dir, &stats, &st), 0);
    reapi_status_free(&st);
}

static void out_teardown(struct out_fixture *f)
{
    assert_int_equal(action_scratch_remove(&f->scratch), 0);
    action_free(f->act);
    th_env_teardown(&f->env);
}

static Build__Bazel__Remote__Execution__V2__ActionResult *
out_collect(struct out_fixture *f, enum cas_ingest_mode mode,
            const struct action_output_limits *limits, int want_rc, struct reapi_status *st)
{
    static const struct action_output_limits none = {0, 0};
    struct cas_ingest_options opt = {.mode = mode};
    Build__Bazel__Remote__Execution__V2__ActionResult *r = NULL;
    struct action_output_stats stats;
    int rc;

    reapi_status_init(st);
    rc = action_outputs_collect_opts(f->env.cas, f->act, &f->scratch, limits ? limits : &none, &opt,
                                     &r, &stats, st);
    if (rc != want_rc)
        fail_msg("collect: %d (%s), wanted %d", rc, st->message, want_rc);
    return r;
}

static void upper_path(const struct out_fixture *f, const char *rel, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", f->scratch.upper, rel);
}

static void mkdirs_upper(const struct out_fixture *f, const char *rel)
{
    char path[PATH_MAX];

    upper_path(f, rel, path, sizeof(path));
    assert_int_equal(mkdir(path, 0755), 0);
}

static void digest_from_proto(const Build__Bazel__Remote__Execution__V2__Digest *pd,
                              struct cas_digest *d)
{
    assert_non_null(pd);
    assert_int_equal(cas_digest_parse(pd->hash, pd->size_bytes, d), 0);
}

/* Nested directories, symlinks, executables and hard links in an output
 * directory, plus a top-level file: every file node's digest is the
 * sha256sum of a copy of the file kept before collection. */
static void test_outputs_tree(void **state)
{
    static const char *const paths[] = {"out", "top.bin", NULL};

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        static const char *const files[] = {"out/a",          "out/d1/b", "out/d1/d2/c",
                                            "out/d1/d2/e.sh", "out/d3/b", "top.bin"};
        enum { NF = sizeof(files) / sizeof(files[0]) };
        Build__Bazel__Remote__Execution__V2__ActionResult *r;
        Build__Bazel__Remote__Execution__V2__Tree *t;
        char path[PATH_MAX], want[NF][CAS_HASH_HEX + 1];
        struct out_fixture f;
        struct reapi_status st;
        struct cas_digest d;
        size_t checked = 0;
        void *buf;
        size_t len;

        out_setup(&f, paths);
        mkdirs_upper(&f, "out");
        mkdirs_upper(&f, "out/d1");
        mkdirs_upper(&f, "out/d1/d2");
        mkdirs_upper(&f, "out/d3");
        for (size_t i = 0; i < NF; i++) {
            int dfd;

            upper_path(&f, files[i], path, sizeof(path));
            dfd = open(f.scratch.upper, O_RDONLY | O_DIRECTORY);
            assert_true(dfd >= 0);
            if (strcmp(files[i], "out/d3/b") == 0) {
                char other[PATH_MAX];

                upper_path(&f, "out/d1/b", other, sizeof(other));
                assert_int_equal(link(other, path), 0); /* a hard link */
            } else {
                write_file(dfd, files[i], i == 0 ? 0 : 1000 * i + 1, i,
                           strstr(files[i], ".sh") ? 0755 : 0644);
            }
            close(dfd);
            sha256sum(path, want[i]);
        }
        upper_path(&f, "out/d1/link", path, sizeof(path));
        assert_int_equal(symlink("d2/c", path), 0);

        r = out_collect(&f, modes[m], NULL, 0, &st);
        reapi_status_free(&st);
        assert_non_null(r);
        assert_int_equal(r->n_output_files, 1);
        assert_string_equal(r->output_files[0]->path, "top.bin");
        assert_string_equal(r->output_files[0]->digest->hash, want[NF - 1]);
        assert_int_equal(r->n_output_directories, 1);
        digest_from_proto(r->output_directories[0]->tree_digest, &d);
        assert_int_equal(cas_store_get(f.env.cas, &d, &buf, &len), 0);
        t = build__bazel__remote__execution__v2__tree__unpack(NULL, len, buf);
        free(buf);
        assert_non_null(t);
        /* Walk root and children: every file node's digest is a sha256sum
         * above, with the executable bit where the file had it. */
        for (size_t k = 0; k <= t->n_children; k++) {
            Build__Bazel__Remote__Execution__V2__Directory *dir =
                k == 0 ? t->root : t->children[k - 1];

            for (size_t j = 0; j < dir->n_files; j++) {
                bool found = false;

                for (size_t i = 0; i < NF; i++)
                    found |= strcmp(dir->files[j]->digest->hash, want[i]) == 0;
                assert_true(found);
                assert_int_equal(dir->files[j]->is_executable,
                                 strcmp(dir->files[j]->name, "e.sh") == 0);
                digest_from_proto(dir->files[j]->digest, &d);
                expect_blob_sha256sum(f.env.cas, &d);
                checked++;
            }
            for (size_t j = 0; j < dir->n_symlinks; j++) {
                assert_string_equal(dir->symlinks[j]->name, "link");
                assert_string_equal(dir->symlinks[j]->target, "d2/c");
            }
        }
        assert_int_equal(checked, NF - 1);
        build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
        action_result_free(r);
        out_teardown(&f);
    }
}

/* An output collected, its action's scratch removed; a later action writes
 * the same path: the first blob never changes. */
static void test_outputs_later_action(void **state)
{
    static const char *const paths[] = {"o.txt", NULL};

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        Build__Bazel__Remote__Execution__V2__ActionResult *r1, *r2;
        struct cas_digest d1, d2, want;
        struct out_fixture f;
        struct reapi_status st;
        char path[PATH_MAX];
        char upper1[PATH_MAX];

        out_setup(&f, paths);
        upper_path(&f, "o.txt", path, sizeof(path));
        snprintf(upper1, sizeof(upper1), "%s", f.scratch.upper);
        write_text(path, "version one");
        r1 = out_collect(&f, modes[m], NULL, 0, &st);
        reapi_status_free(&st);
        digest_from_proto(r1->output_files[0]->digest, &d1);
        cas_digest_buffer("version one", 11, &want);
        assert_true(cas_digest_equal(&d1, &want));
        /* The executor removes the scratch dir after collection. */
        assert_int_equal(action_scratch_remove(&f.scratch), 0);
        assert_int_equal(access(upper1, F_OK), -1);
        assert_int_equal(action_scratch_create(f.env.dir, "s2", &f.scratch), 0);
        upper_path(&f, "o.txt", path, sizeof(path));
        write_text(path, "version two, longer");
        r2 = out_collect(&f, modes[m], NULL, 0, &st);
        reapi_status_free(&st);
        digest_from_proto(r2->output_files[0]->digest, &d2);
        assert_false(cas_digest_equal(&d1, &d2));
        write_text(path, "and written again after collection");
        expect_blob_sha256sum(f.env.cas, &d1);
        expect_blob_sha256sum(f.env.cas, &d2);
        action_result_free(r1);
        action_result_free(r2);
        out_teardown(&f);
    }
}

/* Limits through collection: the message names the limit, nothing of the
 * failed collection is half-stored. */
static void test_outputs_limits(void **state)
{
    static const char *const paths[] = {"out", NULL};

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        struct action_output_limits bytes = {.max_bytes = 2500, .max_entries = 0};
        struct action_output_limits entries = {.max_bytes = 0, .max_entries = 4};
        struct cas_store_stats before, after;
        struct out_fixture f;
        struct reapi_status st;
        char path[PATH_MAX], tmp[PATH_MAX + 16];

        out_setup(&f, paths);
        mkdirs_upper(&f, "out");
        for (int i = 0; i < 6; i++) {
            snprintf(path, sizeof(path), "%s/out/f%d", f.scratch.upper, i);
            write_text(path, i % 2 ? "0123456789012345678901234567890123456789" : "x");
        }
        upper_path(&f, "out/big", path, sizeof(path));
        {
            int dfd = open(f.scratch.upper, O_RDONLY | O_DIRECTORY);

            write_file(dfd, "out/big", 3000, 7, 0644);
            close(dfd);
        }
        cas_store_get_stats(f.env.cas, &before);
        assert_null(out_collect(&f, modes[m], &bytes, -EFBIG, &st));
        assert_int_equal(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
        assert_non_null(strstr(st.message, "max_output_bytes"));
        reapi_status_free(&st);
        assert_null(out_collect(&f, modes[m], &entries, -E2BIG, &st));
        assert_non_null(strstr(st.message, "max_output_files"));
        reapi_status_free(&st);
        cas_store_get_stats(f.env.cas, &after);
        assert_int_equal(after.corrupt_blobs, 0);
        snprintf(tmp, sizeof(tmp), "%s/tmp", f.env.cas_dir);
        assert_int_equal(count_entries(tmp), 0);
        /* Without limits it all goes in. */
        {
            Build__Bazel__Remote__Execution__V2__ActionResult *r =
                out_collect(&f, modes[m], NULL, 0, &st);

            reapi_status_free(&st);
            assert_non_null(r);
            action_result_free(r);
        }
        out_teardown(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_parse),           cmocka_unit_test(test_sizes_match_sha256sum),
        cmocka_unit_test(test_many_files),           cmocka_unit_test(test_types_and_modes),
        cmocka_unit_test(test_auto_choice),          cmocka_unit_test(test_hard_links),
        cmocka_unit_test(test_open_writer),          cmocka_unit_test(test_no_move),
        cmocka_unit_test(test_byte_limit),           cmocka_unit_test(test_outputs_tree),
        cmocka_unit_test(test_outputs_later_action), cmocka_unit_test(test_outputs_limits),
        cmocka_unit_test(test_batch_mixed),          cmocka_unit_test(test_large_first_hints),
        cmocka_unit_test(test_commit_routes),        cmocka_unit_test(test_uring_ring_sizes),
        cmocka_unit_test(test_commit_moved_check),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
