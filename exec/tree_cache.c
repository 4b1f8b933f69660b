/*
 * tree_cache.c - input subtrees already checked complete, so that Execute
 * does not walk and check the same Merkle tree again.
 *
 * action_load() walks an input tree (every Directory decoded and validated,
 * every file blob looked up) to list every missing blob up front, as the
 * REAPI asks. That walk is linear in the tree; an action that reads three
 * files of a 100,000-file tree paid for all of it on every Execute. Once a
 * Directory's whole subtree has been found valid and present, this cache
 * remembers its digest with the subtree's sizes, stamped with the store's
 * removal generation (cas_store_generation) read *before* the walk began.
 * A later walk that meets the digest again at the same generation skips the
 * subtree: nothing can have left the store since it was complete. Any
 * removal from the store (eviction, a corrupt file) changes the generation
 * and so forgets every entry at once: conservative, and never wrong.
 *
 * Bounded: at most max_entries digests; when full, the table is emptied
 * (a cache of checks, not of data: a miss only costs one walk). One mutex;
 * the critical sections are a few probes.
 */
#include "action_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct tree_cache_slot {
    bool used;
    struct cas_digest digest;
    struct action_tree_totals totals;
};

struct exec_tree_cache {
    pthread_mutex_t lock;
    struct tree_cache_slot *slots;
    size_t mask; /* slot count - 1, a power of two at least twice max */
    size_t count;
    size_t max;
    uint64_t generation; /* of every entry in the table */
};

static size_t tree_cache_bucket(const struct exec_tree_cache *c, const struct cas_digest *d)
{
    uint64_t h;

    memcpy(&h, d->hash, sizeof(h)); /* SHA-256: already uniform */
    return (size_t)h & c->mask;
}

int exec_tree_cache_new(size_t max_entries, struct exec_tree_cache **out)
{
    struct exec_tree_cache *c;
    size_t slots = 16;

    *out = NULL;
    if (max_entries == 0)
        return 0; /* off: every lookup misses */
    while (slots < max_entries * 2)
        slots *= 2;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->slots = calloc(slots, sizeof(*c->slots));
    if (c->slots == NULL) {
        free(c);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->mask = slots - 1;
    c->max = max_entries;
    *out = c;
    return 0;
}

void exec_tree_cache_free(struct exec_tree_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c);
}

/* With the lock held. */
static void tree_cache_clear_locked(struct exec_tree_cache *c, uint64_t generation)
{
    memset(c->slots, 0, (c->mask + 1) * sizeof(*c->slots));
    c->count = 0;
    c->generation = generation;
}

bool exec_tree_cache_get(struct exec_tree_cache *c, const struct cas_digest *dir,
                         uint64_t generation, struct action_tree_totals *out)
{
    bool found = false;
    size_t b;

    if (c == NULL)
        return false;
    pthread_mutex_lock(&c->lock);
    if (c->generation != generation || c->count == 0)
        goto out;
    b = tree_cache_bucket(c, dir);
    while (c->slots[b].used) {
        if (cas_digest_equal(&c->slots[b].digest, dir)) {
            *out = c->slots[b].totals;
            found = true;
            break;
        }
        b = (b + 1) & c->mask;
    }
out:
    pthread_mutex_unlock(&c->lock);
    return found;
}

void exec_tree_cache_put(struct exec_tree_cache *c, const struct cas_digest *dir,
                         uint64_t generation, const struct action_tree_totals *totals)
{
    size_t b;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    if (generation < c->generation)
        goto out; /* checked before a removal the table already knows of */
    if (generation > c->generation || c->count >= c->max)
        tree_cache_clear_locked(c, generation);
    b = tree_cache_bucket(c, dir);
    while (c->slots[b].used) {
        if (cas_digest_equal(&c->slots[b].digest, dir))
            goto out;
        b = (b + 1) & c->mask;
    }
    c->slots[b].used = true;
    c->slots[b].digest = *dir;
    c->slots[b].totals = *totals;
    c->count++;
out:
    pthread_mutex_unlock(&c->lock);
}
