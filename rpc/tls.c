/*
 * tls.c - grpc's TLS credentials: the server's (its certificate and key,
 * and client_ca for mutual TLS, which then requires and verifies a client
 * certificate in the handshake) and a client's for grpcs:// (a CA bundle,
 * optionally a client certificate and key). The files are read and checked
 * by auth/ (auth_tls_files_load, auth_tls_read_pem). Command-line clients
 * name their files in the environment (rpc_client_options_from_env).
 */
#include "rpc_internal.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* grpc 1.51 asserts that a fetched config has root certificates, even
 * where no client certificate is asked for: the server's own chain stands
 * in then (never used: without client_ca no client certificate is asked
 * for, so there is nothing to verify). */
static grpc_ssl_server_certificate_config *tls_config_new(const struct rpc_server_tls *tls)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = tls->private_key,
                                       .cert_chain = tls->certificate_chain};

    return grpc_ssl_server_certificate_config_create(
        tls->client_ca != NULL ? tls->client_ca : tls->certificate_chain, &pair, 1);
}

/* grpc, at each new handshake: the pending config once (grpc owns it
 * then), else UNCHANGED. */
static grpc_ssl_certificate_config_reload_status tls_fetch(void *user,
                                                           grpc_ssl_server_certificate_config **out)
{
    struct rpc_server_tls_state *state = user;
    grpc_ssl_certificate_config_reload_status rc = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;

    pthread_mutex_lock(&state->lock);
    if (state->pending != NULL) {
        *out = state->pending;
        state->pending = NULL;
        rc = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    }
    pthread_mutex_unlock(&state->lock);
    return rc;
}

grpc_server_credentials *rpc_tls_server_credentials(const struct rpc_server_options *opt,
                                                    struct rpc_server_tls_state *state)
{
    grpc_ssl_server_credentials_options *options;

    pthread_mutex_init(&state->lock, NULL);
    state->initialized = true;
    state->on = opt->tls.certificate_chain != NULL;
    state->client_ca = opt->tls.client_ca != NULL;
    if (!state->on)
        return grpc_insecure_server_credentials_create();
    state->pending = tls_config_new(&opt->tls); /* grpc fetches it while starting */
    options = grpc_ssl_server_credentials_create_options_using_config_fetcher(
        state->client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                         : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        tls_fetch, state);
    return grpc_ssl_server_credentials_create_with_options(options);
}

int rpc_tls_state_replace(struct rpc_server_tls_state *state, const struct rpc_server_tls *tls)
{
    grpc_ssl_server_certificate_config *config, *old;

    if (!state->on || tls->certificate_chain == NULL || tls->private_key == NULL ||
        (tls->client_ca != NULL) != state->client_ca)
        return -EINVAL;
    config = tls_config_new(tls);
    if (config == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&state->lock);
    old = state->pending;
    state->pending = config;
    pthread_mutex_unlock(&state->lock);
    if (old != NULL)
        grpc_ssl_server_certificate_config_destroy(old);
    return 0;
}

void rpc_tls_state_destroy(struct rpc_server_tls_state *state)
{
    if (!state->initialized)
        return;
    if (state->pending != NULL)
        grpc_ssl_server_certificate_config_destroy(state->pending);
    state->pending = NULL;
    pthread_mutex_destroy(&state->lock);
    state->initialized = false;
}

static void tls_free_secret(char *s)
{
    if (s != NULL)
        memset(s, 0, strlen(s));
    free(s);
}

grpc_channel_credentials *rpc_tls_client_credentials(const struct rpc_client_options *opt,
                                                     char *err, size_t err_len)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_ssl_pem_key_cert_pair pair;
    grpc_channel_credentials *creds = NULL;
    bool want_pair;

    if (opt == NULL)
        return grpc_ssl_credentials_create(NULL, NULL, NULL, NULL);
    want_pair = (opt->tls_certificate_file && opt->tls_certificate_file[0]) ||
                (opt->tls_private_key_file && opt->tls_private_key_file[0]);
    if (auth_tls_read_pem(opt->tls_ca_file, false, &ca, NULL, err, err_len) != 0)
        goto out;
    if (want_pair) {
        if (auth_tls_read_pem(opt->tls_certificate_file, false, &cert, NULL, err, err_len) != 0 ||
            auth_tls_read_pem(opt->tls_private_key_file, true, &key, NULL, err, err_len) != 0)
            goto out;
        if (cert == NULL || key == NULL) {
            snprintf(err, err_len, "a client certificate needs both its file and its key's");
            goto out;
        }
        pair.cert_chain = cert;
        pair.private_key = key;
    }
    creds = grpc_ssl_credentials_create(ca, want_pair ? &pair : NULL, NULL, NULL);
    if (creds == NULL)
        snprintf(err, err_len, "cannot create TLS credentials");
out:
    free(ca);
    free(cert);
    tls_free_secret(key);
    return creds;
}

static void tls_env(const char **field, const char *name)
{
    const char *v = getenv(name);

    if (*field == NULL && v != NULL && v[0] != '\0')
        *field = v;
}

void rpc_client_options_from_env(struct rpc_client_options *opt)
{
    tls_env(&opt->tls_ca_file, "CASBOX_TLS_CA");
    tls_env(&opt->tls_certificate_file, "CASBOX_TLS_CERT");
    tls_env(&opt->tls_private_key_file, "CASBOX_TLS_KEY");
    tls_env(&opt->token_file, "CASBOX_TOKEN_FILE");
}
