/*
 * test_rpc_async.c - event-driven calls (RPC_POOL_EVENT) against the client
 * of the same library, in one process on loopback: a server stream driven
 * from send completions, a client stream from receive completions, a call
 * parked with no thread and resumed from another thread or timed out, a step
 * offloaded to a pool thread, the stall timeout, server.max_async_calls, and
 * a shutdown with a call still parked.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "rpc/rpc.h"

#define MAX_ASYNC 4
#define STALL_MS  300

static struct rpc_server *server;
static char target[64];

/* The calls parked by "park" reads, for the test to resume. */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t parked_cond = PTHREAD_COND_INITIALIZER;
static struct rpc_call *parked[MAX_ASYNC];
static int n_parked;

/* --- the server's side --- */

/* One Read: read_limit messages "0", "1", ..., one per send completion.
 * Resource "park": parked until resumed ("resumed") or 200 ms ("timeout");
 * "offload": its messages start on a pool thread. */
struct reader {
    struct rpc_call *call;
    Google__Bytestream__ReadRequest *req;
    int64_t sent;
    char data[32];
};

static void reader_end(struct reader *r, grpc_status_code code, const char *message)
{
    struct rpc_call *call = r->call;

    protobuf_c_message_free_unpacked(&r->req->base, NULL);
    free(r);
    if (code == GRPC_STATUS_OK)
        rpc_call_finish(call, NULL, NULL);
    else
        rpc_call_fail(call, code, "%s", message);
}

static void reader_sent(void *state, int rc);

static void reader_send(struct reader *r, const char *text)
{
    Google__Bytestream__ReadResponse resp = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;

    snprintf(r->data, sizeof(r->data), "%s", text);
    resp.data.data = (uint8_t *)r->data;
    resp.data.len = strlen(r->data);
    if (rpc_call_async_send(r->call, &resp.base, reader_sent, r) != 0)
        reader_end(r, GRPC_STATUS_INTERNAL, "send did not start");
}

static void reader_next(struct reader *r)
{
    char text[32];

    if (r->sent >= r->req->read_limit) {
        reader_end(r, GRPC_STATUS_OK, NULL);
        return;
    }
    snprintf(text, sizeof(text), "%" PRId64, r->sent++);
    reader_send(r, text);
}

static void reader_sent(void *state, int rc)
{
    struct reader *r = state;

    if (rc != 0)
        reader_end(r, GRPC_STATUS_CANCELLED, "client went away");
    else
        reader_next(r);
}

static void reader_woken(void *state, int rc)
{
    struct reader *r = state;

    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < n_parked; i++) {
        if (parked[i] == r->call) {
            parked[i] = parked[--n_parked];
            break;
        }
    }
    pthread_mutex_unlock(&parked_lock);
    r->req->read_limit = 0; /* one message, then the end */
    reader_send(r, rc == 0 ? "resumed" : rc == -ETIMEDOUT ? "timeout" : "?");
}

static void reader_offloaded(void *state, int rc)
{
    assert_int_equal(rc, 0);
    reader_next(state);
}

static void serve_read(void *ctx, struct rpc_call *call)
{
    struct reader *r = calloc(1, sizeof(*r));

    (void)ctx;
    assert_non_null(r);
    r->call = call;
    if (rpc_call_request(call, &google__bytestream__read_request__descriptor,
                         (ProtobufCMessage **)&r->req) != 0) {
        free(r);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "no request");
        return;
    }
    if (strcmp(r->req->resource_name, "park") == 0) {
        pthread_mutex_lock(&parked_lock);
        parked[n_parked++] = call;
        /* under the lock, so that the test sees it only once parked */
        assert_int_equal(
            rpc_call_park(call, 200 + 10000 * (r->req->read_offset > 0), reader_woken, r), 0);
        pthread_cond_broadcast(&parked_cond);
        pthread_mutex_unlock(&parked_lock);
    } else if (strcmp(r->req->resource_name, "offload") == 0) {
        assert_int_equal(rpc_call_offload(call, RPC_POOL_TRANSFER, reader_offloaded, r), 0);
    } else {
        reader_next(r);
    }
}

/* One Write: committed_size is the sum of the data received. */
struct writer {
    struct rpc_call *call;
    grpc_byte_buffer *bb;
    int64_t total;
};

