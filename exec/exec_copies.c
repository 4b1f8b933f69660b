/*
 * exec_copies.c - the executable-copy cache of hardlink staging,
 * <state>/cas/exec-blobs, kept under a byte bound.
 *
 * A CAS blob file is one inode with mode 0444, so an input declared
 * executable is linked from a 0555 copy kept in this cache (action_stage.c).
 * The copies are only a cache: staging takes the lock shared, and when the
 * bytes copied since the last trim pass execution.exec_copy_cache_bytes the
 * next action to finish staging takes it exclusively and empties the
 * directory. Actions already staged are unaffected: their links are names of
 * their own for the same inodes.
 */
#include "exec.h"
#include "util/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

void exec_copies_init(struct exec_copies *c, uint64_t max_bytes)
{
    pthread_rwlockattr_t attr;

    pthread_rwlockattr_init(&attr);
    /* A trim must not wait behind an endless stream of staging actions. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    c->bytes = 0;
    c->max_bytes = max_bytes;
}

void exec_copies_destroy(struct exec_copies *c)
{
    pthread_rwlock_destroy(&c->lock);
}

/* Empties dir (keeping the directory itself) once the bound is passed. */
static void exec_copies_trim(struct exec_copies *c, const char *dir)
{
    uint64_t bytes;
    int rc;

    pthread_rwlock_wrlock(&c->lock);
    bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    if (bytes <= c->max_bytes)
        goto out;
    rc = util_remove_tree(dir);
    if (rc != 0 && rc != -ENOENT) {
        LOG_W("cannot empty the executable-copy cache %s: %s", dir, strerror(-rc));
        goto out;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        LOG_W("cannot re-create the executable-copy cache %s: %s", dir, strerror(errno));
        goto out;
    }
    LOG_I("executable-copy cache emptied: %" PRIu64
          " bytes copied since the last trim, bound %" PRIu64,
          bytes, c->max_bytes);
    __atomic_store_n(&c->bytes, 0, __ATOMIC_RELAXED);
out:
    pthread_rwlock_unlock(&c->lock);
}

int exec_copies_stage(struct exec_copies *c, struct cas_store *cas, const struct action *act,
                      const char *lower_dir, const char *dir, struct cas_fetch_counters *fetch,
                      struct action_stage_stats *stats, struct reapi_status *st)
{
    uint64_t total;
    int rc;

    pthread_rwlock_rdlock(&c->lock);
    rc = action_stage_inputs_counted(cas, act, lower_dir, dir, fetch, stats, st);
    pthread_rwlock_unlock(&c->lock);
    total = __atomic_add_fetch(&c->bytes, stats->exec_copy_bytes, __ATOMIC_RELAXED);
    if (total > c->max_bytes)
        exec_copies_trim(c, dir);
    return rc;
}
