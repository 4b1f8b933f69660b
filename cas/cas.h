/*
 * cas.h - the local content-addressable store.
 *
 * Blobs are immutable files named by their SHA-256 under <dir>/blobs/<aa>/<hash>,
 * where <aa> is the first two hex digits. A blob becomes visible only once it is
 * complete and verified (written to <dir>/tmp, size and hash checked, then
 * renamed into place), so a crash at any moment leaves no partial blob. An
 * in-memory index tracks sizes and access order for LRU eviction against a byte
 * limit. Reads never return bytes that do not match the digest: a blob is
 * re-hashed the first time it is opened after start-up, and a mismatch deletes
 * it and reports it missing.
 *
 * The action cache lives beside it under <dir>/ac: small files keyed by
 * (instance name, action digest), also committed with write+rename.
 *
 * All functions return 0 or a negative errno; they are thread-safe.
 */
#ifndef CASBOX_CAS_H
#define CASBOX_CAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CAS_HASH_BYTES 32
#define CAS_HASH_HEX   64

struct cas_digest {
    uint8_t hash[CAS_HASH_BYTES];
    int64_t size;
};

/* --- digests (cas/digest.c) --- */

/* Parses a 64-character lowercase or uppercase hex SHA-256 and a size.
 * -EINVAL for a wrong length, non-hex character or negative size. */
int cas_digest_parse(const char *hex, int64_t size, struct cas_digest *out);
/* Same, for a hash that is not NUL-terminated (hex_len bytes). */
int cas_digest_parse_n(const char *hex, size_t hex_len, int64_t size, struct cas_digest *out);
/* Writes 64 lowercase hex digits and a NUL. */
void cas_digest_hex(const struct cas_digest *d, char out[CAS_HASH_HEX + 1]);
/* Digest of a memory buffer. */
void cas_digest_buffer(const void *buf, size_t len, struct cas_digest *out);
/* Digest of an open file, read from offset 0 with page-aligned 1 MiB reads. */
int cas_digest_fd(int fd, struct cas_digest *out);
bool cas_digest_equal(const struct cas_digest *a, const struct cas_digest *b);
/* The digest of the empty blob (e3b0c442...). */
const struct cas_digest *cas_digest_empty(void);

/* Incremental hashing, for streamed uploads. */
struct cas_hasher;
struct cas_hasher *cas_hasher_new(void);
void cas_hasher_update(struct cas_hasher *h, const void *buf, size_t len);
/* Finishes into out->hash and sets out->size to the bytes seen; frees h. */
void cas_hasher_finish(struct cas_hasher *h, struct cas_digest *out);
void cas_hasher_free(struct cas_hasher *h);

/* --- the store (cas/store.c) --- */

struct cas_store;

/* What a commit makes durable before a blob becomes visible (docs/operations.md,
 * "Failure modes"). A killed daemon loses nothing in any mode; these are about
 * a power loss or kernel crash. */
enum cas_fsync_mode {
    CAS_FSYNC_NONE = 0, /* nothing: recent blobs may vanish or fail their first-read check */
    CAS_FSYNC_DATA,     /* fdatasync of each blob and AC entry before its rename */
    CAS_FSYNC_FULL,     /* and fsync of the directory after the rename */
};

struct cas_store_options {
    uint64_t max_bytes; /* LRU eviction above this many blob bytes; 0 = no configured limit */
    /* Free space kept on the store's filesystem: the smaller of these two
     * (both 0: none). The effective limit is min(max_bytes, indexed blob
     * bytes + free space - headroom), see store_space.c. */
    uint64_t disk_headroom_bytes;
    uint64_t disk_headroom_percent;
    enum cas_fsync_mode fsync;
    /* An action output larger than this percentage of the store's
     * capacity, min(max_bytes, filesystem size - headroom), is refused by
     * cas_store_blob_fits instead of evicting most of the cache to make
     * room for it; 0 or 100: no bound but the limit itself. */
    uint64_t max_blob_percent;
    /* Index the blobs already on disk on a thread of its own, answering
     * meanwhile (a blob not indexed yet is looked up on disk), instead of
     * before cas_store_open returns. */
    bool scan_in_background;
    /* How long cas_store_open waits for a dying predecessor's lock before
     * -EBUSY (0: not at all). */
    uint64_t lock_wait_ms;
};

