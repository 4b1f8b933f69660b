/*
 * store.c - the blob store: opening a store directory (start-up clean-up and
 * scan), looking blobs up, reading them with verification, storing buffers,
 * committing temp files, LRU eviction, statistics.
 *
 * On disk, under the store directory:
 *   lock                 flock'ed while a process has the store open
 *   blobs/<aa>/<hash>    one immutable file per blob, mode 0444
 *   tmp/                 temp files; everything in it is stale at start-up
 *   ac/<aa>/<key>        the action cache (action_cache.c)
 *
 * Ingesting existing files (cas_store_put_file) lives in ingest.c, streaming
 * uploads in writer.c, the action cache in action_cache.c.
 *
 * Trust. A blob this process wrote (or re-hashed) is "verified"; one found by
 * the start-up scan, or linked in from a file that still has other names, is
 * not, and is re-hashed the first time it is read. Every open also checks the
 * file size (fstat) and the inode against the index. A blob that fails is
 * unlinked, dropped from the index, counted in corrupt_blobs and reported
 * missing, and so is one whose file cannot be read (EIO). By default nothing
 * is fsync'ed ([cas] fsync = none): a committed blob survives the daemon being
 * killed; after a power loss a damaged file is caught by the first-read check.
 * fsync = data / full sync each file (and directory) before it is visible.
 * The limit evicted against and what ENOSPC does are in store_space.c.
 *
 * Locking: see store_internal.h (index_lock for the index, name_lock for
 * renames/unlinks in blobs/ and ac/; never held during data I/O or hashing).
 */
#include "cas.h"
#include "store_internal.h"
#include "upstream_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define STORE_DIR_MODE   0755
#define STORE_OPEN_TRIES 3 /* retries when a blob is replaced while being checked */

/* --- small I/O helpers shared by cas/ --- */

int cas_io_pread_all(int fd, void *buf, size_t len, off_t off, size_t *got)
{
    size_t done = 0;

    while (done < len) {
        size_t want = len - done < CAS_IO_CHUNK ? len - done : CAS_IO_CHUNK;
        ssize_t n = pread(fd, (uint8_t *)buf + done, want, off + (off_t)done);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

void cas_blob_relpath(const struct cas_digest *d, char out[CAS_BLOB_RELPATH])
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(d, hex);
    out[0] = hex[0];
    out[1] = hex[1];
    out[2] = '/';
    memcpy(out + 3, hex, CAS_HASH_HEX + 1);
}

int cas_store_temp_create(struct cas_store *s, const char *prefix, char path[PATH_MAX])
{
    int fd = -ENOSPC;

    /* A full filesystem (blocks or inodes) gets one eviction and a retry. */
    for (int attempt = 0; attempt < 2 && store_space_is_full(fd); attempt++) {
        int n = snprintf(path, PATH_MAX, "%s/%s-XXXXXX", s->tmp_dir, prefix);

        if (n < 0 || n >= PATH_MAX)
            return -ENAMETOOLONG;
        if (attempt > 0 && store_space_reclaim(s, CAS_IO_ALIGN) < 0)
            break;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0) {
            path[0] = '\0';
            fd = -errno;
        }
    }
    return fd;
}

