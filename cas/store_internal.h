/*
 * store_internal.h - what the files of cas/ share and nobody else sees: the
 * store structure, its two locks, and the helpers that write temp files and
 * commit them.
 *
 * Locking. index_lock protects the index and the counters; it is held only
 * for index operations, never across I/O or hashing. name_lock serialises
 * changes to the names under blobs/ and ac/ (a rename into place, an unlink of
 * a corrupt, missing or evicted blob) together with the matching index update,
 * so that deleting a corrupt file can never delete a good copy that another
 * thread committed a moment earlier, and an eviction can never remove a blob
 * that was just committed again. It is held for single metadata syscalls,
 * never for data I/O. Lock order: name_lock, then index_lock.
 */
#ifndef CASBOX_CAS_STORE_INTERNAL_H
#define CASBOX_CAS_STORE_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cas.h"
#include "store_index.h"
#include "util/util.h"

/* Page-aligned buffers and 1 MiB reads: about 2-3x faster than unaligned
 * malloc'd buffers on the target VMs (see PLATFORM.md, io_uring pitfall). */
#define CAS_IO_ALIGN 4096
#define CAS_IO_CHUNK (1024 * 1024)

/* "aa/" + 64 hex + NUL */
#define CAS_BLOB_RELPATH (3 + CAS_HASH_HEX + 1)

struct cas_store {
    char *dir;       /* absolute path of the store */
    char *tmp_dir;   /* <dir>/tmp */
    char *blobs_dir; /* <dir>/blobs */
    int lock_fd;     /* <dir>/lock, flock'ed: one process per store */
    int blobs_fd;
    int tmp_fd;
    int ac_fd;
    dev_t dev; /* filesystem of blobs/ and tmp/ */
    /* The limit evicted against (under index_lock): the smaller of the
     * configured one and the filesystem's room, kept by store_space.c. */
    uint64_t max_bytes;

    /* store_space.c: the limit's inputs and its log. */
    uint64_t configured_max_bytes;
    uint64_t headroom_bytes;
    uint64_t headroom_percent;
    uint64_t logged_limit;
    uint64_t space_evicted_blobs;
    uint64_t space_last_limit; /* the limit the last refresh computed (0: none yet) */
    uint64_t max_blob_percent;
    uint64_t space_capacity; /* min(configured, filesystem size - headroom); 0: unknown */
    uint64_t refused_blobs;
    atomic_uint_fast64_t space_checked_us;
    enum cas_fsync_mode fsync_mode;

    pthread_mutex_t name_lock;
    pthread_mutex_t index_lock;
    struct store_index index;
    uint64_t evicted_blobs;
    uint64_t evicted_bytes;
    uint64_t corrupt_blobs;

    atomic_uint_fast64_t name_counter; /* unique temp names for links */

    /* The start-up scan on a thread of its own (scan_in_background): while
     * scanning, a lookup that misses the index looks at the blob's file
     * (store_find), and nothing is evicted against the limit (the index is
     * not whole yet). */
    atomic_bool scanning;
    atomic_bool scan_stop;
    bool scan_thread_started;
    pthread_t scan_thread;
    struct store_upstream *upstream; /* fetcher and pins (upstream_internal.h) */
};

/* digest.c */
bool cas_digest_is_empty(const struct cas_digest *d);
/* Buffer size for reading or writing a file of about `expected` bytes: its
 * size rounded up to a page, at most CAS_IO_CHUNK. */
size_t cas_io_buffer_size(int64_t expected);

/* store.c */
/* Reads up to len bytes at off; *got < len only at end of file. */
int cas_io_pread_all(int fd, void *buf, size_t len, off_t off, size_t *got);
void cas_blob_relpath(const struct cas_digest *d, char out[CAS_BLOB_RELPATH]);
/* renameat(from -> dir_fd/rel) where rel is "<aa>/<name>", creating the
 * shard directory if someone removed it. */
int cas_rename_into_shard(const char *from, int dir_fd, const char *rel);
/* Creates a temp file (mode 0600, O_CLOEXEC) in <dir>/tmp; path receives its
 * name. Returns the fd or a negative errno. */
