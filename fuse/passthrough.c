/*
 * passthrough.c - FUSE passthrough (Linux >= 6.9) on top of libfuse 3.14,
 * which has no API for it.
 *
 * With passthrough, the kernel serves read(2), splice and mmap of an opened
 * input file straight from the CAS blob file: casboxd only answers LOOKUP,
 * OPEN and RELEASE. libfuse 3.14 lets the session's I/O go through our own
 * read and writev (fuse_session_custom_io), and that is all this needs:
 *
 *  - read sees the kernel's INIT request (its flags say whether it offers
 *    FUSE_PASSTHROUGH);
 *  - writev patches libfuse's INIT reply to accept FUSE_PASSTHROUGH (a flags2
 *    bit, so FUSE_INIT_EXT too) with max_stack_depth 1: the backing files
 *    (ext4, depth 0) may sit below us, and overlayfs can still stack on top
 *    (FUSE 1, overlay 2 = FILESYSTEM_MAX_STACK_DEPTH);
 *  - casfs_open registers "the next reply this thread writes is an OPEN
 *    reply with this backing id" and writev sets FOPEN_PASSTHROUGH and
 *    backing_id in it (libfuse 3.14 fills neither).
 *
 * Backing ids come from ioctl(FUSE_DEV_IOC_BACKING_OPEN) on /dev/fuse with the
 * blob's fd. The kernel wants one backing file per FUSE inode while any
 * passthrough open of it lives (a second one is EBUSY, and a non-passthrough
 * open of such an inode is EIO), so an inode keeps its id while it has opens
 * and closes it (FUSE_DEV_IOC_BACKING_CLOSE) at the last release; an inode
 * whose backing open failed stays on the read path for good.
 *
 * BACKING_OPEN needs CAP_SYS_ADMIN in the initial user namespace: without
 * it (a rootless daemon) the INIT reply is left alone; with it, backing
 * files are probed once after INIT (with a file on the CAS's filesystem).
 * When either fails (rootless daemon, old kernel, the INIT flag refused),
 * or with execution.fuse_passthrough = off, casboxd serves reads as before.
 * One log line says which mode is active.
 *
 * The kernel ABI (not in Debian 12's 6.1 headers) is from the kernel's
 * include/uapi/linux/fuse.h, protocol 7.40 (Linux 6.9), defined here.
 */
#include "casfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* --- kernel ABI, include/uapi/linux/fuse.h (7.40) --- */

/* INIT flags: bits 32..63 travel in flags2 (with FUSE_INIT_EXT). */
#define CASFS_FUSE_INIT_EXT      (1ULL << 30)
#define CASFS_FUSE_PASSTHROUGH   (1ULL << 37)
#define CASFS_FUSE_WRITEBACK     (1ULL << 16) /* FUSE_WRITEBACK_CACHE: excludes passthrough */
#define CASFS_FOPEN_NOFLUSH      (1U << 5)
#define CASFS_FOPEN_PASSTHROUGH  (1U << 7)
#define CASFS_FUSE_OPCODE_INIT   26
#define CASFS_FUSE_OVER_IO_URING (1ULL << 41) /* uring.c's */

/* fuse_init_out, 7.40: max_stack_depth took the first of 7.38's unused[7]. */
struct casfs_init_out {
    uint32_t major;
    uint32_t minor;
    uint32_t max_readahead;
    uint32_t flags;
    uint16_t max_background;
    uint16_t congestion_threshold;
    uint32_t max_write;
    uint32_t time_gran;
    uint16_t max_pages;
    uint16_t map_alignment;
    uint32_t flags2;
    uint32_t max_stack_depth;
    uint32_t unused[6];
};

/* fuse_open_out, 7.40: backing_id took 7.38's padding. */
struct casfs_open_out {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;
};

/* struct fuse_backing_map and the /dev/fuse ioctls (7.40). */
struct casfs_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define CASFS_DEV_IOC_MAGIC         229
#define CASFS_DEV_IOC_BACKING_OPEN  _IOW(CASFS_DEV_IOC_MAGIC, 1, struct casfs_backing_map)
#define CASFS_DEV_IOC_BACKING_CLOSE _IOW(CASFS_DEV_IOC_MAGIC, 2, uint32_t)

