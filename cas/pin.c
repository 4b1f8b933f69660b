/*
 * pin.c - blobs that must not be evicted: the inputs of running actions.
 *
 * A pin names a digest whether or not the blob is here yet: an action's
 * inputs are pinned before it starts and fetched lazily while it runs, and a
 * blob fetched for it must stay until it ends even when the local cache is
 * far smaller than the working set. Eviction (store.c) skips pinned entries.
 * A small chained table of counts; the hash's first bytes are already
 * uniform, so they are the bucket number.
 */
#include "store_internal.h"
#include "upstream_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t pin_bucket(const uint8_t hash[CAS_HASH_BYTES])
{
    uint32_t v;

    memcpy(&v, hash, sizeof(v));
    return v % CAS_PIN_BUCKETS;
}

static struct pin_entry **pin_find(struct store_upstream *u, const uint8_t hash[CAS_HASH_BYTES])
{
    struct pin_entry **p = &u->pins[pin_bucket(hash)];

    while (*p != NULL && memcmp((*p)->hash, hash, CAS_HASH_BYTES) != 0)
        p = &(*p)->next;
    return p;
}

int cas_store_pin(struct cas_store *s, const struct cas_digest *d)
{
    struct store_upstream *u = s->upstream;
    struct pin_entry **p;
    int rc = 0;

    if (d->size <= 0)
        return 0; /* the empty blob is never evicted */
    pthread_mutex_lock(&u->pins_lock);
    p = pin_find(u, d->hash);
    if (*p != NULL) {
        (*p)->count++;
    } else {
        struct pin_entry *e = calloc(1, sizeof(*e));

        if (e == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(e->hash, d->hash, CAS_HASH_BYTES);
            e->count = 1;
            *p = e;
        }
    }
    pthread_mutex_unlock(&u->pins_lock);
    return rc;
}

void cas_store_unpin(struct cas_store *s, const struct cas_digest *d)
{
    struct store_upstream *u = s->upstream;
    struct pin_entry **p;

    if (d->size <= 0)
        return;
    pthread_mutex_lock(&u->pins_lock);
    p = pin_find(u, d->hash);
    if (*p != NULL && --(*p)->count == 0) {
        struct pin_entry *e = *p;

        *p = e->next;
        free(e);
    }
    pthread_mutex_unlock(&u->pins_lock);
}

bool store_upstream_pinned(struct store_upstream *u, const uint8_t hash[CAS_HASH_BYTES])
{
    bool pinned;

    pthread_mutex_lock(&u->pins_lock);
    pinned = *pin_find(u, hash) != NULL;
    pthread_mutex_unlock(&u->pins_lock);
    return pinned;
}
