/*
 * auth_internal.h - what the files of auth/ share: the parsed table's
 * layout (table.c), reading a secret file with its mode checked (file.c)
 * and the token digest (table.c). Not a public header: auth.h is.
 */
#ifndef CASBOX_AUTH_INTERNAL_H
#define CASBOX_AUTH_INTERNAL_H

#include "auth.h"

#define AUTH_DIGEST_BYTES 32

struct auth_entry {
    uint8_t digest[AUTH_DIGEST_BYTES]; /* tokens: SHA-256 of the token */
    char *name;                        /* names: the certificate name */
    unsigned perms;
    char **prefixes; /* none: every instance */
    size_t n_prefixes;
    unsigned line;
};

struct auth_table {
    enum auth_table_kind kind;
    struct auth_entry *entries;
    size_t n_entries;
};

/* SHA-256 of data (OpenSSL). 0 or -EIO. */
int auth_digest(const void *data, size_t len, uint8_t out[AUTH_DIGEST_BYTES]);

/* Reads path whole (at most AUTH_MAX_FILE_SIZE) into a malloc'd,
 * NUL-terminated *out. secret: refuse o+r (-EPERM), warn on g+r. err names
 * the file. */
int auth_file_read(const char *path, bool secret, char **out, size_t *len,
                   void (*warn)(const char *line), char *err, size_t err_len);

#endif
