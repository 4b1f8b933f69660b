/*
 * tls.c - grpc's TLS credentials: the server's (its certificate and key,
 * and client_ca for mutual TLS, which then requires and verifies a client
 * certificate in the handshake) and a client's for grpcs:// (a CA bundle,
 * optionally a client certificate and key). The files are read and checked
 * by auth/ (auth_tls_files_load, auth_tls_read_pem). Command-line clients
 * name their files in the environment (rpc_client_options_from_env).
 */
#include "rpc_internal.h"

#include <grpc/grpc_security.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

grpc_server_credentials *rpc_tls_server_credentials(const struct rpc_server_options *opt)
{
    grpc_ssl_pem_key_cert_pair pair;

    if (opt->tls.certificate_chain == NULL)
        return grpc_insecure_server_credentials_create();
    pair.private_key = opt->tls.private_key;
    pair.cert_chain = opt->tls.certificate_chain;
    return grpc_ssl_server_credentials_create_ex(
        opt->tls.client_ca, &pair, 1,
        opt->tls.client_ca != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
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
