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
