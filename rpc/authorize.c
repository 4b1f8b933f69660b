/*
 * authorize.c - the gRPC side of authorization: a call's bearer token
 * (metadata "authorization: Bearer ...") and its verified client
 * certificate's names (grpc_auth_context: CN and SANs) become an
 * auth_peer, which auth/ judges against the current policy. Refusals are
 * logged at most AUTH_LOG_BURST a second (peer, method, instance, reason;
 * never the token).
 *
 * A call holds a reference to the policy it was judged by, so a SIGHUP
 * reload never changes the rules under a running call.
 */
#include "rpc_internal.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

#define AUTH_LOG_BURST 20
#define AUTH_MAX_NAMES 16
#define AUTH_NAME_LEN  256

void rpc_server_auth_init(struct rpc_server_auth *a, const struct rpc_server_options *opt)
{
    memset(a, 0, sizeof(*a));
    a->guard = opt->auth;
    a->client_certificates = opt->tls.certificate_chain != NULL && opt->tls.client_ca != NULL;
    auth_log_limiter_init(&a->limiter, AUTH_LOG_BURST);
}

void rpc_server_auth_destroy(struct rpc_server_auth *a)
{
    auth_log_limiter_destroy(&a->limiter);
}

/* The bearer token of the call's metadata, or NULL. */
static const char *authorize_bearer(struct rpc_call *c, size_t *len)
{
    size_t n = 0;
    const char *v = rpc_call_metadata(c, "authorization", &n);

    if (v == NULL || n < 7 || strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    n -= 7;
    while (n > 0 && v[0] == ' ') {
        v++;
        n--;
    }
    *len = n;
    return v;
}

/* The CN and SANs of the peer's verified certificate, into names. */
static size_t authorize_names(grpc_auth_context *ctx, char names[][AUTH_NAME_LEN],
                              const char **ptrs)
{
    static const char *const props[] = {GRPC_X509_CN_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME};
    size_t n = 0;

    for (size_t p = 0; p < 2; p++) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, props[p]);
        const grpc_auth_property *prop;

        while ((prop = grpc_auth_property_iterator_next(&it)) != NULL && n < AUTH_MAX_NAMES) {
            size_t len =
                prop->value_length < AUTH_NAME_LEN - 1 ? prop->value_length : AUTH_NAME_LEN - 1;

            memcpy(names[n], prop->value, len);
            names[n][len] = '\0';
            ptrs[n] = names[n];
            n++;
        }
    }
    return n;
}

/* One log line per refused call, rate-limited. */
static void authorize_log(struct rpc_call *c, const char *instance, grpc_status_code code,
                          const char *reason)
{
    struct rpc_server_auth *a = rpc_call_server_auth(c);
    uint64_t suppressed = 0;
    char *peer;

    if (!auth_log_limiter_allow(&a->limiter, clock_mono_us(), &suppressed))
        return;
    if (suppressed)
        LOG_W("%" PRIu64 " refused calls were not logged (at most %d lines a second)", suppressed,
              AUTH_LOG_BURST);
    peer = grpc_call_get_peer(rpc_call_grpc(c));
    LOG_W("refused %s from %s, instance '%.200s': %s: %s", rpc_call_method(c), peer ? peer : "?",
          instance ? instance : "(before the request)", rpc_status_code_name(code), reason);
    gpr_free(peer);
}

static grpc_status_code authorize_code(enum auth_result r)
{
    return r == AUTH_UNAUTHENTICATED ? GRPC_STATUS_UNAUTHENTICATED : GRPC_STATUS_PERMISSION_DENIED;
}

int rpc_call_authenticate(struct rpc_call *c)
{
    struct rpc_server_auth *a = rpc_call_server_auth(c);
    struct rpc_call_auth *s = rpc_call_auth_state(c);
    char names[AUTH_MAX_NAMES][AUTH_NAME_LEN];
    const char *ptrs[AUTH_MAX_NAMES];
    struct auth_peer peer;
    grpc_auth_context *ctx = NULL;

    memset(s, 0, sizeof(*s));
    if (a->guard == NULL) {
        s->authorized = true;
        return 0;
    }
    s->policy = auth_guard_acquire(a->guard);
    if (!auth_policy_enabled(s->policy)) {
        s->authorized = true;
        return 0;
    }
    memset(&peer, 0, sizeof(peer));
    peer.token = authorize_bearer(c, &peer.token_len);
    if (a->client_certificates) {
        ctx = grpc_call_auth_context(rpc_call_grpc(c));
        if (ctx != NULL && grpc_auth_context_peer_is_authenticated(ctx)) {
            peer.has_certificate = true;
            peer.n_names = authorize_names(ctx, names, ptrs);
            peer.names = ptrs;
        }
    }
    auth_policy_identify(s->policy, &peer, &s->id);
    if (ctx != NULL)
        grpc_auth_context_release(ctx);
    if (s->id.result == AUTH_OK)
        return 0;
    authorize_log(c, NULL, authorize_code(s->id.result), s->id.reason);
    rpc_call_fail(c, authorize_code(s->id.result), "%s", s->id.reason);
    return -EACCES;
}

int rpc_call_authorize(struct rpc_call *c, const char *instance, struct reapi_status *st)
{
    struct rpc_call_auth *s = rpc_call_auth_state(c);
    enum auth_result r;
    char reason[512];

    if (s->policy == NULL || !auth_policy_enabled(s->policy)) {
        s->authorized = true;
        return 0;
    }
    r = auth_identity_check(&s->id, rpc_call_method_perm(c), instance, reason, sizeof(reason));
    if (r == AUTH_OK) {
        s->authorized = true;
        return 0;
    }
    reapi_status_init(st);
    st->code = authorize_code(r);
    snprintf(st->message, sizeof(st->message), "%s", reason);
    authorize_log(c, instance ? instance : "", st->code, reason);
    return -EACCES;
}

unsigned rpc_call_permissions(struct rpc_call *c, const char *instance)
{
    struct rpc_call_auth *s = rpc_call_auth_state(c);

    s->authorized = true;
    if (s->policy == NULL || !auth_policy_enabled(s->policy))
        return AUTH_PERM_ALL;
    return auth_identity_perms(&s->id, instance ? instance : "");
}

bool rpc_call_auth_may_answer(struct rpc_call *c)
{
    struct rpc_call_auth *s = rpc_call_auth_state(c);

    if (s->authorized)
        return true;
    LOG_E("%s: the handler answered without rpc_call_authorize; refused (a bug)",
          rpc_call_method(c));
    return false;
}

void rpc_call_auth_release(struct rpc_call *c)
{
    struct rpc_server_auth *a = rpc_call_server_auth(c);
    struct rpc_call_auth *s = rpc_call_auth_state(c);

    if (s->policy != NULL)
        auth_guard_release(a->guard, s->policy);
    s->policy = NULL;
}
