/*
 * casfs_internal.h - what the fuse/ sources share: the filesystem state,
 * trees, inodes and the decoded-Directory cache.
 *
 * Locking: fs->lock guards the tree list and the inode list; the Directory
 * cache has its own lock; counters and reference counts are atomics. No lock
 * is held while a FUSE reply is sent or the CAS is read.
 */
#ifndef CASBOX_CASFS_INTERNAL_H
#define CASBOX_CASFS_INTERNAL_H

/* 312: the opaque fuse_loop_cfg_* API, whose max_threads bounds the pool
 * (the 3.2 struct only bounds idle threads). Available in libfuse 3.14. */
#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "casfs.h"
#include "reapi/reapi.h"

/* Entry and attribute timeout: content never changes under a name. */
#define CASFS_TIMEOUT 86400.0

/* --- the decoded-Directory cache (dircache.c) --- */

struct casfs_dir {
    struct cas_digest digest;
    Directory *msg;
    unsigned refs; /* under the cache lock */
    struct casfs_dir *hash_next;
    struct casfs_dir *lru_prev, *lru_next; /* most recently used first */
};

struct casfs_dircache {
    pthread_mutex_t lock;
    struct casfs_dir **buckets;
    size_t n_buckets; /* power of two */
    size_t count, max;
    struct casfs_dir *lru_head, *lru_tail;
    uint64_t hits, misses, evictions;
};

int casfs_dircache_init(struct casfs_dircache *c, size_t max);
void casfs_dircache_destroy(struct casfs_dircache *c);
/* The decoded Directory with this digest, read from the CAS and checked on a
 * miss (-ENOENT absent, -EIO malformed); release it with casfs_dir_put. */
int casfs_dir_get(struct casfs *fs, const struct cas_digest *d, struct casfs_dir **out);
void casfs_dir_put(struct casfs *fs, struct casfs_dir *dir);

/* --- trees and inodes (tree.c) --- */

struct casfs_tree {
    char *name;
    struct cas_digest root;
    atomic_uint_fast64_t files_opened;
    atomic_uint_fast64_t lookups; /* LOOKUP requests of names in the tree */
    atomic_uint_fast64_t files_passthrough;
    atomic_uint_fast64_t bytes_read;
    atomic_uint_fast64_t read_errors; /* reads of its blobs that failed */
    /* blobs opened: found in the store or fetched upstream */
    struct cas_fetch_counters fetch;
    atomic_uint refs; /* the tree list's while listed, plus one per inode */
    struct casfs_tree *next;
};

struct casfs_inode {
    atomic_uint_fast64_t nlookup;
    /* Identity, for the child table (tree.c): a serial number never reused,
     * and, for a node of a tree directory, its parent's serial and its index
     * in the parent's Directory (directories, files, symlinks in turn). */
    uint64_t serial;
    uint64_t parent_serial;
    uint32_t child_index;
    bool in_children;
    struct casfs_inode *child_next; /* the child table's chain */
    /* Passthrough (passthrough.c), under fs->pt.lock: the backing file's
     * id while the inode has passthrough opens, how many, and whether its
     * backing open failed (then it stays on the read path). */
    int32_t backing_id;
    uint32_t backing_opens;
    bool no_passthrough;
    struct casfs_tree *tree;         /* NULL for the mount root */
    mode_t mode;                     /* S_IFDIR|0755, S_IFREG|0444/0555, S_IFLNK|0777 */
    struct cas_digest digest;        /* Directory digest, or the file's blob */
    char *target;                    /* symlink target */
    struct casfs_inode *prev, *next; /* every live inode, for unmount */
};

/* --- passthrough (passthrough.c) --- */

/* An OPEN reply the writing thread is about to send, to be marked for
 * passthrough by the session's writev. Lives on casfs_open's stack. */
struct casfs_pt_pending {
    pthread_t thread;
    int32_t backing_id;
    bool patched;
    struct casfs_pt_pending *next;
};

