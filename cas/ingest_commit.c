/*
 * ingest_commit.c - the per-file steps both ingestion paths share: checking
 * a statx, admitting bytes against the run's limit, SHA-256 over a reused
 * EVP context, and committing a hashed file to the store.
 *
 * Commit rules (cas.h). The fast path renames the file into the store: it
 * needs move, the store's filesystem, one link, and no process holding the
 * file open for writing. The last is probed with a read lease, which the
 * kernel refuses (EAGAIN) while any open file description has the inode
 * open for writing, writable shared mappings included. The lease is held
 * until the blob is indexed: an open for writing (or a truncate) in the
 * meantime breaks it and waits for us, and the check before indexing sees
 * the break (F_GETLEASE) and gives the file its name back, so that such an
 * opener never gets a writable fd to a blob. The break signal is set to
 * SIGURG, ignored by default, so that it cannot kill the process with the
 * default SIGIO. Under the lease the file is made 0444 and renamed straight
 * to its blob name; the store checks it (fstatat: same inode, size and mtime
 * as the snapshot, one link; and the lease) before indexing it, so no reader
 * sees it unchecked (cas_store_commit_moved). When a file already sits under
 * that name, the older route through a private name in tmp/ and a second
 * rename is taken. Once indexed, the inode has no name but the store's, no
 * writer and mode 0444, so no later write can reach it.
 *
 * Everything else is copied into a new temp file (from the buffer already
 * read when the file fit one buffer, else by reading it again through a
 * cas_writer, which re-hashes). A copy is checked against the snapshot too,
 * so the blob is always the file's content at one instant.
 */
#include "ingest_internal.h"
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

/* --- snapshot and limits --- */

int ingest_snap_from_statx(const struct statx *stx, struct ingest_snap *snap,
                           struct cas_ingest_file *f)
{
    f->mode = stx->stx_mode;
    if (S_ISLNK(stx->stx_mode))
        return -ELOOP;
    if (!S_ISREG(stx->stx_mode))
        return -EINVAL;
    snap->dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
    snap->ino = (ino_t)stx->stx_ino;
    snap->size = stx->stx_size;
    snap->mtime_sec = stx->stx_mtime.tv_sec;
    snap->mtime_nsec = stx->stx_mtime.tv_nsec;
    snap->nlink = stx->stx_nlink;
    snap->mode = stx->stx_mode;
    return 0;
}

/* Same file, same size, not written since the snapshot. Timestamps are
 * fine-grained once queried (multigrain timestamps, Linux 6.13 on ext4, xfs,
 * btrfs, tmpfs), so a write after our statx moves mtime. */
static bool ingest_snap_same(const struct ingest_snap *snap, const struct stat *st)
{
    return st->st_dev == snap->dev && st->st_ino == snap->ino &&
           (uint64_t)st->st_size == snap->size && st->st_mtim.tv_sec == snap->mtime_sec &&
           (uint32_t)st->st_mtim.tv_nsec == snap->mtime_nsec;
}

int ingest_reserve(struct cas_ingest *ing, uint64_t size)
{
    uint64_t before;

    if (ing->max_bytes == 0)
        return 0;
    before = atomic_fetch_add(&ing->run->reserved, size);
    if (before + size > ing->max_bytes || before + size < before) {
        atomic_fetch_sub(&ing->run->reserved, size);
        atomic_store(&ing->run->stop, true);
        return -EFBIG;
    }
    return 0;
}

void ingest_release(struct cas_ingest *ing, uint64_t size)
{
    if (ing->max_bytes != 0)
        atomic_fetch_sub(&ing->run->reserved, size);
}

/* --- hashing --- */

int ingest_hash_begin(struct cas_ingest *ing, EVP_MD_CTX *ctx)
{
    return EVP_DigestInit_ex(ctx, ing->md, NULL) == 1 ? 0 : -ENOMEM;
}

int ingest_hash_update(EVP_MD_CTX *ctx, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    return EVP_DigestUpdate(ctx, buf, len) == 1 ? 0 : -ENOMEM;
}

int ingest_hash_end(EVP_MD_CTX *ctx, uint64_t size, struct cas_digest *out)
{
    unsigned int len = 0;

    out->size = (int64_t)size;
    if (EVP_DigestFinal_ex(ctx, out->hash, &len) != 1 || len != CAS_HASH_BYTES)
        return -ENOMEM; /* only an allocation inside libcrypto can fail */
    return 0;
}

uint8_t *ingest_worker_buffer(struct ingest_worker *w)
{
    if (w->buf == NULL)
        w->buf = aligned_alloc(INGEST_ALIGN, INGEST_CHUNK);
    return w->buf;
}

/* --- commit --- */

/* Takes a read lease on fd: 0 when no process has the file open for
 * writing (the kernel refuses the lease otherwise: -EAGAIN); another errno
 * when the kernel cannot tell us (not the owner without CAP_LEASE, leases
 * disabled, a filesystem without leases). Held until ingest_lease_drop. */
static int ingest_lease_take(int fd)
{
    if (fcntl(fd, F_SETSIG, SIGURG) < 0)
        return -errno;
    if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return 0;
}

static void ingest_lease_drop(int fd)
{
    /* Cannot fail for a lease we hold; a broken one is gone already. */
    (void)fcntl(fd, F_SETLEASE, F_UNLCK);
}

/* What a move is checked against, after its rename and before the blob is
 * indexed. */
struct ingest_move_check {
    const struct ingest_snap *snap;
    int fd; /* holding the read lease */
};

