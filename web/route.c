/*
 * route.c - which page a request path names: /, /metrics, /history,
 * /action/<hash>/<size>, /dir/<hash>/<size>, /blob/<hash>/<size>[/<name>].
 *
 * The path comes from the network: every digest is checked (64 lowercase
 * hex digits, a decimal size without sign that fits int64) and a download
 * name may hold only [A-Za-z0-9._+-] (it goes into a Content-Disposition
 * header). libmicrohttpd has already split off and decoded the query string.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "web.h"

/* A strict non-negative decimal of at most 18 digits (fits int64). */
static int web_route_size(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;

    if (len == 0 || len > 18)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static bool web_route_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > 255 || (len == 1 && s[0] == '.') ||
        (len == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+'))
            return false;
    }
    return true;
}

/* "<hash>/<size>[/<rest>]" after a prefix; *rest points past the size. */
static int web_route_digest(const char *p, struct web_route *out, const char **rest, char *detail,
                            size_t detail_len)
{
    const char *slash = strchr(p, '/');
    const char *end;
    int64_t size;

    if (slash == NULL || slash - p != CAS_HASH_HEX) {
        snprintf(detail, detail_len, "expected a 64-digit lowercase hex SHA-256 hash");
        return -EINVAL;
    }
    for (const char *h = p; h < slash; h++) {
        if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'))) {
            snprintf(detail, detail_len, "expected a 64-digit lowercase hex SHA-256 hash");
            return -EINVAL;
        }
    }
    end = strchr(slash + 1, '/');
    if (end == NULL)
        end = slash + 1 + strlen(slash + 1);
    if (web_route_size(slash + 1, (size_t)(end - slash - 1), &size) != 0) {
        snprintf(detail, detail_len, "expected the blob size as a decimal number of bytes");
        return -EINVAL;
    }
    if (cas_digest_parse_n(p, CAS_HASH_HEX, size, &out->digest) != 0) {
        snprintf(detail, detail_len, "not a valid digest");
        return -EINVAL;
    }
    *rest = end;
    return 0;
}

int web_route_parse(const char *path, struct web_route *out, char *detail, size_t detail_len)
{
    static const struct {
        const char *prefix;
        enum web_route_kind kind;
    } digest_pages[] = {
        {"/action/", WEB_ROUTE_ACTION},
        {"/dir/", WEB_ROUTE_DIR},
        {"/blob/", WEB_ROUTE_BLOB},
    };
    const char *rest;

    memset(out, 0, sizeof(*out));
    if (detail_len > 0)
        detail[0] = '\0';
    if (strcmp(path, "/") == 0) {
        out->kind = WEB_ROUTE_OVERVIEW;
        return 0;
    }
    if (strcmp(path, "/metrics") == 0) {
        out->kind = WEB_ROUTE_METRICS;
        return 0;
    }
    if (strcmp(path, "/history") == 0) {
        out->kind = WEB_ROUTE_HISTORY;
        return 0;
    }
    for (size_t i = 0; i < sizeof(digest_pages) / sizeof(digest_pages[0]); i++) {
        size_t n = strlen(digest_pages[i].prefix);

        if (strncmp(path, digest_pages[i].prefix, n) != 0)
            continue;
        out->kind = digest_pages[i].kind;
        if (web_route_digest(path + n, out, &rest, detail, detail_len) != 0)
            return -EINVAL;
        if (*rest == '\0')
            return 0;
        if (out->kind != WEB_ROUTE_BLOB || !web_route_name_valid(rest + 1, strlen(rest + 1))) {
            snprintf(detail, detail_len,
                     "unexpected text after the size (a download name may hold only letters, "
                     "digits and ._+-)");
            return -EINVAL;
        }
        snprintf(out->name, sizeof(out->name), "%s", rest + 1);
        return 0;
    }
    return -ENOENT;
}
