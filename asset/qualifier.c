/*
 * qualifier.c - a request's qualifiers: which ones fetching from origin
 * honours, the HTTP headers some of them ask for, and the map key made of
 * them.
 *
 * Honoured when fetching from origin: checksum.sri (the content must match),
 * bazel.canonical_id (only part of the key: Bazel's way to tell two contents
 * of one URL apart), resource_type (part of the key; every URL is fetched as
 * a file), http_header:NAME and http_header_url:N:NAME (sent with every URL,
 * or with the N-th; Bazel 7 sends them). Any other qualifier, Bazel 4's
 * bazel.auth_headers among them (credentials are not forwarded), can only be
 * answered from a Push'd mapping with exactly the same qualifiers.
 */
#include "asset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUALIFIER_HEADER     "http_header:"
#define QUALIFIER_HEADER_URL "http_header_url:"

/* An HTTP field name: RFC 9110's token characters. */
static bool qualifier_is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return false;
    }
    return true;
}

/* A field value that cannot end the header or start another one. */
static bool qualifier_is_field_value(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\r' || *s == '\n')
            return false;
    }
    return true;
}

static int qualifier_add_header(struct asset_qualifiers *out, const struct asset_qualifier *q,
                                int url_index, const char *name, char *err, size_t err_len)
{
    char *line;

    if (!qualifier_is_token(name) || !qualifier_is_field_value(q->value)) {
        snprintf(err, err_len, "qualifier \"%.200s\": not a valid HTTP header name and value",
                 q->name);
        return -EINVAL;
    }
    if (out->n_headers == ASSET_MAX_HEADERS) {
        snprintf(err, err_len, "more than %d http_header qualifiers", ASSET_MAX_HEADERS);
        return -E2BIG;
    }
    if (asprintf(&line, "%s: %s", name, q->value) < 0)
        return -ENOMEM;
    out->headers[out->n_headers].url_index = url_index;
    out->headers[out->n_headers].line = line;
    out->n_headers++;
    return 0;
}

/* "http_header_url:N:NAME" */
static int qualifier_header_url(struct asset_qualifiers *out, const struct asset_qualifier *q,
                                char *err, size_t err_len)
{
    const char *p = q->name + strlen(QUALIFIER_HEADER_URL);
    char *end;
    long idx;

    idx = strtol(p, &end, 10);
    if (end == p || *end != ':' || idx < 0 || idx >= ASSET_MAX_URIS || *p == '-' || *p == '+') {
        snprintf(err, err_len, "qualifier \"%.200s\": expected http_header_url:INDEX:NAME",
                 q->name);
        return -EINVAL;
    }
    return qualifier_add_header(out, q, (int)idx, end + 1, err, err_len);
}

void asset_qualifiers_free(struct asset_qualifiers *q)
{
    for (size_t i = 0; i < q->n_headers; i++)
        free(q->headers[i].line);
    q->n_headers = 0;
}

int asset_qualifiers_parse(const struct asset_qualifier *q, size_t n, struct asset_qualifiers *out,
                           char *err, size_t err_len)
{
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (n > ASSET_MAX_QUALIFIERS) {
        snprintf(err, err_len, "%zu qualifiers, more than the %d accepted", n,
                 ASSET_MAX_QUALIFIERS);
        return -E2BIG;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = q[i].name ? q[i].name : "";

        if (name[0] == '\0') {
            snprintf(err, err_len, "qualifier %zu has no name", i);
            rc = -EINVAL;
            break;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(name, q[j].name) == 0) {
                snprintf(err, err_len, "qualifier \"%.200s\" is given twice (names must be unique)",
                         name);
                rc = -EINVAL;
            }
        }
        if (rc != 0)
            break;
        if (strcmp(name, ASSET_QUALIFIER_SRI) == 0) {
            rc = asset_sri_parse(q[i].value ? q[i].value : "", &out->sri, err, err_len);
            out->has_sri = rc == 0;
        } else if (strncmp(name, QUALIFIER_HEADER, strlen(QUALIFIER_HEADER)) == 0) {
            rc =
                qualifier_add_header(out, &q[i], -1, name + strlen(QUALIFIER_HEADER), err, err_len);
        } else if (strncmp(name, QUALIFIER_HEADER_URL, strlen(QUALIFIER_HEADER_URL)) == 0) {
            rc = qualifier_header_url(out, &q[i], err, err_len);
        } else if (strcmp(name, ASSET_QUALIFIER_CANONICAL_ID) != 0 &&
                   strcmp(name, ASSET_QUALIFIER_RESOURCE) != 0 && out->unsupported == NULL) {
            out->unsupported = name;
        }
    }
    if (rc != 0)
        asset_qualifiers_free(out);
    return rc;
}

/* --- keys --- */

struct key_buf {
    uint8_t *data;
    size_t len, cap;
    int error;
};

/* Appends "<length>:<bytes>," (a netstring): no two lists of strings give
 * the same key. */
static void key_add(struct key_buf *k, const char *s)
{
    char head[32];
    size_t slen = s ? strlen(s) : 0;
    int hlen = snprintf(head, sizeof(head), "%zu:", slen);
    size_t need = (size_t)hlen + slen + 1;

    if (k->error != 0)
        return;
    if (k->len + need > ASSET_MAX_KEY_BYTES) {
        k->error = -E2BIG;
        return;
    }
    if (k->len + need > k->cap) {
        size_t cap = k->cap ? k->cap : 256;
        uint8_t *p;

        while (cap < k->len + need)
            cap *= 2;
        p = realloc(k->data, cap);
        if (p == NULL) {
            k->error = -ENOMEM;
            return;
        }
        k->data = p;
        k->cap = cap;
    }
    memcpy(k->data + k->len, head, (size_t)hlen);
    if (slen > 0)
        memcpy(k->data + k->len + hlen, s, slen);
    k->data[k->len + hlen + slen] = ',';
    k->len += need;
}

static int key_compare_qualifiers(const void *a, const void *b)
{
    const struct asset_qualifier *const *x = a, *const *y = b;
    int c = strcmp((*x)->name ? (*x)->name : "", (*y)->name ? (*y)->name : "");

    if (c != 0)
        return c;
    return strcmp((*x)->value ? (*x)->value : "", (*y)->value ? (*y)->value : "");
}

int asset_key_make(enum asset_kind kind, const char *instance, const char *uri,
                   const struct asset_qualifier *q, size_t n, uint8_t **key, size_t *key_len)
{
    const struct asset_qualifier **sorted;
    struct key_buf k = {0};

    *key = NULL;
    if (n > ASSET_MAX_QUALIFIERS)
        return -E2BIG;
    sorted = calloc(n ? n : 1, sizeof(*sorted));
    if (sorted == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &q[i];
    qsort(sorted, n, sizeof(*sorted), key_compare_qualifiers);
    key_add(&k, kind == ASSET_BLOB ? "blob" : "directory");
    key_add(&k, instance);
    key_add(&k, uri);
    for (size_t i = 0; i < n; i++) {
        key_add(&k, sorted[i]->name);
        key_add(&k, sorted[i]->value);
    }
    free(sorted);
    if (k.error != 0) {
        free(k.data);
        return k.error;
    }
    *key = k.data;
    *key_len = k.len;
    return 0;
}