struct casfs_passthrough {
    bool wanted;           /* options: passthrough not off */
    int dev_fd;            /* the session's /dev/fuse fd, for the backing ioctls */
    atomic_bool init_seen; /* the INIT request went by */
    uint64_t kernel_flags; /* its flags (flags2 << 32 included) */
    uint64_t init_unique;  /* the INIT reply to patch... */
    bool init_pending;     /* ...until it is written */
    bool offered;          /* the INIT reply accepted FUSE_PASSTHROUGH */
    atomic_bool active;    /* backing files work: regular files pass through */
    atomic_uint npatch;    /* replies waiting to be patched (INIT, pending opens) */
    pthread_mutex_t lock;  /* pending, and the inodes' backing fields */
    struct casfs_pt_pending *pending;
    char why[160]; /* why passthrough is off */
};

/* FUSE file handle of a passthrough open (others hold the blob's fd). */
#define CASFS_FH_PASSTHROUGH UINT64_MAX

int casfs_pt_init(struct casfs *fs, bool wanted);
void casfs_pt_destroy(struct casfs *fs);
/* Routes the mounted session's I/O through passthrough.c. */
int casfs_pt_attach(struct casfs *fs);
/* After INIT: decides whether passthrough is active, logs it once. */
void casfs_pt_probe(struct casfs *fs);
/* The backing id for an open of inode: 0 with *backing_id set (the inode's
 * id, or a new one from *blob_fd, which is then closed and set to -1);
 * -EAGAIN when *blob_fd is needed (open the blob, call again);
 * -EOPNOTSUPP when this open must use the read path. */
int casfs_pt_backing_get(struct casfs *fs, struct casfs_inode *inode, int *blob_fd,
                         int32_t *backing_id);
/* A passthrough open of inode ended; the last one closes the backing id. */
void casfs_pt_backing_put(struct casfs *fs, struct casfs_inode *inode);
/* fuse_reply_open with FOPEN_PASSTHROUGH and backing_id set. */
int casfs_pt_reply_open(struct casfs *fs, fuse_req_t req, struct fuse_file_info *fi,
                        int32_t backing_id);

/* --- FUSE over io_uring (uring.c) --- */

struct casfs_uring_req_header; /* the kernel's fuse_uring_req_header */

/* One registered request buffer, served by its own thread and ring. */
struct casfs_uring_ent {
    struct casfs *fs;
    struct io_uring ring;
    bool ring_ok;
    uint16_t qid;
    pthread_t thread, self;
    bool started;
    struct casfs_uring_req_header *hdr; /* iov[0]: headers */
    void *payload;                      /* iov[1] */
    struct iovec iov[2];
    uint8_t *req; /* the request in /dev/fuse form, for libfuse */
    size_t req_size;
    _Atomic uint64_t unique; /* the request being served, 0 between */
    bool replied;            /* its reply was captured */
    bool registered_ok;      /* its CMD_REGISTER was accepted */
};

struct casfs_uring {
    enum casfs_uring_mode mode;
    bool wanted;          /* rings set up: accept it if the kernel offers it */
    bool offered;         /* INIT offered FUSE_OVER_IO_URING */
    atomic_bool accepted; /* the INIT reply took it; threads started */
    atomic_bool active;
    unsigned nqueues;
    struct casfs_uring_ent *ents;
    size_t nents, payload_size;
    int stop_fd;          /* eventfd polled by every ring: unmount */
    pthread_mutex_t lock; /* below */
    pthread_cond_t cond;
    bool go, stopping;
    size_t registered, failed;
    int first_error;
    _Atomic uint64_t requests; /* served through the rings */
    char why[200];             /* why it is off */
};

/* Before the mount: sets the rings up (mode auto/on, the module's
 * enable_uring on). -EOPNOTSUPP (or the setup's error) with mode on when it
 * cannot be used, else 0. */
