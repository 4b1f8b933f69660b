/*
 * test_remote.c - remote/ against a real casboxd (the one this build made,
 * started on a free loopback port with a state dir of its own, cache only):
 * FindMissingBlobs batched, push (batched and streamed), a store attached to
 * it reading through (one fetch for concurrent misses of a digest), a blob
 * the remote lacks, a remote that sends bytes that do not match (a verified
 * blob overwritten in place behind casboxd's back), the ActionCache, a
 * streamed upload cut short, an unreachable remote and a malformed URL.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "remote/remote.h"

#define N_THREADS 8

struct fixture {
    char dir[64];
    pid_t casboxd;
    char url[64];
    struct remote *remote;
    struct cas_store *local; /* not attached */
    struct cas_store *cache; /* attached to remote */
};

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

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

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Starts casboxd and waits for its "listening" line on stderr. */
static void start_casboxd(struct fixture *f)
{
    char listen[32], state[128], line[512];
    int pipefd[2];
    FILE *in;
    int port = free_port();

    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(state, sizeof(state), "%s/remote-state", f->dir);
    snprintf(f->url, sizeof(f->url), "grpc://%s", listen);
    assert_int_equal(pipe(pipefd), 0);
    f->casboxd = fork();
    assert_true(f->casboxd >= 0);
    if (f->casboxd == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        close(pipefd[1]);
        execl(CASBOX_CASBOXD, "casboxd", "--listen", listen, "--state-dir", state, "--no-execution",
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    in = fdopen(pipefd[0], "r");
    assert_non_null(in);
    while (fgets(line, sizeof(line), in) != NULL) {
        if (strstr(line, "casboxd: listening on") != NULL)
            break;
    }
    assert_non_null(strstr(line, "listening"));
    /* Keep reading its stderr in the background: a full pipe would block it. */
    if (fork() == 0) {
        while (fgets(line, sizeof(line), in) != NULL)
            fputs(line, stderr);
        _exit(0);
    }
    fclose(in);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct remote_options opt = {0};
    char path[128], err[256];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-remote-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    start_casboxd(f);
    opt.url = f->url;
    opt.rpc.timeout_ms = 20000;
    opt.batch_digests = 3; /* several FindMissingBlobs per call in the tests */
    opt.batch_bytes = 64 * 1024;
    opt.chunk_bytes = 100 * 1000;
    assert_int_equal(remote_open(&opt, &f->remote, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/local", f->dir);
    assert_int_equal(cas_store_open(path, NULL, &f->local), 0);
    snprintf(path, sizeof(path), "%s/cache", f->dir);
    assert_int_equal(cas_store_open(path, NULL, &f->cache), 0);
    assert_int_equal(remote_attach(f->remote, f->cache), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    int status = -1;

    remote_detach(f->remote, f->cache);
    cas_store_close(f->cache);
    cas_store_close(f->local);
    remote_close(f->remote);
    kill(f->casboxd, SIGTERM);
    waitpid(f->casboxd, &status, 0);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return 0;
}

static void test_push_and_find_missing(void **state)
{
    struct fixture *f = *state;
    struct rpc_client_status st;
    struct remote_stats stats;
    struct cas_digest d[5];
    uint8_t *b[5];
    bool missing[5];
    const size_t sizes[5] = {100, 3 << 20, 0, 70000, 5000};

    for (int i = 0; i < 5; i++) {
        b[i] = make_blob(sizes[i], 10 + (uint32_t)i, &d[i]);
        if (i != 4)
            assert_int_equal(cas_store_put(f->local, &d[i], b[i], sizes[i]), 0);
    }
    assert_int_equal(remote_find_missing(f->remote, NULL, d, 5, missing, &st), 0);
    assert_true(missing[0] && missing[1] && missing[3] && missing[4]);
    assert_false(missing[2]); /* casboxd: the empty blob is always there */
    /* d[4] is in neither place: named in the error. */
    assert_int_equal(remote_push(f->remote, f->local, NULL, d, 5, &st), -ENOENT);
    assert_non_null(strstr(st.message, "not in the local store"));
    assert_int_equal(remote_push(f->remote, f->local, NULL, d, 4, &st), 0);
    assert_int_equal(remote_find_missing(f->remote, NULL, d, 4, missing, &st), 0);
    for (int i = 0; i < 4; i++)
        assert_false(missing[i]);
    remote_get_stats(f->remote, &stats);
    assert_true(stats.pushed_blobs >= 3);
    assert_true(stats.pushed_bytes >= (3u << 20) + 70000 + 100);
    assert_true(stats.find_missing_calls >= 6); /* batches of 3 */
    for (int i = 0; i < 5; i++)
        free(b[i]);
}

struct opener {
    struct fixture *f;
    struct cas_digest d;
    int rc;
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    int fd = cas_store_open_blob(o->f->cache, &o->d);

    o->rc = fd < 0 ? fd : 0;
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void test_read_through_singleflight(void **state)
{
    struct fixture *f = *state;
    struct rpc_client_status st;
    struct remote_stats before, after;
    struct cas_digest d;
    uint8_t *b = make_blob(8 << 20, 77, &d);
    pthread_t t[N_THREADS];
    struct opener o[N_THREADS];
    void *got = NULL;
    size_t len = 0;

    assert_int_equal(cas_store_put(f->local, &d, b, 8 << 20), 0);
    assert_int_equal(remote_push(f->remote, f->local, NULL, &d, 1, &st), 0);
    remote_get_stats(f->remote, &before);
    for (int i = 0; i < N_THREADS; i++) {
        o[i] = (struct opener){.f = f, .d = d};
        assert_int_equal(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(o[i].rc, 0);
    }
    remote_get_stats(f->remote, &after);
    /* Threads that came after the fetch found it local: one fetch at most. */
    assert_int_equal(after.fetched_blobs - before.fetched_blobs, 1);
    assert_int_equal(after.fetched_bytes - before.fetched_bytes, 8 << 20);
    assert_int_equal(cas_store_get(f->cache, &d, &got, &len), 0);
    assert_int_equal(len, 8 << 20);
    assert_memory_equal(got, b, len);
    free(got);
    free(b);
}

static void test_missing_blob(void **state)
{
    struct fixture *f = *state;
    struct cas_digest d;
    uint8_t *b = make_blob(1234, 99, &d);
    char reason[512], hex[CAS_HASH_HEX + 1];

    cas_digest_hex(&d, hex);
    assert_int_equal(cas_store_open_blob(f->cache, &d), -ENOENT);
    assert_int_equal(cas_store_fetch_error(f->cache, &d, reason, sizeof(reason)), -ENOENT);
    assert_non_null(strstr(reason, f->url));
    assert_non_null(strstr(reason, hex));
    free(b);
}

static void test_wrong_bytes_rejected(void **state)
{
    struct fixture *f = *state;
    struct rpc_client_status st;
    struct remote_stats stats;
    struct cas_digest d;
    uint8_t *b = make_blob(50000, 5, &d);
    char path[256], hex[CAS_HASH_HEX + 1], reason[512];
    void *got = NULL;
    size_t len;
    int fd;

    assert_int_equal(cas_store_put(f->local, &d, b, 50000), 0);
    assert_int_equal(remote_push(f->remote, f->local, NULL, &d, 1, &st), 0);
    /* casboxd verifies a blob on its first read after start, then trusts it. */
    {
        char p2[128];
        struct cas_store *probe;

        snprintf(p2, sizeof(p2), "%s/probe", f->dir);
        assert_int_equal(cas_store_open(p2, NULL, &probe), 0);
        assert_int_equal(remote_fetch(f->remote, probe, &d, &st), 0);
        cas_store_close(probe);
    }
    cas_digest_hex(&d, hex);
    snprintf(path, sizeof(path), "%s/remote-state/cas/blobs/%.2s/%s", f->dir, hex, hex);
    assert_int_equal(chmod(path, 0644), 0);
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "XXXX", 4, 100), 4);
    close(fd);

    assert_int_equal(cas_store_get(f->cache, &d, &got, &len), -EBADMSG);
    assert_int_equal(cas_store_contains(f->cache, &d), 0);
    assert_int_equal(cas_store_fetch_error(f->cache, &d, reason, sizeof(reason)), -EBADMSG);
    assert_non_null(strstr(reason, hex));
    assert_non_null(strstr(reason, "do not match"));
    remote_get_stats(f->remote, &stats);
    assert_int_equal(stats.rejected_blobs, 1);
    free(b);
}

static void test_action_cache(void **state)
{
    struct fixture *f = *state;
    struct rpc_client_status st;
    Build__Bazel__Remote__Execution__V2__ActionResult r =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
    struct cas_digest action, other;
    uint8_t *a = make_blob(10, 1, &action), *o = make_blob(11, 2, &other);
    uint8_t bytes[64];
    void *got = NULL;
    size_t n, len = 0;

    r.exit_code = 3;
    n = build__bazel__remote__execution__v2__action_result__pack(&r, bytes);
    assert_int_equal(remote_ac_put(f->remote, NULL, &action, bytes, n, &st), 0);
    assert_int_equal(remote_ac_get(f->remote, NULL, &action, &got, &len, &st), 0);
    assert_int_equal(len, n);
    assert_memory_equal(got, bytes, n);
    free(got);
    assert_int_equal(remote_ac_get(f->remote, NULL, &other, &got, &len, &st), -ENOENT);
    assert_int_equal(st.code, GRPC_STATUS_NOT_FOUND);
    assert_int_equal(remote_ac_put(f->remote, NULL, &action, "\xff\xff", 2, &st), -EINVAL);
    free(a);
    free(o);
}

static void test_upload_stream(void **state)
{
    struct fixture *f = *state;
    struct rpc_client_status st;
    struct remote_upload *u = NULL;
    struct cas_digest d;
    uint8_t *b = make_blob(300000, 31, &d);
    bool missing;

    assert_int_equal(remote_upload_begin(f->remote, NULL, &d, &u, &st), 0);
    assert_int_equal(remote_upload_append(u, b, 1000, &st), 0);
    assert_int_equal(remote_upload_append(u, b + 1000, 299000, &st), 0);
    assert_int_equal(remote_upload_append(u, b, 1, &st), -EFBIG);
    assert_int_equal(remote_upload_finish(u, &st), 0);
    assert_int_equal(remote_find_missing(f->remote, NULL, &d, 1, &missing, &st), 0);
    assert_false(missing);
    free(b);

    /* Cut short: refused, and nothing stored there. */
    b = make_blob(300000, 32, &d);
    assert_int_equal(remote_upload_begin(f->remote, NULL, &d, &u, &st), 0);
    assert_int_equal(remote_upload_append(u, b, 1000, &st), 0);
    assert_int_equal(remote_upload_finish(u, &st), -EINVAL);
    assert_int_equal(remote_find_missing(f->remote, NULL, &d, 1, &missing, &st), 0);
    assert_true(missing);
    free(b);
}

static void test_unreachable_and_bad_url(void **state)
{
    struct fixture *f = *state;
    struct remote_options opt = {0};
    struct rpc_client_status st;
    struct remote *r = NULL;
    struct cas_digest d;
    uint8_t *b = make_blob(10, 3, &d);
    char url[64], err[256];
    bool missing;

    (void)f;
    snprintf(url, sizeof(url), "grpc://127.0.0.1:%d", free_port());
    opt.url = url;
    opt.rpc.timeout_ms = 5000;
    assert_int_equal(remote_open(&opt, &r, err, sizeof(err)), 0);
    assert_int_equal(remote_find_missing(r, NULL, &d, 1, &missing, &st), -EHOSTUNREACH);
    assert_int_equal(st.code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(st.message, url));
    remote_close(r);

    opt.url = "http://127.0.0.1:1";
    assert_int_equal(remote_open(&opt, &r, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "grpc://HOST:PORT"));
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_push_and_find_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_through_singleflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_bytes_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_action_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_and_bad_url, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
