/*
 * fetch.c - reads through to an upstream CAS: a miss in the local store
 * calls the fetcher installed by cas_store_set_fetcher (remote/ streams the
 * blob in through a verifying cas_writer), and the read is tried again.
 *
 * Why here and not in each caller: the FUSE layer, hardlink staging, the
 * action loader and the services all read through cas_store_open_blob,
 * cas_store_get and cas_store_blob_path, so one hook makes every one of them
 * lazy. Concurrent misses of one digest share one fetch (a "flight"), so
 * that twenty actions opening the same header cause one download. Failures
 * are remembered per digest (the last CAS_FETCH_ERRORS_KEPT) so that a
 * caller that only saw -EHOSTUNREACH from a FUSE open can later say which
 * blob and what the upstream answered.
 */
#include "store_internal.h"
#include "upstream_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A blob fetched may be evicted again before the caller opens it (a tiny
 * cache and a busy store): fetch at most this many times per read. */
#define FETCH_TRIES 3

int store_upstream_new(struct store_upstream **out)
{
    struct store_upstream *u = calloc(1, sizeof(*u));
    int rc;

    if (u == NULL)
        return -ENOMEM;
    rc = -pthread_mutex_init(&u->lock, NULL);
    if (rc < 0)
        goto out_free;
    rc = -pthread_cond_init(&u->done, NULL);
    if (rc < 0)
        goto out_lock;
    rc = -pthread_mutex_init(&u->pins_lock, NULL);
    if (rc < 0)
        goto out_cond;
    *out = u;
    return 0;
out_cond:
    pthread_cond_destroy(&u->done);
out_lock:
    pthread_mutex_destroy(&u->lock);
out_free:
    free(u);
    return rc;
}

void store_upstream_free(struct store_upstream *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < CAS_PIN_BUCKETS; i++) {
        while (u->pins[i] != NULL) {
            struct pin_entry *next = u->pins[i]->next;

            free(u->pins[i]);
            u->pins[i] = next;
        }
    }
    pthread_mutex_destroy(&u->pins_lock);
    pthread_cond_destroy(&u->done);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

void cas_store_set_fetcher(struct cas_store *s, cas_fetch_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->upstream->lock);
    s->upstream->fetch = fn;
    s->upstream->fetch_ctx = ctx;
    pthread_mutex_unlock(&s->upstream->lock);
}

void cas_store_set_find_missing(struct cas_store *s, cas_find_missing_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->upstream->lock);
    s->upstream->find_missing = fn;
    s->upstream->find_missing_ctx = ctx;
    pthread_mutex_unlock(&s->upstream->lock);
}

bool cas_store_has_upstream(const struct cas_store *s)
{
    return s->upstream->fetch != NULL;
}

/* With u->lock held: remembers (rc < 0) or forgets (rc == 0) a failure of d. */
static void fetch_error_record(struct store_upstream *u, const struct cas_digest *d, int rc,
                               const char *reason)
{
    struct fetch_error *slot = NULL;

    for (unsigned i = 0; i < CAS_FETCH_ERRORS_KEPT; i++) {
        if (u->errors[i].rc != 0 && cas_digest_equal(&u->errors[i].digest, d)) {
            slot = &u->errors[i];
            break;
        }
    }
    if (rc == 0) {
        if (slot != NULL)
            slot->rc = 0;
        return;
    }
    if (slot == NULL) {
        slot = &u->errors[u->next_error];
        u->next_error = (u->next_error + 1) % CAS_FETCH_ERRORS_KEPT;
    }
    slot->digest = *d;
    slot->rc = rc;
    snprintf(slot->reason, sizeof(slot->reason), "%s", reason);
}