int casfs_uring_init(struct casfs *fs, enum casfs_uring_mode mode);
void casfs_uring_destroy(struct casfs *fs);
/* While libfuse's INIT reply is being written: whether to accept
 * FUSE_OVER_IO_URING (buffers allocated and threads started, waiting). */
bool casfs_uring_accept(struct casfs *fs, uint64_t kernel_flags, uint32_t max_write,
                        uint16_t max_pages);
/* The INIT reply was written (ok) or not: the threads register or stop. */
void casfs_uring_init_written(struct casfs *fs, bool ok);
/* After INIT: waits for the registrations, decides, logs the mode once. */
void casfs_uring_probe(struct casfs *fs);
/* The writev hook: a reply to a request a ring thread is serving is copied
 * into its entry (returns the bytes); -ENOENT for any other write. */
ssize_t casfs_uring_capture(struct casfs *fs, const struct iovec *iov, int count);
/* Stops and joins the threads (unmount). */
void casfs_uring_stop(struct casfs *fs);

/* --- the mount (casfs.c) --- */

struct casfs {
    struct cas_store *cas;
    struct fuse_session *se;
    char *mountpoint;
    dev_t dev; /* the mount's device, for the fusectl abort */
    uid_t uid;
    gid_t gid;
    unsigned threads;
    pthread_t loop_thread;
    bool loop_started;
    int loop_rc;

    struct casfs_dircache cache;
    struct casfs_passthrough pt;
    struct casfs_uring uring;

    pthread_mutex_t lock; /* trees, inodes */
    struct casfs_tree *trees;
    struct casfs_inode *inodes;
    /* Live nodes of tree directories by (parent serial, index), so that a
     * LOOKUP and a READDIRPLUS of one name give the kernel one node id. */
    struct casfs_inode **children;
    uint64_t next_serial;
    struct casfs_inode root; /* FUSE_ROOT_ID; lists the trees */

    void (*log)(void *arg, const char *line);
    void *log_arg;

    _Atomic uint64_t op_counts[CASFS_OP_COUNT]; /* requests served, by op */
    _Atomic uint64_t bytes_read;                /* replied to reads, every tree */
};

#define CASFS_COUNT(fs, op) atomic_fetch_add_explicit(&(fs)->op_counts[op], 1, memory_order_relaxed)

/* --- logging (log.c) --- */

void casfs_log(struct casfs *fs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- what tree.c does with trees and inodes --- */

/* The inode behind a FUSE inode number. */
struct casfs_inode *casfs_inode_of(struct casfs *fs, fuse_ino_t ino);
/* A new inode with nlookup 1, holding a tree reference; NULL on ENOMEM. */
struct casfs_inode *casfs_inode_new(struct casfs *fs, struct casfs_tree *tree, mode_t mode,
                                    const struct cas_digest *digest, const char *target);
/* The live inode of entry index of the tree directory parent with one more
 * lookup, or a new one (nlookup 1) made from mode, digest and target; NULL on
 * ENOMEM. */
struct casfs_inode *casfs_inode_child(struct casfs *fs, struct casfs_inode *parent, uint32_t index,
                                      mode_t mode, const struct cas_digest *digest,
                                      const char *target);
int casfs_children_init(struct casfs *fs);
/* Drops n lookups; frees the inode at zero. */
void casfs_inode_forget(struct casfs *fs, struct casfs_inode *inode, uint64_t n);
/* The listed tree with this name, with a reference taken; NULL if none. */
struct casfs_tree *casfs_tree_find(struct casfs *fs, const char *name);
void casfs_tree_unref(struct casfs_tree *tree);
/* Copies the listed trees' names, NUL-separated, into a malloc'd buffer. */
int casfs_tree_names(struct casfs *fs, char **buf, size_t *len, size_t *count);
/* At unmount, once no request runs: frees every inode and tree. */
void casfs_trees_free(struct casfs *fs);

/* --- the FUSE operations (ops.c) --- */

extern const struct fuse_lowlevel_ops casfs_ops;

#endif