_Static_assert(sizeof(struct casfs_init_out) == sizeof(struct fuse_init_out),
               "fuse_init_out layout");
_Static_assert(sizeof(struct casfs_open_out) == sizeof(struct fuse_open_out),
               "fuse_open_out layout");
_Static_assert(sizeof(struct casfs_backing_map) == 16, "fuse_backing_map layout");

/* Replies patched here are small: INIT (16 + 64) and OPEN (16 + 16). */
#define CASFS_PT_REPLY_MAX 256

/* --- the session's I/O --- */

/* Notes the INIT request: what the kernel offers, and which reply to patch. */
static void casfs_pt_note_init(struct casfs *fs, const void *buf, size_t len)
{
    const struct fuse_in_header *in = buf;
    const struct fuse_init_in *init = (const void *)(in + 1);
    uint64_t flags;

    if (len < sizeof(*in) + offsetof(struct fuse_init_in, flags2) ||
        in->opcode != CASFS_FUSE_OPCODE_INIT)
        return;
    atomic_store(&fs->pt.init_seen, true);
    flags = init->flags;
    if ((flags & CASFS_FUSE_INIT_EXT) && len >= sizeof(*in) + offsetof(struct fuse_init_in, unused))
        flags |= (uint64_t)init->flags2 << 32;
    fs->pt.kernel_flags = flags;
    fs->uring.offered = (flags & CASFS_FUSE_OVER_IO_URING) != 0;
    if (!(fs->pt.wanted && (flags & CASFS_FUSE_PASSTHROUGH)) &&
        !(fs->uring.wanted && fs->uring.offered))
        return;
    fs->pt.init_unique = in->unique;
    fs->pt.init_pending = true;
    atomic_fetch_add(&fs->pt.npatch, 1);
}

static ssize_t casfs_io_read(int fd, void *buf, size_t len, void *userdata)
{
    struct casfs *fs = userdata;
    ssize_t n = read(fd, buf, len);

    if (n > 0 && !atomic_load_explicit(&fs->pt.init_seen, memory_order_relaxed))
        casfs_pt_note_init(fs, buf, (size_t)n);
    return n;
}

/* Copies the iovecs into buf; false when they do not fit. */
static bool casfs_iov_gather(const struct iovec *iov, int count, uint8_t *buf, size_t *len)
{
    size_t used = 0;

    for (int i = 0; i < count; i++) {
        if (iov[i].iov_len > CASFS_PT_REPLY_MAX - used)
            return false;
        memcpy(buf + used, iov[i].iov_base, iov[i].iov_len);
        used += iov[i].iov_len;
    }
    *len = used;
    return true;
}

/* Accepts FUSE_PASSTHROUGH and FUSE_OVER_IO_URING (uring.c) in libfuse's
 * INIT reply, each when wanted and offered. */
static void casfs_pt_patch_init(struct casfs *fs, uint8_t *buf, size_t len)
{
    const struct fuse_out_header *out = (const void *)buf;
    struct casfs_init_out init;

    if (out->error != 0 || len < sizeof(*out) + offsetof(struct casfs_init_out, unused))
        return;
    memcpy(&init, buf + sizeof(*out), offsetof(struct casfs_init_out, unused));
    if (fs->pt.wanted && (fs->pt.kernel_flags & CASFS_FUSE_PASSTHROUGH) &&
        !(init.flags & CASFS_FUSE_WRITEBACK)) {
        init.flags |= CASFS_FUSE_INIT_EXT;
        init.flags2 |= (uint32_t)(CASFS_FUSE_PASSTHROUGH >> 32);
        init.max_stack_depth = 1;
        fs->pt.offered = true;
    }
    if (casfs_uring_accept(fs, fs->pt.kernel_flags, init.max_write, init.max_pages)) {
        init.flags |= CASFS_FUSE_INIT_EXT;
        init.flags2 |= (uint32_t)(CASFS_FUSE_OVER_IO_URING >> 32);
    }
    memcpy(buf + sizeof(*out), &init, offsetof(struct casfs_init_out, unused));
}