int cas_fsync_mode_parse(const char *s, enum cas_fsync_mode *out)
{
    static const char *const names[] = {"none", "data", "full"};

    for (int i = 0; i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum cas_fsync_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

static size_t round_up_page(size_t n)
{
    return (n + CAS_IO_ALIGN - 1) & ~(size_t)(CAS_IO_ALIGN - 1);
}

/* "<dir>/<name>" in a new string, or NULL. */
static char *path_join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);

    if (p != NULL)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

static int mkdirat_exist_ok(int dir_fd, const char *name)
{
    if (mkdirat(dir_fd, name, STORE_DIR_MODE) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int cas_rename_into_shard(const char *from, int dir_fd, const char *rel)
{
    char shard[3] = {rel[0], rel[1], '\0'};
    int ret;

    if (renameat(AT_FDCWD, from, dir_fd, rel) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    ret = mkdirat_exist_ok(dir_fd, shard);
    if (ret < 0)
        return ret;
    if (renameat(AT_FDCWD, from, dir_fd, rel) < 0)
        return -errno;
    return 0;
}

/* fsync = full: the directory holding dir_fd/rel ("<aa>/<name>"), so the
 * rename survives a power loss. */
static int store_sync_dir(struct cas_store *s, int dir_fd, const char *rel)
{
    char shard[3] = {rel[0], rel[1], '\0'};
    int fd, ret = 0;

    if (s->fsync_mode != CAS_FSYNC_FULL)
        return 0;
    fd = openat(dir_fd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        ret = -errno;
    close(fd);
    return ret;
}

/* --- start-up --- */

/* The pid holding a flock on the file lock_fd is open on, from /proc/locks,
 * or 0. */
static long store_lock_holder(int lock_fd)
{
    struct stat st;
    char line[256];
    long holder = 0;
    FILE *f;

    if (fstat(lock_fd, &st) < 0 || (f = fopen("/proc/locks", "re")) == NULL)
        return 0;
    while (holder == 0 && fgets(line, sizeof(line), f) != NULL) {
        unsigned maj, min;
        unsigned long ino;
        long pid;

        if (strstr(line, "FLOCK") == NULL ||
            sscanf(strchr(line, ':') + 1, "%*s %*s %*s %ld %x:%x:%lu", &pid, &maj, &min, &ino) != 4)
            continue;
        if (ino == (unsigned long)st.st_ino)
            holder = pid;
    }
    fclose(f);
    return holder;
}

/* flock(LOCK_EX), waiting up to wait_ms for a predecessor that is still
 * exiting (a killed casboxd releases the lock only once its last thread is
 * gone). -EBUSY, with the holder logged, when it does not come free. */
static int store_lock_wait(int lock_fd, const char *lock_path, uint64_t wait_ms)
{
    uint64_t waited_ms = 0;
    long holder;

    for (;;) {
        if (flock(lock_fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK)
            return -errno;
        if (waited_ms >= wait_ms)
            break;
        if (waited_ms == 0)
            LOG_I("cas: %s is locked by another process; waiting up to %" PRIu64 " ms", lock_path,
                  wait_ms);
        usleep(50 * 1000);
        waited_ms += 50;
    }
    holder = store_lock_holder(lock_fd);
    LOG_E("cas: %s is held by pid %ld (another casboxd on this state dir, or a process it "
          "left behind)",
          lock_path, holder);
    return -EBUSY;
}

static int open_subdir(struct cas_store *s, const char *name, int *fd_out)
{
    int dir_fd = -1;
    int ret;

    dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return -errno;
    ret = mkdirat_exist_ok(dir_fd, name);
    if (ret < 0)
        goto out;
    *fd_out = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (*fd_out < 0)
        ret = -errno;
out:
    close(dir_fd);
    return ret;
}

/* Opens a directory fd for reading entries; the DIR owns a fresh fd. */
static int open_dir_stream(int parent_fd, const char *name, DIR **out)
{
    int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return -errno;
    *out = fdopendir(fd);
    if (*out == NULL) {
        int ret = -errno;

        close(fd);
        return ret;
    }
    return 0;
}

static bool is_dot(const char *name)
{
    return strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

/* The next entry of dir other than "." and "..", with its lstat: 1, 0 at the
 * end of the directory, or a negative errno. Entries that vanish while we
 * look are skipped. */
static int store_next_entry(DIR *dir, struct dirent **de, struct stat *st)
{
    for (;;) {
        errno = 0;
        *de = readdir(dir);
        if (*de == NULL)
            return -errno;
        if (is_dot((*de)->d_name))
            continue;
        if (fstatat(dirfd(dir), (*de)->d_name, st, AT_SYMLINK_NOFOLLOW) == 0)
            return 1;
        if (errno != ENOENT)
            return -errno;
    }
}

/* Removes every file left in tmp/ by an earlier run (we hold the store lock,
 * so nobody else is writing there). Directories are left alone: they are not
 * ours and may hold mounts. */
static int store_clean_tmp(struct cas_store *s)
{
    DIR *dir = NULL;
    struct dirent *de;
    int ret;

    ret = open_dir_stream(s->tmp_fd, ".", &dir);
    if (ret < 0)
        return ret;
    for (;;) {
        struct stat st;

        ret = store_next_entry(dir, &de, &st);
        if (ret <= 0)
            break;
        if (S_ISDIR(st.st_mode))
            continue;
        if (unlinkat(dirfd(dir), de->d_name, 0) < 0 && errno != ENOENT) {
            ret = -errno;
            break;
        }
    }
    closedir(dir);
    return ret;
}

struct scan_item {
    uint8_t hash[CAS_HASH_BYTES];
    int64_t size;
    uint64_t ino;
    int64_t used_ns; /* last access, to restore a rough LRU order */
};

struct scan_list {
    struct scan_item *items;
    size_t count;
    size_t cap;
};

static int scan_list_add(struct scan_list *list, const struct scan_item *item)
{
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 1024;
        struct scan_item *items = realloc(list->items, cap * sizeof(*items));

        if (items == NULL)
            return -ENOMEM;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->count++] = *item;
    return 0;
}

static int scan_item_compare(const void *a, const void *b)
{
    const struct scan_item *x = a, *y = b;

    return (x->used_ns > y->used_ns) - (x->used_ns < y->used_ns);
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

static int64_t stat_used_ns(const struct stat *st)
{
    const struct timespec *t = &st->st_atim;

    if (st->st_mtim.tv_sec > t->tv_sec ||
        (st->st_mtim.tv_sec == t->tv_sec && st->st_mtim.tv_nsec > t->tv_nsec))
        t = &st->st_mtim;
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Lists the blob files of one shard. A file whose name is not a lowercase
 * 64-hex hash starting with the shard's digits, or that is not a regular
 * file, is junk and removed. Sizes and contents are checked on first read. */
static int store_scan_shard(struct cas_store *s, const char *shard, struct scan_list *list)
{
    DIR *dir = NULL;
    struct dirent *de;
    int ret;

    ret = open_dir_stream(s->blobs_fd, shard, &dir);
    if (ret < 0)
        return ret;
    for (;;) {
        const char *name;
        struct scan_item item;
        struct cas_digest d;
        struct stat st;

        ret = store_next_entry(dir, &de, &st);
        if (ret <= 0)
            break;
        name = de->d_name;
        if (S_ISDIR(st.st_mode))
            continue;
        if (!S_ISREG(st.st_mode) || strlen(name) != CAS_HASH_HEX ||
            !is_lower_hex(name, CAS_HASH_HEX) || name[0] != shard[0] || name[1] != shard[1] ||
            cas_digest_parse(name, st.st_size, &d) < 0) {
            if (unlinkat(dirfd(dir), name, 0) < 0 && errno != ENOENT) {
                ret = -errno;
                break;
            }
            continue;
        }
        if (cas_digest_is_empty(&d))
            continue; /* the empty blob is implicit and never indexed */
        memcpy(item.hash, d.hash, CAS_HASH_BYTES);
        item.size = st.st_size;
        item.ino = (uint64_t)st.st_ino;
        item.used_ns = stat_used_ns(&st);
        ret = scan_list_add(list, &item);
        if (ret < 0)
            break;
    }
    closedir(dir);
    return ret;
}

/* Lists blobs/: the shards, plus removal of stray files at the top level;
 * the list sorted by access time, oldest first. */
static int store_scan_list(struct cas_store *s, struct scan_list *list)
{
    DIR *dir = NULL;
    struct dirent *de;
    int ret;

    ret = open_dir_stream(s->blobs_fd, ".", &dir);
    if (ret < 0)
        return ret;
    for (;;) {
        struct stat st;

        ret = store_next_entry(dir, &de, &st);
        if (ret <= 0)
            break;
        if (S_ISDIR(st.st_mode)) {
            if (strlen(de->d_name) != 2 || !is_lower_hex(de->d_name, 2))
                continue; /* not ours; left alone */
            ret = store_scan_shard(s, de->d_name, list);
            if (ret < 0)
                break;
            continue;
        }
        if (unlinkat(dirfd(dir), de->d_name, 0) < 0 && errno != ENOENT) {
            ret = -errno;
            break;
        }
    }
    closedir(dir);
    if (ret < 0) {
        free(list->items);
        list->items = NULL;
        return ret;
    }
    if (list->count > 0)
        qsort(list->items, list->count, sizeof(*list->items), scan_item_compare);
    return 0;
}

/* Builds the index from blobs/ before the store is used. */
static int store_scan(struct cas_store *s)
{
    struct scan_list list = {0};
    int ret = store_scan_list(s, &list);

    for (size_t i = 0; ret == 0 && i < list.count; i++) {
        const struct scan_item *it = &list.items[i];

        ret = store_index_insert(&s->index, it->hash, it->size, it->ino, false, NULL);
    }
    free(list.items);
    return ret;
}

static struct store_entry *store_evict_collect(struct cas_store *s, const struct store_entry *keep);

/* Entries inserted per hold of index_lock by the background scan, so that
 * requests are not held up for the whole insertion. */
#define SCAN_INSERT_BATCH 4096

/* The background scan's insertion: newest first at the LRU's old end (what
 * was used since start-up stays newer), skipping blobs indexed meanwhile.
 * When something was removed meanwhile, a listed file is checked again
 * before it is indexed, so a removed blob does not come back. */
static void store_scan_adopt_list(struct cas_store *s, const struct scan_list *list,
                                  uint64_t removals)
{
    for (size_t done = 0; done < list->count && !atomic_load(&s->scan_stop);) {
        pthread_mutex_lock(&s->name_lock);
        pthread_mutex_lock(&s->index_lock);
        for (size_t n = 0; n < SCAN_INSERT_BATCH && done < list->count; n++, done++) {
            const struct scan_item *it = &list->items[list->count - 1 - done];
            struct cas_digest d;
            char rel[CAS_BLOB_RELPATH];
            struct stat st;

            if (store_index_find(&s->index, it->hash) != NULL)
                continue;
            if (s->index.removals != removals) {
                memcpy(d.hash, it->hash, CAS_HASH_BYTES);
                d.size = it->size;
                cas_blob_relpath(&d, rel);
                if (fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                    (uint64_t)st.st_ino != it->ino)
                    continue;
            }
            if (store_index_insert_oldest(&s->index, it->hash, it->size, it->ino, false) < 0)
                break; /* out of memory: a later lookup finds the file */
        }
        pthread_mutex_unlock(&s->index_lock);
        pthread_mutex_unlock(&s->name_lock);
    }
}

static void *store_scan_main(void *arg)
{
    struct cas_store *s = arg;
    struct scan_list list = {0};
    struct store_entry *victims;
    uint64_t started_us = clock_mono_us(), removals, bytes;
    size_t count;
    int ret;

    pthread_mutex_lock(&s->index_lock);
    removals = s->index.removals;
    pthread_mutex_unlock(&s->index_lock);
    ret = store_scan_list(s, &list);
    if (ret == 0)
        store_scan_adopt_list(s, &list, removals);
    free(list.items);
    atomic_store(&s->scanning, false);
    if (ret < 0) {
        LOG_ERRNO_E(ret, "cas: the scan of %s stopped; blobs not indexed yet are found on use",
                    s->blobs_dir);
        atomic_store(&s->scanning, true); /* keep looking on disk */
        return NULL;
    }
    pthread_mutex_lock(&s->index_lock);
    count = s->index.count;
    bytes = s->index.bytes;
    pthread_mutex_unlock(&s->index_lock);
    LOG_I("cas: indexed %zu blobs (%" PRIu64 " bytes) in %" PRIu64 " ms, serving meanwhile", count,
          bytes, (clock_mono_us() - started_us) / 1000);
    store_space_refresh(s, true);
    pthread_mutex_lock(&s->name_lock);
    pthread_mutex_lock(&s->index_lock);
    victims = store_evict_collect(s, NULL);
    pthread_mutex_unlock(&s->index_lock);
    ret = store_evict_unlink(s, victims);
    pthread_mutex_unlock(&s->name_lock);
    if (ret < 0)
        LOG_ERRNO_W(ret, "cas: evicting down to the limit after the scan");
    return NULL;
}

struct store_entry *store_find(struct cas_store *s, const uint8_t hash[CAS_HASH_BYTES])
{
    struct store_entry *e = store_index_find(&s->index, hash);
    struct cas_digest d;
    char rel[CAS_BLOB_RELPATH];
    struct stat st;

    if (e != NULL || !atomic_load(&s->scanning))
        return e;
    memcpy(d.hash, hash, CAS_HASH_BYTES);
    d.size = 0;
    cas_blob_relpath(&d, rel);
    if (fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    if (store_index_insert(&s->index, hash, st.st_size, (uint64_t)st.st_ino, false, &e) < 0)
        return NULL;
    return e;
}

/* --- eviction --- */

static void entry_digest(const struct store_entry *e, struct cas_digest *d)
{
    memcpy(d->hash, e->hash, CAS_HASH_BYTES);
    d->size = e->size;
}

/* With name_lock and index_lock held: drops least-recently-used entries until
 * the store is under its limit, never `keep`. Returns them chained through
 * chain_next; the caller unlinks their files before releasing name_lock, so
 * no commit can bring one back in between. */
static struct store_entry *store_evict_collect(struct cas_store *s, const struct store_entry *keep)
{
    struct store_entry *victims = NULL;

    if (s->max_bytes == 0 || atomic_load(&s->scanning))
        return NULL; /* no limit, or the index is not whole yet */
    /* Oldest first, skipping `keep` and pinned blobs (inputs of running
     * actions), which may leave the store above its limit for a while. */
    for (struct store_entry *e = store_index_oldest(&s->index), *newer;
         e != NULL && s->index.bytes > s->max_bytes; e = newer) {
        newer = e->lru_prev;
        if (e == keep || store_upstream_pinned(s->upstream, e->hash))
            continue;
        store_index_remove(&s->index, e);
        s->evicted_blobs++;
        s->evicted_bytes += (uint64_t)e->size;
        e->chain_next = victims;
        victims = e;
    }
    return victims;
}

/* With name_lock held: unlinks and frees the collected victims. */
int store_evict_unlink(struct cas_store *s, struct store_entry *victims)
{
    int ret = 0;

    while (victims != NULL) {
        struct store_entry *next = victims->chain_next;
        struct cas_digest d;
        char rel[CAS_BLOB_RELPATH];

        entry_digest(victims, &d);
        cas_blob_relpath(&d, rel);
        if (unlinkat(s->blobs_fd, rel, 0) < 0 && errno != ENOENT && ret == 0)
            ret = -errno;
        free(victims);
        victims = next;
    }
    return ret;
}

/* --- open / close --- */

/* The store structure with its locks and empty index, no files yet. */
static int store_new(const struct cas_store_options *opt, struct cas_store **out)
{
    struct cas_store *s = calloc(1, sizeof(*s));
    int ret;

    if (s == NULL)
        return -ENOMEM;
    s->lock_fd = s->blobs_fd = s->tmp_fd = s->ac_fd = -1;
    if (opt != NULL) {
        s->max_bytes = s->configured_max_bytes = opt->max_bytes;
        s->headroom_bytes = opt->disk_headroom_bytes;
        s->headroom_percent = opt->disk_headroom_percent;
        s->fsync_mode = opt->fsync;
        s->max_blob_percent = opt->max_blob_percent;
    }
    atomic_init(&s->space_checked_us, 0);
    atomic_init(&s->scanning, false);
    atomic_init(&s->scan_stop, false);
    atomic_init(&s->name_counter, 0);
    ret = -pthread_mutex_init(&s->name_lock, NULL);
    if (ret < 0)
        goto out_free;
    ret = -pthread_mutex_init(&s->index_lock, NULL);
    if (ret < 0)
        goto out_name_lock;
    ret = store_index_init(&s->index);
    if (ret < 0)
        goto out_index_lock;
    ret = store_upstream_new(&s->upstream);
    if (ret < 0)
        goto out_index;
    *out = s;
    return 0;
out_index:
    store_index_destroy(&s->index);
out_index_lock:
    pthread_mutex_destroy(&s->index_lock);
out_name_lock:
    pthread_mutex_destroy(&s->name_lock);
out_free:
    free(s);
    return ret;
}

int cas_store_open(const char *dir, const struct cas_store_options *opt, struct cas_store **out)
{
    struct cas_store *s = NULL;
    struct stat blobs_st, tmp_st;
    struct store_entry *victims;
    char *lock_path = NULL;
    uint64_t started_us;
    int ret;

    *out = NULL;
    if (dir == NULL || dir[0] == '\0')
        return -EINVAL;
    ret = store_new(opt, &s);
    if (ret < 0)
        return ret;
    /* From here on cas_store_close() undoes everything. */
    ret = util_mkdir_p(dir, STORE_DIR_MODE);
    if (ret < 0)
        goto out;
    s->dir = realpath(dir, NULL);
    if (s->dir == NULL) {
        ret = -errno;
        goto out;
    }
    s->tmp_dir = path_join(s->dir, "tmp");
    s->blobs_dir = path_join(s->dir, "blobs");
    lock_path = path_join(s->dir, "lock");
    if (s->tmp_dir == NULL || s->blobs_dir == NULL || lock_path == NULL) {
        ret = -ENOMEM;
        goto out;
    }

    /* One process per store: another one would delete our temp files at its
     * start-up and keep an index that ours does not see. */
    s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0) {
        ret = -errno;
        goto out;
    }
    ret = store_lock_wait(s->lock_fd, lock_path, opt != NULL ? opt->lock_wait_ms : 0);
    if (ret < 0)
        goto out;

    ret = open_subdir(s, "blobs", &s->blobs_fd);
    if (ret < 0)
        goto out;
    ret = open_subdir(s, "tmp", &s->tmp_fd);
    if (ret < 0)
        goto out;
    ret = open_subdir(s, "ac", &s->ac_fd);
    if (ret < 0)
        goto out;
    if (fstat(s->blobs_fd, &blobs_st) < 0 || fstat(s->tmp_fd, &tmp_st) < 0) {
        ret = -errno;
        goto out;
    }
    if (blobs_st.st_dev != tmp_st.st_dev) {
        ret = -EXDEV; /* commits are renames from tmp/ into blobs/ */
        goto out;
    }
    s->dev = blobs_st.st_dev;

    /* Shard directories are created on first use (cas_rename_into_shard):
     * making all 512 up front costs ~150 ms on a fresh store. */
    ret = store_clean_tmp(s);
    if (ret < 0)
        goto out;
    if (opt != NULL && opt->scan_in_background) {
        atomic_store(&s->scanning, true);
        ret = -pthread_create(&s->scan_thread, NULL, store_scan_main, s);
        if (ret < 0)
            goto out;
        s->scan_thread_started = true;
        LOG_I("cas: indexing %s in the background; serving meanwhile", s->blobs_dir);
        store_space_refresh(s, true);
        *out = s;
        s = NULL;
        goto out;
    }
    started_us = clock_mono_us();
    ret = store_scan(s);
    if (ret < 0)
        goto out;
    LOG_I("cas: indexed %zu blobs (%" PRIu64 " bytes) in %" PRIu64 " ms", s->index.count,
          s->index.bytes, (clock_mono_us() - started_us) / 1000);
    store_space_refresh(s, true);

    /* The limit may have been lowered since the last run. Single-threaded
     * here, but take the locks as everywhere else. */
    pthread_mutex_lock(&s->name_lock);
    pthread_mutex_lock(&s->index_lock);
    victims = store_evict_collect(s, NULL);
    pthread_mutex_unlock(&s->index_lock);
    ret = store_evict_unlink(s, victims);
    pthread_mutex_unlock(&s->name_lock);
    if (ret < 0)
        goto out;

    *out = s;
    s = NULL;
out:
    free(lock_path);
    cas_store_close(s);
    return ret;
}

void cas_store_close(struct cas_store *s)
{
    if (s == NULL)
        return;
    if (s->scan_thread_started) {
        atomic_store(&s->scan_stop, true);
        pthread_join(s->scan_thread, NULL);
    }
    store_upstream_free(s->upstream);
    store_index_destroy(&s->index);
    pthread_mutex_destroy(&s->index_lock);
    pthread_mutex_destroy(&s->name_lock);
    if (s->ac_fd >= 0)
        close(s->ac_fd);
    if (s->tmp_fd >= 0)
        close(s->tmp_fd);
    if (s->blobs_fd >= 0)
        close(s->blobs_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->blobs_dir);
    free(s->tmp_dir);
    free(s->dir);
    free(s);
}

const char *cas_store_tmp_dir(const struct cas_store *s)
{
    return s->tmp_dir;
}

void cas_store_get_stats(struct cas_store *s, struct cas_store_stats *out)
{
    pthread_mutex_lock(&s->index_lock);
    out->blobs = s->index.count;
    out->bytes = s->index.bytes;
    out->evicted_blobs = s->evicted_blobs;
    out->evicted_bytes = s->evicted_bytes;
    out->corrupt_blobs = s->corrupt_blobs;
    out->limit_bytes = s->max_bytes;
    out->space_evicted_blobs = s->space_evicted_blobs;
    out->refused_blobs = s->refused_blobs;
    pthread_mutex_unlock(&s->index_lock);
    out->max_blob_bytes = cas_store_max_blob_bytes(s);
}

/* --- the empty blob --- */

/* Makes sure blobs/e3/e3b0... exists as an empty file, for callers that need
 * a path or an fd. It is never indexed and never evicted. */
static int store_ensure_empty(struct cas_store *s)
{
    char rel[CAS_BLOB_RELPATH];
    struct stat st;

    cas_blob_relpath(cas_digest_empty(), rel);
    if (fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        st.st_size == 0)
        return 0;
    return cas_store_write_commit(s, "empty", NULL, 0,
                                  &(struct cas_commit_target){.dir_fd = s->blobs_fd, .rel = rel});
}

static int store_open_empty(struct cas_store *s)
{
    char rel[CAS_BLOB_RELPATH];
    int ret = -EAGAIN;

    cas_blob_relpath(cas_digest_empty(), rel);
    for (int attempt = 0; attempt < STORE_OPEN_TRIES && ret == -EAGAIN; attempt++) {
        struct stat st;
        int fd;

        ret = store_ensure_empty(s);
        if (ret < 0)
            break;
        fd = openat(s->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            ret = errno == ENOENT ? -EAGAIN : -errno;
            continue;
        }
        if (fstat(fd, &st) < 0) {
            ret = -errno;
            close(fd);
            break;
        }
        if (st.st_size == 0)
            return fd;
        close(fd);
        /* Someone wrote into it: replace it with a fresh empty file. */
        ret = -EAGAIN;
        pthread_mutex_lock(&s->name_lock);
        if (unlinkat(s->blobs_fd, rel, 0) < 0 && errno != ENOENT)
            ret = -errno;
        pthread_mutex_unlock(&s->name_lock);
    }
    return ret;
}

/* --- reading with verification --- */

/* The file for d was not there: drop the index entry, unless a commit put the
 * file back meanwhile (then -EAGAIN: look again). */
static int store_forget_missing(struct cas_store *s, const struct cas_digest *d)
{
    char rel[CAS_BLOB_RELPATH];
    struct store_entry *e;
    struct stat st;
    int ret = -ENOENT;

    cas_blob_relpath(d, rel);
    pthread_mutex_lock(&s->name_lock);
    if (fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        ret = -EAGAIN;
        goto out;
    }
    if (errno != ENOENT) {
        ret = -errno;
        goto out;
    }
    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    if (e != NULL) {
        store_index_remove(&s->index, e);
        free(e);
    }
    pthread_mutex_unlock(&s->index_lock);
out:
    pthread_mutex_unlock(&s->name_lock);
    return ret;
}

/* The file `bad` (as fstat'ed through the fd that was checked) does not match
 * d: unlink it if it is still the file under d's name, drop the entry and
 * count it. -ENOENT, or -EAGAIN when a good copy replaced it meanwhile. */
static int store_remove_corrupt(struct cas_store *s, const struct cas_digest *d,
                                const struct stat *bad)
{
    char rel[CAS_BLOB_RELPATH];
    struct store_entry *e;
    struct stat cur;
    bool removed = false;
    int ret = -ENOENT;

    cas_blob_relpath(d, rel);
    pthread_mutex_lock(&s->name_lock);
    if (fstatat(s->blobs_fd, rel, &cur, AT_SYMLINK_NOFOLLOW) == 0) {
        if (cur.st_dev != bad->st_dev || cur.st_ino != bad->st_ino) {
            ret = -EAGAIN;
            goto out;
        }
        /* On a failing disk the unlink may fail too: the entry goes all the
         * same, so the blob is reported missing and a re-upload replaces
         * the file (a rename over it). */
        if (unlinkat(s->blobs_fd, rel, 0) < 0)
            LOG_W("cas: cannot remove damaged blob file %s/%s: %s", s->blobs_dir, rel,
                  strerror(errno));
        removed = true;
    } else if (errno != ENOENT) {
        LOG_W("cas: cannot stat damaged blob file %s/%s: %s", s->blobs_dir, rel, strerror(errno));
        removed = true;
    }
    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    if (e != NULL) {
        store_index_remove(&s->index, e);
        free(e);
    }
    if (removed)
        s->corrupt_blobs++;
    pthread_mutex_unlock(&s->index_lock);
out:
    pthread_mutex_unlock(&s->name_lock);
    return ret;
}

static void store_mark_verified(struct cas_store *s, const struct cas_digest *actual,
                                const struct stat *st)
{
    struct store_entry *e;

    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, actual->hash);
    if (e != NULL && e->ino == (uint64_t)st->st_ino)
        store_index_update(&s->index, e, actual->size, e->ino, true);
    pthread_mutex_unlock(&s->index_lock);
}

/* Errors of a read that mean the file's bytes are lost (a bad sector, a
 * checksum failure on btrfs), not a transient condition. */
static bool store_read_error_is_media(int err)
{
    return err == -EIO || err == -EUCLEAN || err == -EBADMSG;
}

int cas_store_read_failed(struct cas_store *s, const struct cas_digest *d, int fd, int err)
{
    char hex[CAS_HASH_HEX + 1];
    struct stat st;

    if (!store_read_error_is_media(err) || d->size == 0)
        return err;
    cas_digest_hex(d, hex);
    LOG_W("cas: blob %s/%" PRId64 " is unreadable (%s): removed, clients will upload it again", hex,
          d->size, strerror(-err));
    /* -EAGAIN from the removal: a re-upload replaced the file meanwhile and
     * is kept; this read failed all the same. */
    if (fstat(fd, &st) == 0)
        store_remove_corrupt(s, d, &st);
    return -ENOENT;
}

/* One attempt at opening blob d (non-empty) and checking it; see
 * store_blob_open(). */
static int store_blob_try_open(struct cas_store *s, const struct cas_digest *d, void **data)
{
    char rel[CAS_BLOB_RELPATH];
    struct store_entry *e;
    struct cas_digest actual;
    struct stat st;
    uint8_t *buf = NULL;
    uint64_t ino;
    bool check;
    int fd = -1;
    int ret;

    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    if (e == NULL || (e->verified && e->size != d->size)) {
        /* Absent, or a known-good blob asked for with the wrong size. */
        pthread_mutex_unlock(&s->index_lock);
        return -ENOENT;
    }
    store_index_touch(&s->index, e);
    check = !e->verified;
    ino = e->ino;
    pthread_mutex_unlock(&s->index_lock);

    cas_blob_relpath(d, rel);
    fd = openat(s->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        ret = errno == ENOENT ? store_forget_missing(s, d) : -errno;
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    /* Not the file we verified: a concurrent commit replaced it (fine, but
     * unknown to us), or someone else did. Check it. */
    if ((uint64_t)st.st_ino != ino)
        check = true;
    if (!S_ISREG(st.st_mode) || (!check && st.st_size != d->size))
        goto corrupt;
    if (st.st_size != d->size) {
        /* Truncated or grown, or the caller has the size wrong: only the hash
         * can tell. A file whose hash is right is the real blob. */
        ret = cas_digest_fd(fd, &actual);
        if (store_read_error_is_media(ret)) {
            ret = cas_store_read_failed(s, d, fd, ret);
            goto out;
        }
        if (ret < 0)
            goto out;
        if (memcmp(actual.hash, d->hash, CAS_HASH_BYTES) != 0 || actual.size != st.st_size)
            goto corrupt;
        store_mark_verified(s, &actual, &st);
        ret = -ENOENT;
        goto out;
    }
    if (data != NULL) {
        size_t got = 0;

        buf = aligned_alloc(CAS_IO_ALIGN, round_up_page((size_t)d->size));
        if (buf == NULL) {
            ret = -ENOMEM;
            goto out;
        }
        ret = cas_io_pread_all(fd, buf, (size_t)d->size, 0, &got);
        if (store_read_error_is_media(ret)) {
            ret = cas_store_read_failed(s, d, fd, ret);
            goto out;
        }
        if (ret < 0)
            goto out;
        if (got != (size_t)d->size)
            goto corrupt;
        if (check)
            cas_digest_buffer(buf, got, &actual);
    } else if (check) {
        ret = cas_digest_fd(fd, &actual);
        if (store_read_error_is_media(ret)) {
            ret = cas_store_read_failed(s, d, fd, ret);
            goto out;
        }
        if (ret < 0)
            goto out;
    }
    if (check) {
        if (actual.size < 0) {
            ret = -ENOMEM; /* hashing failed, see digest.c */
            goto out;
        }
        if (!cas_digest_equal(&actual, d))
            goto corrupt;
        store_mark_verified(s, &actual, &st);
    }
    if (data != NULL) {
        *data = buf;
        buf = NULL;
    }
    ret = fd;
    fd = -1;
    goto out;
corrupt:
    ret = store_remove_corrupt(s, d, &st);
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return ret;
}

/* Opens blob d (non-empty) for reading, checked as cas.h promises; with data
 * != NULL also reads all of it into a page-aligned buffer (hashing that buffer
 * when a check is due rather than reading the file twice). Returns the fd. */
static int store_blob_open(struct cas_store *s, const struct cas_digest *d, void **data)
{
    int ret = -EAGAIN;

    for (int attempt = 0; attempt < STORE_OPEN_TRIES && ret == -EAGAIN; attempt++)
        ret = store_blob_try_open(s, d, data);
    return ret;
}

/* --- the public read side --- */

int cas_store_contains(struct cas_store *s, const struct cas_digest *d)
{
    struct store_entry *e;
    int ret;

    if (d->size < 0)
        return -EINVAL;
    if (d->size == 0)
        return cas_digest_is_empty(d) ? 1 : 0;
    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    ret = e != NULL && e->size == d->size;
    if (ret)
        store_index_touch(&s->index, e);
    pthread_mutex_unlock(&s->index_lock);
    return ret;
}

int cas_store_open_blob_local(struct cas_store *s, const struct cas_digest *d)
{
    if (d->size < 0)
        return -EINVAL;
    if (d->size == 0)
        return cas_digest_is_empty(d) ? store_open_empty(s) : -ENOENT;
    return store_blob_open(s, d, NULL);
}

int cas_store_get_local(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len)
{
    void *data = NULL;
    int fd;

    if (d->size < 0)
        return -EINVAL;
    if ((uint64_t)d->size > SIZE_MAX)
        return -EFBIG;
    if (d->size == 0) {
        if (!cas_digest_is_empty(d))
            return -ENOENT;
        data = malloc(1);
        if (data == NULL)
            return -ENOMEM;
    } else {
        fd = store_blob_open(s, d, &data);
        if (fd < 0)
            return fd;
        close(fd);
    }
    *buf = data;
    *len = (size_t)d->size;
    return 0;
}

/* True (and the entry touched) when d is indexed, verified and of the right
 * size: a file that may be handed out (or kept) without reading it again. */
static bool store_has_verified(struct cas_store *s, const struct cas_digest *d)
{
    struct store_entry *e;
    bool has;

    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    has = e != NULL && e->verified && e->size == d->size;
    if (has)
        store_index_touch(&s->index, e);
    pthread_mutex_unlock(&s->index_lock);
    return has;
}

int cas_store_blob_path_local(struct cas_store *s, const struct cas_digest *d, char *buf,
                              size_t len)
{
    char rel[CAS_BLOB_RELPATH];
    int n, ret;

    if (d->size < 0)
        return -EINVAL;
    if (d->size == 0) {
        if (!cas_digest_is_empty(d))
            return -ENOENT;
        ret = store_ensure_empty(s);
        if (ret < 0)
            return ret;
    } else if (!store_has_verified(s, d)) {
        /* Whoever uses the path reads the file without us: check first. */
        int fd = store_blob_open(s, d, NULL);

        if (fd < 0)
            return fd;
        close(fd);
    }
    cas_blob_relpath(d, rel);
    n = snprintf(buf, len, "%s/%s", s->blobs_dir, rel);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* --- the write side --- */

/* With name_lock held, after the file for d was renamed to rel: indexes it
 * (or updates its entry) and evicts what the limit asks. When it cannot be
 * indexed it is unlinked, since it would never be evicted. */
static int store_index_committed(struct cas_store *s, const struct cas_digest *d, const char *rel,
                                 uint64_t ino, bool verified)
{
    struct store_entry *e, *victims = NULL;
    int ret = 0;

    pthread_mutex_lock(&s->index_lock);
    e = store_find(s, d->hash);
    if (e != NULL) {
        store_index_update(&s->index, e, d->size, ino, verified);
        store_index_touch(&s->index, e);
    } else {
        ret = store_index_insert(&s->index, d->hash, d->size, ino, verified, &e);
    }
    if (ret == 0)
        victims = store_evict_collect(s, e);
    pthread_mutex_unlock(&s->index_lock);
    if (ret < 0) {
        if (unlinkat(s->blobs_fd, rel, 0) < 0 && errno != ENOENT)
            ret = -errno;
        return ret;
    }
    return store_evict_unlink(s, victims);
}

int cas_store_commit(struct cas_store *s, const char *tmp_path, const struct cas_digest *d,
                     uint64_t ino, bool verified)
{
    char rel[CAS_BLOB_RELPATH];
    bool consumed = false;
    int ret;

    if (cas_digest_is_empty(d)) {
        ret = store_ensure_empty(s);
        goto out;
    }
    cas_blob_relpath(d, rel);
    store_space_refresh(s, false);
    pthread_mutex_lock(&s->name_lock);
    if (store_has_verified(s, d)) {
        /* Already there and known good: keep it, drop ours. */
        ret = 0;
        goto out_unlock;
    }

    /* Atomic: readers see the old file (if any, identical or unverified) or
     * ours, never a partial one. A new directory entry (or shard) may need a
     * block: on a full disk, evict and retry once. */
    ret = cas_rename_into_shard(tmp_path, s->blobs_fd, rel);
    if (store_space_is_full(ret)) {
        pthread_mutex_unlock(&s->name_lock);
        ret = store_space_reclaim(s, CAS_IO_ALIGN);
        pthread_mutex_lock(&s->name_lock);
        if (ret == 0)
            ret = cas_rename_into_shard(tmp_path, s->blobs_fd, rel);
    }
    if (ret == 0)
        ret = store_sync_dir(s, s->blobs_fd, rel);
    if (ret < 0)
        goto out_unlock;
    consumed = true;
    ret = store_index_committed(s, d, rel, ino, verified);
out_unlock:
    pthread_mutex_unlock(&s->name_lock);
out:
    if (!consumed && unlink(tmp_path) < 0 && errno != ENOENT && ret == 0)
        ret = -errno;
    return ret;
}

int cas_store_temp_commit(struct cas_store *s, int fd, const char *tmp_path,
                          const struct cas_commit_target *to)
{
    struct stat st;
    int ret = 0;

    /* A blob's inode goes into the index. */
    if (to->blob != NULL && fstat(fd, &st) < 0)
        ret = -errno;
    if (ret == 0 && fchmod(fd, 0444) < 0)
        ret = -errno;
    if (ret == 0 && s->fsync_mode != CAS_FSYNC_NONE && fdatasync(fd) < 0)
        ret = -errno;
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    if (ret < 0) {
        unlink(tmp_path);
        return ret;
    }
    if (to->blob != NULL)
        return cas_store_commit(s, tmp_path, to->blob, (uint64_t)st.st_ino, true);
    pthread_mutex_lock(&s->name_lock);
    ret = cas_rename_into_shard(tmp_path, to->dir_fd, to->rel);
    if (ret == 0)
        ret = store_sync_dir(s, to->dir_fd, to->rel);
    pthread_mutex_unlock(&s->name_lock);
    if (ret < 0)
        unlink(tmp_path);
    return ret;
}

int cas_store_write_commit(struct cas_store *s, const char *prefix, const struct iovec *iov, int n,
                           const struct cas_commit_target *to)
{
    char tmp[PATH_MAX];
    off_t off = 0;
    int fd, ret = 0;

    fd = cas_store_temp_create(s, prefix, tmp);
    if (fd < 0)
        return fd;
    for (int i = 0; i < n && ret == 0; i++) {
        ret = store_space_pwrite(s, fd, iov[i].iov_base, iov[i].iov_len, off);
        off += (off_t)iov[i].iov_len;
    }
    if (ret < 0) {
        close(fd);
        unlink(tmp);
        return ret;
    }
    return cas_store_temp_commit(s, fd, tmp, to);
}

/* renameat2(dir_fd/name -> blobs/rel, RENAME_NOREPLACE), creating the shard
 * directory if someone removed it. */
static int store_rename_noreplace(struct cas_store *s, int dir_fd, const char *name,
                                  const char *rel)
{
    char shard[3] = {rel[0], rel[1], '\0'};
    int ret;

    if (renameat2(dir_fd, name, s->blobs_fd, rel, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != ENOENT || faccessat(dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    ret = mkdirat_exist_ok(s->blobs_fd, shard);
    if (ret < 0)
        return ret;
    return renameat2(dir_fd, name, s->blobs_fd, rel, RENAME_NOREPLACE) < 0 ? -errno : 0;
}

int cas_store_commit_moved(struct cas_store *s, int dir_fd, const char *name,
                           const struct cas_digest *d, cas_store_check_fn *check, const void *arg)
{
    char rel[CAS_BLOB_RELPATH];
    struct stat st;
    int ret;

    if (cas_digest_is_empty(d))
        return -EAGAIN;
    cas_blob_relpath(d, rel);
    pthread_mutex_lock(&s->name_lock);
    if (store_has_verified(s, d)) {
        ret = 1;
        goto out;
    }
    ret = store_rename_noreplace(s, dir_fd, name, rel);
    if (ret == -EEXIST || ret == -EINVAL || ret == -EXDEV || ret == -EPERM || ret == -EACCES ||
        ret == -EROFS || ret == -EBUSY || ret == -ENOTDIR)
        ret = -EAGAIN; /* a file is there already, or no direct rename: the temp route */
    if (ret < 0)
        goto out;
    /* Not indexed yet, so no reader can reach it: check that the name held
     * the file the caller hashed, unchanged, before anything can. */
    if (fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        ret = -errno;
    } else if (!check(&st, arg)) {
        ret = -ESTALE;
    } else {
        ret = store_index_committed(s, d, rel, (uint64_t)st.st_ino, true);
        goto out;
    }
    /* Give the name back (or drop the file when that is taken meanwhile). */
    if (renameat2(s->blobs_fd, rel, dir_fd, name, RENAME_NOREPLACE) < 0)
        unlinkat(s->blobs_fd, rel, 0);
out:
    pthread_mutex_unlock(&s->name_lock);
    return ret;
}

int cas_store_put(struct cas_store *s, const struct cas_digest *d, const void *buf, size_t len)
{
    struct cas_digest actual;

    if (d->size < 0 || (uint64_t)d->size != len || (buf == NULL && len > 0))
        return -EINVAL;
    cas_digest_buffer(buf, len, &actual);
    if (actual.size < 0)
        return -ENOMEM;
    if (!cas_digest_equal(&actual, d))
        return -EINVAL;
    if (len == 0)
        return 0; /* the empty blob is always present */

    if (store_has_verified(s, d))
        return 0;
    return cas_store_write_commit(s, "put", &(struct iovec){(void *)buf, len}, 1,
                                  &(struct cas_commit_target){.blob = d});
}