/* The snapshot's inode, unwritten, with no other name, and nobody has
 * opened it for writing (or truncated it) since the lease was taken: such
 * an open breaks the lease (F_GETLEASE then says F_UNLCK) and waits for us,
 * and must not get a writable fd to a blob. */
static bool ingest_check_moved(const struct stat *st, const void *arg)
{
    const struct ingest_move_check *mc = arg;

    return ingest_snap_same(mc->snap, st) && st->st_nlink == 1 && S_ISREG(st->st_mode) &&
           fcntl(mc->fd, F_GETLEASE) == F_RDLCK;
}

/* The temp route: moves the source to a private name in the store's tmp/,
 * checks that it is still the snapshot's inode, unwritten and with one
 * link, and commits it (a second rename). -EAGAIN when the rename is refused
 * (copy instead), -ESTALE when the file changed (its name is given back). */
static int ingest_commit_via_tmp(struct cas_store *s, pid_t pid, const struct cas_ingest_file *f,
                                 const struct ingest_move_check *mc, const struct cas_digest *d)
{
    char tmp[PATH_MAX];
    struct stat now;
    unsigned long long id = atomic_fetch_add(&s->name_counter, 1);
    int n, rc;

    n = snprintf(tmp, sizeof(tmp), "%s/ingest-%ld-%llu", s->tmp_dir, (long)pid, id);
    if (n < 0 || n >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    rc = renameat2(f->dir_fd, f->name, AT_FDCWD, tmp, RENAME_NOREPLACE);
    if (rc < 0 && errno == EINVAL) /* no RENAME_NOREPLACE: the name is unique anyway */
        rc = renameat(f->dir_fd, f->name, AT_FDCWD, tmp);
    if (rc < 0) {
        rc = -errno;
        if (rc == -ENOENT)
            return -ESTALE; /* gone since the statx */
        return rc == -EXDEV || rc == -EPERM || rc == -EACCES || rc == -EROFS || rc == -EBUSY
                   ? -EAGAIN
                   : rc;
    }
    if (lstat(tmp, &now) < 0) {
        rc = -errno;
        goto give_back;
    }
    if (!ingest_check_moved(&now, mc)) {
        rc = -ESTALE;
        goto give_back;
    }
    return cas_store_commit(s, tmp, d, (uint64_t)now.st_ino, true);
give_back:
    if (renameat2(AT_FDCWD, tmp, f->dir_fd, f->name, RENAME_NOREPLACE) < 0)
        unlink(tmp);
    return rc;
}

/* Moves the source into the store, made 0444 first (so that it is never
 * writable under a blob name): one rename straight to its blob name, which
 * the store checks against the snapshot before indexing it; the temp route
 * when that is not possible. 1 when the blob turned out to be present (the
 * source stays); -EAGAIN: copy instead; -ESTALE: it changed. */
static int ingest_commit_rename(struct cas_store *s, pid_t pid, const struct cas_ingest_file *f,
                                int fd, const struct ingest_snap *snap, const struct cas_digest *d)
{
    struct ingest_move_check mc = {snap, fd};
    int rc;

    if (fchmod(fd, 0444) < 0)
        return errno == EPERM || errno == EROFS ? -EAGAIN : -errno;
    rc = cas_store_commit_moved(s, f->dir_fd, f->name, d, ingest_check_moved, &mc);
    if (rc == 1)
        return 1; /* committed meanwhile by someone else: the source stays */
    if (rc == -ENOENT)
        return -ESTALE; /* gone since the statx */
    if (rc != -EAGAIN)
        return rc;
    return ingest_commit_via_tmp(s, pid, f, &mc, d);
}

/* The file's bytes are in `whole`: writes them to a new temp file and
 * commits it, if the source is still as the snapshot says. */
static int ingest_commit_buffer(struct cas_store *s, int fd, const struct ingest_snap *snap,
                                const struct cas_digest *d, const void *whole)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!ingest_snap_same(snap, &st))
        return -ESTALE;
    return cas_store_write_commit(s, "ingest", &(struct iovec){(void *)whole, (size_t)d->size}, 1,
                                  &(struct cas_commit_target){.blob = d});
}

/* Copies a file too big for one buffer by reading it again through a
 * writer, which hashes what it copies and commits only the digest we got. */
static int ingest_commit_reread(struct cas_store *s, struct ingest_worker *w, int fd,
                                const struct cas_digest *d)
{
    uint8_t *buf = ingest_worker_buffer(w);

    if (buf == NULL)
        return -ENOMEM;
    return cas_writer_copy_fd(s, fd, d, buf, INGEST_CHUNK);
}

int ingest_commit(struct cas_ingest *ing, struct ingest_worker *w, struct cas_ingest_file *f,
                  int fd, const struct ingest_snap *snap, const struct cas_digest *d,
                  const void *whole)
{
    struct cas_store *s = ing->s;
    int rc;

    if (s == NULL)
        return 0;
    if (d->size == 0 || cas_ingest_present(s, d, snap->dev, snap->ino) == 1) {
        w->counts.present++;
        return 0;
    }
    if (f->move && snap->dev == s->dev && snap->nlink == 1 && ingest_lease_take(fd) == 0) {
        rc = ingest_commit_rename(s, ing->pid, f, fd, snap, d);
        ingest_lease_drop(fd);
        if (rc == 1) {
            w->counts.present++; /* committed meanwhile by another thread */
            return 0;
        }
        if (rc == 0)
            w->counts.renamed++;
        if (rc != -EAGAIN)
            return rc;
    }
    rc = whole != NULL ? ingest_commit_buffer(s, fd, snap, d, whole)
                       : ingest_commit_reread(s, w, fd, d);
    if (rc == 0)
        w->counts.copied++;
    return rc;
}