/* Where every reply and notification goes: into a ring entry when it
 * answers a request a ring thread serves, else to /dev/fuse. */
static ssize_t casfs_io_send(struct casfs *fs, int fd, const struct iovec *iov, int count)
{
    ssize_t n = casfs_uring_capture(fs, iov, count);

    if (n != -ENOENT) {
        if (n >= 0)
            return n;
        errno = (int)-n;
        return -1;
    }
    return writev(fd, iov, count);
}

/* The pending OPEN reply of this thread, unlinked; NULL when none. */
static struct casfs_pt_pending *casfs_pt_take_pending(struct casfs *fs)
{
    struct casfs_pt_pending **p, *found = NULL;
    pthread_t self = pthread_self();

    pthread_mutex_lock(&fs->pt.lock);
    for (p = &fs->pt.pending; *p != NULL; p = &(*p)->next) {
        if (pthread_equal((*p)->thread, self)) {
            found = *p;
            *p = found->next;
            atomic_fetch_sub(&fs->pt.npatch, 1);
            break;
        }
    }
    pthread_mutex_unlock(&fs->pt.lock);
    return found;
}

/* Sets FOPEN_PASSTHROUGH and the backing id in an OPEN reply. */
static void casfs_pt_patch_open(struct casfs_pt_pending *pend, uint8_t *buf, size_t len)
{
    const struct fuse_out_header *out = (const void *)buf;
    struct casfs_open_out open_out;

    if (out->error != 0 || len != sizeof(*out) + sizeof(open_out))
        return;
    memcpy(&open_out, buf + sizeof(*out), sizeof(open_out));
    /* Only these may go with FOPEN_PASSTHROUGH (fs/fuse/iomode.c). */
    open_out.open_flags = (open_out.open_flags & CASFS_FOPEN_NOFLUSH) | CASFS_FOPEN_PASSTHROUGH;
    open_out.backing_id = pend->backing_id;
    memcpy(buf + sizeof(*out), &open_out, sizeof(open_out));
    pend->patched = true;
}

static ssize_t casfs_io_writev_patch(struct casfs *fs, int fd, struct iovec *iov, int count)
{
    _Alignas(uint64_t) uint8_t buf[CASFS_PT_REPLY_MAX];
    const struct fuse_out_header *out = (const void *)buf;
    struct casfs_pt_pending *pend;
    struct iovec one;
    bool init = false;
    size_t len;
    ssize_t n;

    if (!casfs_iov_gather(iov, count, buf, &len) || len < sizeof(*out))
        return casfs_io_send(fs, fd, iov, count);
    if (fs->pt.init_pending && out->unique == fs->pt.init_unique) {
        fs->pt.init_pending = false;
        atomic_fetch_sub(&fs->pt.npatch, 1);
        casfs_pt_patch_init(fs, buf, len);
        init = true;
    } else if ((pend = casfs_pt_take_pending(fs)) != NULL) {
        casfs_pt_patch_open(pend, buf, len);
    } else {
        return casfs_io_send(fs, fd, iov, count);
    }
    one.iov_base = buf;
    one.iov_len = len;
    n = init ? writev(fd, &one, 1) : casfs_io_send(fs, fd, &one, 1);
    /* The kernel has taken the INIT reply: the rings may register now. */
    if (init)
        casfs_uring_init_written(fs, n == (ssize_t)len);
    return n;
}

static ssize_t casfs_io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    struct casfs *fs = userdata;

    if (atomic_load_explicit(&fs->pt.npatch, memory_order_acquire) == 0)
        return casfs_io_send(fs, fd, iov, count);
    return casfs_io_writev_patch(fs, fd, iov, count);
}

static const struct fuse_custom_io casfs_io = {
    .writev = casfs_io_writev,
    .read = casfs_io_read,
};

/* Whether this process has CAP_SYS_ADMIN in the initial user namespace,
 * which FUSE_DEV_IOC_BACKING_OPEN requires: without it the INIT reply is
 * left alone (the mount keeps stack depth 0, as without passthrough). */
