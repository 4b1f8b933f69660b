/*
 * table.c - the tokens file and the certificates file: parsing
 * `NAME PERMISSIONS [INSTANCE_PREFIX...]` lines, and finding a caller's
 * entry. A token is kept only as its SHA-256, and a lookup compares the
 * presented token's digest with every entry's in constant time
 * (CRYPTO_memcmp, no early exit), so timing tells nothing about how much of
 * a token was right.
 */
#include "auth_internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int auth_digest(const void *data, size_t len, uint8_t out[AUTH_DIGEST_BYTES])
{
    unsigned int n = 0;

    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != AUTH_DIGEST_BYTES)
        return -EIO;
    return 0;
}

static void auth_entry_clear(struct auth_entry *e)
{
    for (size_t i = 0; i < e->n_prefixes; i++)
        free(e->prefixes[i]);
    free(e->prefixes);
    free(e->name);
    OPENSSL_cleanse(e->digest, sizeof(e->digest));
}

void auth_table_free(struct auth_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_entries; i++)
        auth_entry_clear(&t->entries[i]);
    free(t->entries);
    free(t);
}

size_t auth_table_count(const struct auth_table *t)
{
    return t != NULL ? t->n_entries : 0;
}

static int auth_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool auth_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    }
    return true;
}

