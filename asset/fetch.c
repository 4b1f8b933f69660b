/*
 * fetch.c - a FetchBlob from origin: the URIs in turn, each downloaded to a
 * temp file in the store's tmp/ (the same filesystem, so that storing it is
 * a rename), checked against checksum.sri as it streams, and handed to
 * cas_store_put_file, which hashes it again and commits it the way every
 * blob is committed. A download that fails, is too large or does not match
 * is removed: nothing reaches the CAS.
 *
 * Downloads hold one of max_fetches slots; up to as many requests again wait
 * for a slot or for a download in flight (until their wait deadline), and
 * beyond that a request is refused at once, so that waiting fetches cannot
 * take every thread of the server's pool.
 *
 * A download runs to its end even when the client that asked for it has
 * given up (the specification asks servers to keep it going for a later
 * Fetch): a client's retry of the same request (the same flight key) waits
 * for it instead of starting a second download of the same bytes.
 */
#include "asset.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

/* A download in progress, by its request's key. */
struct fetch_flight {
    struct fetch_flight *next;
    size_t key_len;
    uint8_t key[];
};

struct asset_fetcher {
    struct cas_store *store;
    pthread_mutex_t lock;
    pthread_cond_t freed; /* a slot was released, or a flight landed */
    unsigned max, running, waiting;
    struct fetch_flight *flights; /* at most max: each holds a slot */
    atomic_bool cancelled;        /* shutting down */
};

int asset_fetcher_new(struct cas_store *store, unsigned max_fetches, struct asset_fetcher **out)
{
    struct asset_fetcher *f;
    pthread_condattr_t attr;

    *out = NULL;
    if (max_fetches == 0)
        return -EINVAL;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    f->store = store;
    f->max = max_fetches;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&f->freed, &attr);
    pthread_condattr_destroy(&attr);
    *out = f;
    return 0;
}

void asset_fetcher_cancel(struct asset_fetcher *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    atomic_store(&f->cancelled, true);
    pthread_cond_broadcast(&f->freed);
    pthread_mutex_unlock(&f->lock);
}

void asset_fetcher_free(struct asset_fetcher *f)
{
    if (f == NULL)
        return;
    pthread_cond_destroy(&f->freed);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static struct fetch_flight **fetcher_flight(struct asset_fetcher *f, const uint8_t *key, size_t len)
{
    struct fetch_flight **p = &f->flights;

    for (; *p != NULL; p = &(*p)->next) {
        if ((*p)->key_len == len && memcmp((*p)->key, key, len) == 0)
            break;
    }
    return p;
}

/* Waits, under f->lock, until wake() says so or the deadline passes:
 * 0, or -ETIMEDOUT; -EAGAIN when too many wait already; -ECANCELED when
 * the fetcher is cancelled. */
static int fetcher_wait(struct asset_fetcher *f, uint64_t deadline_us,
                        bool (*wake)(struct asset_fetcher *f, const void *arg), const void *arg)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_us / 1000000u),
                          .tv_nsec = (long)(deadline_us % 1000000u) * 1000};
    int rc = 0;

    if (atomic_load(&f->cancelled))
        return -ECANCELED;
    if (wake(f, arg))
        return 0;
    if (f->waiting >= f->max)
        return -EAGAIN;
    f->waiting++;
    while (!wake(f, arg) && rc == 0) {
        if (pthread_cond_timedwait(&f->freed, &f->lock, &ts) == ETIMEDOUT && !wake(f, arg))
            rc = -ETIMEDOUT;
        if (atomic_load(&f->cancelled))
            rc = -ECANCELED;
    }
    f->waiting--;
    return rc;
}

static bool fetcher_slot_free(struct asset_fetcher *f, const void *arg)
{
    (void)arg;
    return f->running < f->max;
}

static bool fetcher_flight_landed(struct asset_fetcher *f, const void *arg)
{
    const struct asset_fetch_request *req = arg;

    return *fetcher_flight(f, req->flight_key, req->flight_key_len) == NULL;
}

