/*
 * ops.c - the FUSE low-level operations of casfs.
 *
 * Every operation is a static casfs_<op>(req, ...) that ends in exactly one
 * fuse_reply_*. Only reading operations exist: the mount is read-only, so the
 * kernel answers writes, chmod, truncate, rename, mkdir... with EROFS itself,
 * and the write side of open is refused here too.
 *
 * A lookup makes a fresh inode (nlookup 1) for the name; the kernel caches
 * the dentry for CASFS_TIMEOUT and forgets the inode when done with it, so no
 * per-directory child table is kept. Inode numbers are inode addresses
 * (passthrough_ll's idiom); the mount root is FUSE_ROOT_ID.
 *
 * Reads: open opens the CAS blob (verified by the store). With passthrough
 * (passthrough.c) the blob becomes the open's backing file and the kernel
 * reads it without asking us; otherwise the fd is kept in fi->fh with
 * keep_cache, and read preads the blob and replies the buffer (one copy,
 * where libfuse's splice would hide a failed read from us: a read error
 * must reach the store, which makes the damaged blob missing).
 */
#include "casfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void casfs_fill_stat(struct casfs *fs, const struct casfs_inode *inode, fuse_ino_t ino,
                            struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = inode->mode;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_nlink = 1; /* directories too: no find(1) leaf optimisation */
    st->st_blksize = 128 * 1024;
    if (S_ISREG(inode->mode))
        st->st_size = inode->digest.size;
    else if (S_ISLNK(inode->mode))
        st->st_size = (off_t)strlen(inode->target);
    else
        st->st_size = 4096;
    st->st_blocks = (st->st_size + 511) / 512;
    st->st_mtim.tv_sec = CASFS_MTIME;
    st->st_ctim.tv_sec = CASFS_MTIME;
    st->st_atim.tv_sec = CASFS_MTIME;
}