static bool casfs_pt_privileged(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    char map[128] = "";
    unsigned long inside, outside, count;
    FILE *f;

    if (syscall(SYS_capget, &hdr, data) != 0 || !(data[0].effective & (1U << CAP_SYS_ADMIN)))
        return false;
    f = fopen("/proc/self/uid_map", "re");
    if (f == NULL)
        return false;
    if (fgets(map, sizeof(map), f) == NULL)
        map[0] = '\0';
    fclose(f);
    /* The initial namespace maps every uid to itself. */
    return sscanf(map, "%lu %lu %lu", &inside, &outside, &count) == 3 && inside == 0 &&
           outside == 0 && count == 4294967295UL;
}

int casfs_pt_init(struct casfs *fs, bool wanted)
{
    memset(&fs->pt, 0, sizeof(fs->pt));
    fs->pt.dev_fd = -1;
    pthread_mutex_init(&fs->pt.lock, NULL);
    if (!wanted) {
        snprintf(fs->pt.why, sizeof(fs->pt.why), "execution.fuse_passthrough = off");
    } else if (!casfs_pt_privileged()) {
        snprintf(fs->pt.why, sizeof(fs->pt.why),
                 "casboxd lacks CAP_SYS_ADMIN in the initial user namespace, which backing "
                 "files need");
    } else {
        fs->pt.wanted = true;
        snprintf(fs->pt.why, sizeof(fs->pt.why), "not probed");
    }
    return 0;
}

void casfs_pt_destroy(struct casfs *fs)
{
    pthread_mutex_destroy(&fs->pt.lock);
}

int casfs_pt_attach(struct casfs *fs)
{
    int fd = fuse_session_fd(fs->se);

    if (fd < 0)
        return -EBADF;
    fs->pt.dev_fd = fd;
    /* Takes over the fd libfuse mounted with; the session still closes it. */
    return fuse_session_custom_io(fs->se, &casfs_io, fd) == 0 ? 0 : -EINVAL;
}

/* --- backing files --- */

static int casfs_pt_backing_open(struct casfs *fs, int blob_fd)
{
    struct casfs_backing_map map = {.fd = blob_fd};
    int id = ioctl(fs->pt.dev_fd, CASFS_DEV_IOC_BACKING_OPEN, &map);

    return id < 0 ? -errno : id;
}

static void casfs_pt_backing_close(struct casfs *fs, int32_t id)
{
    uint32_t arg = (uint32_t)id;

    if (ioctl(fs->pt.dev_fd, CASFS_DEV_IOC_BACKING_CLOSE, &arg) < 0)
        casfs_log(fs, "casfs: closing passthrough backing file %d: %s", id, strerror(errno));
}