/* Takes a download slot and, with a flight key, the flight. -EAGAIN when no
 * slot came in time; -EALREADY when the same flight was in the air and has
 * landed; -EINPROGRESS when it is still in the air at the deadline. */
static int fetcher_acquire(struct asset_fetcher *f, const struct asset_fetch_request *req)
{
    struct fetch_flight *flight = NULL;
    int rc;

    if (req->flight_key != NULL) {
        flight = malloc(sizeof(*flight) + req->flight_key_len);
        if (flight == NULL)
            return -ENOMEM;
        flight->key_len = req->flight_key_len;
        memcpy(flight->key, req->flight_key, req->flight_key_len);
    }
    pthread_mutex_lock(&f->lock);
    if (flight != NULL && !fetcher_flight_landed(f, req)) {
        rc = fetcher_wait(f, req->wait_deadline_us, fetcher_flight_landed, req);
        rc = rc == 0 ? -EALREADY : rc == -ETIMEDOUT ? -EINPROGRESS : rc;
        goto out;
    }
    rc = fetcher_wait(f, req->wait_deadline_us, fetcher_slot_free, NULL);
    if (rc == -ETIMEDOUT)
        rc = -EAGAIN;
    if (rc != 0)
        goto out;
    f->running++;
    if (flight != NULL) {
        flight->next = f->flights;
        f->flights = flight;
        flight = NULL;
    }
out:
    pthread_mutex_unlock(&f->lock);
    free(flight);
    return rc;
}

static void fetcher_release(struct asset_fetcher *f, const struct asset_fetch_request *req)
{
    struct fetch_flight **p, *landed = NULL;

    pthread_mutex_lock(&f->lock);
    f->running--;
    if (req->flight_key != NULL) {
        p = fetcher_flight(f, req->flight_key, req->flight_key_len);
        landed = *p;
        if (landed != NULL)
            *p = landed->next;
    }
    pthread_cond_broadcast(&f->freed);
    pthread_mutex_unlock(&f->lock);
    free(landed);
}

static void fetch_on_data(void *ctx, const void *buf, size_t len)
{
    if (ctx != NULL)
        asset_sri_check_update(ctx, buf, len);
}

/* Downloads url (the index-th URI, normalised) and stores it. */
static int fetch_one(struct asset_fetcher *f, const struct asset_fetch_request *req, size_t index,
                     const char *url, uint64_t deadline_us, struct cas_digest *digest, char *err,
                     size_t err_len)
{
    const struct asset_qualifiers *q = req->qualifiers;
    const char *headers[ASSET_MAX_HEADERS];
    struct asset_http_request http = {0};
    struct asset_sri_check *check = NULL;
    char path[PATH_MAX], why[512];
    size_t n_headers = 0;
    uint64_t bytes;
    int fd, rc;

    if (snprintf(path, sizeof(path), "%s/asset-XXXXXX", cas_store_tmp_dir(f->store)) >=
        (int)sizeof(path))
        return -ENAMETOOLONG;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "%s: cannot create a temp file in %s: %s", url,
                 cas_store_tmp_dir(f->store), strerror(-rc));
        return rc;
    }
    if (q->has_sri) {
        rc = asset_sri_check_new(&q->sri, &check);
        if (rc != 0)
            goto out;
    }
    for (size_t i = 0; i < q->n_headers; i++) {
        if (q->headers[i].url_index < 0 || (size_t)q->headers[i].url_index == index)
            headers[n_headers++] = q->headers[i].line;
    }
    http.url = url;
    http.prefixes = req->prefixes;
    http.headers = headers;
    http.n_headers = n_headers;
    http.max_bytes = req->max_bytes;
    http.deadline_us = deadline_us;
    http.fd = fd;
    http.on_data = fetch_on_data;
    http.ctx = check;
    http.cancel = &f->cancelled;
    rc = asset_http_get(&http, &bytes, err, err_len);
    if (rc == -ETIMEDOUT)
        snprintf(err, err_len, "%s: timed out after %llu s", url,
                 (unsigned long long)((req->timeout_us + 999999) / 1000000));
    if (rc != 0)
        goto out;
    if (check != NULL) {
        rc = asset_sri_check_finish(check, why, sizeof(why));
        check = NULL;
        if (rc != 0) {
            snprintf(err, err_len, "%s: %s; nothing stored", url, why);
            goto out;
        }
    }
    if (close(fd) != 0) {
        rc = -errno;
        fd = -1;
        snprintf(err, err_len, "%s: writing the download failed: %s", url, strerror(-rc));
        goto out;
    }
    fd = -1;
    rc = cas_store_put_file(f->store, path, true, digest);
    if (rc != 0) {
        snprintf(err, err_len, "%s: storing %llu bytes in the CAS failed: %s", url,
                 (unsigned long long)bytes, strerror(-rc));
        goto out;
    }
    LOG_I("asset: fetched %s: %llu bytes", url, (unsigned long long)bytes);
