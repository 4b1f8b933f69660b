/*
 * test_rpc_client.c - the gRPC client against the server of the same
 * library, in one process on loopback: unary calls and their statuses, server
 * streams (and cancelling one), a client stream, many streams read together,
 * many threads calling at once, the deadline and the message size limit.
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

#define N_THREADS        24 /* more than a pluck queue's pluckers and the idle queues */
#define CALLS_PER_THREAD 20
#define N_STREAMS        8

static struct rpc_server *server;
static char target[64];

/* --- the server's side --- */

/* GetCapabilities: instance "bad" is refused; else max_batch 1234. */
static void serve_capabilities(void *ctx, struct rpc_call *call)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest *req;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SERVER_CAPABILITIES__INIT;
    Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__CACHE_CAPABILITIES__INIT;

    (void)ctx;
    if (rpc_call_request(call,
                         &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "no request");
        return;
    }
    if (strcmp(req->instance_name, "bad") == 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown instance '%s'",
                      req->instance_name);
    } else {
        cache.max_batch_total_size_bytes = 1234;
        caps.cache_capabilities = &cache;
        rpc_call_finish(call, &caps.base, NULL);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ByteStream.Read: read_limit messages "0", "1", ...; resource "fail" ends
 * with NOT_FOUND after one; "big" sends one 4 KiB message; "slow" answers
 * after a second. */
static void serve_read(void *ctx, struct rpc_call *call)
{
    Google__Bytestream__ReadRequest *req;
    Google__Bytestream__ReadResponse resp = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;
    static uint8_t big[4096];
    char data[32];

    (void)ctx;
    if (rpc_call_request(call, &google__bytestream__read_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "no request");
        return;
    }
    if (strcmp(req->resource_name, "big") == 0) {
        resp.data.data = big;
        resp.data.len = sizeof(big);
        rpc_call_send(call, &resp.base);
    } else if (strcmp(req->resource_name, "slow") == 0) {
        sleep(1);
    }
    for (int64_t i = 0; i < req->read_limit; i++) {
        resp.data.len = (size_t)snprintf(data, sizeof(data), "%" PRId64, i);
        resp.data.data = (uint8_t *)data;
        if (rpc_call_send(call, &resp.base) != 0)
            break;
        if (strcmp(req->resource_name, "fail") == 0) {
            rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such blob");
            protobuf_c_message_free_unpacked(&req->base, NULL);
            return;
        }
    }
    rpc_call_finish(call, NULL, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ByteStream.Write: committed_size is the sum of the data received. */
static void serve_write(void *ctx, struct rpc_call *call)
{
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
    Google__Bytestream__WriteRequest *req;
    int rc;

    (void)ctx;
    while ((rc = rpc_call_recv(call, &google__bytestream__write_request__descriptor,
                               (ProtobufCMessage **)&req)) == 1) {
        resp.committed_size += (int64_t)req->data.len;
        protobuf_c_message_free_unpacked(&req->base, NULL);
    }
    if (rc < 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad WriteRequest");
        return;
    }
    rpc_call_finish(call, &resp.base, NULL);
}

/* Execute: three Operations named after the instance, the last one done. */
static void serve_execute(void *ctx, struct rpc_call *call)
{
    Build__Bazel__Remote__Execution__V2__ExecuteRequest *req;
    Google__Longrunning__Operation op = GOOGLE__LONGRUNNING__OPERATION__INIT;

    (void)ctx;
    if (rpc_call_request(call, &build__bazel__remote__execution__v2__execute_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "no request");
        return;
    }
    op.name = req->instance_name;
    for (int i = 0; i < 3; i++) {
        op.done = i == 2;
        if (rpc_call_send(call, &op.base) != 0)
            break;
    }
    rpc_call_finish(call, NULL, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
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
    static struct rpc_method methods[4];
    struct rpc_server_options opt = {.listen = target, .max_message_bytes = 4 << 20};

    (void)state;
    methods[0] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_GET_CAPABILITIES), RPC_UNARY,
                                     RPC_POOL_SHORT, serve_capabilities, 0};
    methods[1] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_BYTESTREAM_READ),
                                     RPC_SERVER_STREAM, RPC_POOL_TRANSFER, serve_read, 0};
    methods[2] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_BYTESTREAM_WRITE),
                                     RPC_CLIENT_STREAM, RPC_POOL_TRANSFER, serve_write, 0};
    methods[3] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_EXECUTE), RPC_SERVER_STREAM,
                                     RPC_POOL_STREAM, serve_execute, 0};
    for (int p = 0; p < RPC_POOL_COUNT; p++) {
        opt.threads[p] = 4;
        opt.queue_length[p] = 1000;
    }
    grpc_init();
    for (int attempt = 0; attempt < 5; attempt++) {
        snprintf(target, sizeof(target), "127.0.0.1:%d", free_port());
        if (rpc_server_start(&opt, methods, 4, NULL, &server) == 0)
            return 0;
    }
    return -1;
}

