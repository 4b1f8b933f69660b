/*
 * tls_files.c - [tls] certificate, private_key and client_ca, read and
 * checked with OpenSSL before grpc gets them, so that a mistake stops
 * casboxd with a line naming the file instead of failing every handshake
 * later: each certificate must parse and be valid now, the key must match
 * the certificate and be unreadable by other users.
 */
#include "auth_internal.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool tls_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Checks every certificate of a PEM text; *first gets the first one (the
 * caller frees it) when first is not NULL. */
static int tls_check_certificates(const char *path, const char *pem, size_t len, X509 **first,
                                  char *err, size_t err_len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    unsigned n = 0;
    int rc = 0;

    if (first != NULL)
        *first = NULL;
    if (bio == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -ENOMEM;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        n++;
        if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
            snprintf(err, err_len, "%s: certificate %u is not valid yet (notBefore in the future)",
                     path, n);
            rc = -EINVAL;
        } else if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
            snprintf(err, err_len, "%s: certificate %u has expired (notAfter in the past)", path,
                     n);
            rc = -EINVAL;
        }
        if (rc == 0 && first != NULL && *first == NULL)
            *first = x;
        else
            X509_free(x);
        if (rc != 0)
            break;
    }
    ERR_clear_error();
    if (rc == 0 && n == 0) {
        snprintf(err, err_len, "%s: no PEM certificate in it", path);
        rc = -EINVAL;
    }
    if (rc != 0 && first != NULL && *first != NULL) {
        X509_free(*first);
        *first = NULL;
    }
    BIO_free(bio);
    return rc;
}

static int tls_check_key(const char *path, const char *pem, size_t len, X509 *cert,
                         const char *cert_path, char *err, size_t err_len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key;
    int rc = 0;

    if (bio == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -ENOMEM;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (key == NULL) {
        snprintf(err, err_len, "%s: no unencrypted PEM private key in it", path);
        rc = -EINVAL;
    } else if (X509_check_private_key(cert, key) != 1) {
        snprintf(err, err_len, "%s: the key does not match the certificate %s", path, cert_path);
        rc = -EINVAL;
    }
    ERR_clear_error();
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

int auth_tls_read_pem(const char *path, bool secret, char **out, void (*warn)(const char *line),
                      char *err, size_t err_len)
{
    size_t len;
    int rc;

    *out = NULL;
    if (!tls_set(path))
        return 0;
    rc = auth_file_read(path, secret, out, &len, warn, err, err_len);
    if (rc == 0 && !secret)
        rc = tls_check_certificates(path, *out, len, NULL, err, err_len);
    if (rc != 0 && *out != NULL) {
        OPENSSL_cleanse(*out, len);
        free(*out);
        *out = NULL;
    }
    return rc;
}

void auth_tls_files_free(struct auth_tls_files *f)
{
    if (f->private_key != NULL)
        OPENSSL_cleanse(f->private_key, strlen(f->private_key));
    free(f->private_key);
    free(f->certificate_chain);
    free(f->client_ca);
    memset(f, 0, sizeof(*f));
}

int auth_tls_files_load(const char *certificate, const char *private_key, const char *client_ca,
                        struct auth_tls_files *out, void (*warn)(const char *line), char *err,
                        size_t err_len)
{
    X509 *cert = NULL;
    size_t len;
    int rc;

    memset(out, 0, sizeof(*out));
    if (tls_set(certificate) != tls_set(private_key)) {
        snprintf(err, err_len,
                 "[tls] certificate and private_key go together: set both or neither");
        return -EINVAL;
    }
    if (!tls_set(certificate)) {
        if (tls_set(client_ca)) {
            snprintf(err, err_len, "[tls] client_ca needs certificate and private_key (TLS on)");
            return -EINVAL;
        }
        return 0;
    }
    rc = auth_file_read(certificate, false, &out->certificate_chain, &len, warn, err, err_len);
    if (rc == 0)
        rc = tls_check_certificates(certificate, out->certificate_chain, len, &cert, err, err_len);
    if (rc == 0)
        rc = auth_file_read(private_key, true, &out->private_key, &len, warn, err, err_len);
    if (rc == 0)
        rc = tls_check_key(private_key, out->private_key, len, cert, certificate, err, err_len);
    if (rc == 0)
        rc = auth_tls_read_pem(client_ca, false, &out->client_ca, warn, err, err_len);
    X509_free(cert);
    if (rc != 0)
        auth_tls_files_free(out);
    return rc;
}