static void casfs_init(void *userdata, struct fuse_conn_info *conn)
{
    /* READDIRPLUS_AUTO: the kernel asks for entries with attributes on the
     * first read of a directory and after lookups in it, plain ones else. */
    unsigned want = FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ |
                    FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;

    (void)userdata;
    conn->want |= want & conn->capable;
    /* Content never changes: no invalidation on attribute changes. */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

/* Binary search of one sorted list of nodes by name (the cache checked the
 * order): the index of name in arr, or -1. */
#define CASFS_BSEARCH(arr, n, name, out)                                                           \
    do {                                                                                           \
        size_t lo_ = 0, hi_ = (n);                                                                 \
        (out) = -1;                                                                                \
        while (lo_ < hi_) {                                                                        \
            size_t mid_ = lo_ + (hi_ - lo_) / 2;                                                   \
            int c_ = strcmp((name), (arr)[mid_]->name);                                            \
            if (c_ == 0) {                                                                         \
                (out) = (long)mid_;                                                                \
                break;                                                                             \
            }                                                                                      \
            if (c_ < 0)                                                                            \
                hi_ = mid_;                                                                        \
            else                                                                                   \
                lo_ = mid_ + 1;                                                                    \
        }                                                                                          \
    } while (0)

static void casfs_digest_of(const Build__Bazel__Remote__Execution__V2__Digest *pd,
                            struct cas_digest *out)
{
    if (cas_digest_parse(pd->hash, pd->size_bytes, out) != 0)
        memset(out, 0, sizeof(*out)); /* checked when decoded: cannot happen */
}

/* Entry i of a Directory: directories, then files, then symlinks. */
struct casfs_entry {
    const char *name;
    mode_t mode;
    struct cas_digest digest;
    const char *target;
};

static void casfs_entry_at(const Directory *msg, size_t i, struct casfs_entry *e)
{
    memset(e, 0, sizeof(*e));
    if (i < msg->n_directories) {
        e->name = msg->directories[i]->name;
        e->mode = S_IFDIR | 0755;
        casfs_digest_of(msg->directories[i]->digest, &e->digest);
        return;
    }
    i -= msg->n_directories;
    if (i < msg->n_files) {
        e->name = msg->files[i]->name;
        e->mode = S_IFREG | (msg->files[i]->is_executable ? 0555 : 0444);
        casfs_digest_of(msg->files[i]->digest, &e->digest);
        return;
    }
    i -= msg->n_files;
    e->name = msg->symlinks[i]->name;
    e->mode = S_IFLNK | 0777;
    e->target = msg->symlinks[i]->target;
}

/* The index of name in a Directory (as casfs_entry_at counts), or -1. */
static long casfs_entry_find(const Directory *msg, const char *name)
{
    long i;

    CASFS_BSEARCH(msg->directories, msg->n_directories, name, i);
    if (i >= 0)
        return i;
    CASFS_BSEARCH(msg->files, msg->n_files, name, i);
    if (i >= 0)
        return (long)msg->n_directories + i;
    CASFS_BSEARCH(msg->symlinks, msg->n_symlinks, name, i);
    if (i >= 0)
        return (long)(msg->n_directories + msg->n_files) + i;
    return -1;
}

/* The inode of entry i of parent's Directory (one more lookup). */
static struct casfs_inode *casfs_entry_inode(struct casfs *fs, struct casfs_inode *parent,
                                             const Directory *msg, size_t i)
{
    struct casfs_entry e;

    casfs_entry_at(msg, i, &e);
    return casfs_inode_child(fs, parent, (uint32_t)i, e.mode, &e.digest, e.target);
}

/* Resolves name in a tree directory into its inode. */
static int casfs_lookup_child(struct casfs *fs, struct casfs_inode *parent, const char *name,
                              struct casfs_inode **out)
{
    struct casfs_dir *dir;
    long i;
    int rc;

    *out = NULL;
    rc = casfs_dir_get(fs, &parent->digest, &dir);
    if (rc != 0)
        return -EIO;
    i = casfs_entry_find(dir->msg, name);
    if (i < 0)
        rc = -ENOENT;
    else if ((*out = casfs_entry_inode(fs, parent, dir->msg, (size_t)i)) == NULL)
        rc = -ENOMEM;
    casfs_dir_put(fs, dir);
    return rc;
}

static void casfs_lookup(fuse_req_t req, fuse_ino_t parent_ino, const char *name)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *parent = casfs_inode_of(fs, parent_ino);
    struct casfs_inode *inode = NULL;
    struct fuse_entry_param e;
    int rc;

    CASFS_COUNT(fs, CASFS_OP_LOOKUP);
    if (parent->tree == NULL) {
        /* The mount root: one directory per tree. */
        struct casfs_tree *tree = casfs_tree_find(fs, name);

        if (tree == NULL) {
            rc = -ENOENT;
            goto out_err;
        }
        inode = casfs_inode_new(fs, tree, S_IFDIR | 0755, &tree->root, NULL);
        casfs_tree_unref(tree);
        rc = inode ? 0 : -ENOMEM;
    } else if (!S_ISDIR(parent->mode)) {
        rc = -ENOTDIR;
    } else {
        atomic_fetch_add(&parent->tree->lookups, 1);
        rc = casfs_lookup_child(fs, parent, name, &inode);
    }
    if (rc != 0)
        goto out_err;
    memset(&e, 0, sizeof(e));
    e.ino = (fuse_ino_t)(uintptr_t)inode;
    e.attr_timeout = CASFS_TIMEOUT;
    e.entry_timeout = CASFS_TIMEOUT;
    casfs_fill_stat(fs, inode, e.ino, &e.attr);
    if (fuse_reply_entry(req, &e) != 0)
        casfs_inode_forget(fs, inode, 1); /* the kernel never saw it */
    return;
out_err:
    if (rc == -ENOENT && parent->tree != NULL) {
        /* A name absent from an input tree stays absent (the tree is
         * immutable): ino 0 with a timeout is a negative entry the kernel
         * keeps, so gcc's include search asks once per directory and name,
         * not on every probe. Not at the mount root, where trees come. */
        memset(&e, 0, sizeof(e));
        e.entry_timeout = CASFS_TIMEOUT;
        fuse_reply_entry(req, &e);
        return;
    }
    fuse_reply_err(req, -rc);
}