/* "none", "data", "full" <-> the enum; -EINVAL. */
int cas_fsync_mode_parse(const char *s, enum cas_fsync_mode *out);

/* Opens (creating if needed) a store under dir: removes stale temp files and
 * builds the index from the blob files present. -EBUSY when the directory is
 * already open (it is flock'ed: one store per directory, in any process). */
int cas_store_open(const char *dir, const struct cas_store_options *opt, struct cas_store **out);
void cas_store_close(struct cas_store *s);

/* 1 when the blob is present (and marks it recently used), 0 when not. The empty
 * blob is always present. */
int cas_store_contains(struct cas_store *s, const struct cas_digest *d);
/* cas_store_contains for n digests under one lock: present[i] is set to
 * whether d[i] is present (and each present one marked recently used).
 * Returns how many are missing, or -EINVAL for a negative size. */
int cas_store_contains_many(struct cas_store *s, const struct cas_digest *d, size_t n,
                            bool *present);
/* The store's removal generation: it grows whenever any blob leaves the
 * store (eviction, a corrupt or vanished file). A caller that found a set of
 * blobs present at generation g knows they are all still present while the
 * generation is still g (store_generation.c). */
uint64_t cas_store_generation(struct cas_store *s);

/* Stores a buffer whose digest the caller claims is d: -EINVAL (and nothing
 * stored) when size or hash do not match. 0 when stored or already present. */
int cas_store_put(struct cas_store *s, const struct cas_digest *d, const void *buf, size_t len);

/* Reads a whole blob into a malloc'd buffer (caller frees). -ENOENT when absent
 * or found corrupt (then deleted). */
int cas_store_get(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len);

/* Opens a blob for reading, verified as described above. Returns an fd
 * (O_RDONLY|O_CLOEXEC) or -ENOENT. The fd stays valid if the blob is evicted. */
int cas_store_open_blob(struct cas_store *s, const struct cas_digest *d);

/* A read through an fd of cas_store_open_blob failed with err (a negative
 * errno). A media error (-EIO, -EUCLEAN, -EBADMSG) makes the blob missing:
 * its file is unlinked if it is still the one fd reads, and it is dropped
 * from the index, so FindMissingBlobs reports it and a re-upload replaces
 * it. Returns -ENOENT then, else err unchanged. */
int cas_store_read_failed(struct cas_store *s, const struct cas_digest *d, int fd, int err);

/* After -ENOSPC from a store call: one line naming the filesystem, its size,
 * free space, headroom, the blob bytes and the limit, and need (cas/store_space.c). */
int cas_store_space_describe(struct cas_store *s, uint64_t need, char *buf, size_t len);
/* After ENOSPC outside the store (an action's scratch dir): evicts unpinned
 * least recently used blobs so that need bytes plus the headroom are free.
 * 0: try again once; -ENOSPC: nothing could be freed. */
int cas_store_make_room(struct cas_store *s, uint64_t need);
/* -ENOSPC when a blob of size bytes could not fit on the store's filesystem
 * even with every blob evicted: refuse it before writing anything. */
int cas_store_space_check(struct cas_store *s, uint64_t size);
/* An action output of size bytes may be stored: -EFBIG (counted in
 * refused_blobs) when it is larger than max_blob_percent of the store's
 * capacity, so that storing it would evict most of the cache. */
int cas_store_blob_fits(struct cas_store *s, uint64_t size);
/* The largest blob the store takes (max_blob_percent of its capacity;
 * UINT64_MAX: no bound), for messages. */
uint64_t cas_store_max_blob_bytes(struct cas_store *s);
/* Space outside the store changed (an action's scratch dir removed): read
 * the filesystem's free space again now rather than within the second. */
