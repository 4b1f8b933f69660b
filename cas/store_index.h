/*
 * store_index.h - the store's in-memory index (internal to cas/).
 *
 * A chained hash table keyed by the 32-byte SHA-256 (already uniformly
 * distributed, so its first 8 bytes are the bucket hash) plus a doubly linked
 * LRU list, most recently used first. It does no locking and no I/O: the store
 * holds its index lock around every call.
 */
#ifndef CASBOX_CAS_STORE_INDEX_H
#define CASBOX_CAS_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cas.h"

struct store_entry {
    uint8_t hash[CAS_HASH_BYTES];
    int64_t size;
    /* Inode of the file the entry describes, so that a reader marking it
     * verified or a remover deleting it can tell a replaced file apart. */
    uint64_t ino;
    /* Hashed by this process (committed by it, or re-hashed on first read).
     * Entries found by the start-up scan, and files linked in from outside,
     * start unverified. */
    bool verified;
    struct store_entry *chain_next;
    struct store_entry *lru_prev; /* towards the most recently used */
    struct store_entry *lru_next; /* towards the least recently used */
};

struct store_index {
    struct store_entry **buckets;
    size_t bucket_mask; /* bucket count - 1; the count is a power of two */
    size_t count;
    uint64_t bytes;
    uint64_t alloc_bytes; /* bytes rounded up to STORE_INDEX_BLOCK each: about their disk use */
    struct store_entry *lru_newest;
    struct store_entry *lru_oldest;
    /* Entries removed so far (evicted, found corrupt or gone): what
     * cas_store_generation reports, so that a caller that saw a set of
     * blobs present can tell whether any may have left since. */
    uint64_t removals;
};

/* The unit a filesystem allocates in (ext4, xfs, tmpfs, btrfs: 4 KiB). */
#define STORE_INDEX_BLOCK 4096
static inline uint64_t store_index_alloc(int64_t size)
{
    return ((uint64_t)size + STORE_INDEX_BLOCK - 1) & ~(uint64_t)(STORE_INDEX_BLOCK - 1);
}

int store_index_init(struct store_index *ix);
/* Frees every entry. */
void store_index_destroy(struct store_index *ix);
struct store_entry *store_index_find(const struct store_index *ix,
                                     const uint8_t hash[CAS_HASH_BYTES]);
/* Adds a new entry as the most recently used; the hash must not be present.
 * -ENOMEM on allocation failure. */
int store_index_insert(struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES], int64_t size,
                       uint64_t ino, bool verified, struct store_entry **out);
/* The same, as the least recently used: what a background scan finds is
 * older than anything used since the store opened. */
int store_index_insert_oldest(struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES],
                              int64_t size, uint64_t ino, bool verified);
/* Records that the entry now describes a (re)placed file: new size, inode and
 * verified flag, keeping the byte total right. */
void store_index_update(struct store_index *ix, struct store_entry *e, int64_t size, uint64_t ino,
                        bool verified);
/* Marks an entry the most recently used. */
void store_index_touch(struct store_index *ix, struct store_entry *e);
/* Starts loading what a lookup of hash will read, for a batch of lookups:
 * stage 0 its bucket, stage 1 its first entry (the bucket loaded by then),
 * stage 2 that entry's LRU neighbours (which a touch writes). Only hints:
 * nothing is read that might not be there. */
void store_index_prefetch(const struct store_index *ix, const uint8_t hash[CAS_HASH_BYTES],
                          int stage);
/* Unlinks an entry from the table and the LRU list without freeing it (the
 * caller frees it with free()). Its chain_next is left free for the caller to
 * chain removed entries. */
void store_index_remove(struct store_index *ix, struct store_entry *e);
/* The least recently used entry, or NULL when empty. */
struct store_entry *store_index_oldest(const struct store_index *ix);

#endif