/* The NAME field: a token (or sha256:<hex>) or a certificate name. */
static int auth_parse_name(enum auth_table_kind kind, const char *f, size_t n, struct auth_entry *e,
                           char *why, size_t why_len)
{
    if (!auth_printable(f, n) || n > 4096) {
        snprintf(why, why_len, "the first field must be printable ASCII, at most 4096 bytes");
        return -EINVAL;
    }
    if (kind == AUTH_TABLE_NAMES) {
        e->name = strndup(f, n);
        return e->name != NULL ? 0 : -ENOMEM;
    }
    if (n >= 7 && memcmp(f, "sha256:", 7) == 0) {
        if (n != 7 + 2 * AUTH_DIGEST_BYTES) {
            snprintf(why, why_len, "sha256: needs 64 hex digits, got %zu characters", n - 7);
            return -EINVAL;
        }
        for (size_t i = 0; i < AUTH_DIGEST_BYTES; i++) {
            int hi = auth_hex_value(f[7 + 2 * i]), lo = auth_hex_value(f[8 + 2 * i]);

            if (hi < 0 || lo < 0) {
                snprintf(why, why_len, "sha256: value is not hex");
                return -EINVAL;
            }
            e->digest[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
    }
    return auth_digest(f, n, e->digest);
}

/* An instance prefix: segments separated by single '/', none empty. */
static int auth_parse_prefix(const char *f, size_t n, struct auth_entry *e, char *why,
                             size_t why_len)
{
    char **grown;

    if (e->n_prefixes >= AUTH_MAX_PREFIXES) {
        snprintf(why, why_len, "more than %d instance prefixes", AUTH_MAX_PREFIXES);
        return -EINVAL;
    }
    if (n > AUTH_MAX_PREFIX || !auth_printable(f, n) || f[0] == '/' || f[n - 1] == '/' ||
        memmem(f, n, "//", 2) != NULL) {
        snprintf(why, why_len,
                 "instance prefix '%.*s' is not a name like 'team' or 'team/linux' (at most %d "
                 "bytes, no empty segment)",
                 (int)(n > 80 ? 80 : n), f, AUTH_MAX_PREFIX);
        return -EINVAL;
    }
    grown = realloc(e->prefixes, (e->n_prefixes + 1) * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    e->prefixes = grown;
    e->prefixes[e->n_prefixes] = strndup(f, n);
    if (e->prefixes[e->n_prefixes] == NULL)
        return -ENOMEM;
    e->n_prefixes++;
    return 0;
}

static bool auth_is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* One non-comment line into e; why says what is wrong. */
static int auth_parse_line(enum auth_table_kind kind, const char *s, size_t n, struct auth_entry *e,
                           char *why, size_t why_len)
{
    size_t i = 0, field = 0;
    int rc = 0;

    while (i < n && rc == 0) {
        size_t start;

        while (i < n && auth_is_space(s[i]))
            i++;
        if (i == n)
            break;
        start = i;
        while (i < n && !auth_is_space(s[i]))
            i++;
        if (field == 0)
            rc = auth_parse_name(kind, s + start, i - start, e, why, why_len);
        else if (field == 1)
            rc = auth_perms_parse(s + start, i - start, &e->perms, why, why_len);
        else
            rc = auth_parse_prefix(s + start, i - start, e, why, why_len);
        field++;
    }
    if (rc == 0 && field < 2) {
        snprintf(why, why_len, "expected %s PERMISSIONS [INSTANCE_PREFIX...]",
                 kind == AUTH_TABLE_TOKENS ? "TOKEN" : "NAME");
        rc = -EINVAL;
    }
    if (rc == -ENOMEM)
        snprintf(why, why_len, "out of memory");
    return rc;
}

static bool auth_entry_same(enum auth_table_kind kind, const struct auth_entry *a,
                            const struct auth_entry *b)
{
    if (kind == AUTH_TABLE_NAMES)
        return strcmp(a->name, b->name) == 0;
    return memcmp(a->digest, b->digest, AUTH_DIGEST_BYTES) == 0;
}

/* Appends e to t; a credential listed twice is refused (which line wins
 * would be a guess). */
static int auth_table_add(struct auth_table *t, struct auth_entry *e, size_t *cap, char *why,
                          size_t why_len)
{
    for (size_t i = 0; i < t->n_entries; i++) {
        if (auth_entry_same(t->kind, &t->entries[i], e)) {
            snprintf(why, why_len, "the same %s as line %u",
                     t->kind == AUTH_TABLE_TOKENS ? "token" : "name", t->entries[i].line);
            return -EINVAL;
        }
    }
    if (t->n_entries >= AUTH_MAX_ENTRIES) {
        snprintf(why, why_len, "more than %d entries", AUTH_MAX_ENTRIES);
        return -EINVAL;
    }
    if (t->n_entries == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct auth_entry *grown = realloc(t->entries, ncap * sizeof(*grown));

        if (grown == NULL) {
            snprintf(why, why_len, "out of memory");
            return -ENOMEM;
        }
        t->entries = grown;
        *cap = ncap;
    }
    t->entries[t->n_entries++] = *e;
    memset(e, 0, sizeof(*e));
    return 0;
}

int auth_table_parse(enum auth_table_kind kind, const char *source, const char *text, size_t len,
                     struct auth_table **out, char *err, size_t err_len)
{
    struct auth_table *t = calloc(1, sizeof(*t));
    struct auth_entry e;
    char why[256];
    size_t pos = 0, cap = 0;
    unsigned line = 0;
    int rc = 0;

    *out = NULL;
    memset(&e, 0, sizeof(e));
    if (t == NULL) {
        snprintf(err, err_len, "%s: out of memory", source);
        return -ENOMEM;
    }
    t->kind = kind;
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos, i = 0;

        line++;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && s[n - 1] == '\r')
            n--;
        why[0] = '\0';
        if (n > AUTH_MAX_LINE) {
            snprintf(why, sizeof(why), "longer than %d bytes", AUTH_MAX_LINE);
            rc = -EINVAL;
        } else if (memchr(s, '\0', n) != NULL) {
            snprintf(why, sizeof(why), "contains a NUL byte");
            rc = -EINVAL;
        }
        if (rc != 0)
            break;
        while (i < n && auth_is_space(s[i]))
            i++;
        if (i == n || s[i] == '#')
            continue;
        e.line = line;
        rc = auth_parse_line(kind, s + i, n - i, &e, why, sizeof(why));
        if (rc == 0)
            rc = auth_table_add(t, &e, &cap, why, sizeof(why));
        auth_entry_clear(&e);
        memset(&e, 0, sizeof(e));
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        snprintf(err, err_len, "%s:%u: %s", source, line, why);
        auth_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int auth_table_load(enum auth_table_kind kind, const char *path, struct auth_table **out,
                    void (*warn)(const char *line), char *err, size_t err_len)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    rc = auth_file_read(path, true, &text, &len, warn, err, err_len);
    if (rc == 0)
        rc = auth_table_parse(kind, path, text, len, out, err, err_len);
    if (text != NULL) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    return rc;
}

const struct auth_entry *auth_table_find_token(const struct auth_table *t, const char *token,
                                               size_t len)
{
    uint8_t digest[AUTH_DIGEST_BYTES];
    const struct auth_entry *found = NULL;

    if (t == NULL || t->kind != AUTH_TABLE_TOKENS || auth_digest(token, len, digest) != 0)
        return NULL;
    for (size_t i = 0; i < t->n_entries; i++) {
        /* Every entry is compared; only the pointer choice depends on the
         * result (entries are unique, so at most one matches). */
        int differ = CRYPTO_memcmp(digest, t->entries[i].digest, AUTH_DIGEST_BYTES);

        if (differ == 0)
            found = &t->entries[i];
    }
    OPENSSL_cleanse(digest, sizeof(digest));
    return found;
}

const struct auth_entry *auth_table_find_name(const struct auth_table *t, const char *name,
                                              size_t len)
{
    if (t == NULL || t->kind != AUTH_TABLE_NAMES)
        return NULL;
    for (size_t i = 0; i < t->n_entries; i++) {
        if (strlen(t->entries[i].name) == len && memcmp(t->entries[i].name, name, len) == 0)
            return &t->entries[i];
    }
    return NULL;
}

unsigned auth_entry_perms(const struct auth_entry *e, const char *instance)
{
    if (e->n_prefixes == 0)
        return e->perms;
    for (size_t i = 0; i < e->n_prefixes; i++) {
        if (auth_prefix_matches(e->prefixes[i], instance))
            return e->perms;
    }
    return AUTH_PERM_NONE;
}

unsigned auth_entry_line(const struct auth_entry *e)
{
    return e->line;
}