void cas_store_space_changed(struct cas_store *s);

/* Path of the blob file (for hardlink staging); -ENOENT when absent. The empty
 * blob is materialised as a file too. */
int cas_store_blob_path(struct cas_store *s, const struct cas_digest *d, char *buf, size_t len);

/* Streaming writer: bytes are appended to a temp file, hashed as they come, and
 * committed only when the total size and hash match the expected digest. */
struct cas_writer;
int cas_writer_begin(struct cas_store *s, const struct cas_digest *expected,
                     struct cas_writer **out);
/* -EFBIG, and nothing appended, when the bytes would run past the expected
 * size. After any other error the writer only accepts commit (which returns
 * that error) or abort. */
int cas_writer_append(struct cas_writer *w, const void *buf, size_t len);
/* Bytes appended so far. */
int64_t cas_writer_offset(const struct cas_writer *w);
/* Verifies and renames into place; -EINVAL on a size or hash mismatch (the
 * temp file is removed). Frees w in every case. */
int cas_writer_commit(struct cas_writer *w);
/* Discards the temp file and frees w. */
void cas_writer_abort(struct cas_writer *w);

/* Ingests an existing file (an action output): hashes it and links or copies it
 * into the store (rename when unlink_source and same filesystem, else link,
 * else copy). The blob file is made read-only. Fills *out. -EINVAL when path
 * is not a regular file (a symlink is not followed: -ELOOP); -ESTALE when the
 * file was replaced or written while being ingested. */
int cas_store_put_file(struct cas_store *s, const char *path, bool unlink_source,
                       struct cas_digest *out);

/* --- fetch-through from an upstream CAS, and pins (cas/fetch.c, cas/pin.c) ---
 *
 * A store may sit in front of an upstream CAS (remote/ attaches one): then a
 * miss in cas_store_get, cas_store_open_blob or cas_store_blob_path calls the
 * fetcher, which streams the blob into this store through a cas_writer (so
 * it is verified like every write: bytes that do not match are never
 * stored), and the read is tried again. Concurrent misses of one digest share
 * one fetch. A failed fetch returns its negative errno to every caller that
 * waited on it and leaves a reason (the digest and the upstream's status)
 * that cas_store_fetch_error gives back. Errors a fetcher returns:
 * -ENOENT the upstream has no such blob; -EHOSTUNREACH the upstream cannot
 * be reached (UNAVAILABLE, DEADLINE_EXCEEDED); -EBADMSG it sent bytes that do
 * not match the digest; anything else as it comes. */

typedef int (*cas_fetch_fn)(void *ctx, struct cas_store *s, const struct cas_digest *d,
                            char *reason, size_t reason_len);
/* Of digests[0..n), sets missing[i] for those the upstream lacks (and keeps
 * the others alive there). 0, or an error as for cas_fetch_fn. */
typedef int (*cas_find_missing_fn)(void *ctx, const struct cas_digest *digests, size_t n,
                                   bool *missing, char *reason, size_t reason_len);

/* Installs (fn != NULL) or removes the fetcher. Call before the store is
 * shared between threads; ctx must outlive the store or the next call. */
void cas_store_set_fetcher(struct cas_store *s, cas_fetch_fn fn, void *ctx);
/* Installs the upstream's presence check used by cas_store_find_missing. */
void cas_store_set_find_missing(struct cas_store *s, cas_find_missing_fn fn, void *ctx);
/* True when a fetcher is installed (the store is a cache of an upstream). */
bool cas_store_has_upstream(const struct cas_store *s);

/* Of digests[0..n), sets missing[i] for those neither here nor upstream
 * (without a find-missing function: not here). Never fetches. */
int cas_store_find_missing(struct cas_store *s, const struct cas_digest *digests, size_t n,
                           bool *missing);

/* What one caller (an action) read through the store: blobs found here,
 * blobs and bytes fetched for it, fetches that failed. Zero it before use;
 * the functions below add to it atomically. */