static int server_stop(void **state)
{
    (void)state;
    rpc_server_stop(server);
    grpc_shutdown();
    return 0;
}

/* --- the client's side --- */

static struct rpc_client *client_open(const struct rpc_client_options *opt)
{
    struct rpc_client *c = NULL;
    char err[256];

    assert_int_equal(rpc_client_open(target, opt, &c, err, sizeof(err)), 0);
    return c;
}

/* GetCapabilities for instance: 0 with max_batch 1234, or the error. */
static int capabilities(struct rpc_client *c, const char *instance, struct rpc_client_status *st)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = NULL;
    int rc;

    req.instance_name = (char *)instance;
    rc = rpc_client_unary(c, RPC_CLIENT_GET_CAPABILITIES, &req.base,
                          &build__bazel__remote__execution__v2__server_capabilities__descriptor,
                          (ProtobufCMessage **)&caps, st);
    if (rc == 0) {
        assert_non_null(caps->cache_capabilities);
        assert_int_equal(caps->cache_capabilities->max_batch_total_size_bytes, 1234);
        protobuf_c_message_free_unpacked(&caps->base, NULL);
    } else {
        assert_null(caps);
    }
    return rc;
}

static void test_open_urls(void **state)
{
    struct rpc_client *c = NULL;
    char err[256], url[96];

    (void)state;
    assert_int_equal(rpc_client_open("http://x:1", NULL, &c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "http://x:1: use grpc://HOST:PORT or grpcs://HOST:PORT");
    assert_int_equal(rpc_client_open("grpc://", NULL, &c, err, sizeof(err)), -EINVAL);
    assert_int_equal(rpc_client_open("grpc://h:1/x", NULL, &c, err, sizeof(err)), -EINVAL);
    assert_null(c);
    snprintf(url, sizeof(url), "grpc://%s", target);
    assert_int_equal(rpc_client_open(url, NULL, &c, err, sizeof(err)), 0);
    rpc_client_close(c);
}

static void test_unary(void **state)
{
    struct rpc_client *c = client_open(NULL);
    struct rpc_client_status st;

    (void)state;
    assert_int_equal(capabilities(c, "", &st), 0);
    assert_int_equal(st.code, GRPC_STATUS_OK);
    assert_int_equal(capabilities(c, "bad", &st), -EIO);
    assert_int_equal(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(st.message, "unknown instance 'bad'");
    assert_string_equal(rpc_status_code_name(st.code), "INVALID_ARGUMENT");
    rpc_client_close(c);
}

static void test_unimplemented(void **state)
{
    Google__Bytestream__QueryWriteStatusRequest req =
        GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_REQUEST__INIT;
    struct rpc_client *c = client_open(NULL);
    ProtobufCMessage *resp = NULL;
    struct rpc_client_status st;

    (void)state;
    assert_int_equal(rpc_client_unary(c, RPC_CLIENT_BYTESTREAM_QUERY_WRITE_STATUS, &req.base,
                                      &google__bytestream__query_write_status_response__descriptor,
                                      &resp, &st),
                     -EIO);
    assert_int_equal(st.code, GRPC_STATUS_UNIMPLEMENTED);
    rpc_client_close(c);
}

struct collected {
    int messages;
    int64_t sum;
    int stop_after; /* 0: never */
};

static int collect(void *ctx, grpc_byte_buffer *message)
{
    struct collected *col = ctx;
    Google__Bytestream__ReadResponse *r = (Google__Bytestream__ReadResponse *)rpc_message_unpack(
        message, &google__bytestream__read_response__descriptor);
    char text[32];

    assert_non_null(r);
    assert_true(r->data.len < sizeof(text));
    memcpy(text, r->data.data, r->data.len);
    text[r->data.len] = '\0';
    col->sum += atoi(text);
    google__bytestream__read_response__free_unpacked(r, NULL);
    col->messages++;
    return col->stop_after != 0 && col->messages == col->stop_after ? -ENOSPC : 0;
}

static int read_stream(struct rpc_client *c, const char *name, int64_t n, struct collected *col,
                       struct rpc_client_status *st)
{
    Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;

    req.resource_name = (char *)name;
    req.read_limit = n;
    return rpc_client_server_stream(c, RPC_CLIENT_BYTESTREAM_READ, &req.base, collect, col, st);
}

static void test_server_stream(void **state)
{
    struct rpc_client *c = client_open(NULL);
    struct rpc_client_status st;
    struct collected col = {0};

    (void)state;
    assert_int_equal(read_stream(c, "ok", 9, &col, &st), 0);
    assert_int_equal(col.messages, 9);
    assert_int_equal(col.sum, 36);
    assert_int_equal(st.code, GRPC_STATUS_OK);

    col = (struct collected){0};
    assert_int_equal(read_stream(c, "fail", 9, &col, &st), -EIO);
    assert_int_equal(col.messages, 1);
    assert_int_equal(st.code, GRPC_STATUS_NOT_FOUND);
    assert_string_equal(st.message, "no such blob");

    /* The callback stops it: its error is returned, no more messages. */
    col = (struct collected){.stop_after = 3};
    assert_int_equal(read_stream(c, "ok", 1000, &col, &st), -ENOSPC);
    assert_int_equal(col.messages, 3);
    assert_int_equal(st.code, GRPC_STATUS_CANCELLED);

    /* The channel still works. */
    col = (struct collected){0};
    assert_int_equal(read_stream(c, "ok", 2, &col, &st), 0);
    assert_int_equal(col.messages, 2);
    rpc_client_close(c);
}

static void test_writer(void **state)
{
    Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
    Google__Bytestream__WriteResponse *resp = NULL;
    struct rpc_client *c = client_open(NULL);
    struct rpc_client_writer *w;
    struct rpc_client_status st;
    uint8_t data[1000], packed[1100];

    (void)state;
    memset(data, 'x', sizeof(data));
    req.resource_name = "uploads/u/blobs/x/3000";
    req.data.data = data;
    req.data.len = sizeof(data);
    assert_int_equal(rpc_client_writer_start(c, RPC_CLIENT_BYTESTREAM_WRITE, &w), 0);
    for (int i = 0; i < 3; i++) {
        /* Two slices: the encoded message cut in two, as a caller that
         * sends its data without a copy does. */
        size_t len;
        grpc_slice slices[2];

        req.finish_write = i == 2;
        len = google__bytestream__write_request__pack(&req, packed);
        slices[0] = grpc_slice_from_copied_buffer((const char *)packed, 10);
        slices[1] = grpc_slice_from_copied_buffer((const char *)packed + 10, len - 10);
        assert_int_equal(rpc_client_writer_send(w, slices, 2, i == 2), 0);
    }
    assert_int_equal(rpc_client_writer_finish(w, &google__bytestream__write_response__descriptor,
                                              (ProtobufCMessage **)&resp, &st),
                     0);
    assert_int_equal(resp->committed_size, 3000);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* Given up before the last message: cancelled. */
    assert_int_equal(rpc_client_writer_start(c, RPC_CLIENT_BYTESTREAM_WRITE, &w), 0);
    assert_int_equal(rpc_client_writer_finish(w, &google__bytestream__write_response__descriptor,
                                              (ProtobufCMessage **)&resp, &st),
                     -EIO);
    assert_null(resp);
    assert_int_equal(st.code, GRPC_STATUS_CANCELLED);
    rpc_client_close(c);
}

static void test_streams(void **state)
{
    Build__Bazel__Remote__Execution__V2__ExecuteRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTE_REQUEST__INIT;
    struct rpc_client *c = client_open(NULL);
    struct rpc_client_streams *s;
    struct rpc_client_stream_event ev;
    int messages[N_STREAMS] = {0}, ends[N_STREAMS] = {0}, done[N_STREAMS] = {0}, events = 0;
    char names[N_STREAMS][8];

    (void)state;
    assert_int_equal(rpc_client_streams_create(c, &s), 0);
    for (int i = 0; i < N_STREAMS; i++) {
        snprintf(names[i], sizeof(names[i]), "%d", i);
        req.instance_name = names[i];
        assert_int_equal(rpc_client_stream_start(s, RPC_CLIENT_EXECUTE, &req.base, &names[i]), 0);
    }
    while (rpc_client_streams_next(s, &ev) == 1) {
        int i = atoi(ev.user);

        events++;
        if (ev.message != NULL) {
            Google__Longrunning__Operation *op =
                (Google__Longrunning__Operation *)rpc_message_unpack(
                    ev.message, &google__longrunning__operation__descriptor);

            assert_non_null(op);
            assert_string_equal(op->name, names[i]);
            assert_int_equal(ends[i], 0);
            messages[i]++;
            done[i] += op->done;
            protobuf_c_message_free_unpacked(&op->base, NULL);
        } else {
            assert_int_equal(ev.status.code, GRPC_STATUS_OK);
            ends[i]++;
        }
    }
    for (int i = 0; i < N_STREAMS; i++) {
        assert_int_equal(messages[i], 3);
        assert_int_equal(done[i], 1);
        assert_int_equal(ends[i], 1);
    }
    assert_int_equal(events, N_STREAMS * 4);

    /* Destroyed with streams still live: they are cancelled. */
    req.instance_name = "late";
    assert_int_equal(rpc_client_stream_start(s, RPC_CLIENT_EXECUTE, &req.base, NULL), 0);
    rpc_client_streams_destroy(s);
    rpc_client_close(c);
}

static void *thread_main(void *arg)
{
    struct rpc_client *c = arg;
    struct rpc_client_status st;
    struct collected col;
    long failures = 0;

    for (int i = 0; i < CALLS_PER_THREAD; i++) {
        failures += capabilities(c, "", &st) != 0;
        col = (struct collected){0};
        failures += read_stream(c, "ok", 3, &col, &st) != 0 || col.messages != 3;
    }
    return (void *)failures;
}

static void test_threads(void **state)
{
    struct rpc_client *c = client_open(NULL);
    pthread_t threads[N_THREADS];

    (void)state;
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, thread_main, c), 0);
    for (int i = 0; i < N_THREADS; i++) {
        void *failures;

        assert_int_equal(pthread_join(threads[i], &failures), 0);
        assert_int_equal((long)failures, 0);
    }
    rpc_client_close(c);
}

static void test_bounds(void **state)
{
    struct rpc_client_options opt = {.timeout_ms = 200, .max_message_bytes = 1024};
    struct rpc_client *c = client_open(&opt);
    struct rpc_client_status st;
    struct collected col = {0};

    (void)state;
    assert_int_equal(read_stream(c, "slow", 1, &col, &st), -EIO);
    assert_int_equal(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(col.messages, 0);
    assert_int_equal(read_stream(c, "big", 0, &col, &st), -EIO);
    assert_int_equal(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(col.messages, 0);
    rpc_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_urls),     cmocka_unit_test(test_unary),
        cmocka_unit_test(test_unimplemented), cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_writer),        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_threads),       cmocka_unit_test(test_bounds),
    };

    return cmocka_run_group_tests(tests, server_start, server_stop);
}
