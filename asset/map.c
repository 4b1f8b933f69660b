/*
 * map.c - what a URI and its qualifiers were found to be: key -> digest.
 *
 * A hash table with chaining and a least-recently-used list, bounded by
 * max_entries; one mutex. The log is an append-only text file, one record
 * per line, so that a crash loses at most the line being written:
 *
 *     casbox-asset-map 1
 *     P <sha256 hex> <size> <stored_us> <expire_us> <key hex>
 *     R <key hex>
 *
 * Loading replays it (a line that does not parse is skipped and counted);
 * when the records outnumber twice the live entries the log is rewritten
 * from the map (temp file + rename), oldest first, so that a replay gives
 * the same order. The log is a cache: losing it costs a download.
 */
#include "asset.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

#define MAP_LOG_HEADER "casbox-asset-map 1"
#define MAP_MAX_LINE   (2 * ASSET_MAX_KEY_BYTES + 256)

/* The least-recently-used list; the map's own link is its head. */
struct map_link {
    struct map_link *prev, *next; /* lru.next is the most recent */
};

struct map_node {
    struct map_link link;   /* first: a link is its node */
    struct map_node *chain; /* next in the bucket */
    uint64_t hash;
    struct asset_entry e;
    size_t key_len;
    uint8_t key[];
};

struct asset_map {
    pthread_mutex_t lock;
    struct map_node **buckets;
    size_t n_buckets; /* a power of two */
    struct map_link lru;
    size_t count, max;
    char *path;
    FILE *log;
    size_t log_records;
};

