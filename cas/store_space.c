/*
 * store_space.c - the store against the filesystem it lives on: the
 * effective size limit and what a full disk does.
 *
 * Why. A configured [cas] max_bytes knows nothing of the disk: on a 64 MiB
 * filesystem a 20 GiB limit never evicts, and once the disk is full every
 * upload fails until an operator steps in. So the limit the store evicts
 * against is the smaller of the configured one and what the filesystem can
 * hold for blobs (the blobs already indexed plus the free space, minus a
 * headroom left for scratch directories and uploads in flight), read with
 * statvfs at open and again at most once a second on commits, and logged at
 * start and whenever it shrinks.
 *
 * When a write, a temp-file creation or a rename fails with ENOSPC (or
 * EDQUOT) all the same (other writers, scratch dirs, a racing upload), the
 * caller asks store_space_reclaim() to make room: least recently used blobs
 * are evicted until the free space would be the headroom plus what the call
 * needs, then the caller retries once. A pinned blob (an input of a running
 * action, pin.c) is skipped, and so is one whose file has other links (a
 * hardlink-staged input): removing its name frees nothing. When the disk is
 * so full that even the headroom cannot be had (an action filled it from its
 * scratch dir, which goes away when the action ends), only what the call
 * needs is evicted, not the whole cache. Nothing evictable, or a need larger
 * than the filesystem could give: -ENOSPC, which the services answer with
 * RESOURCE_EXHAUSTED and cas_store_space_describe()'s text.
 */
#include "cas.h"
#include "store_internal.h"
#include "upstream_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define SPACE_REFRESH_US  1000000 /* statvfs at most once a second on commits */
#define SPACE_LOG_PERCENT 5       /* log a shrinking limit once it moved this much */

/*
 * The limit a refresh applies is the larger of what it and the refresh
 * before it computed: a one-off dip (an action's scratch dir filling the
 * disk for a moment) does not make the store evict down to it; a shrink
 * that lasts two refreshes does. ENOSPC meanwhile is store_space_reclaim's.
 *
 * One huge action output must not evict the rest of the cache: exec/ asks
 * cas_store_blob_fits before it stores one, which refuses (-EFBIG) a blob
 * larger than max_blob_percent of the store's capacity, min(configured
 * max_bytes, filesystem size - headroom). Uploads and fetches from a remote
 * are not bounded so: a client or an action needs those blobs stored.
 * (Not of the effective limit: that counts other files on the disk, an
 * action's scratch dir with the very output being stored among them, and it
 * is in blob bytes, which a store of tiny blobs makes far smaller than the
 * blocks they use.)
 */

struct space_fs {
    uint64_t total; /* filesystem size */
    uint64_t avail; /* free for us */
};

static int space_statvfs(const struct cas_store *s, struct space_fs *fs)
{
    struct statvfs sv;

    if (statvfs(s->dir, &sv) < 0)
        return -errno;
    fs->total = (uint64_t)sv.f_blocks * sv.f_frsize;
    fs->avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
}

static uint64_t space_headroom(const struct cas_store *s, const struct space_fs *fs)
{
    uint64_t pct = fs->total / 100 * s->headroom_percent;

    return pct < s->headroom_bytes ? pct : s->headroom_bytes;
}

/* With index_lock held: the limit for a filesystem reading. The room is in
 * disk blocks (what the blobs occupy plus the free space, minus the
 * headroom); the limit is in blob bytes, the unit eviction counts, so the
 * room is scaled by the blobs' bytes-to-blocks ratio (many small blobs take
 * a 4 KiB block each: counting their bytes alone would take a full disk
 * for an almost empty store and evict it all). */
static uint64_t space_limit(const struct cas_store *s, const struct space_fs *fs)
{
    uint64_t alloc = s->index.alloc_bytes, headroom = space_headroom(s, fs);
    uint64_t room = alloc + fs->avail;
    uint64_t fs_limit = room > headroom ? room - headroom : 0;

    if (alloc > 0)
        fs_limit =
            (uint64_t)((long double)fs_limit * (long double)s->index.bytes / (long double)alloc);

    /* 0 would mean "no limit" to the evictor: one byte keeps it a limit. */
    if (fs_limit == 0)
        fs_limit = 1;
    return s->configured_max_bytes != 0 && s->configured_max_bytes < fs_limit
               ? s->configured_max_bytes
               : fs_limit;
}