/* A file on the CAS's filesystem for the probe: what blobs will be. */
static int casfs_pt_probe_file(struct casfs *fs)
{
    const char *dir = cas_store_tmp_dir(fs->cas);
    int fd = -1;

    if (dir != NULL)
        fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        fd = memfd_create("casfs-probe", MFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void casfs_pt_probe(struct casfs *fs)
{
    int fd, id;

    if (!fs->pt.wanted) {
        /* why says it already */
    } else if (!(fs->pt.kernel_flags & CASFS_FUSE_PASSTHROUGH)) {
        snprintf(fs->pt.why, sizeof(fs->pt.why),
                 "the kernel does not offer it (Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)");
    } else if (!fs->pt.offered) {
        snprintf(fs->pt.why, sizeof(fs->pt.why), "the INIT reply could not take it");
    } else if ((fd = casfs_pt_probe_file(fs)) < 0) {
        snprintf(fs->pt.why, sizeof(fs->pt.why), "no file to probe it with: %s", strerror(-fd));
    } else {
        id = casfs_pt_backing_open(fs, fd);
        close(fd);
        if (id > 0) {
            casfs_pt_backing_close(fs, id);
            atomic_store(&fs->pt.active, true);
        } else {
            snprintf(fs->pt.why, sizeof(fs->pt.why), "backing files refused: %s%s",
                     strerror(id < 0 ? -id : EIO),
                     id == -ELOOP   ? " (the CAS is on a stacked filesystem such as overlayfs)"
                     : id == -EPERM ? " (needs CAP_SYS_ADMIN in the initial user namespace)"
                                    : "");
        }
    }
    if (atomic_load(&fs->pt.active))
        casfs_log(fs, "casfs: FUSE passthrough on: opened inputs are read straight from the CAS "
                      "blob files");
    else
        casfs_log(fs, "casfs: FUSE passthrough off (%s): casboxd serves the reads", fs->pt.why);
}

bool casfs_passthrough_active(const struct casfs *fs)
{
    return atomic_load(&fs->pt.active);
}

/* After a failure that every blob would hit: the read path from now on. */
static void casfs_pt_disable(struct casfs *fs, int err)
{
    if (!atomic_exchange(&fs->pt.active, false))
        return;
    casfs_log(fs, "casfs: FUSE passthrough off from now on (backing file refused: %s)",
              strerror(-err));
}

int casfs_pt_backing_get(struct casfs *fs, struct casfs_inode *inode, int *blob_fd,
                         int32_t *backing_id)
{
    int rc = 0, fd = -1, id;

    pthread_mutex_lock(&fs->pt.lock);
    if (inode->backing_opens > 0)
        goto take;
    if (!atomic_load(&fs->pt.active) || inode->no_passthrough) {
        rc = -EOPNOTSUPP;
        goto out;
    }
    if (*blob_fd < 0) {
        rc = -EAGAIN; /* open the blob, then call again */
        goto out;
    }
    id = casfs_pt_backing_open(fs, *blob_fd);
    if (id <= 0) {
        rc = id < 0 ? id : -EIO;
        if (rc == -EPERM || rc == -ELOOP || rc == -EOPNOTSUPP || rc == -EINVAL)
            casfs_pt_disable(fs, rc);
        else
            inode->no_passthrough = true;
        rc = -EOPNOTSUPP;
        goto out;
    }
    inode->backing_id = id;
take:
    inode->backing_opens++;
    *backing_id = inode->backing_id;
    fd = *blob_fd; /* the backing file holds its own reference */
    *blob_fd = -1;
out:
    pthread_mutex_unlock(&fs->pt.lock);
    if (fd >= 0)
        close(fd);
    return rc;
}

void casfs_pt_backing_put(struct casfs *fs, struct casfs_inode *inode)
{
    int32_t id = 0;

    pthread_mutex_lock(&fs->pt.lock);
    if (inode->backing_opens > 0 && --inode->backing_opens == 0) {
        id = inode->backing_id;
        inode->backing_id = 0;
    }
    /* Closed under the lock: a new open of this inode must not register a
     * second backing file while the kernel may still hold this one. */
    if (id > 0)
        casfs_pt_backing_close(fs, id);
    pthread_mutex_unlock(&fs->pt.lock);
}

int casfs_pt_reply_open(struct casfs *fs, fuse_req_t req, struct fuse_file_info *fi,
                        int32_t backing_id)
{
    struct casfs_pt_pending pend = {.thread = pthread_self(), .backing_id = backing_id};
    struct casfs_pt_pending **p;
    int rc;

    fi->keep_cache = 0; /* the page cache is the blob file's */
    fi->direct_io = 0;
    pthread_mutex_lock(&fs->pt.lock);
    pend.next = fs->pt.pending;
    fs->pt.pending = &pend;
    atomic_fetch_add(&fs->pt.npatch, 1);
    pthread_mutex_unlock(&fs->pt.lock);

    rc = fuse_reply_open(req, fi);

    /* Still listed when no reply was written (the request was gone). */
    pthread_mutex_lock(&fs->pt.lock);
    for (p = &fs->pt.pending; *p != NULL; p = &(*p)->next) {
        if (*p == &pend) {
            *p = pend.next;
            atomic_fetch_sub(&fs->pt.npatch, 1);
            break;
        }
    }
    pthread_mutex_unlock(&fs->pt.lock);
    if (rc == 0 && !pend.patched)
        casfs_log(fs, "casfs: an OPEN reply could not be marked for passthrough");
    return rc != 0 ? rc : 0;
}