static uint64_t map_hash(const uint8_t *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static struct map_node **map_slot(struct asset_map *m, const uint8_t *key, size_t len,
                                  uint64_t hash)
{
    struct map_node **p = &m->buckets[hash & (m->n_buckets - 1)];

    for (; *p != NULL; p = &(*p)->chain) {
        if ((*p)->hash == hash && (*p)->key_len == len && memcmp((*p)->key, key, len) == 0)
            break;
    }
    return p;
}

static struct map_node *lru_node(struct map_link *l)
{
    return (struct map_node *)l;
}

static void lru_unlink(struct map_node *n)
{
    n->link.prev->next = n->link.next;
    n->link.next->prev = n->link.prev;
}

static void lru_push_front(struct asset_map *m, struct map_node *n)
{
    n->link.next = m->lru.next;
    n->link.prev = &m->lru;
    m->lru.next->prev = &n->link;
    m->lru.next = &n->link;
}

/* Takes n out of the table and the list; the caller frees it. */
static void map_detach(struct asset_map *m, struct map_node *n)
{
    struct map_node **p = map_slot(m, n->key, n->key_len, n->hash);

    *p = n->chain;
    lru_unlink(n);
    m->count--;
}

static void map_drop(struct asset_map *m, struct map_node *n)
{
    map_detach(m, n);
    free(n);
}

/* Inserts or replaces in memory only; the caller then drops what is over
 * max (map_evict). */
static int map_set(struct asset_map *m, const uint8_t *key, size_t len, const struct asset_entry *e)
{
    uint64_t hash = map_hash(key, len);
    struct map_node **p = map_slot(m, key, len, hash);
    struct map_node *n = *p;

    if (n != NULL) {
        n->e = *e;
        lru_unlink(n);
        lru_push_front(m, n);
        return 0;
    }
    n = malloc(sizeof(*n) + len);
    if (n == NULL)
        return -ENOMEM;
    n->chain = NULL;
    n->hash = hash;
    n->e = *e;
    n->key_len = len;
    memcpy(n->key, key, len);
    *p = n;
    lru_push_front(m, n);
    m->count++;
    return 0;
}

static void map_unset(struct asset_map *m, const uint8_t *key, size_t len)
{
    struct map_node *n = *map_slot(m, key, len, map_hash(key, len));

    if (n != NULL)
        map_drop(m, n);
}

/* --- the log --- */

static void hex_write(FILE *f, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        putc(digits[p[i] >> 4], f);
        putc(digits[p[i] & 15], f);
    }
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes hex of len chars into out (len / 2 bytes). */
static int hex_read(const char *s, size_t len, uint8_t *out)
{
    if (len % 2 != 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_nibble(s[i]), lo = hex_nibble(s[i + 1]);

        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void map_log_put(FILE *f, const uint8_t *key, size_t len, const struct asset_entry *e)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(&e->digest, hex);
    fprintf(f, "P %s %" PRId64 " %" PRIu64 " %" PRIu64 " ", hex, e->digest.size, e->stored_us,
            e->expire_us);
    hex_write(f, key, len);
    putc('\n', f);
}

/* One line (without its newline) into the map; -EINVAL if it does not parse. */
static int map_replay_line(struct asset_map *m, char *line, uint8_t *key)
{
    char hash[CAS_HASH_HEX + 1];
    struct asset_entry e = {0};
    int64_t size;
    int used = 0;
    size_t hex_len;

    if (line[0] == 'R' && line[1] == ' ') {
        hex_len = strlen(line + 2);
        if (hex_len == 0 || hex_len > 2 * ASSET_MAX_KEY_BYTES || hex_read(line + 2, hex_len, key))
            return -EINVAL;
        map_unset(m, key, hex_len / 2);
        return 0;
    }
    if (sscanf(line, "P %64s %" SCNd64 " %" SCNu64 " %" SCNu64 " %n", hash, &size, &e.stored_us,
               &e.expire_us, &used) != 4 ||
        used == 0)
        return -EINVAL;
    if (cas_digest_parse(hash, size, &e.digest) != 0)
        return -EINVAL;
    hex_len = strlen(line + used);
    if (hex_len == 0 || hex_len > 2 * ASSET_MAX_KEY_BYTES || hex_read(line + used, hex_len, key))
        return -EINVAL;
    return map_set(m, key, hex_len / 2, &e) == 0 ? 0 : -ENOMEM;
}

/* Replays the log; a line longer than MAP_MAX_LINE is skipped whole. */
static int map_load(struct asset_map *m, size_t *records, size_t *skipped)
{
    FILE *f = fopen(m->path, "re");
    uint8_t *key = NULL;
    char *line = NULL;
    bool first = true, too_long = false;

    *records = *skipped = 0;
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno;
    key = malloc(ASSET_MAX_KEY_BYTES);
    line = malloc(MAP_MAX_LINE + 2);
    if (key == NULL || line == NULL) {
        free(key);
        free(line);
        fclose(f);
        return -ENOMEM;
    }
    while (fgets(line, MAP_MAX_LINE + 2, f) != NULL) {
        size_t n = strlen(line);

        if (n == 0 || line[n - 1] != '\n') {
            /* Longer than any record, or the last line torn by a crash. */
            if (!too_long)
                (*skipped)++;
            too_long = true;
            continue;
        }
        line[--n] = '\0';
        if (too_long) { /* the end of a long line */
            too_long = false;
            continue;
        }
        if (first) {
            first = false;
            if (strcmp(line, MAP_LOG_HEADER) != 0) {
                LOG_W("asset: %s is not a casbox asset map; starting empty", m->path);
                break;
            }
            continue;
        }
        if (map_replay_line(m, line, key) != 0) {
            (*skipped)++;
            continue;
        }
        (*records)++;
    }
    free(line);
    free(key);
    fclose(f);
    return 0;
}

/* Rewrites the log from the map: oldest first. */
static int map_compact(struct asset_map *m)
{
    char tmp[4200];
    FILE *f;
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", m->path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return -ENOMEM;
    }
    fprintf(f, "%s\n", MAP_LOG_HEADER);
    for (struct map_link *l = m->lru.prev; l != &m->lru; l = l->prev)
        map_log_put(f, lru_node(l)->key, lru_node(l)->key_len, &lru_node(l)->e);
    /* No fsync: the log is a cache, and a log lost with the machine costs
     * downloads, not correctness. */
    if (fflush(f) != 0 || ferror(f)) {
        int rc = -errno;

        fclose(f);
        unlink(tmp);
        return rc ? rc : -EIO;
    }
    fclose(f);
    if (rename(tmp, m->path) != 0) {
        int rc = -errno;

        unlink(tmp);
        return rc;
    }
    if (m->log != NULL)
        fclose(m->log);
    m->log = fopen(m->path, "ae");
    m->log_records = m->count;
    return m->log ? 0 : -errno;
}

/* After a record was appended: flush, and compact when it has grown. */
static void map_log_written(struct asset_map *m)
{
    int rc = 0;

    m->log_records++;
    if (fflush(m->log) != 0 || ferror(m->log))
        rc = -EIO;
    else if (m->log_records > 2 * m->count + 1024)
        rc = map_compact(m);
    if (rc != 0) {
        LOG_ERRNO_W(rc, "asset: cannot write %s; the map goes on in memory only", m->path);
        if (m->log != NULL)
            fclose(m->log);
        m->log = NULL;
    }
}

static void map_log_remove(struct asset_map *m, const uint8_t *key, size_t key_len)
{
    if (m->log == NULL)
        return;
    fputs("R ", m->log);
    hex_write(m->log, key, key_len);
    putc('\n', m->log);
    map_log_written(m);
}

/* Drops the least recently used keys beyond max (logged when log). */
static void map_evict(struct asset_map *m, bool log)
{
    while (m->count > m->max) {
        struct map_node *victim = lru_node(m->lru.prev);

        map_detach(m, victim);
        if (log)
            map_log_remove(m, victim->key, victim->key_len);
        free(victim);
    }
}

int asset_map_open(const char *path, size_t max_entries, struct asset_map **out)
{
    struct asset_map *m;
    size_t records = 0, skipped = 0;
    int rc;

    *out = NULL;
    if (max_entries == 0)
        return -EINVAL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    m->lru.next = m->lru.prev = &m->lru;
    m->max = max_entries;
    m->n_buckets = 64;
    while (m->n_buckets < max_entries && m->n_buckets < (1u << 20))
        m->n_buckets *= 2;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        asset_map_close(m);
        return -ENOMEM;
    }
    if (path != NULL) {
        m->path = strdup(path);
        if (m->path == NULL) {
            asset_map_close(m);
            return -ENOMEM;
        }
        rc = map_load(m, &records, &skipped);
        map_evict(m, false); /* the compaction below writes what is left */
        if (rc != 0)
            LOG_ERRNO_W(rc, "asset: cannot read %s; starting empty", path);
        if (skipped > 0)
            LOG_W("asset: %s: %zu line(s) skipped (torn or not understood)", path, skipped);
        rc = map_compact(m);
        if (rc != 0) {
            LOG_ERRNO_W(rc, "asset: cannot write %s; the map is kept in memory only", path);
            if (m->log != NULL)
                fclose(m->log);
            m->log = NULL;
        }
    }
    *out = m;
    return 0;
}

