/*
 * http.c - one HTTP(S) GET into a file descriptor, with libcurl.
 *
 * Why libcurl: it is the HTTP client every Debian system already has
 * (libcurl4-openssl-dev, the same OpenSSL the CAS hashes with), well kept
 * and security-maintained by Debian, and it does TLS, proxies from the
 * environment, chunked encoding and HTTP/2. Writing and maintaining an HTTP
 * client of our own would be more code to audit than all of this file.
 *
 * Only http and https; redirects are followed here, not by curl, so that
 * each target is checked against the allowed prefixes before it is asked
 * for. A body that is not the answer (a redirect's, an error page) is never
 * written, and the transfer stops at its first byte. Every transfer has an
 * absolute deadline, and a body larger than max_bytes stops the transfer
 * before a byte of it is written when the server announces its length, or
 * at the first byte over it otherwise.
 */
#include "asset.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

#define HTTP_MAX_REDIRECTS 8

int asset_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}

void asset_http_global_cleanup(void)
{
    curl_global_cleanup();
}

struct http_sink {
    const struct asset_http_request *req;
    CURL *curl;
    uint64_t bytes;
    bool checked;    /* status and length looked at (first body byte) */
    bool not_answer; /* a redirect's or an error's body: stopped */
    int error;
};

static int http_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t http_on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct http_sink *s = userdata;
    size_t n = size * nmemb;
    int rc;

    if (!s->checked) {
        long code = 0;
        curl_off_t length = -1;

        s->checked = true;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
        if (code < 200 || code > 299) {
            s->not_answer = true;
            return 0;
        }
        curl_easy_getinfo(s->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
        if (length > 0 && (uint64_t)length > s->req->max_bytes) {
            s->error = -EFBIG;
            s->bytes = (uint64_t)length;
            return 0;
        }
    }
    if (s->bytes + n > s->req->max_bytes) {
        s->error = -EFBIG;
        s->bytes += n;
        return 0;
    }
    rc = http_write_all(s->req->fd, ptr, n);
    if (rc != 0) {
        s->error = rc;
        return 0;
    }
    if (s->req->on_data != NULL)
        s->req->on_data(s->req->ctx, ptr, n);
    s->bytes += n;
    return n;
}

/* Called by curl about once a second and as data moves: ends the transfer
 * when casboxd stops. */
static int http_on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                            curl_off_t ultotal, curl_off_t ulnow)
{
    const struct http_sink *s = userdata;

    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return s->req->cancel != NULL && atomic_load(s->req->cancel) ? 1 : 0;
}

/* One request of the chain; *code set when the server answered. */
static int http_once(CURL *curl, struct http_sink *s, const char *url, long *code, char *err,
                     size_t err_len)
{
    char curl_err[CURL_ERROR_SIZE] = "";
    uint64_t now = clock_mono_us();
    CURLcode cc;

    *code = 0;
    if (now >= s->req->deadline_us) {
        snprintf(err, err_len, "%s: timed out", url);
        return -ETIMEDOUT;
    }
    s->checked = s->not_answer = false;
    s->bytes = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)((s->req->deadline_us - now + 999) / 1000));
    cc = curl_easy_perform(curl);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, code);
    if (s->error == -EFBIG) {
        snprintf(err, err_len, "%s: larger than [asset] max_bytes (%" PRIu64 " bytes)", url,
                 s->req->max_bytes);
        return -EFBIG;
    }
    if (s->error != 0) {
        snprintf(err, err_len, "%s: writing the download failed: %s", url, strerror(-s->error));
        return -EIO;
    }
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(err, err_len, "%s: download cancelled: casboxd is stopping", url);
        return -ECANCELED;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(err, err_len, "%s: timed out", url);
        return -ETIMEDOUT;
    }
    if (cc == CURLE_OK || (cc == CURLE_WRITE_ERROR && s->not_answer))
        return 0;
    if (cc == CURLE_OUT_OF_MEMORY)
        return -ENOMEM;
    snprintf(err, err_len, "%s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
    return -ENOENT;
}

int asset_http_get(const struct asset_http_request *req, uint64_t *bytes, char *err, size_t err_len)
{
    struct http_sink s = {.req = req};
    struct curl_slist *headers = NULL;
    char url[ASSET_MAX_URI_LEN];
    CURL *curl;
    int rc = -ENOENT;

    *bytes = 0;
    if (strlen(req->url) >= sizeof(url))
        return -EINVAL;
    memcpy(url, req->url, strlen(req->url) + 1);
    curl = curl_easy_init();
    if (curl == NULL)
        return -ENOMEM;
    s.curl = curl;
    for (size_t i = 0; i < req->n_headers; i++) {
        struct curl_slist *h = curl_slist_append(headers, req->headers[i]);

        if (h == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        headers = h;
    }
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "casboxd/" CASBOX_VERSION);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, http_on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &s);
    for (int hop = 0; hop <= HTTP_MAX_REDIRECTS; hop++) {
        char *location = NULL;
        long code;

        rc = http_once(curl, &s, url, &code, err, err_len);
        if (rc != 0)
            goto out;
        if (code >= 200 && code <= 299) {
            *bytes = s.bytes;
            goto out;
        }
        if (code == 401 || code == 403) {
            snprintf(err, err_len, "%s: HTTP %ld from the server", url, code);
            rc = -EACCES;
            goto out;
        }
        if (code < 300 || code > 399) {
            snprintf(err, err_len, "%s: HTTP %ld from the server", url, code);
            rc = -ENOENT;
            goto out;
        }
        if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
            location == NULL) {
            snprintf(err, err_len, "%s: HTTP %ld without a usable Location", url, code);
            rc = -ENOENT;
            goto out;
        }
        rc = asset_url_check(location, req->prefixes, url, sizeof(url));
        if (rc != 0) {
            snprintf(err, err_len, "%.2000s redirects to %.2000s, which is %s", req->url, location,
                     rc == -EPERM ? "outside [asset] allowed_url_prefixes"
                                  : "not an http(s) URL casboxd fetches");
            rc = rc == -EPERM ? -EPERM : -ENOENT;
            goto out;
        }
    }
    snprintf(err, err_len, "%s: more than %d redirects", req->url, HTTP_MAX_REDIRECTS);
    rc = -ENOENT;
out:
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    return rc;
}