static void writer_got(void *state, int rc)
{
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
    struct writer *w = state;
    struct rpc_call *call = w->call;
    Google__Bytestream__WriteRequest *req;

    if (rc == 1) {
        req = (Google__Bytestream__WriteRequest *)rpc_message_unpack(
            w->bb, &google__bytestream__write_request__descriptor);
        grpc_byte_buffer_destroy(w->bb);
        w->bb = NULL;
        if (req != NULL) {
            w->total += (int64_t)req->data.len;
            protobuf_c_message_free_unpacked(&req->base, NULL);
            if (rpc_call_async_recv(call, &w->bb, writer_got, w) == 0)
                return;
        }
        rc = -EINVAL;
    }
    resp.committed_size = w->total;
    free(w);
    if (rc == 0)
        rpc_call_finish(call, &resp.base, NULL);
    else
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad WriteRequest (%d)", rc);
}

static void serve_write(void *ctx, struct rpc_call *call)
{
    struct writer *w = calloc(1, sizeof(*w));

    (void)ctx;
    assert_non_null(w);
    w->call = call;
    if (rpc_call_async_recv(call, &w->bb, writer_got, w) != 0) {
        free(w);
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, "receive did not start");
    }
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int server_start(void **state)
{
    static struct rpc_method methods[2];
    struct rpc_server_options opt = {.listen = target,
                                     .max_message_bytes = 4 << 20,
                                     .stall_timeout_ms = STALL_MS,
                                     .event_threads = 2,
                                     .max_async_calls = MAX_ASYNC};

    (void)state;
    methods[0] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_BYTESTREAM_READ),
                                     RPC_SERVER_STREAM, RPC_POOL_EVENT, serve_read, 0};
    methods[1] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_BYTESTREAM_WRITE),
                                     RPC_CLIENT_STREAM, RPC_POOL_EVENT, serve_write, 0};
    for (int p = 0; p < RPC_POOL_COUNT; p++) {
        opt.threads[p] = 2;
        opt.queue_length[p] = 100;
    }
    grpc_init();
    for (int attempt = 0; attempt < 5; attempt++) {
        snprintf(target, sizeof(target), "127.0.0.1:%d", free_port());
        if (rpc_server_start(&opt, methods, 2, NULL, &server) == 0)
            return 0;
    }
    return -1;
}

static int server_stop(void **state)
{
    (void)state;
    if (server != NULL)
        rpc_server_stop(server);
    grpc_shutdown();
    return 0;
}

/* --- the client's side --- */

static struct rpc_client *client_open(void)
{
    struct rpc_client *c = NULL;
    char err[256];

    assert_int_equal(rpc_client_open(target, NULL, &c, err, sizeof(err)), 0);
    return c;
}

struct collected {
    int messages;
    char last[32];
};

static int collect(void *ctx, grpc_byte_buffer *message)
{
    struct collected *col = ctx;
    Google__Bytestream__ReadResponse *resp = (Google__Bytestream__ReadResponse *)rpc_message_unpack(
        message, &google__bytestream__read_response__descriptor);

    assert_non_null(resp);
    snprintf(col->last, sizeof(col->last), "%.*s", (int)resp->data.len, resp->data.data);
    col->messages++;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static int read_stream(struct rpc_client *c, const char *name, int64_t n, int64_t offset,
                       struct collected *col, struct rpc_client_status *st)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;

    req.resource_name = (char *)name;
    req.read_limit = n;
    req.read_offset = offset;
    return rpc_client_server_stream(c, RPC_CLIENT_BYTESTREAM_READ, &req.base, collect, col, st);
}

static void test_server_stream(void **state)
{
    struct rpc_client *c = client_open();
    struct rpc_client_status st;
    struct collected col = {0};

    (void)state;
    assert_int_equal(read_stream(c, "ok", 500, 0, &col, &st), 0);
    assert_int_equal(col.messages, 500);
    assert_string_equal(col.last, "499");
    col = (struct collected){0};
    assert_int_equal(read_stream(c, "offload", 3, 0, &col, &st), 0);
    assert_int_equal(col.messages, 3);
    rpc_client_close(c);
}