void asset_map_close(struct asset_map *m)
{
    struct map_link *l, *next;

    if (m == NULL)
        return;
    for (l = m->lru.next; l != NULL && l != &m->lru; l = next) {
        next = l->next;
        free(lru_node(l));
    }
    if (m->log != NULL)
        fclose(m->log);
    free(m->buckets);
    free(m->path);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int asset_map_get(struct asset_map *m, const uint8_t *key, size_t key_len, struct asset_entry *out)
{
    struct map_node *n;
    int rc = -ENOENT;

    pthread_mutex_lock(&m->lock);
    n = *map_slot(m, key, key_len, map_hash(key, key_len));
    if (n != NULL) {
        *out = n->e;
        lru_unlink(n);
        lru_push_front(m, n);
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int asset_map_put(struct asset_map *m, const uint8_t *key, size_t key_len,
                  const struct asset_entry *e)
{
    int rc;

    if (key_len == 0 || key_len > ASSET_MAX_KEY_BYTES)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    rc = map_set(m, key, key_len, e);
    if (rc == 0 && m->log != NULL) {
        map_log_put(m->log, key, key_len, e);
        map_log_written(m);
    }
    if (rc == 0)
        map_evict(m, true);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int asset_map_remove(struct asset_map *m, const uint8_t *key, size_t key_len)
{
    struct map_node *n;

    pthread_mutex_lock(&m->lock);
    n = *map_slot(m, key, key_len, map_hash(key, key_len));
    if (n != NULL) {
        map_drop(m, n);
        map_log_remove(m, key, key_len);
    }
    pthread_mutex_unlock(&m->lock);
    return n != NULL ? 0 : -ENOENT;
}

size_t asset_map_count(struct asset_map *m)
{
    size_t n;

    pthread_mutex_lock(&m->lock);
    n = m->count;
    pthread_mutex_unlock(&m->lock);
    return n;
}