out:
    asset_sri_check_free(check);
    if (fd >= 0)
        close(fd);
    unlink(path); /* gone already when stored */
    return rc;
}

/* Appends "; msg" (or msg) to err. */
static void fetch_note(char *err, size_t err_len, const char *msg)
{
    size_t used = strlen(err);

    if (used + 3 < err_len)
        snprintf(err + used, err_len - used, "%s%s", used ? "; " : "", msg);
}

int asset_fetch_blob(struct asset_fetcher *f, const struct asset_fetch_request *req,
                     struct cas_digest *digest, size_t *uri_index, char *err, size_t err_len)
{
    uint64_t deadline_us = clock_mono_us() + req->timeout_us;
    bool have_slot = false;
    int first = 0;

    if (err_len > 0)
        err[0] = '\0';
    for (size_t i = 0; i < req->n_uris; i++) {
        const char *uri = req->uris[i];
        char url[ASSET_MAX_URI_LEN], msg[1024];
        int rc;

        msg[0] = '\0';
        if (!asset_url_is_http(uri)) {
            rc = -EPROTONOSUPPORT;
            snprintf(msg, sizeof(msg), "%.300s: not pushed, and only http(s) URLs are fetched",
                     uri);
        } else {
            rc = asset_url_check(uri, req->prefixes, url, sizeof(url));
            if (rc == -EPERM)
                snprintf(msg, sizeof(msg), "%.300s is outside [asset] allowed_url_prefixes", uri);
            else if (rc != 0)
                snprintf(msg, sizeof(msg),
                         "%.300s is not a URL casboxd fetches (malformed, or with credentials)",
                         uri);
        }
        if (rc == 0 && !have_slot) {
            rc = fetcher_acquire(f, req);
            if (rc == -EALREADY || rc == -EINPROGRESS) {
                snprintf(err, err_len, "%.300s: %s", uri,
                         rc == -EALREADY ? "an earlier request has just downloaded it"
                                         : "still being downloaded for an earlier request; "
                                           "ask again later");
                return rc;
            }
            if (rc == -EAGAIN)
                snprintf(msg, sizeof(msg),
                         "all %u download slots ([asset] max_fetches) are busy; try again", f->max);
            else if (rc == -ECANCELED)
                snprintf(msg, sizeof(msg), "%.300s: not fetched: casboxd is stopping", uri);
            else if (rc != 0)
                snprintf(msg, sizeof(msg), "%.300s: %s", uri, strerror(-rc));
            have_slot = rc == 0;
        }
        if (rc == 0)
            rc = fetch_one(f, req, i, url, deadline_us, digest, msg, sizeof(msg));
        if (rc == 0) {
            *uri_index = i;
            first = 0;
            if (req->on_stored != NULL)
                req->on_stored(req->ctx, digest, i);
            break;
        }
        fetch_note(err, err_len, msg);
        if (first == 0)
            first = rc;
        if (rc == -EAGAIN || rc == -ENOMEM || rc == -ECANCELED)
            break;
    }
    if (have_slot)
        fetcher_release(f, req);
    return req->n_uris == 0 ? -EINVAL : first;
}
