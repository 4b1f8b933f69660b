/*
 * dircache.c - decoded Directory messages, keyed by digest and shared by
 * every tree, with a bound on how many are kept (least recently used ones
 * that nobody holds are dropped).
 *
 * A Directory is read from the CAS (which verifies its hash) and checked
 * once: names must be single path components and each list strictly sorted
 * (the REAPI's canonical form), which lets lookups binary-search. Two threads
 * missing the same digest may both decode it; the second copy is dropped.
 */
#include "casfs_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int casfs_dircache_init(struct casfs_dircache *c, size_t max)
{
    memset(c, 0, sizeof(*c));
    c->max = max ? max : CASFS_DEFAULT_DIRCACHE;
    c->n_buckets = 64;
    while (c->n_buckets < c->max)
        c->n_buckets <<= 1;
    c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
    if (c->buckets == NULL)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    return 0;
}

static void dir_free(struct casfs_dir *dir)
{
    if (dir->msg != NULL)
        build__bazel__remote__execution__v2__directory__free_unpacked(dir->msg, NULL);
    free(dir);
}

void casfs_dircache_destroy(struct casfs_dircache *c)
{
    struct casfs_dir *dir, *next;

    if (c->buckets == NULL)
        return;
    for (dir = c->lru_head; dir != NULL; dir = next) {
        next = dir->lru_next;
        dir_free(dir);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    memset(c, 0, sizeof(*c));
}

static size_t dir_bucket(const struct casfs_dircache *c, const struct cas_digest *d)
{
    uint64_t h;

    memcpy(&h, d->hash, sizeof(h)); /* a SHA-256 is uniform already */
    return (size_t)h & (c->n_buckets - 1);
}

static struct casfs_dir *dir_lookup(struct casfs_dircache *c, const struct cas_digest *d)
{
    for (struct casfs_dir *dir = c->buckets[dir_bucket(c, d)]; dir != NULL; dir = dir->hash_next)
        if (cas_digest_equal(&dir->digest, d))
            return dir;
    return NULL;
}

static void lru_unlink(struct casfs_dircache *c, struct casfs_dir *dir)
{
    if (dir->lru_prev != NULL)
        dir->lru_prev->lru_next = dir->lru_next;
    else
        c->lru_head = dir->lru_next;
    if (dir->lru_next != NULL)
        dir->lru_next->lru_prev = dir->lru_prev;
    else
        c->lru_tail = dir->lru_prev;
    dir->lru_prev = dir->lru_next = NULL;
}

static void lru_push_front(struct casfs_dircache *c, struct casfs_dir *dir)
{
    dir->lru_prev = NULL;
    dir->lru_next = c->lru_head;
    if (c->lru_head != NULL)
        c->lru_head->lru_prev = dir;
    c->lru_head = dir;
    if (c->lru_tail == NULL)
        c->lru_tail = dir;
}

static void hash_unlink(struct casfs_dircache *c, struct casfs_dir *dir)
{
    struct casfs_dir **p = &c->buckets[dir_bucket(c, &dir->digest)];

    while (*p != dir)
        p = &(*p)->hash_next;
    *p = dir->hash_next;
}

/* Drops unreferenced entries from the cold end until within the bound. */
static void dir_evict(struct casfs_dircache *c, struct casfs_dir **freed)
{
    struct casfs_dir *dir = c->lru_tail, *prev;

    while (c->count > c->max && dir != NULL) {
        prev = dir->lru_prev;
        if (dir->refs == 0) {
            lru_unlink(c, dir);
            hash_unlink(c, dir);
            c->count--;
            c->evictions++;
            dir->lru_next = *freed; /* freed outside the lock */
            *freed = dir;
        }
        dir = prev;
    }
}

static bool name_ok(const char *name)
{
    return name != NULL && name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

static bool digest_ok(const Build__Bazel__Remote__Execution__V2__Digest *pd)
{
    struct cas_digest d;

    return pd != NULL && pd->hash != NULL && cas_digest_parse(pd->hash, pd->size_bytes, &d) == 0;
}

/* The canonical form lookups rely on; anything else is EIO. */
static bool dir_check(const Directory *m)
{
    for (size_t i = 0; i < m->n_files; i++) {
        if (!name_ok(m->files[i]->name) || !digest_ok(m->files[i]->digest) ||
            (i > 0 && strcmp(m->files[i - 1]->name, m->files[i]->name) >= 0))
            return false;
    }
    for (size_t i = 0; i < m->n_directories; i++) {
        if (!name_ok(m->directories[i]->name) || !digest_ok(m->directories[i]->digest) ||
            (i > 0 && strcmp(m->directories[i - 1]->name, m->directories[i]->name) >= 0))
            return false;
    }
    for (size_t i = 0; i < m->n_symlinks; i++) {
        if (!name_ok(m->symlinks[i]->name) || m->symlinks[i]->target == NULL ||
            m->symlinks[i]->target[0] == '\0' ||
            (i > 0 && strcmp(m->symlinks[i - 1]->name, m->symlinks[i]->name) >= 0))
            return false;
    }
    return true;
}

static int dir_load(struct casfs *fs, const struct cas_digest *d, struct casfs_dir **out)
{
    char hex[CAS_HASH_HEX + 1];
    struct casfs_dir *dir;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    rc = cas_store_get(fs->cas, d, &buf, &len);
    if (rc != 0) {
        cas_digest_hex(d, hex);
        casfs_log(fs, "casfs: cannot read Directory %s/%lld: %s", hex, (long long)d->size,
                  strerror(-rc));
        return rc;
    }
    dir = calloc(1, sizeof(*dir));
    if (dir == NULL) {
        free(buf);
        return -ENOMEM;
    }
    dir->digest = *d;
    dir->msg = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
    free(buf);
    if (dir->msg == NULL || !dir_check(dir->msg)) {
        cas_digest_hex(d, hex);
        casfs_log(fs, "casfs: Directory %s/%lld is malformed or not canonical", hex,
                  (long long)d->size);
        dir_free(dir);
        return -EIO;
    }
    *out = dir;
    return 0;
}

int casfs_dir_get(struct casfs *fs, const struct cas_digest *d, struct casfs_dir **out)
{
    struct casfs_dircache *c = &fs->cache;
    struct casfs_dir *dir, *fresh = NULL, *freed = NULL;
    int rc;

    pthread_mutex_lock(&c->lock);
    dir = dir_lookup(c, d);
    if (dir != NULL) {
        dir->refs++;
        c->hits++;
        lru_unlink(c, dir);
        lru_push_front(c, dir);
    }
    pthread_mutex_unlock(&c->lock);
    if (dir != NULL) {
        *out = dir;
        return 0;
    }

    rc = dir_load(fs, d, &fresh);
    if (rc != 0)
        return rc;

    pthread_mutex_lock(&c->lock);
    c->misses++;
    dir = dir_lookup(c, d);
    if (dir == NULL) {
        dir = fresh;
        fresh = NULL;
        dir->hash_next = c->buckets[dir_bucket(c, d)];
        c->buckets[dir_bucket(c, d)] = dir;
        c->count++;
    } else {
        lru_unlink(c, dir);
    }
    dir->refs++;
    lru_push_front(c, dir);
    dir_evict(c, &freed);
    pthread_mutex_unlock(&c->lock);

    if (fresh != NULL)
        dir_free(fresh);
    while (freed != NULL) {
        struct casfs_dir *next = freed->lru_next;

        dir_free(freed);
        freed = next;
    }
    *out = dir;
    return 0;
}

void casfs_dir_put(struct casfs *fs, struct casfs_dir *dir)
{
    struct casfs_dircache *c = &fs->cache;
    struct casfs_dir *freed = NULL;

    pthread_mutex_lock(&c->lock);
    dir->refs--;
    if (dir->refs == 0 && c->count > c->max)
        dir_evict(c, &freed);
    pthread_mutex_unlock(&c->lock);
    while (freed != NULL) {
        struct casfs_dir *next = freed->lru_next;

        dir_free(freed);
        freed = next;
    }
}