int cas_store_temp_create(struct cas_store *s, const char *prefix, char path[PATH_MAX]);
/* Makes the complete, verified temp file at tmp_path (mode 0444 already) the
 * blob d. The temp name is consumed in every case: renamed into place, or
 * unlinked when the blob is already present or on error. verified says
 * whether this process knows the bytes match (false for a file that other
 * names share). Evicts old blobs when over the limit. */
int cas_store_commit(struct cas_store *s, const char *tmp_path, const struct cas_digest *d,
                     uint64_t ino, bool verified);

/* Where cas_store_temp_commit puts a finished temp file: the blob `blob`,
 * whose bytes the caller verified (cas_store_commit: renamed to its blob
 * name and indexed), or, with blob NULL, plainly dir_fd/rel ("<aa>/<name>",
 * cas_rename_into_shard under name_lock, not indexed): an action-cache
 * entry, the empty blob. */
struct cas_commit_target {
    const struct cas_digest *blob;
    int dir_fd;
    const char *rel;
};

/* The end of the temp-write-commit sequence, for a temp file the caller
 * wrote in full through fd (cas_store_temp_create): makes it 0444, so that
 * it is never writable under its final name, closes fd and moves it to
 * `to`. fd is closed and the temp file consumed (moved or removed) in every
 * case. */
int cas_store_temp_commit(struct cas_store *s, int fd, const char *tmp_path,
                          const struct cas_commit_target *to);
/* The whole sequence for bytes in memory: a new temp file (named after
 * prefix), the n buffers of iov written to it in order, then
 * cas_store_temp_commit. */
struct iovec;
int cas_store_write_commit(struct cas_store *s, const char *prefix, const struct iovec *iov, int n,
                           const struct cas_commit_target *to);

/* With name_lock held: unlinks and frees evicted entries chained through
 * chain_next (store.c). */
int store_evict_unlink(struct cas_store *s, struct store_entry *victims);

/* store_space.c */
/* Re-reads the filesystem (at most once a second unless force) and sets
 * max_bytes; logs it at first and when it shrinks. */
void store_space_refresh(struct cas_store *s, bool force);
/* -ENOSPC or -EDQUOT. */
bool store_space_is_full(int err);
/* With index_lock held: the entry for hash, or NULL. While the start-up
 * scan runs, a blob file not indexed yet is indexed (unverified) here. */
struct store_entry *store_find(struct cas_store *s, const uint8_t hash[CAS_HASH_BYTES]);
/* After an ENOSPC: evicts unpinned least recently used blobs so that `need`
 * bytes plus the headroom are free. 0: retry once; -ENOSPC: nothing to
 * evict, or need exceeds what the filesystem could ever give. */
int store_space_reclaim(struct cas_store *s, uint64_t need);
/* pwrite of all len bytes at off; on ENOSPC reclaims and retries once. */
int store_space_pwrite(struct cas_store *s, int fd, const void *buf, size_t len, off_t off);

/* writer.c: copies the open file fd, from offset 0 to its end, into the
 * store through a writer (buf: cap bytes to read into), which hashes what
 * it copies and commits it only as `expected`. -ESTALE when the bytes are
 * not `expected` (the file changed under us). */
int cas_writer_copy_fd(struct cas_store *s, int fd, const struct cas_digest *expected, void *buf,
                       size_t cap);

/* Checks an fstatat of the file just renamed to its blob name. */
struct stat;
typedef bool cas_store_check_fn(const struct stat *st, const void *arg);

/* Commits a complete file that the caller hashed to d through an fd it holds
 * and made 0444 (an action's output it may move): renames dir_fd/name
 * straight to its blob name (RENAME_NOREPLACE), then, before it is indexed
 * and so before any reader can reach it, checks with check(st, arg) that the
 * name held the very file hashed, unchanged; only then indexes it as
 * verified. All under name_lock, so one rename instead of two through tmp/.
 * 0 committed; 1 already present and verified (nothing moved); -EAGAIN
 * when no direct rename is possible (a file is already under that name,
 * another filesystem, ...; commit through tmp/ instead); -ESTALE when the
 * check fails (the file gets its name back). */
int cas_store_commit_moved(struct cas_store *s, int dir_fd, const char *name,
                           const struct cas_digest *d, cas_store_check_fn *check, const void *arg);

#endif
