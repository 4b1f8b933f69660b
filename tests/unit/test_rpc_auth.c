/*
 * test_rpc_auth.c - rpc/'s TLS and authorization, client and server in one
 * process on loopback, with certificates made by openssl at test time: the
 * C client over grpcs:// with the CA, a client certificate and a token file
 * is served; without the token PERMISSION_DENIED (the certificate is
 * known, anonymous may do nothing), a wrong token UNAUTHENTICATED; a prefix outside the token's
 * PERMISSION_DENIED; without a client certificate or in plaintext the
 * handshake fails; a world-readable token file is refused by
 * rpc_client_open; a handler that answers without rpc_call_authorize gets
 * INTERNAL (the safety net).
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "rpc/rpc.h"

static struct rpc_server *server;
static struct auth_guard guard;
static struct auth_tls_files tls;
static char dir[64];
static char target[64], plain_target[64];

/* GetCapabilities (needs read): authorized on the request's instance. */
static void serve_capabilities(void *ctx, struct rpc_call *call)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest *req;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SERVER_CAPABILITIES__INIT;
    struct reapi_status st;

    (void)ctx;
    reapi_status_init(&st);
    if (rpc_call_request(call,
                         &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "no request");
        return;
    }
    if (rpc_call_authorize(call, req->instance_name, &st) != 0)
        rpc_call_finish(call, NULL, &st);
    else
        rpc_call_finish(call, &caps.base, NULL);
    reapi_status_free(&st);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* GetActionResult: a handler that forgets to authorize. */