static void test_client_stream(void **state)
{
    Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
    Google__Bytestream__WriteResponse *resp = NULL;
    struct rpc_client *c = client_open();
    struct rpc_client_writer *w;
    struct rpc_client_status st;
    uint8_t data[1000], packed[1100];

    (void)state;
    memset(data, 'x', sizeof(data));
    req.data.data = data;
    req.data.len = sizeof(data);
    assert_int_equal(rpc_client_writer_start(c, RPC_CLIENT_BYTESTREAM_WRITE, &w), 0);
    for (int i = 0; i < 50; i++) {
        size_t len = google__bytestream__write_request__pack(&req, packed);
        grpc_slice slice = grpc_slice_from_copied_buffer((const char *)packed, len);

        assert_int_equal(rpc_client_writer_send(w, &slice, 1, i == 49), 0);
    }
    assert_int_equal(rpc_client_writer_finish(w, &google__bytestream__write_response__descriptor,
                                              (ProtobufCMessage **)&resp, &st),
                     0);
    assert_int_equal(resp->committed_size, 50000);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* A writer that sends nothing is cancelled after the stall timeout. */
    assert_int_equal(rpc_client_writer_start(c, RPC_CLIENT_BYTESTREAM_WRITE, &w), 0);
    usleep(3 * STALL_MS * 1000);
    {
        size_t len = google__bytestream__write_request__pack(&req, packed);
        grpc_slice slice = grpc_slice_from_copied_buffer((const char *)packed, len);

        rpc_client_writer_send(w, &slice, 1, true); /* may fail: the call has ended */
    }
    assert_int_equal(rpc_client_writer_finish(w, &google__bytestream__write_response__descriptor,
                                              (ProtobufCMessage **)&resp, &st),
                     -EIO);
    assert_int_equal(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    rpc_client_close(c);
}

struct parked_read {
    struct rpc_client *c;
    const char *name;
    int64_t offset; /* > 0: a long park */
    struct collected col;
    struct rpc_client_status st;
    int rc;
};

static void *parked_read_main(void *arg)
{
    struct parked_read *p = arg;

    p->rc = read_stream(p->c, p->name, 1, p->offset, &p->col, &p->st);
    return NULL;
}

static void wait_parked(int n)
{
    pthread_mutex_lock(&parked_lock);
    while (n_parked < n)
        pthread_cond_wait(&parked_cond, &parked_lock);
    pthread_mutex_unlock(&parked_lock);
}

static void test_park(void **state)
{
    struct rpc_client *c = client_open();
    struct parked_read p[MAX_ASYNC] = {0};
    struct collected col = {0};
    struct rpc_client_status st;
    pthread_t t[MAX_ASYNC];

    (void)state;
    /* Timed out: woken by its timer. */
    assert_int_equal(read_stream(c, "park", 1, 0, &col, &st), 0);
    assert_string_equal(col.last, "timeout");

    /* MAX_ASYNC long parks fill server.max_async_calls: one more is
     * refused at once. */
    for (int i = 0; i < MAX_ASYNC; i++) {
        p[i] = (struct parked_read){.c = c, .name = "park", .offset = 1};
        assert_int_equal(pthread_create(&t[i], NULL, parked_read_main, &p[i]), 0);
        wait_parked(i + 1);
    }
    col = (struct collected){0};
    assert_int_equal(read_stream(c, "ok", 1, 0, &col, &st), -EIO);
    assert_int_equal(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);

    /* Resumed from this thread, under the lock their callback unlists
     * them with. */
    pthread_mutex_lock(&parked_lock);
    for (int i = 0; i < n_parked; i++)
        assert_true(rpc_call_resume(parked[i]));
    pthread_mutex_unlock(&parked_lock);
    for (int i = 0; i < MAX_ASYNC; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(p[i].rc, 0);
        assert_string_equal(p[i].col.last, "resumed");
    }
    /* Room again. */
    col = (struct collected){0};
    assert_int_equal(read_stream(c, "ok", 2, 0, &col, &st), 0);
    assert_int_equal(col.messages, 2);
    rpc_client_close(c);
}

/* Last: the server stops with a call parked; it ends, and stop returns. */
static void test_stop_parked(void **state)
{
    struct rpc_client *c = client_open();
    struct parked_read p = {.c = c, .name = "park", .offset = 1};
    pthread_t t;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, parked_read_main, &p), 0);
    wait_parked(1);
    rpc_server_stop(server);
    server = NULL;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_not_equal(p.st.code, GRPC_STATUS_OK);
    rpc_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_client_stream),
        cmocka_unit_test(test_park),
        cmocka_unit_test(test_stop_parked),
    };

    return cmocka_run_group_tests(tests, server_start, server_stop);
}