int cas_store_fetch_error(struct cas_store *s, const struct cas_digest *d, char *buf, size_t len)
{
    struct store_upstream *u = s->upstream;
    int rc = 0;

    pthread_mutex_lock(&u->lock);
    for (unsigned i = 0; i < CAS_FETCH_ERRORS_KEPT; i++) {
        if (u->errors[i].rc != 0 && cas_digest_equal(&u->errors[i].digest, d)) {
            rc = u->errors[i].rc;
            if (len > 0)
                snprintf(buf, len, "%s", u->errors[i].reason);
            break;
        }
    }
    pthread_mutex_unlock(&u->lock);
    return rc;
}

static void counters_failure(struct cas_fetch_counters *c, const struct cas_digest *d, int rc,
                             const char *reason)
{
    int expected = 0;

    if (c == NULL)
        return;
    atomic_fetch_add(&c->failures, 1);
    if (atomic_compare_exchange_strong(&c->first_error, &expected, rc)) {
        c->first_digest = *d;
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
    }
}

/* Runs the fetcher for d, or waits for the fetch of d already running. */
static int fetch_shared(struct cas_store *s, const struct cas_digest *d,
                        struct cas_fetch_counters *c)
{
    struct store_upstream *u = s->upstream;
    struct fetch_flight *f;
    char reason[CAS_FETCH_REASON_BYTES];
    int rc;

    pthread_mutex_lock(&u->lock);
    for (f = u->flights; f != NULL; f = f->next)
        if (cas_digest_equal(&f->digest, d))
            break;
    if (f != NULL) {
        f->waiters++;
        while (!f->done)
            pthread_cond_wait(&u->done, &u->lock);
    } else {
        cas_fetch_fn fn = u->fetch;
        void *ctx = u->fetch_ctx;

        f = calloc(1, sizeof(*f));
        if (f == NULL) {
            pthread_mutex_unlock(&u->lock);
            return -ENOMEM;
        }
        f->digest = *d;
        f->waiters = 1;
        f->next = u->flights;
        u->flights = f;
        pthread_mutex_unlock(&u->lock);

        reason[0] = '\0';
        rc = fn(ctx, s, d, reason, sizeof(reason));
        if (rc > 0)
            rc = 0;
        if (rc < 0 && reason[0] == '\0') {
            char hex[CAS_HASH_HEX + 1];

            cas_digest_hex(d, hex);
            snprintf(reason, sizeof(reason), "fetching blob %s/%" PRId64 ": %s", hex, d->size,
                     strerror(-rc));
        }

        pthread_mutex_lock(&u->lock);
        f->rc = rc;
        snprintf(f->reason, sizeof(f->reason), "%s", reason);
        f->done = true;
        for (struct fetch_flight **p = &u->flights; *p != NULL; p = &(*p)->next) {
            if (*p == f) {
                *p = f->next;
                break;
            }
        }
        fetch_error_record(u, d, rc, reason);
        pthread_cond_broadcast(&u->done);
    }
    rc = f->rc;
    snprintf(reason, sizeof(reason), "%s", f->reason);
    if (--f->waiters == 0)
        free(f);
    pthread_mutex_unlock(&u->lock);

    if (rc < 0) {
        counters_failure(c, d, rc, reason);
    } else if (c != NULL) {
        atomic_fetch_add(&c->fetched_blobs, 1);
        atomic_fetch_add(&c->fetched_bytes, (uint64_t)d->size);
    }
    return rc;
}

/* The three reads share this shape: local, else fetch and local again. */
enum fetch_read { READ_OPEN, READ_GET, READ_PATH };

struct fetch_read_args {
    enum fetch_read kind;
    void **buf;
    size_t *len;
    char *path;
    size_t path_len;
};

static int read_local(struct cas_store *s, const struct cas_digest *d,
                      const struct fetch_read_args *a)
{
    switch (a->kind) {
    case READ_OPEN:
        return cas_store_open_blob_local(s, d);
    case READ_GET:
        return cas_store_get_local(s, d, a->buf, a->len);
    case READ_PATH:
        return cas_store_blob_path_local(s, d, a->path, a->path_len);
    }
    return -EINVAL;
}