static const char *space_fs_type(const struct cas_store *s)
{
    struct statfs sf;

    if (statfs(s->dir, &sf) < 0)
        return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
        return "ext4";
    case 0x01021994:
        return "tmpfs";
    case 0x9123683E:
        return "btrfs";
    case 0x58465342:
        return "xfs";
    case 0x794c7630:
        return "overlayfs";
    default:
        return "other";
    }
}

/* Logs the limit when it is new or shrank by SPACE_LOG_PERCENT or more. */
static void space_log(struct cas_store *s, uint64_t limit, const struct space_fs *fs,
                      uint64_t bytes)
{
    uint64_t last = s->logged_limit;

    if (last != 0 && (limit >= last || last - limit < last / 100 * SPACE_LOG_PERCENT))
        return;
    s->logged_limit = limit;
    LOG_I("cas: %s limit %" PRIu64 " bytes (configured max_bytes %" PRIu64 "%s; %s filesystem at "
          "%s: %" PRIu64 " bytes, %" PRIu64 " free, headroom %" PRIu64 "; blobs %" PRIu64 " bytes)",
          last == 0 ? "effective" : "filesystem shrank: effective", limit, s->configured_max_bytes,
          s->configured_max_bytes == 0 ? " = none" : "", space_fs_type(s), s->dir, fs->total,
          fs->avail, space_headroom(s, fs), bytes);
}

void store_space_refresh(struct cas_store *s, bool force)
{
    uint64_t now = clock_mono_us(), last = atomic_load(&s->space_checked_us);
    struct space_fs fs = {0};
    uint64_t limit, bytes;

    if (!force && now - last < SPACE_REFRESH_US)
        return;
    if (!force && !atomic_compare_exchange_strong(&s->space_checked_us, &last, now))
        return; /* another thread does it */
    atomic_store(&s->space_checked_us, now);
    if (space_statvfs(s, &fs) < 0)
        return; /* keep the last limit; a real failure shows in the write */
    pthread_mutex_lock(&s->index_lock);
    limit = space_limit(s, &fs);
    s->max_bytes = limit > s->space_last_limit ? limit : s->space_last_limit;
    s->space_last_limit = limit;
    s->space_capacity = fs.total > space_headroom(s, &fs) ? fs.total - space_headroom(s, &fs) : 1;
    if (s->configured_max_bytes != 0 && s->configured_max_bytes < s->space_capacity)
        s->space_capacity = s->configured_max_bytes;
    limit = s->max_bytes;
    bytes = s->index.bytes;
    space_log(s, limit, &fs, bytes);
    pthread_mutex_unlock(&s->index_lock);
}

bool store_space_is_full(int err)
{
    return err == -ENOSPC || err == -EDQUOT;
}

/* With name_lock and index_lock held: true when e is pinned (an input of a
 * running action, pin.c) or its file has other links (hardlink-staged into
 * an action), so that evicting it would break the action or free nothing. */
