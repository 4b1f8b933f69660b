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
 * keep_cache, and read replies with an fd buffer so that libfuse splices
 * from the blob file to /dev/fuse without a user-space copy.
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
    unsigned want = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_CACHE_SYMLINKS |
                    FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ;

    (void)userdata;
    conn->want |= want & conn->capable;
    /* Content never changes: no invalidation on attribute changes. */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

/* Binary search of one sorted list of nodes by name (the cache checked the
 * order). get_name reads element i. */
#define CASFS_BSEARCH(arr, n, name, out)                                                           \
    do {                                                                                           \
        size_t lo_ = 0, hi_ = (n);                                                                 \
        (out) = NULL;                                                                              \
        while (lo_ < hi_) {                                                                        \
            size_t mid_ = lo_ + (hi_ - lo_) / 2;                                                   \
            int c_ = strcmp((name), (arr)[mid_]->name);                                            \
            if (c_ == 0) {                                                                         \
                (out) = (arr)[mid_];                                                               \
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

/* Resolves name in a tree directory into a new inode. */
static int casfs_lookup_child(struct casfs *fs, struct casfs_inode *parent, const char *name,
                              struct casfs_inode **out)
{
    const DirectoryNode *dn;
    const FileNode *fn;
    const SymlinkNode *sn;
    struct casfs_dir *dir;
    struct cas_digest d;
    int rc;

    rc = casfs_dir_get(fs, &parent->digest, &dir);
    if (rc != 0)
        return -EIO;
    rc = -ENOENT;
    *out = NULL;
    CASFS_BSEARCH(dir->msg->directories, dir->msg->n_directories, name, dn);
    if (dn != NULL) {
        casfs_digest_of(dn->digest, &d);
        *out = casfs_inode_new(fs, parent->tree, S_IFDIR | 0755, &d, NULL);
        goto out;
    }
    CASFS_BSEARCH(dir->msg->files, dir->msg->n_files, name, fn);
    if (fn != NULL) {
        casfs_digest_of(fn->digest, &d);
        *out = casfs_inode_new(fs, parent->tree, S_IFREG | (fn->is_executable ? 0555 : 0444), &d,
                               NULL);
        goto out;
    }
    CASFS_BSEARCH(dir->msg->symlinks, dir->msg->n_symlinks, name, sn);
    if (sn != NULL) {
        memset(&d, 0, sizeof(d));
        *out = casfs_inode_new(fs, parent->tree, S_IFLNK | 0777, &d, sn->target);
        goto out;
    }
    casfs_dir_put(fs, dir);
    return -ENOENT;
out:
    casfs_dir_put(fs, dir);
    rc = *out != NULL ? 0 : -ENOMEM;
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

/* Adds one entry to a readdir reply buffer; false when it is full. */
static bool casfs_dirent(fuse_req_t req, char *buf, size_t size, size_t *used, const char *name,
                         mode_t mode, fuse_ino_t ino, off_t next)
{
    struct stat st;
    size_t n;

    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = mode;
    n = fuse_add_direntry(req, buf + *used, size - *used, name, &st, next);
    if (n > size - *used)
        return false;
    *used += n;
    return true;
}

/* Offsets: 0 start, 1 after ".", 2 after "..", 2 + i + 1 after entry i
 * (directories, then files, then symlinks; trees for the root). */
static void casfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    struct casfs_dir *dir = NULL;
    char *buf = NULL, *names = NULL;
    size_t used = 0, n = 0, names_len = 0;
    const char *p = NULL;
    int rc = 0;

    CASFS_COUNT(fs, CASFS_OP_READDIR);
    (void)fi;
    if (!S_ISDIR(inode->mode)) {
        rc = -ENOTDIR;
        goto out;
    }
    buf = malloc(size ? size : 1);
    if (buf == NULL) {
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
    if (off < 1 && !casfs_dirent(req, buf, size, &used, ".", S_IFDIR, ino, 1))
        goto reply;
    if (off < 2 && !casfs_dirent(req, buf, size, &used, "..", S_IFDIR, FUSE_ROOT_ID, 2))
        goto reply;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        mode_t mode;

        if (dir == NULL) {
            name = p;
            p += strlen(p) + 1;
            mode = S_IFDIR;
        } else if (i < dir->msg->n_directories) {
            name = dir->msg->directories[i]->name;
            mode = S_IFDIR;
        } else if (i < dir->msg->n_directories + dir->msg->n_files) {
            name = dir->msg->files[i - dir->msg->n_directories]->name;
            mode = S_IFREG;
        } else {
            name = dir->msg->symlinks[i - dir->msg->n_directories - dir->msg->n_files]->name;
            mode = S_IFLNK;
        }
        if ((off_t)(i + 3) <= off)
            continue;
        if (!casfs_dirent(req, buf, size, &used, name, mode, (fuse_ino_t)(i + 2), (off_t)(i + 3)))
            break;
    }
reply:
    fuse_reply_buf(req, buf, used);
out:
    if (rc != 0)
        fuse_reply_err(req, -rc);
    if (dir != NULL)
        casfs_dir_put(fs, dir);
    free(names);
    free(buf);
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

static void casfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct casfs *fs = fuse_req_userdata(req);
    struct casfs_inode *inode = casfs_inode_of(fs, ino);
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    int64_t left = inode->digest.size - off;

    CASFS_COUNT(fs, CASFS_OP_READ);
    buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    buf.buf[0].fd = (int)fi->fh;
    buf.buf[0].pos = off;
    if (left > 0) {
        atomic_fetch_add(&inode->tree->bytes_read, (uint64_t)left < size ? (uint64_t)left : size);
        atomic_fetch_add(&fs->bytes_read, (uint64_t)left < size ? (uint64_t)left : size);
    }
    /* On a failed read of the blob fuse_reply_data replies the error itself. */
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
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
    .open = casfs_open,
    .read = casfs_read,
    .release = casfs_release,
    .statfs = casfs_statfs,
};