struct cas_fetch_counters {
    _Atomic uint64_t local_hits;
    _Atomic uint64_t fetched_blobs;
    _Atomic uint64_t fetched_bytes;
    _Atomic uint64_t failures;
    /* The first failure: its error and reason (set once, under no lock:
     * first_error is claimed by compare-and-swap before reason is written). */
    _Atomic int first_error;
    struct cas_digest first_digest;
    char reason[320];
};

/* A plain copy of a cas_fetch_counters, for reports. */
struct cas_fetch_stats {
    uint64_t local_hits;
    uint64_t fetched_blobs;
    uint64_t fetched_bytes;
    uint64_t failures;
    int first_error; /* 0 when none failed */
    struct cas_digest first_digest;
    char reason[320];
};
void cas_fetch_counters_read(struct cas_fetch_counters *c, struct cas_fetch_stats *out);

/* cas_store_open_blob, cas_store_get and cas_store_blob_path, counting into c
 * (which may be NULL). */
int cas_store_open_blob_counted(struct cas_store *s, const struct cas_digest *d,
                                struct cas_fetch_counters *c);
int cas_store_get_counted(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len,
                          struct cas_fetch_counters *c);
int cas_store_blob_path_counted(struct cas_store *s, const struct cas_digest *d, char *buf,
                                size_t len, struct cas_fetch_counters *c);

/* The last failed fetch of d: returns its negative errno and writes its
 * reason to buf; 0 when no fetch of d has failed (or a later one worked).
 * The store remembers the last CAS_FETCH_ERRORS_KEPT failures. */
#define CAS_FETCH_ERRORS_KEPT 64
int cas_store_fetch_error(struct cas_store *s, const struct cas_digest *d, char *buf, size_t len);

/* Pins: a pinned blob is never evicted (the blobs of running actions, also
 * those not fetched yet). Pins nest; every pin needs one unpin. -ENOMEM. */
int cas_store_pin(struct cas_store *s, const struct cas_digest *d);
void cas_store_unpin(struct cas_store *s, const struct cas_digest *d);

/* --- batch ingestion of files (cas/ingest_engine.c, ingest_uring.c, ingest_threads.c) ---
 *
 * Takes many existing files (an action's outputs) into the store at once:
 * statx, open, read (page-aligned buffers of 256 KiB) and close every
 * file, SHA-256 on a pool of hashing threads, then commit without copying
 * when possible. Two I/O paths behind one interface: io_uring batches (the
 * caller's thread drives the ring, the pool hashes and commits) and a
 * thread pool (each thread does whole files: small ones batched through its
 * own ring, larger ones with pread). docs/ingestion.md has the figures
 * behind the auto choice.
 *
 * Commit, per file: a blob already present costs nothing. A file that may be
 * moved (move = true: the caller owns it as scratch), lives on the store's
 * filesystem, has one link and that no process holds open for writing (probed
 * with a read lease) is renamed into the store, made 0444 and trusted; it
 * cannot change afterwards, as nobody can open it for writing by any other
 * name. Anything else (another filesystem, hard links, an open writer, a
 * lease refused, move = false) is copied: the store's blob is then a separate
 * inode that later writes to the source cannot reach. A file that changed
 * while it was read (size, inode or mtime differ from the first statx) is
 * read again, twice at most, then fails with -ESTALE. */

enum cas_ingest_mode {
    CAS_INGEST_AUTO = 0, /* per batch: see cas_ingest_run */
    CAS_INGEST_URING,    /* io_uring; falls back to threads when the ring cannot be set up */
    CAS_INGEST_THREADS,  /* read() thread pool */
};

#define CAS_INGEST_MAX_THREADS     256
#define CAS_INGEST_MAX_QUEUE_DEPTH 1024

struct cas_ingest_options {
    enum cas_ingest_mode mode;
    unsigned threads;     /* hashing threads; 0 = the CPUs this process may use */
    unsigned queue_depth; /* io_uring: files in flight; 0 = 64 */
    uint64_t max_bytes;   /* bytes one run may ingest (statx sizes); 0 = no limit */
};