static void casfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct casfs *fs = fuse_req_userdata(req);

    CASFS_COUNT(fs, CASFS_OP_FORGET);
    casfs_inode_forget(fs, casfs_inode_of(fs, ino), nlookup);
    fuse_reply_none(req);
}

static void casfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct casfs *fs = fuse_req_userdata(req);

    CASFS_COUNT(fs, CASFS_OP_FORGET);
    for (size_t i = 0; i < count; i++)
        casfs_inode_forget(fs, casfs_inode_of(fs, forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

static void casfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    struct stat st;

    CASFS_COUNT(fs, CASFS_OP_GETATTR);
    (void)fi;
    casfs_fill_stat(fs, inode, ino, &st);
    /* The root's attributes never change either (its listing does, as trees
     * come and go, but readdir is not cached and lookups of its names are
     * answered or invalidated one by one). A timeout of 0 here cost a
     * GETATTR round trip in every path walk through the mount root (the
     * kernel's permission check), three per action. */
    fuse_reply_attr(req, &st, CASFS_TIMEOUT);
}

static void casfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);

    CASFS_COUNT(fs, CASFS_OP_READLINK);
    if (!S_ISLNK(inode->mode)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_reply_readlink(req, inode->target);
}

/* A reply buffer being filled by readdir or readdirplus. */
struct casfs_dirbuf {
    fuse_req_t req;
    char *buf;
    size_t size, used;
    bool plus;
};

/* Adds one entry without a node (".", "..", the mount root's trees, or any
 * plain readdir entry); false when the buffer is full. */
static bool casfs_dirent(struct casfs_dirbuf *b, const char *name, mode_t mode, fuse_ino_t ino,
                         off_t next)
{
    struct fuse_entry_param e;
    size_t n;

    memset(&e, 0, sizeof(e));
    e.attr.st_ino = ino;
    e.attr.st_mode = mode;
    if (b->plus) /* node id 0: the kernel makes no dentry of it */
        n = fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, name, &e, next);
    else
        n = fuse_add_direntry(b->req, b->buf + b->used, b->size - b->used, name, &e.attr, next);
    if (n > b->size - b->used)
        return false;
    b->used += n;
    return true;
}

/* Adds entry i of a tree directory with its node and attributes (one more
 * lookup of it, as for a LOOKUP); false when the buffer is full or memory
 * ran out. */
static bool casfs_dirent_plus(struct casfs *fs, struct casfs_dirbuf *b, struct casfs_inode *parent,
                              const Directory *msg, size_t i)
{
    struct casfs_entry ent;
    struct fuse_entry_param e;
    struct casfs_inode *inode;

    casfs_entry_at(msg, i, &ent);
    /* Size first: a node handed out must reach the kernel. */
    if (fuse_add_direntry_plus(b->req, NULL, 0, ent.name, NULL, 0) > b->size - b->used)
        return false;
    inode = casfs_inode_child(fs, parent, (uint32_t)i, ent.mode, &ent.digest, ent.target);
    if (inode == NULL)
        return false;
    memset(&e, 0, sizeof(e));
    e.ino = (fuse_ino_t)(uintptr_t)inode;
    e.attr_timeout = CASFS_TIMEOUT;
    e.entry_timeout = CASFS_TIMEOUT;
    casfs_fill_stat(fs, inode, e.ino, &e.attr);
    b->used += fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, ent.name, &e,
                                      (off_t)(i + 3));
    return true;
}