static void serve_forgetful(void *ctx, struct rpc_call *call)
{
    Build__Bazel__Remote__Execution__V2__ActionResult r =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;

    (void)ctx;
    rpc_call_finish(call, &r.base, NULL);
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static int write_file(const char *name, const char *text, mode_t mode)
{
    char path[256];
    FILE *f;

    path_of(path, sizeof(path), name);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    fclose(f);
    return chmod(path, mode);
}

/* A CA, a server certificate for 127.0.0.1 and a client certificate, by
 * the openssl command. */
static int make_certificates(void)
{
    char cmd[4096];

    snprintf(cmd, sizeof(cmd),
             "set -e; exec > /dev/null 2>&1; cd %s; umask 077;"
             "k() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1; };"
             "k ca.key; openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=test-ca"
             " -addext basicConstraints=critical,CA:TRUE;"
             "for n in server client; do k $n.key;"
             " openssl req -new -key $n.key -out $n.csr -subj /CN=$n; done;"
             "echo subjectAltName=IP:127.0.0.1 > server.ext; echo extendedKeyUsage=clientAuth > "
             "client.ext;"
             "for n in server client; do openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key"
             " -CAcreateserial -out $n.pem -days 2 -extfile $n.ext; done",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    static struct rpc_method methods[2];
    struct rpc_server_options opt = {.listen = target, .max_message_bytes = 4 << 20};
    struct auth_settings s = {.client_certificates = true};
    struct auth_policy *p = NULL;
    char cert[256], key[256], ca[256], tokens[256], err[512];

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/casbox-test-rpc-auth.XXXXXX");
    if (mkdtemp(dir) == NULL || make_certificates() != 0)
        return -1;
    if (write_file("tokens", "tok-team read team\ntok-all read\n", 0600) != 0 ||
        write_file("client.token", "tok-all\n", 0600) != 0 ||
        write_file("team.token", "  tok-team  \n", 0600) != 0 ||
        write_file("wrong.token", "tok-nope\n", 0600) != 0 ||
        write_file("world.token", "tok-all\n", 0644) != 0)
        return -1;
    path_of(cert, sizeof(cert), "server.pem");
    path_of(key, sizeof(key), "server.key");
    path_of(ca, sizeof(ca), "ca.pem");
    path_of(tokens, sizeof(tokens), "tokens");
    if (auth_tls_files_load(cert, key, ca, &tls, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    s.tokens_file = tokens;
    if (auth_policy_load(&s, &p, NULL, err, sizeof(err)) != 0 || auth_guard_init(&guard, p) != 0)
        return -1;
    methods[0] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_GET_CAPABILITIES), RPC_UNARY,
                                     RPC_POOL_SHORT, serve_capabilities, AUTH_PERM_READ};
    methods[1] = (struct rpc_method){rpc_client_method_path(RPC_CLIENT_GET_ACTION_RESULT),
                                     RPC_UNARY, RPC_POOL_SHORT, serve_forgetful, AUTH_PERM_READ};
    for (int i = 0; i < RPC_POOL_COUNT; i++) {
        opt.threads[i] = 2;
        opt.queue_length[i] = 100;
    }
    opt.tls.certificate_chain = tls.certificate_chain;
    opt.tls.private_key = tls.private_key;
    opt.tls.client_ca = tls.client_ca;
    opt.auth = &guard;
    grpc_init();
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = free_port();

        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        if (rpc_server_start(&opt, methods, 2, NULL, &server) == 0) {
            snprintf(target, sizeof(target), "grpcs://127.0.0.1:%d", port);
            snprintf(plain_target, sizeof(plain_target), "grpc://127.0.0.1:%d", port);
            return 0;
        }
    }
    return -1;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    rpc_server_stop(server);
    grpc_shutdown();
    auth_guard_destroy(&guard);
    auth_tls_files_free(&tls);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* GetCapabilities with the given client files: the status code. */
static grpc_status_code call_with(const char *url, const char *ca, const char *cert,
                                  const char *key, const char *token, const char *instance,
                                  const char *method_wanted)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
    char pca[256], pcert[256], pkey[256], ptoken[256], err[512];
    struct rpc_client_options opt = {.timeout_ms = 10000};
    struct rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    struct rpc_client *c = NULL;

    if (ca) {
        path_of(pca, sizeof(pca), ca);
        opt.tls_ca_file = pca;
    }
    if (cert) {
        path_of(pcert, sizeof(pcert), cert);
        path_of(pkey, sizeof(pkey), key);
        opt.tls_certificate_file = pcert;
        opt.tls_private_key_file = pkey;
    }
    if (token) {
        path_of(ptoken, sizeof(ptoken), token);
        opt.token_file = ptoken;
    }
    assert_int_equal(rpc_client_open(url, &opt, &c, err, sizeof(err)), 0);
    req.instance_name = (char *)instance;
    if (strcmp(method_wanted, "capabilities") == 0)
        rpc_client_unary(c, RPC_CLIENT_GET_CAPABILITIES, &req.base,
                         &build__bazel__remote__execution__v2__server_capabilities__descriptor,
                         &resp, &st);
    else
        rpc_client_unary(c, RPC_CLIENT_GET_ACTION_RESULT, &req.base,
                         &build__bazel__remote__execution__v2__action_result__descriptor, &resp,
                         &st);
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_client_close(c);
    return st.code;
}

static void test_tls_token(void **state)
{
    (void)state;
    assert_int_equal(call_with(target, "ca.pem", "client.pem", "client.key", "client.token", "x",
                               "capabilities"),
                     GRPC_STATUS_OK);
    /* a verified certificate without a token is known, with the anonymous
     * permissions (none here); a wrong token is not */
    assert_int_equal(
        call_with(target, "ca.pem", "client.pem", "client.key", NULL, "x", "capabilities"),
        GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(
        call_with(target, "ca.pem", "client.pem", "client.key", "wrong.token", "x", "capabilities"),
        GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(call_with(target, "ca.pem", "client.pem", "client.key", "team.token",
                               "team/linux", "capabilities"),
                     GRPC_STATUS_OK);
    assert_int_equal(call_with(target, "ca.pem", "client.pem", "client.key", "team.token", "teamB",
                               "capabilities"),
                     GRPC_STATUS_PERMISSION_DENIED);
}

static void test_handshake_refused(void **state)
{
    (void)state;
    /* no client certificate */
    assert_int_equal(call_with(target, "ca.pem", NULL, NULL, "client.token", "", "capabilities"),
                     GRPC_STATUS_UNAVAILABLE);
    /* plaintext */
    assert_int_equal(call_with(plain_target, NULL, NULL, NULL, "client.token", "", "capabilities"),
                     GRPC_STATUS_UNAVAILABLE);
}

static void test_client_files(void **state)
{
    struct rpc_client_options opt = {0};
    struct rpc_client *c = NULL;
    char path[256], err[512];

    (void)state;
    path_of(path, sizeof(path), "world.token");
    opt.token_file = path;
    assert_int_not_equal(rpc_client_open(target, &opt, &c, err, sizeof(err)), 0);
    assert_null(c);
    assert_non_null(strstr(err, "world.token"));
    assert_non_null(strstr(err, "other users"));
    opt.token_file = NULL;
    path_of(path, sizeof(path), "missing-ca.pem");
    opt.tls_ca_file = path;
    assert_int_not_equal(rpc_client_open(target, &opt, &c, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "missing-ca.pem"));
}

static void test_safety_net(void **state)
{
    (void)state;
    assert_int_equal(
        call_with(target, "ca.pem", "client.pem", "client.key", "client.token", "", "forgetful"),
        GRPC_STATUS_INTERNAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_token),
        cmocka_unit_test(test_handshake_refused),
        cmocka_unit_test(test_client_files),
        cmocka_unit_test(test_safety_net),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