struct cas_ingest_file {
    /* in */
    int dir_fd;       /* a directory fd, or AT_FDCWD */
    const char *name; /* relative to dir_fd; a final symlink is not followed (-ELOOP) */
    bool move;        /* the file is scratch: its name may be moved into the store */
    /* The size the caller last saw (0: not known). Only a scheduling hint:
     * large files are started first, so that no core is left idle while
     * the last one is hashed. What is ingested is what the engine reads. */
    uint64_t size_hint;
    /* out */
    struct cas_digest digest;
    uint32_t mode; /* st_mode as ingested */
    int error;     /* 0, or a negative errno for this file; -ECANCELED: not attempted */
};

struct cas_ingest_stats {
    enum cas_ingest_mode mode; /* the path used (never AUTO) */
    unsigned threads;          /* hashing threads used, the caller's counted */
    uint64_t files;            /* files ingested */
    uint64_t bytes;            /* bytes read and hashed */
    uint64_t renamed;          /* blobs moved into the store */
    uint64_t copied;           /* blobs copied into the store */
    uint64_t present;          /* blobs already there (and empty files) */
    uint64_t retries;          /* files read again because they changed */
    uint64_t micros;           /* wall time of the run */
};

struct cas_ingest;

/* An engine for store s (NULL: hash only, nothing stored; the bench uses
 * it). Threads, the ring and buffers are made on first use and kept until
 * cas_ingest_free. One run at a time per engine; engines share nothing. */
int cas_ingest_new(struct cas_store *s, const struct cas_ingest_options *opt,
                   struct cas_ingest **out);
void cas_ingest_free(struct cas_ingest *ing);

/* Ingests files[0..n), filling digest, mode and error of each. Returns 0 when
 * every file was stored, else the first error in file order (files after a
 * run-stopping error get -ECANCELED): -EINVAL not a regular file, -ELOOP a
 * symlink, -ENOENT gone, -ESTALE kept changing, -EFBIG the run's bytes passed
 * opt->max_bytes (that file and later ones fail; the store is never left
 * with a partial blob). AUTO picks: the caller's thread alone for up to 4
 * files; for 8 or more, io_uring when a sample of them is mostly not in the
 * page cache (cold) and averages 128 KiB or more; else the thread pool (whose
 * workers batch small files through their own rings). stats may be NULL. */
int cas_ingest_run(struct cas_ingest *ing, struct cas_ingest_file *files, size_t n,
                   struct cas_ingest_stats *stats);

/* "auto", "uring", "threads" (and "" for auto) <-> the enum; -EINVAL. */
int cas_ingest_mode_parse(const char *s, enum cas_ingest_mode *out);
const char *cas_ingest_mode_name(enum cas_ingest_mode mode);

struct cas_store_stats {
    uint64_t blobs;
    uint64_t bytes;
    uint64_t evicted_blobs;
    uint64_t evicted_bytes;
    uint64_t corrupt_blobs;       /* found damaged or unreadable (EIO) and removed */
    uint64_t limit_bytes;         /* the effective limit (store_space.c) */
    uint64_t space_evicted_blobs; /* of evicted_blobs, those evicted after an ENOSPC */
    uint64_t max_blob_bytes;      /* the largest blob taken now (UINT64_MAX: no bound) */
    uint64_t refused_blobs;       /* outputs refused as larger than max_blob_bytes */
};
void cas_store_get_stats(struct cas_store *s, struct cas_store_stats *out);

/* Directory for temporary files on the store's filesystem (<dir>/tmp). */
const char *cas_store_tmp_dir(const struct cas_store *s);

/* --- the action cache (cas/action_cache.c) --- */

/* Stores serialized ActionResult bytes for (instance, action digest). */
int cas_ac_put(struct cas_store *s, const char *instance, const struct cas_digest *action,
               const void *buf, size_t len);
/* Reads them back into a malloc'd buffer; -ENOENT when absent. */
int cas_ac_get(struct cas_store *s, const char *instance, const struct cas_digest *action,
               void **buf, size_t *len);

#endif
