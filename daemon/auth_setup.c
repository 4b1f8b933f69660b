/*
 * auth_setup.c - casboxd's [tls] and [auth] at start-up and on SIGHUP: the
 * TLS files read and checked (auth_tls_files_load), the credentials policy
 * loaded into the guard the gRPC server judges calls by, and its reload.
 * Any problem at start-up stops casboxd with one line naming the file; on
 * SIGHUP the old policy (and the old certificate) stays and the log says
 * why. A new certificate serves the handshakes after the reload
 * (rpc_server_tls_replace); connections already made keep theirs.
 */
#include <stdio.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

static void auth_setup_warn(const char *line)
{
    LOG_W("%s", line);
}

static void auth_setup_settings(const struct casbox_config *cfg, struct auth_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->tokens_file = cfg->auth_tokens_file;
    s->certificates_file = cfg->auth_certificates_file;
    s->anonymous = cfg->auth_anonymous;
    s->client_certificates = cfg->tls_client_ca[0] != '\0';
}

int casboxd_auth_start(struct casboxd *d)
{
    struct auth_settings s;
    struct auth_policy *p = NULL;
    char err[1400], line[300];
    int rc;

    rc = auth_tls_files_load(d->cfg.tls_certificate, d->cfg.tls_private_key, d->cfg.tls_client_ca,
                             &d->tls, auth_setup_warn, err, sizeof(err));
    if (rc == 0) {
        auth_setup_settings(&d->cfg, &s);
        rc = auth_policy_load(&s, &p, auth_setup_warn, err, sizeof(err));
    }
    if (rc != 0) {
        fprintf(stderr, "casboxd: %s\n", err);
        auth_tls_files_free(&d->tls);
        return rc;
    }
    rc = auth_guard_init(&d->auth, p);
    if (rc != 0) {
        auth_policy_free(p);
        auth_tls_files_free(&d->tls);
        fprintf(stderr, "casboxd: cannot set up authorization\n");
        return rc;
    }
    auth_policy_describe(p, line, sizeof(line));
    LOG_I("%s; TLS %s%s", line, d->tls.certificate_chain ? "on" : "off",
          d->tls.client_ca ? " with client certificates required" : "");
    if (d->tls.certificate_chain == NULL && d->cfg.auth_tokens_file[0] != '\0')
        LOG_W("[auth] tokens_file without [tls]: bearer tokens cross the network in the clear "
              "(docs/security.md)");
    return 0;
}

void casboxd_auth_stop(struct casboxd *d)
{
    auth_guard_destroy(&d->auth);
    auth_tls_files_free(&d->tls);
}

/* [tls] on SIGHUP: the files again (their paths may change), checked as at
 * start-up, for the handshakes from now on. Turning TLS or client
 * certificates on or off needs a restart. */
static void auth_setup_reload_tls(struct casboxd *d, const struct casbox_config *fresh)
{
    struct rpc_server_tls tls;
    struct auth_tls_files files;
    char err[1400];
    bool on = fresh->tls_certificate[0] != '\0', client_ca = fresh->tls_client_ca[0] != '\0';

    if (d->rpc == NULL)
        return; /* role worker: no listener */
    if (on != (d->tls.certificate_chain != NULL) || client_ca != (d->tls.client_ca != NULL)) {
        LOG_W("reload: turning TLS or client certificates on or off needs a restart; keeping "
              "the current [tls]");
        return;
    }
    if (!on)
        return;
    if (auth_tls_files_load(fresh->tls_certificate, fresh->tls_private_key, fresh->tls_client_ca,
                            &files, auth_setup_warn, err, sizeof(err)) != 0) {
        LOG_W("reload: %s; keeping the current TLS certificate", err);
        return;
    }
    tls.certificate_chain = files.certificate_chain;
    tls.private_key = files.private_key;
    tls.client_ca = files.client_ca;
    if (rpc_server_tls_replace(d->rpc, &tls) != 0 ||
        (d->rpc_workers != NULL && rpc_server_tls_replace(d->rpc_workers, &tls) != 0)) {
        LOG_W("reload: cannot use the new TLS files; keeping the current ones");
        auth_tls_files_free(&files);
        return;
    }
    auth_tls_files_free(&d->tls);
    d->tls = files;
    pthread_mutex_lock(&d->cfg_lock);
    memcpy(d->cfg.tls_certificate, fresh->tls_certificate, sizeof(d->cfg.tls_certificate));
    memcpy(d->cfg.tls_private_key, fresh->tls_private_key, sizeof(d->cfg.tls_private_key));
    memcpy(d->cfg.tls_client_ca, fresh->tls_client_ca, sizeof(d->cfg.tls_client_ca));
    pthread_mutex_unlock(&d->cfg_lock);
    LOG_I("reload: TLS certificate %s read again; new connections use it", fresh->tls_certificate);
    observe_tls_reload(d);
}

void casboxd_auth_reload(struct casboxd *d, const struct casbox_config *fresh)
{
    struct casbox_config now;
    struct auth_settings s;
    struct auth_policy *p = NULL;
    char err[1400], line[300];

    auth_setup_reload_tls(d, fresh);
    casboxd_config_snapshot(d, &now);
    memcpy(now.auth_tokens_file, fresh->auth_tokens_file, sizeof(now.auth_tokens_file));
    memcpy(now.auth_certificates_file, fresh->auth_certificates_file,
           sizeof(now.auth_certificates_file));
    memcpy(now.auth_anonymous, fresh->auth_anonymous, sizeof(now.auth_anonymous));
    auth_setup_settings(&now, &s);
    if (auth_policy_load(&s, &p, auth_setup_warn, err, sizeof(err)) != 0) {
        LOG_W("reload: %s; keeping the current credentials", err);
        return;
    }
    auth_guard_replace(&d->auth, p);
    pthread_mutex_lock(&d->cfg_lock);
    memcpy(d->cfg.auth_tokens_file, now.auth_tokens_file, sizeof(now.auth_tokens_file));
    memcpy(d->cfg.auth_certificates_file, now.auth_certificates_file,
           sizeof(now.auth_certificates_file));
    memcpy(d->cfg.auth_anonymous, now.auth_anonymous, sizeof(now.auth_anonymous));
    pthread_mutex_unlock(&d->cfg_lock);
    auth_policy_describe(p, line, sizeof(line));
    LOG_I("reload: %s", line);
}

void casboxd_client_options(const struct casbox_config *cfg, struct rpc_client_options *out)
{
    memset(out, 0, sizeof(*out));
    out->tls_ca_file = cfg->client_tls_ca[0] ? cfg->client_tls_ca : NULL;
    out->tls_certificate_file = cfg->client_tls_certificate[0] ? cfg->client_tls_certificate : NULL;
    out->tls_private_key_file = cfg->client_tls_private_key[0] ? cfg->client_tls_private_key : NULL;
    out->token_file = cfg->client_token_file[0] ? cfg->client_token_file : NULL;
}