/* Offsets: 0 start, 1 after ".", 2 after "..", 2 + i + 1 after entry i
 * (directories, then files, then symlinks; trees for the root). With plus
 * (READDIRPLUS), entries of tree directories carry their node and
 * attributes, so that `ls -l` or a scan needs no LOOKUP after the listing;
 * the trees at the mount root come and go, so they are listed without. */
static void casfs_readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    struct casfs_dirbuf b = {.req = req, .size = size, .plus = plus};
    struct casfs_dir *dir = NULL;
    char *names = NULL;
    size_t n = 0, names_len = 0;
    const char *p = NULL;
    int rc = 0;

    CASFS_COUNT(fs, CASFS_OP_READDIR);
    if (!S_ISDIR(inode->mode)) {
        rc = -ENOTDIR;
        goto out;
    }
    b.buf = malloc(size ? size : 1);
    if (b.buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (inode->tree == NULL) {
        rc = casfs_tree_names(fs, &names, &names_len, &n);
        p = names;
    } else {
        rc = casfs_dir_get(fs, &inode->digest, &dir) != 0 ? -EIO : 0;
        if (rc == 0)
            n = dir->msg->n_directories + dir->msg->n_files + dir->msg->n_symlinks;
    }
    if (rc != 0)
        goto out;
    if (off < 1 && !casfs_dirent(&b, ".", S_IFDIR, ino, 1))
        goto reply;
    if (off < 2 && !casfs_dirent(&b, "..", S_IFDIR, FUSE_ROOT_ID, 2))
        goto reply;
    for (size_t i = 0; i < n; i++) {
        struct casfs_entry ent = {0};

        if (dir == NULL) {
            ent.name = p;
            ent.mode = S_IFDIR;
            p += strlen(p) + 1;
        } else if (!plus) {
            casfs_entry_at(dir->msg, i, &ent);
        }
        if ((off_t)(i + 3) <= off)
            continue;
        if (dir != NULL && plus) {
            if (!casfs_dirent_plus(fs, &b, inode, dir->msg, i))
                break;
        } else if (!casfs_dirent(&b, ent.name, ent.mode & S_IFMT, (fuse_ino_t)(i + 2),
                                 (off_t)(i + 3))) {
            break;
        }
    }
reply:
    fuse_reply_buf(req, b.buf, b.used);
out:
    if (rc != 0)
        fuse_reply_err(req, -rc);
    if (dir != NULL)
        casfs_dir_put(fs, dir);
    free(names);
    free(b.buf);
}

static void casfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    (void)fi;
    casfs_readdir_any(req, ino, size, off, false);
}

static void casfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                              struct fuse_file_info *fi)
{
    (void)fi;
    casfs_readdir_any(req, ino, size, off, true);
}

/* Logs and answers EIO for a blob that cannot be opened. */
static void casfs_open_failed(struct casfs *fs, fuse_req_t req, struct casfs_inode *inode, int err)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(&inode->digest, hex);
    casfs_log(fs, "casfs: tree %s: cannot open blob %s/%lld: %s (EIO)", inode->tree->name, hex,
              (long long)inode->digest.size, strerror(-err));
    fuse_reply_err(req, EIO);
}

/* Passthrough: 0 when the open was answered that way, else the blob fd
 * (when one was opened, -1 if not) is left for the read path. */
static int casfs_open_passthrough(struct casfs *fs, fuse_req_t req, struct casfs_inode *inode,
                                  struct fuse_file_info *fi, int *fd)
{
    int32_t backing_id = 0;
    int rc;

    rc = casfs_pt_backing_get(fs, inode, fd, &backing_id);
    if (rc == -EAGAIN) {
        *fd = cas_store_open_blob_counted(fs->cas, &inode->digest, &inode->tree->fetch);
        if (*fd < 0)
            return *fd;
        rc = casfs_pt_backing_get(fs, inode, fd, &backing_id);
    }
    if (rc != 0)
        return rc;
    fi->fh = CASFS_FH_PASSTHROUGH;
    atomic_fetch_add(&inode->tree->files_opened, 1);
    atomic_fetch_add(&inode->tree->files_passthrough, 1);
    if (casfs_pt_reply_open(fs, req, fi, backing_id) != 0)
        casfs_pt_backing_put(fs, inode); /* interrupted: no release will come */
    return 0;
}