static bool space_entry_pinned(struct cas_store *s, const struct store_entry *e)
{
    char rel[CAS_BLOB_RELPATH];
    struct cas_digest d;
    struct stat st;

    if (store_upstream_pinned(s->upstream, e->hash))
        return true;
    memcpy(d.hash, e->hash, CAS_HASH_BYTES);
    d.size = e->size;
    cas_blob_relpath(&d, rel);
    return fstatat(s->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink > 1;
}

int store_space_reclaim(struct cas_store *s, uint64_t need)
{
    struct store_entry *victims = NULL, *e, *prev;
    uint64_t freed = 0, target, room;
    struct space_fs fs = {0};
    int ret;

    ret = space_statvfs(s, &fs);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&s->name_lock);
    pthread_mutex_lock(&s->index_lock);
    room = s->index.alloc_bytes + fs.avail;
    if (need > room) {
        /* Even an empty store could not take it: evicting would only cost. */
        pthread_mutex_unlock(&s->index_lock);
        pthread_mutex_unlock(&s->name_lock);
        return -ENOSPC;
    }
    /* Free space afterwards: the headroom plus what the caller needs (in
     * blocks, as the filesystem counts). */
    target = room > space_headroom(s, &fs) + need ? room - space_headroom(s, &fs) - need
                                                  : room - need; /* need <= room, above */
    for (e = store_index_oldest(&s->index); e != NULL && s->index.alloc_bytes > target; e = prev) {
        prev = e->lru_prev;
        if (space_entry_pinned(s, e))
            continue;
        store_index_remove(&s->index, e);
        s->evicted_blobs++;
        s->evicted_bytes += (uint64_t)e->size;
        s->space_evicted_blobs++;
        freed += (uint64_t)e->size;
        e->chain_next = victims;
        victims = e;
    }
    pthread_mutex_unlock(&s->index_lock);
    ret = store_evict_unlink(s, victims);
    pthread_mutex_unlock(&s->name_lock);
    if (freed == 0 && fs.avail < need + 4096)
        return -ENOSPC; /* nothing to evict */
    LOG_I("cas: disk full on %s: evicted %" PRIu64 " bytes of least recently used blobs to make "
          "room for %" PRIu64,
          s->dir, freed, need);
    return ret < 0 ? ret : 0;
}

int store_space_pwrite(struct cas_store *s, int fd, const void *buf, size_t len, off_t off)
{
    int ret = 0;

    for (int attempt = 0; attempt < 2; attempt++) {
        size_t done = 0;

        ret = 0;
        while (done < len) {
            ssize_t n = pwrite(fd, (const char *)buf + done, len - done, off + (off_t)done);

            if (n < 0) {
                if (errno == EINTR)
                    continue;
                ret = -errno;
                break;
            }
            done += (size_t)n;
        }
        if (!store_space_is_full(ret) || attempt == 1)
            break;
        /* Writing again at the same offsets is idempotent. */
        if (store_space_reclaim(s, len - done) < 0)
            break;
    }
    return ret;
}

int cas_store_space_describe(struct cas_store *s, uint64_t need, char *buf, size_t len)
{
    struct space_fs fs = {0};
    uint64_t bytes, limit;
    int n;

    if (space_statvfs(s, &fs) < 0)
        memset(&fs, 0, sizeof(fs));
    pthread_mutex_lock(&s->index_lock);
    bytes = s->index.bytes;
    limit = s->max_bytes;
    pthread_mutex_unlock(&s->index_lock);
    n = snprintf(buf, len,
                 "no space left on the %s filesystem holding %s (%" PRIu64 " bytes, %" PRIu64
                 " free, headroom %" PRIu64 "): %" PRIu64 " bytes needed, blobs use %" PRIu64
                 " bytes of the %" PRIu64 " limit and none could be evicted",
                 space_fs_type(s), s->dir, fs.total, fs.avail, space_headroom(s, &fs), need, bytes,
                 limit);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

uint64_t cas_store_max_blob_bytes(struct cas_store *s)
{
    uint64_t limit;

    if (s->max_blob_percent == 0 || s->max_blob_percent >= 100)
        return UINT64_MAX;
    pthread_mutex_lock(&s->index_lock);
    limit = s->space_capacity != 0 ? s->space_capacity : s->configured_max_bytes;
    pthread_mutex_unlock(&s->index_lock);
    if (limit == 0)
        return UINT64_MAX; /* no limit known at all */
    return (uint64_t)((long double)limit * (long double)s->max_blob_percent / 100.0L);
}

int cas_store_blob_fits(struct cas_store *s, uint64_t size)
{
    if (size <= cas_store_max_blob_bytes(s))
        return 0;
    pthread_mutex_lock(&s->index_lock);
    s->refused_blobs++;
    pthread_mutex_unlock(&s->index_lock);
    return -EFBIG;
}

void cas_store_space_changed(struct cas_store *s)
{
    store_space_refresh(s, true);
}

int cas_store_make_room(struct cas_store *s, uint64_t need)
{
    return store_space_reclaim(s, need);
}

int cas_store_space_check(struct cas_store *s, uint64_t size)
{
    struct space_fs fs = {0};

    if (space_statvfs(s, &fs) < 0)
        return 0; /* the writes will tell */
    return size > fs.total - space_headroom(s, &fs) ? -ENOSPC : 0;
}
