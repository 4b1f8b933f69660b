/*
 * remote.c - opening the channel to the remote CAS, attaching it to a store
 * (the fetcher and presence check the store calls on a miss), statuses that
 * name the remote, counters.
 */
#include "remote_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

int remote_errno_of(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_NOT_FOUND:
        return -ENOENT;
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return -EHOSTUNREACH;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return -ENOSPC;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return -EINVAL;
    default:
        return -EIO;
    }
}

const char *remote_instance(const struct remote *r, const char *instance)
{
    return instance != NULL ? instance : r->instance;
}

int remote_status_fail(struct remote *r, int rc, const char *call, struct rpc_client_status *st)
{
    char msg[sizeof(st->message)];
    int err = remote_errno_of(st->code);

    snprintf(msg, sizeof(msg), "%s", st->message);
    snprintf(st->message, sizeof(st->message), "remote %s: %s: %s: %s", r->url, call,
             rpc_status_code_name(st->code), msg);
    if (st->code == GRPC_STATUS_OK) {
        st->code = GRPC_STATUS_INTERNAL;
        return rc < 0 ? rc : -EIO;
    }
    return err;
}

int remote_status_set(struct remote *r, int rc, grpc_status_code code, struct rpc_client_status *st,
                      const char *fmt, ...)
{
    char msg[sizeof(st->message)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st->code = code;
    snprintf(st->message, sizeof(st->message), "remote %s: %s", r->url, msg);
    return rc;
}

char *remote_read_resource(const char *instance, const struct cas_digest *d)
{
    char hex[CAS_HASH_HEX + 1], *name = NULL;

    cas_digest_hex(d, hex);
    if (asprintf(&name, "%s%sblobs/%s/%" PRId64, instance, instance[0] ? "/" : "", hex, d->size) <
        0)
        return NULL;
    return name;
}

int remote_open(const struct remote_options *opt, struct remote **out, char *err, size_t err_len)
{
    struct rpc_client_options rpc_opt = opt->rpc;
    struct remote *r = NULL;
    int rc;

    *out = NULL;
    if (opt->url == NULL || strncmp(opt->url, "grpc", 4) != 0 || strstr(opt->url, "://") == NULL) {
        snprintf(err, err_len, "%s: a remote CAS is written grpc://HOST:PORT",
                 opt->url != NULL ? opt->url : "(none)");
        return -EINVAL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto nomem;
    r->url = strdup(opt->url);
    r->instance = strdup(opt->instance_name != NULL ? opt->instance_name : "");
    if (r->url == NULL || r->instance == NULL)
        goto nomem;
    r->batch_digests = opt->batch_digests ? opt->batch_digests : REMOTE_DEFAULT_BATCH_DIGESTS;
    r->batch_bytes = opt->batch_bytes ? opt->batch_bytes : REMOTE_DEFAULT_BATCH_BYTES;
    r->chunk_bytes = opt->chunk_bytes ? opt->chunk_bytes : REMOTE_DEFAULT_CHUNK_BYTES;
    if (rpc_opt.timeout_ms == 0)
        rpc_opt.timeout_ms = REMOTE_DEFAULT_TIMEOUT_MS;
    /* A remote that comes back is used again within seconds, not after
     * grpc's exponential backoff of up to two minutes. */
    if (rpc_opt.max_reconnect_backoff_ms == 0)
        rpc_opt.max_reconnect_backoff_ms = REMOTE_RECONNECT_BACKOFF_MS;
    rc = rpc_client_open(r->url, &rpc_opt, &r->rpc, err, err_len);
    if (rc != 0)
        goto fail;
    *out = r;
    return 0;
nomem:
    snprintf(err, err_len, "%s: out of memory", opt->url);
    rc = -ENOMEM;
fail:
    remote_close(r);
    return rc;
}

void remote_close(struct remote *r)
{
    if (r == NULL)
        return;
    if (r->rpc != NULL)
        rpc_client_close(r->rpc);
    free(r->instance);
    free(r->url);
    free(r);
}

const char *remote_url(const struct remote *r)
{
    return r->url;
}

void remote_get_stats(struct remote *r, struct remote_stats *out)
{
    out->fetched_blobs = atomic_load(&r->fetched_blobs);
    out->fetched_bytes = atomic_load(&r->fetched_bytes);
    out->fetch_failures = atomic_load(&r->fetch_failures);
    out->rejected_blobs = atomic_load(&r->rejected_blobs);
    out->pushed_blobs = atomic_load(&r->pushed_blobs);
    out->pushed_bytes = atomic_load(&r->pushed_bytes);
    out->find_missing_calls = atomic_load(&r->find_missing_calls);
}

/* --- the store's hooks --- */

static int remote_store_fetch(void *ctx, struct cas_store *s, const struct cas_digest *d,
                              char *reason, size_t reason_len)
{
    struct rpc_client_status st = {.code = GRPC_STATUS_OK};
    int rc = remote_fetch(ctx, s, d, &st);

    if (rc < 0)
        snprintf(reason, reason_len, "%s", st.message);
    return rc;
}

static int remote_store_find_missing(void *ctx, const struct cas_digest *digests, size_t n,
                                     bool *missing, char *reason, size_t reason_len)
{
    struct rpc_client_status st = {.code = GRPC_STATUS_OK};
    int rc = remote_find_missing(ctx, NULL, digests, n, missing, &st);

    if (rc < 0)
        snprintf(reason, reason_len, "%s", st.message);
    return rc;
}

int remote_attach(struct remote *r, struct cas_store *store)
{
    cas_store_set_fetcher(store, remote_store_fetch, r);
    cas_store_set_find_missing(store, remote_store_find_missing, r);
    return 0;
}

void remote_detach(struct remote *r, struct cas_store *store)
{
    (void)r;
    cas_store_set_fetcher(store, NULL, NULL);
    cas_store_set_find_missing(store, NULL, NULL);
}