static void casfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    int fd = -1, rc;

    CASFS_COUNT(fs, CASFS_OP_OPEN);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (S_ISDIR(inode->mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    rc = casfs_open_passthrough(fs, req, inode, fi, &fd);
    if (rc == 0)
        return;
    if (fd < 0 && rc != -EOPNOTSUPP) {
        casfs_open_failed(fs, req, inode, rc);
        return;
    }
    if (fd < 0)
        fd = cas_store_open_blob_counted(fs->cas, &inode->digest, &inode->tree->fetch);
    if (fd < 0) {
        casfs_open_failed(fs, req, inode, fd);
        return;
    }
    /* Reads arrive in order mostly: let the blob file read ahead further. */
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1;
    atomic_fetch_add(&inode->tree->files_opened, 1);
    if (fuse_reply_open(req, fi) != 0)
        close(fd); /* interrupted: no release will come */
}

/* A read of an opened blob failed: the store makes a damaged blob missing
 * (FindMissingBlobs reports it, a re-upload replaces it), the log names it,
 * and the reader gets EIO. */
static void casfs_read_failed(struct casfs *fs, fuse_req_t req, struct casfs_inode *inode, int fd,
                              int err)
{
    char hex[CAS_HASH_HEX + 1];
    int rc;

    atomic_fetch_add(&inode->tree->read_errors, 1);
    rc = cas_store_read_failed(fs->cas, &inode->digest, fd, err);
    cas_digest_hex(&inode->digest, hex);
    casfs_log(fs, "casfs: tree %s: reading blob %s/%lld failed: %s (EIO)%s", inode->tree->name, hex,
              (long long)inode->digest.size, strerror(-err),
              rc == -ENOENT ? "; the blob is missing from the store now" : "");
    fuse_reply_err(req, EIO);
}

/* The read path (no passthrough): read into a buffer and reply it, so that
 * a failed read is seen here, not only by libfuse. */
static void casfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    int64_t left = inode->digest.size - off;
    size_t want = left <= 0 ? 0 : (uint64_t)left < size ? (size_t)left : size, got = 0;
    char *buf = NULL;
    int err = 0;

    CASFS_COUNT(fs, CASFS_OP_READ);
    if (want > 0 && (buf = malloc(want)) == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    while (got < want) {
        ssize_t n = pread((int)fi->fh, buf + got, want - got, off + (off_t)got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : -EIO; /* a blob shorter than its digest says */
            break;
        }
        got += (size_t)n;
    }
    if (err != 0) {
        casfs_read_failed(fs, req, inode, (int)fi->fh, err);
    } else {
        atomic_fetch_add(&inode->tree->bytes_read, got);
        atomic_fetch_add(&fs->bytes_read, got);
        fuse_reply_buf(req, buf, got);
    }
    free(buf);
}

static void casfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);

    CASFS_COUNT(fs, CASFS_OP_RELEASE);
    if (fi->fh == CASFS_FH_PASSTHROUGH)
        casfs_pt_backing_put(fs, casfs_inode_of(fs, ino));
    else
        close((int)fi->fh);
    fuse_reply_err(req, 0);
}

static void casfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs st;

    (void)ino;
    memset(&st, 0, sizeof(st));
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
}

const struct fuse_lowlevel_ops casfs_ops = {
    .init = casfs_init,
    .lookup = casfs_lookup,
    .forget = casfs_forget,
    .forget_multi = casfs_forget_multi,
    .getattr = casfs_getattr,
    .readlink = casfs_readlink,
    .readdir = casfs_readdir,
    .readdirplus = casfs_readdirplus,
    .open = casfs_open,
    .read = casfs_read,
    .release = casfs_release,
    .statfs = casfs_statfs,
};