static int read_through(struct cas_store *s, const struct cas_digest *d,
                        const struct fetch_read_args *a, struct cas_fetch_counters *c)
{
    int rc = read_local(s, d, a);

    if (rc >= 0 && c != NULL)
        atomic_fetch_add(&c->local_hits, 1);
    if (rc != -ENOENT || s->upstream->fetch == NULL || d->size <= 0)
        return rc;
    for (int attempt = 0; attempt < FETCH_TRIES && rc == -ENOENT; attempt++) {
        rc = fetch_shared(s, d, c);
        if (rc < 0)
            return rc;
        rc = read_local(s, d, a);
    }
    return rc;
}

int cas_store_open_blob_counted(struct cas_store *s, const struct cas_digest *d,
                                struct cas_fetch_counters *c)
{
    return read_through(s, d, &(struct fetch_read_args){.kind = READ_OPEN}, c);
}

int cas_store_get_counted(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len,
                          struct cas_fetch_counters *c)
{
    return read_through(s, d, &(struct fetch_read_args){.kind = READ_GET, .buf = buf, .len = len},
                        c);
}

int cas_store_blob_path_counted(struct cas_store *s, const struct cas_digest *d, char *buf,
                                size_t len, struct cas_fetch_counters *c)
{
    return read_through(
        s, d, &(struct fetch_read_args){.kind = READ_PATH, .path = buf, .path_len = len}, c);
}

int cas_store_open_blob(struct cas_store *s, const struct cas_digest *d)
{
    return cas_store_open_blob_counted(s, d, NULL);
}

int cas_store_get(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len)
{
    return cas_store_get_counted(s, d, buf, len, NULL);
}

int cas_store_blob_path(struct cas_store *s, const struct cas_digest *d, char *buf, size_t len)
{
    return cas_store_blob_path_counted(s, d, buf, len, NULL);
}

int cas_store_find_missing(struct cas_store *s, const struct cas_digest *digests, size_t n,
                           bool *missing)
{
    struct store_upstream *u = s->upstream;
    struct cas_digest *absent = NULL;
    size_t *where = NULL, n_absent = 0;
    bool *absent_missing = NULL;
    char reason[CAS_FETCH_REASON_BYTES];
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        rc = cas_store_contains(s, &digests[i]);
        if (rc < 0)
            return rc;
        missing[i] = rc == 0;
        n_absent += missing[i];
    }
    rc = 0;
    if (n_absent == 0 || u->find_missing == NULL)
        return 0;
    absent = calloc(n_absent, sizeof(*absent));
    where = calloc(n_absent, sizeof(*where));
    absent_missing = calloc(n_absent, sizeof(*absent_missing));
    if (absent == NULL || where == NULL || absent_missing == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    n_absent = 0;
    for (size_t i = 0; i < n; i++) {
        if (missing[i]) {
            where[n_absent] = i;
            absent[n_absent++] = digests[i];
        }
    }
    reason[0] = '\0';
    rc = u->find_missing(u->find_missing_ctx, absent, n_absent, absent_missing, reason,
                         sizeof(reason));
    if (rc < 0) {
        pthread_mutex_lock(&u->lock);
        fetch_error_record(u, &absent[0], rc, reason);
        pthread_mutex_unlock(&u->lock);
        goto out;
    }
    for (size_t k = 0; k < n_absent; k++)
        missing[where[k]] = absent_missing[k];
out:
    free(absent_missing);
    free(where);
    free(absent);
    return rc;
}

void cas_fetch_counters_read(struct cas_fetch_counters *c, struct cas_fetch_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->local_hits = atomic_load(&c->local_hits);
    out->fetched_blobs = atomic_load(&c->fetched_blobs);
    out->fetched_bytes = atomic_load(&c->fetched_bytes);
    out->failures = atomic_load(&c->failures);
    out->first_error = atomic_load(&c->first_error);
    if (out->first_error != 0) {
        out->first_digest = c->first_digest;
        snprintf(out->reason, sizeof(out->reason), "%s", c->reason);
    }
}
