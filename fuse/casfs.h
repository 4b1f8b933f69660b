/*
 * casfs.h - the lazy input-tree filesystem: one read-only FUSE mount that
 * serves, under <mountpoint>/<name>/, the input root of each running action
 * straight out of the CAS.
 *
 * Directories are resolved on demand from the Directory blobs (decoded once,
 * kept in a bounded digest-keyed cache shared by every tree); files get their
 * size and executable bit from the FileNode (mode 0444 or 0555, directories
 * 0755, all owned by the mounting user, a fixed mtime); symlinks are served as
 * declared. No file content is read until a file is opened: open opens the
 * CAS blob (cas_store_open_blob); with FUSE passthrough (Linux >= 6.9, a
 * daemon with CAP_SYS_ADMIN) the kernel then reads the blob file itself,
 * otherwise casfs reads that fd and replies (a failed read makes the blob
 * missing in the store: cas_store_read_failed). Writes of
 * any kind fail with EROFS (the mount is read-only); an action writes through
 * an overlay whose lower layer is its tree here. A blob that cannot be read
 * gives EIO and a log line naming the digest.
 *
 * libfuse3 low-level API; requests are served by a bounded thread pool
 * (fuse_session_loop_mt) on a thread casfs_mount starts, or, where the kernel
 * offers FUSE over io_uring, by threads with rings (uring.c). libfuse installs no
 * signal handlers: the caller owns signals.
 *
 * All functions return 0 or a negative errno and are thread-safe.
 */
#ifndef CASBOX_CASFS_H
#define CASBOX_CASFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cas/cas.h"

#define CASFS_MAX_THREADS      256       /* upper bound on casfs_options.threads */
#define CASFS_DEFAULT_DIRCACHE 4096      /* decoded Directory messages kept */
#define CASFS_MTIME            946684800 /* 2000-01-01T00:00:00Z, every inode's mtime */

struct casfs;

enum casfs_passthrough_mode {
    CASFS_PASSTHROUGH_AUTO = 0, /* when the kernel and our privileges allow it */
    CASFS_PASSTHROUGH_OFF,      /* reads always served by casfs */
};

enum casfs_uring_mode {
    CASFS_URING_AUTO = 0, /* when the kernel offers it (the fuse module's enable_uring) */
    CASFS_URING_ON,       /* required: casfs_mount fails without it */
    CASFS_URING_OFF,      /* requests always read from /dev/fuse */
};

struct casfs_options {
    const char *mountpoint; /* created if missing; a stale mount on it is detached first */
    unsigned threads;       /* request threads, 1 .. CASFS_MAX_THREADS (0: 8) */
    size_t dir_cache;       /* decoded Directory messages kept (0: CASFS_DEFAULT_DIRCACHE) */
    enum casfs_passthrough_mode passthrough;
    enum casfs_uring_mode uring;
    /* Where error lines go (one line, no newline); NULL: stderr. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
};

/* Detaches whatever is mounted on mountpoint (a mount left by a crashed
 * daemon): umount2(MNT_DETACH), or `fusermount3 -u -z` when not permitted.
 * 0 when something was detached, -EINVAL when nothing was mounted there. */
int casfs_cleanup_stale(const char *mountpoint);

/* Mounts the filesystem on opt->mountpoint and starts serving it. -ENODEV
 * (or the open error) when /dev/fuse cannot be opened, -EPERM when mounting
 * is not permitted, -EOPNOTSUPP when opt->uring is on and io_uring cannot
 * serve it. The store must outlive the mount. */
int casfs_mount(struct cas_store *cas, const struct casfs_options *opt, struct casfs **out);
/* Stops serving and unmounts (lazily, so a busy mount never blocks this;
 * the connection is aborted so that stuck readers get ENOTCONN), frees fs.
 * NULL is fine. */
void casfs_unmount(struct casfs *fs);
const char *casfs_mountpoint(const struct casfs *fs);
/* Whether opens of regular files use FUSE passthrough (decided at mount,
 * logged once; may turn off later if the kernel refuses a backing file). */
bool casfs_passthrough_active(const struct casfs *fs);
/* Parses "auto" or "off"; -EINVAL otherwise. */
int casfs_passthrough_parse(const char *s, enum casfs_passthrough_mode *out);
/* Whether requests are served over io_uring (decided at mount, logged once:
 * "casfs: FUSE over io_uring on: ..." or "... off (why): ..."). */
bool casfs_uring_active(const struct casfs *fs);
/* Parses "auto", "on" or "off"; -EINVAL otherwise. */
int casfs_uring_parse(const char *s, enum casfs_uring_mode *out);

/* Makes <mountpoint>/<name> the tree of root (a Directory digest). Nothing is
 * read from the CAS here. name is one path component; -EEXIST when taken. */
int casfs_tree_add(struct casfs *fs, const char *name, const struct cas_digest *root);

struct casfs_tree_stats {
    uint64_t files_opened;        /* successful opens of regular files */
    uint64_t files_passthrough;   /* those of them served by FUSE passthrough */
    uint64_t bytes_read;          /* bytes replied to reads (read path only: the kernel
                                   * reads passthrough files without asking casfs) */
    struct cas_fetch_stats fetch; /* opens found in the store, fetched upstream or failed */
    uint64_t lookups;             /* LOOKUP requests in the tree, found or not (the kernel
                                   * caches both answers: each name is asked once) */
    uint64_t read_errors;         /* reads of its blobs that failed (EIO to the reader; the
                                   * store made the blob missing); read path only: the
                                   * kernel reads passthrough files without casfs */
};

/* The counters of a tree; -ENOENT when there is no such tree. */
int casfs_tree_stats(struct casfs *fs, const char *name, struct casfs_tree_stats *out);

/* Requests served since the mount, by operation, and the bytes replied to
 * reads (for the metrics; a statfs or init is not counted). */
enum casfs_op {
    CASFS_OP_LOOKUP,
    CASFS_OP_FORGET,
    CASFS_OP_GETATTR,
    CASFS_OP_READLINK,
    CASFS_OP_READDIR,
    CASFS_OP_OPEN,
    CASFS_OP_READ,
    CASFS_OP_RELEASE,
    CASFS_OP_COUNT,
};
struct casfs_stats {
    uint64_t requests[CASFS_OP_COUNT];
    uint64_t bytes_read;
    uint64_t ring_requests; /* of all requests, those that came over io_uring */
};
void casfs_get_stats(struct casfs *fs, struct casfs_stats *out);
/* "lookup" for CASFS_OP_LOOKUP. */
const char *casfs_op_name(enum casfs_op op);

/* Removes the tree: it disappears from the mount root at once (the kernel's
 * entry for it is invalidated) and its inodes are freed when the kernel
 * forgets them; files still open keep working. Never waits for readers.
 * final (may be NULL) gets the counters as of the removal. -ENOENT when there
 * is no such tree. */
int casfs_tree_remove(struct casfs *fs, const char *name, struct casfs_tree_stats *final);

#endif
