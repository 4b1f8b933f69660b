/*
 * store_index.c - hash table + LRU list of the blobs in a store; see
 * store_index.h. Not thread-safe by itself: the store serialises calls.
 */
#include "store_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_INITIAL_BUCKETS 1024

static size_t index_bucket(const struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES])
{
    uint64_t h;

    memcpy(&h, hash, sizeof(h));
    return (size_t)h & ix->bucket_mask;
}

int store_index_init(struct store_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    ix->buckets = calloc(INDEX_INITIAL_BUCKETS, sizeof(*ix->buckets));
    if (ix->buckets == NULL)
        return -ENOMEM;
    ix->bucket_mask = INDEX_INITIAL_BUCKETS - 1;
    return 0;
}

void store_index_destroy(struct store_index *ix)
{
    struct store_entry *e = ix->lru_newest;

    while (e != NULL) {
        struct store_entry *next = e->lru_next;

        free(e);
        e = next;
    }
    free(ix->buckets);
    memset(ix, 0, sizeof(*ix));
}

struct store_entry *store_index_find(const struct store_index *ix,
                                     const uint8_t hash[CAS_HASH_BYTES])
{
    struct store_entry *e = ix->buckets[index_bucket(ix, hash)];

    while (e != NULL && memcmp(e->hash, hash, CAS_HASH_BYTES) != 0)
        e = e->chain_next;
    return e;
}

/* Doubles the bucket array. A failed allocation only leaves longer chains, so
 * it is not an error. */
static void index_grow(struct store_index *ix)
{
    size_t old_count = ix->bucket_mask + 1;
    size_t new_count = old_count * 2;
    struct store_entry **old = ix->buckets;
    struct store_entry **buckets = calloc(new_count, sizeof(*buckets));

    if (buckets == NULL)
        return;
    ix->buckets = buckets;
    ix->bucket_mask = new_count - 1;
    for (size_t i = 0; i < old_count; i++) {
        struct store_entry *e = old[i];

        while (e != NULL) {
            struct store_entry *next = e->chain_next;
            size_t b = index_bucket(ix, e->hash);

            e->chain_next = buckets[b];
            buckets[b] = e;
            e = next;
        }
    }
    free(old);
}

static void lru_unlink(struct store_index *ix, struct store_entry *e)
{
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        ix->lru_newest = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        ix->lru_oldest = e->lru_prev;
    e->lru_prev = NULL;
    e->lru_next = NULL;
}

static void lru_push_newest(struct store_index *ix, struct store_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = ix->lru_newest;
    if (ix->lru_newest != NULL)
        ix->lru_newest->lru_prev = e;
    else
        ix->lru_oldest = e;
    ix->lru_newest = e;
}

static void lru_push_oldest(struct store_index *ix, struct store_entry *e)
{
    e->lru_next = NULL;
    e->lru_prev = ix->lru_oldest;
    if (ix->lru_oldest != NULL)
        ix->lru_oldest->lru_next = e;
    else
        ix->lru_newest = e;
    ix->lru_oldest = e;
}

static int index_insert(struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES], int64_t size,
                        uint64_t ino, bool verified, bool oldest, struct store_entry **out)
{
    struct store_entry *e;
    size_t b;

    if (ix->count >= ix->bucket_mask + 1)
        index_grow(ix);
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    memcpy(e->hash, hash, CAS_HASH_BYTES);
    e->size = size;
    e->ino = ino;
    e->verified = verified;
    b = index_bucket(ix, hash);
    e->chain_next = ix->buckets[b];
    ix->buckets[b] = e;
    if (oldest)
        lru_push_oldest(ix, e);
    else
        lru_push_newest(ix, e);
    ix->count++;
    ix->bytes += (uint64_t)size;
    ix->alloc_bytes += store_index_alloc(size);
    if (out != NULL)
        *out = e;
    return 0;
}

int store_index_insert(struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES], int64_t size,
                       uint64_t ino, bool verified, struct store_entry **out)
{
    return index_insert(ix, hash, size, ino, verified, false, out);
}

int store_index_insert_oldest(struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES],
                              int64_t size, uint64_t ino, bool verified)
{
    return index_insert(ix, hash, size, ino, verified, true, NULL);
}

void store_index_update(struct store_index *ix, struct store_entry *e, int64_t size, uint64_t ino,
                        bool verified)
{
    ix->bytes -= (uint64_t)e->size;
    ix->bytes += (uint64_t)size;
    ix->alloc_bytes -= store_index_alloc(e->size);
    ix->alloc_bytes += store_index_alloc(size);
    e->size = size;
    e->ino = ino;
    e->verified = verified;
}

void store_index_prefetch(const struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES],
                          int stage)
{
    struct store_entry *const *slot = &ix->buckets[index_bucket(ix, hash)];

    if (stage == 0) {
        __builtin_prefetch(slot);
    } else if (*slot != NULL) {
        if (stage == 1) {
            __builtin_prefetch(*slot, 1);
        } else {
            if ((*slot)->lru_prev != NULL)
                __builtin_prefetch((*slot)->lru_prev, 1);
            if ((*slot)->lru_next != NULL)
                __builtin_prefetch((*slot)->lru_next, 1);
        }
    }
}

void store_index_touch(struct store_index *ix, struct store_entry *e)
{
    if (ix->lru_newest == e)
        return;
    lru_unlink(ix, e);
    lru_push_newest(ix, e);
}

void store_index_remove(struct store_index *ix, struct store_entry *e)
{
    struct store_entry **p = &ix->buckets[index_bucket(ix, e->hash)];

    while (*p != NULL && *p != e)
        p = &(*p)->chain_next;
    if (*p == NULL)
        return; /* not in this index: nothing to undo */
    *p = e->chain_next;
    e->chain_next = NULL;
    lru_unlink(ix, e);
    ix->count--;
    ix->bytes -= (uint64_t)e->size;
    ix->alloc_bytes -= store_index_alloc(e->size);
    ix->removals++;
}

struct store_entry *store_index_oldest(const struct store_index *ix)
{
    return ix->lru_oldest;
}
