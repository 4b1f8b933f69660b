/*
 * shared_storage.c - casboxd in front of a shared CAS: opens `[cas] remote`
 * and `[action_cache] remote` (remote/remote.h) from the configuration and
 * makes the local store a cache of the first (remote_attach: reads fetch
 * through on a miss). The services then ask d->remote what the source of
 * truth holds (docs/shared-storage.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

static int shared_storage_open(const struct casbox_config *cfg, const char *url, const char *key,
                               struct remote **out)
{
    struct remote_options opt;
    char err[512];
    int rc;

    memset(&opt, 0, sizeof(opt));
    casboxd_client_options(cfg, &opt.rpc); /* [client]: TLS and token (auth_setup.c) */
    opt.url = url;
    opt.instance_name = cfg->cas_remote_instance_name;
    opt.rpc.timeout_ms = cfg->cas_remote_timeout * 1000;
    opt.rpc.max_message_bytes = cfg->max_message_bytes;
    opt.batch_digests = cfg->cas_remote_batch_digests;
    opt.batch_bytes = cfg->cas_remote_batch_bytes;
    rc = remote_open(&opt, out, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "casboxd: %s: %s\n", key, err);
    return rc;
}

int shared_storage_start(struct casboxd *d)
{
    int rc;

    if (d->cfg.cas_remote[0] != '\0') {
        rc = shared_storage_open(&d->cfg, d->cfg.cas_remote, "[cas] remote", &d->remote);
        if (rc != 0)
            return rc;
        remote_attach(d->remote, d->store);
        LOG_I("CAS: source of truth %s (instance '%s'), the local store a cache of %" PRIu64
              " bytes",
              d->cfg.cas_remote, d->cfg.cas_remote_instance_name, d->cfg.cas_max_bytes);
    }
    if (d->cfg.ac_remote[0] != '\0') {
        rc = shared_storage_open(&d->cfg, d->cfg.ac_remote, "[action_cache] remote", &d->ac_remote);
        if (rc != 0)
            return rc;
        LOG_I("ActionCache: %s", d->cfg.ac_remote);
    }
    return 0;
}

void shared_storage_stop(struct casboxd *d)
{
    if (d->remote != NULL)
        remote_detach(d->remote, d->store);
    remote_close(d->ac_remote);
    remote_close(d->remote);
    d->ac_remote = NULL;
    d->remote = NULL;
}

/* --- what the services ask the source of truth --- */

/* A failed call to a remote as the client's status: the remote's code when
 * it is one the client can act on, else UNAVAILABLE; the message names the
 * remote (remote/ wrote it so). */
static void shared_status(struct reapi_status *st, const struct rpc_client_status *gst)
{
    grpc_status_code code = gst->code;

    if (code != GRPC_STATUS_NOT_FOUND && code != GRPC_STATUS_INVALID_ARGUMENT &&
        code != GRPC_STATUS_RESOURCE_EXHAUSTED && code != GRPC_STATUS_FAILED_PRECONDITION)
        code = GRPC_STATUS_UNAVAILABLE;
    reapi_status_set(st, code, "%s", gst->message);
}

int shared_find_missing(struct casboxd *d, const struct cas_digest *digests, size_t n,
                        bool *missing, struct reapi_status *st)
{
    struct rpc_client_status gst;
    int rc;

    if (d->remote == NULL) {
        /* One index lock for the whole batch (100,000 digests), not one each. */
        rc = cas_store_contains_many(d->store, digests, n, missing);
        if (rc < 0) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "negative digest size");
            return rc;
        }
        for (size_t i = 0; i < n; i++)
            missing[i] = !missing[i]; /* it said present */
        return 0;
    }
    rc = remote_find_missing(d->remote, NULL, digests, n, missing, &gst);
    if (rc != 0)
        shared_status(st, &gst);
    return rc;
}

int shared_push(struct casboxd *d, const struct cas_digest *digests, size_t n,
                struct reapi_status *st)
{
    struct rpc_client_status gst;
    int rc;

    if (d->remote == NULL || n == 0)
        return 0;
    rc = remote_push(d->remote, d->store, NULL, digests, n, &gst);
    if (rc != 0) {
        LOG_W("%s", gst.message);
        shared_status(st, &gst);
    }
    return rc;
}

void shared_read_status(struct casboxd *d, const struct cas_digest *dg, int rc,
                        struct reapi_status *st)
{
    char hex[CAS_HASH_HEX + 1], reason[512];

    cas_digest_hex(dg, hex);
    if (rc == -ENOENT)
        reapi_status_set(st, GRPC_STATUS_NOT_FOUND, "blob %s/%" PRId64 " not found%s%s", hex,
                         dg->size, d->remote ? " here or in " : "",
                         d->remote ? remote_url(d->remote) : "");
    else if (cas_store_fetch_error(d->store, dg, reason, sizeof(reason)) != 0)
        reapi_status_set(st, GRPC_STATUS_UNAVAILABLE, "blob %s/%" PRId64 ": %s", hex, dg->size,
                         reason);
    else
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "reading blob %s/%" PRId64 ": %s", hex, dg->size,
                         strerror(-rc));
}

int shared_ac_get(struct casboxd *d, const char *instance, const struct cas_digest *action,
                  void **buf, size_t *len, struct reapi_status *st)
{
    struct rpc_client_status gst;
    int rc;

    if (d->ac_remote == NULL) {
        rc = cas_ac_get(d->store, instance, action, buf, len);
        if (rc != 0 && rc != -ENOENT)
            reapi_status_set(st, GRPC_STATUS_INTERNAL, "reading the action cache failed: %s",
                             strerror(-rc));
        return rc;
    }
    rc = remote_ac_get(d->ac_remote, NULL, action, buf, len, &gst);
    if (rc != 0 && rc != -ENOENT)
        shared_status(st, &gst);
    return rc;
}

int shared_ac_put(struct casboxd *d, const char *instance, const struct cas_digest *action,
                  const void *buf, size_t len, struct reapi_status *st)
{
    struct rpc_client_status gst;
    int rc;

    if (d->ac_remote == NULL) {
        rc = cas_ac_put(d->store, instance, action, buf, len);
        if (rc != 0) {
            char why[512];
            grpc_status_code code = svc_store_error(d, rc, len, why, sizeof(why));

            reapi_status_set(st, code, "writing the action cache failed: %s", why);
        }
        return rc;
    }
    rc = remote_ac_put(d->ac_remote, NULL, action, buf, len, &gst);
    if (rc != 0)
        shared_status(st, &gst);
    return rc;
}
