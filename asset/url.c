/*
 * url.c - which URLs may be fetched: [asset] allowed_url_prefixes.
 *
 * A plain string prefix would let "https://example.com" allow
 * "https://example.com.evil.org/" or "https://example.com@evil.org/", so the
 * URL is parsed and normalised by curl's own URL parser (the one that then
 * requests it: no second opinion on what the URL means), URLs with
 * credentials are refused, scheme and host compare without case, and a
 * prefix must end at a boundary.
 */
#include "asset.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

bool asset_url_is_http(const char *uri)
{
    return strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0;
}

/* Length of "scheme://authority" at the start of url (the part compared
 * without case). */
static size_t url_origin_len(const char *url)
{
    const char *sep = strstr(url, "://");
    size_t n;

    if (sep == NULL)
        return 0;
    n = (size_t)(sep - url) + 3;
    return n + strcspn(url + n, "/?#");
}

static bool url_prefix_matches_one(const char *url, const char *prefix, size_t plen)
{
    size_t origin = url_origin_len(url);
    size_t head = origin < plen ? origin : plen;

    if (plen == 0 || strlen(url) < plen)
        return false;
    if (strncasecmp(url, prefix, head) != 0 || strncmp(url + head, prefix + head, plen - head) != 0)
        return false;
    if (prefix[plen - 1] == '/')
        return true;
    return url[plen] == '\0' || url[plen] == '/' || url[plen] == '?' || url[plen] == '#';
}

bool asset_url_prefix_match(const char *url, const char *prefixes)
{
    const char *p = prefixes;

    for (;;) {
        size_t len;

        p += strspn(p, " \t");
        len = strcspn(p, " \t");
        if (len == 0)
            return false;
        if (url_prefix_matches_one(url, p, len))
            return true;
        p += len;
    }
}

/* curl's normal form of url into out; -EINVAL when it does not parse,
 * -EPROTONOSUPPORT when not http(s), -EACCES when it has credentials. */
static int url_normalize(const char *url, char *out, size_t out_len)
{
    CURLU *h = curl_url();
    char *scheme = NULL, *part = NULL, *full = NULL;
    int rc = -EINVAL;

    if (h == NULL)
        return -ENOMEM;
    if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        goto out;
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        rc = -EPROTONOSUPPORT;
        goto out;
    }
    if (curl_url_get(h, CURLUPART_USER, &part, 0) == CURLUE_OK ||
        curl_url_get(h, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK) {
        rc = -EACCES;
        goto out;
    }
    if (curl_url_get(h, CURLUPART_URL, &full, 0) != CURLUE_OK)
        goto out;
    if (strlen(full) >= out_len) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    memcpy(out, full, strlen(full) + 1);
    rc = 0;
out:
    curl_free(scheme);
    curl_free(part);
    curl_free(full);
    curl_url_cleanup(h);
    return rc;
}

int asset_url_check(const char *url, const char *prefixes, char *normalized, size_t normalized_len)
{
    char prefix[ASSET_MAX_URI_LEN], norm_prefix[ASSET_MAX_URI_LEN];
    const char *p = prefixes;
    int rc;

    rc = url_normalize(url, normalized, normalized_len);
    if (rc == -EACCES || rc == -ENAMETOOLONG)
        return -EINVAL;
    if (rc != 0)
        return rc;
    for (;;) {
        size_t len;

        p += strspn(p, " \t");
        len = strcspn(p, " \t");
        if (len == 0)
            return -EPERM;
        if (len < sizeof(prefix)) {
            memcpy(prefix, p, len);
            prefix[len] = '\0';
            /* The prefix in curl's form too ("https://h" -> "https://h/");
             * as written when it is only part of a URL. */
            if (url_normalize(prefix, norm_prefix, sizeof(norm_prefix)) == 0 &&
                url_prefix_matches_one(normalized, norm_prefix, strlen(norm_prefix)))
                return 0;
            if (url_prefix_matches_one(normalized, prefix, len))
                return 0;
        }
        p += len;
    }
}
