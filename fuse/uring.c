/*
 * uring.c - FUSE over io_uring (Linux >= 6.14, CONFIG_FUSE_IO_URING, the fuse
 * module's enable_uring on) beside libfuse 3.14, which predates it.
 *
 * Why: over /dev/fuse every request costs the server a read(2) and a
 * writev(2), and a thread wake-up each. Over io_uring a request arrives in a
 * buffer registered with the kernel and its reply goes back with the fetch of
 * the next one (FUSE_IO_URING_CMD_COMMIT_AND_FETCH): one io_uring_enter per
 * request, on the CPU that asked.
 *
 * How, on top of libfuse 3.14 (as passthrough.c does for passthrough):
 *  - passthrough.c's read hook sees the kernel's INIT offering
 *    FUSE_OVER_IO_URING, and its writev hook accepts it in libfuse's INIT
 *    reply (casfs_uring_accept) once the rings, buffers and threads here are
 *    ready; right after that reply is written (the kernel then knows the
 *    payload size), each thread registers its buffers (CMD_REGISTER).
 *  - The kernel needs a queue per possible CPU before it routes requests
 *    to the rings (until then they still come through /dev/fuse). Each queue
 *    gets threads, each with its own ring and one registered entry: a
 *    request lands in a thread's buffer (header, the op's struct, payload).
 *  - The thread rebuilds the /dev/fuse form of the request (header, op
 *    struct, payload back to back) and hands it to libfuse
 *    (fuse_session_process_buf), so ops.c's operations serve both paths.
 *    The operation's one reply comes to the writev hook, which copies it into
 *    the entry (casfs_uring_capture) instead of writing /dev/fuse; the thread
 *    then commits it and fetches the next request. A request that got no
 *    reply is answered EIO (each request is answered exactly once).
 *  - FORGET, INTERRUPT and notifications stay on /dev/fuse (the kernel sends
 *    them there), so libfuse's loop keeps running.
 *  - If registering fails, the kernel itself drops back to /dev/fuse for the
 *    connection (fc->io_uring = 0), so nothing waits on a ring that is not
 *    there.
 *  - Unmount: the connection's end completes every fetch with -ENOTCONN; an
 *    eventfd polled by every ring stops the threads when the connection is
 *    still alive (a busy, lazily detached mount). The threads are joined
 *    before the rings are freed.
 *
 * The kernel ABI (include/uapi/linux/fuse.h, protocol 7.42) is defined here:
 * Debian 12's header is 7.38.
 */
#include "casfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* --- kernel ABI, include/uapi/linux/fuse.h (7.42) --- */

#define CASFS_FUSE_OVER_IO_URING (1ULL << 41)
#define CASFS_URING_CMD_REGISTER 1
#define CASFS_URING_CMD_COMMIT   2 /* FUSE_IO_URING_CMD_COMMIT_AND_FETCH */
#define CASFS_URING_HDR_SZ       128
#define CASFS_URING_OP_SZ        128
#define CASFS_FUSE_MIN_READ_BUF  8192

struct casfs_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id; /* the request's unique, to commit with */
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};

struct casfs_uring_req_header {
    uint8_t in_out[CASFS_URING_HDR_SZ]; /* fuse_in_header / fuse_out_header */
    uint8_t op_in[CASFS_URING_OP_SZ];   /* the op's first argument */
    struct casfs_uring_ent_in_out ent_in_out;
};

/* In the SQE's command area (an SQE128 ring). */
struct casfs_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

_Static_assert(sizeof(struct casfs_uring_req_header) == 288, "fuse_uring_req_header layout");
_Static_assert(sizeof(struct casfs_uring_cmd_req) == 24, "fuse_uring_cmd_req layout");

#define CASFS_URING_TAG_CMD  1
#define CASFS_URING_TAG_STOP 2

/* --- setup, before the mount --- */

static void casfs_uring_release(struct casfs_uring *u);

static const char *casfs_uring_param = "/sys/module/fuse/parameters/enable_uring";

/* Whether the fuse module has io_uring support and it is on; why not in buf. */
static bool casfs_uring_enabled(char *why, size_t len)
{
    char c = 0;
    int fd = open(casfs_uring_param, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(why, len, "the kernel lacks it (no %s: Linux >= 6.14 with CONFIG_FUSE_IO_URING)",
                 casfs_uring_param);
        return false;
    }
    if (read(fd, &c, 1) != 1)
        c = 0;
    close(fd);
    if (c != 'Y' && c != '1') {
        snprintf(why, len, "%s is off (root may write 1 to it)", casfs_uring_param);
        return false;
    }
    return true;
}

/* The kernel's queue count: num_possible_cpus(), the CPUs in
 * /sys/devices/system/cpu/possible ("0-1", "0-3,6"). A wrong count would
 * leave the rings never ready, so the kernel's own list is read. */
static int casfs_uring_possible_cpus(void)
{
    char buf[256], *p = buf;
    int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC), n = 0;
    ssize_t len;

    if (fd < 0)
        return -errno;
    len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len <= 0)
        return -EIO;
    buf[len] = '\0';
    while (*p != '\0' && *p != '\n') {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;

        if (end == p || lo < 0)
            return -EIO;
        if (*end == '-') {
            p = end + 1;
            hi = strtol(p, &end, 10);
            if (end == p || hi < lo)
                return -EIO;
        }
        n += (int)(hi - lo + 1);
        p = *end == ',' ? end + 1 : end;
    }
    return n > 0 ? n : -EIO;
}

int casfs_uring_parse(const char *s, enum casfs_uring_mode *out)
{
    if (strcmp(s, "auto") == 0)
        *out = CASFS_URING_AUTO;
    else if (strcmp(s, "on") == 0)
        *out = CASFS_URING_ON;
    else if (strcmp(s, "off") == 0)
        *out = CASFS_URING_OFF;
    else
        return -EINVAL;
    return 0;
}

int casfs_uring_init(struct casfs *fs, enum casfs_uring_mode mode)
{
    struct casfs_uring *u = &fs->uring;
    unsigned per_queue;
    int rc = 0;

    memset(u, 0, sizeof(*u));
    u->mode = mode;
    u->stop_fd = -1;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    if (mode == CASFS_URING_OFF) {
        snprintf(u->why, sizeof(u->why), "execution.fuse_uring = off");
        return 0;
    }
    if (!casfs_uring_enabled(u->why, sizeof(u->why)))
        return mode == CASFS_URING_ON ? -EOPNOTSUPP : 0;
    /* The kernel makes a queue per possible CPU and routes requests to
     * the rings only once every queue has an entry. */
    rc = casfs_uring_possible_cpus();
    if (rc < 0) {
        snprintf(u->why, sizeof(u->why), "reading /sys/devices/system/cpu/possible: %s",
                 strerror(-rc));
        goto out;
    }
    u->nqueues = (unsigned)rc;
    rc = 0;
    per_queue = fs->threads / u->nqueues;
    if (per_queue == 0)
        per_queue = 1;
    u->nents = u->nqueues * per_queue;
    u->ents = calloc(u->nents, sizeof(*u->ents));
    u->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (u->ents == NULL || u->stop_fd < 0) {
        rc = u->ents == NULL ? -ENOMEM : -errno;
        snprintf(u->why, sizeof(u->why), "setting up: %s", strerror(-rc));
        goto out;
    }
    for (size_t i = 0; i < u->nents; i++) {
        struct casfs_uring_ent *e = &u->ents[i];

        e->fs = fs;
        e->qid = (uint16_t)(i % u->nqueues);
        e->hdr = NULL;
        rc = io_uring_queue_init(4, &e->ring, IORING_SETUP_SQE128);
        if (rc != 0) {
            snprintf(u->why, sizeof(u->why), "io_uring_setup refused: %s", strerror(-rc));
            goto out;
        }
        e->ring_ok = true;
    }
    u->wanted = true;
    return 0;
out:
    casfs_uring_release(u);
    return mode == CASFS_URING_ON ? rc : 0;
}

/* --- INIT: accept, then register --- */

static void *casfs_uring_thread(void *arg);

bool casfs_uring_accept(struct casfs *fs, uint64_t kernel_flags, uint32_t max_write,
                        uint16_t max_pages)
{
    struct casfs_uring *u = &fs->uring;
    size_t payload = CASFS_FUSE_MIN_READ_BUF;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t i;

    if (!u->wanted)
        return false;
    if (!(kernel_flags & CASFS_FUSE_OVER_IO_URING)) {
        snprintf(u->why, sizeof(u->why), "the kernel did not offer it in INIT");
        return false;
    }
    if (max_write > payload)
        payload = max_write;
    if ((size_t)max_pages * page > payload)
        payload = (size_t)max_pages * page;
    u->payload_size = payload;
    for (i = 0; i < u->nents; i++) {
        struct casfs_uring_ent *e = &u->ents[i];

        e->hdr = calloc(1, sizeof(*e->hdr));
        e->payload =
            mmap(NULL, payload, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        /* The request rebuilt for libfuse: header, op struct, payload. */
        e->req_size = sizeof(struct fuse_in_header) + CASFS_URING_OP_SZ + payload;
        e->req = malloc(e->req_size);
        if (e->payload == MAP_FAILED)
            e->payload = NULL;
        if (e->hdr == NULL || e->payload == NULL || e->req == NULL)
            break;
        if (pthread_create(&e->thread, NULL, casfs_uring_thread, e) != 0)
            break;
        e->started = true;
    }
    if (i < u->nents) {
        snprintf(u->why, sizeof(u->why), "no memory or thread for the ring entries");
        /* The threads started wait for go, then see stop. */
        pthread_mutex_lock(&u->lock);
        u->stopping = true;
        u->go = true;
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
        return false;
    }
    atomic_store(&u->accepted, true);
    return true;
}

void casfs_uring_init_written(struct casfs *fs, bool ok)
{
    struct casfs_uring *u = &fs->uring;

    if (!atomic_load(&u->accepted))
        return;
    pthread_mutex_lock(&u->lock);
    if (!ok) {
        u->stopping = true;
        snprintf(u->why, sizeof(u->why), "the INIT reply could not be written");
    }
    u->go = true;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
}

/* --- the request threads --- */

static struct io_uring_sqe *casfs_uring_sqe(struct casfs_uring_ent *e, uint32_t op,
                                            uint64_t commit_id)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
    struct casfs_uring_cmd_req cmd = {.commit_id = commit_id, .qid = e->qid};

    if (sqe == NULL)
        return NULL;
    memset(sqe, 0, 2 * sizeof(*sqe)); /* SQE128: the command area follows */
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = e->fs->pt.dev_fd;
    sqe->cmd_op = op;
    sqe->addr = (uint64_t)(uintptr_t)e->iov;
    sqe->len = 2;
    sqe->user_data = CASFS_URING_TAG_CMD;
    memcpy(sqe->cmd, &cmd, sizeof(cmd));
    return sqe;
}

/* Registers the entry and arms the stop poll; 0 or a negative errno. */
static int casfs_uring_register(struct casfs_uring_ent *e)
{
    struct casfs_uring *u = &e->fs->uring;
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    int rc;

    e->iov[0].iov_base = e->hdr;
    e->iov[0].iov_len = sizeof(*e->hdr);
    e->iov[1].iov_base = e->payload;
    e->iov[1].iov_len = u->payload_size;
    if (casfs_uring_sqe(e, CASFS_URING_CMD_REGISTER, 0) == NULL)
        return -EBUSY;
    sqe = io_uring_get_sqe(&e->ring);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_poll_add(sqe, u->stop_fd, POLLIN);
    sqe->user_data = CASFS_URING_TAG_STOP;
    rc = io_uring_submit(&e->ring);
    if (rc < 0)
        return rc;
    /* A refused registration completes at once with an error; an accepted
     * one when a request comes, which may already have happened (then the
     * request is left for the loop). */
    if (io_uring_peek_cqe(&e->ring, &cqe) == 0 && cqe->user_data == CASFS_URING_TAG_CMD &&
        cqe->res < 0) {
        rc = cqe->res;
        io_uring_cqe_seen(&e->ring, cqe);
        return rc;
    }
    return 0;
}

/* Hands the request in the entry to libfuse; its reply comes back through
 * casfs_uring_capture. */
static void casfs_uring_serve(struct casfs_uring_ent *e)
{
    struct casfs *fs = e->fs;
    const struct fuse_in_header *in = (const void *)e->hdr->in_out;
    size_t payload = e->hdr->ent_in_out.payload_sz, op_len;
    struct fuse_buf buf = {0};

    e->replied = false;
    op_len = in->len - sizeof(*in) - payload;
    if (in->len < sizeof(*in) + payload || op_len > CASFS_URING_OP_SZ ||
        payload > fs->uring.payload_size) {
        casfs_log(fs, "casfs: io_uring request %llu (opcode %u) has a bad length",
                  (unsigned long long)in->unique, in->opcode);
        return;
    }
    memcpy(e->req, in, sizeof(*in));
    memcpy(e->req + sizeof(*in), e->hdr->op_in, op_len);
    memcpy(e->req + sizeof(*in) + op_len, e->payload, payload);
    buf.mem = e->req;
    buf.size = in->len;
    atomic_store_explicit(&e->unique, in->unique, memory_order_relaxed);
    atomic_fetch_add_explicit(&fs->uring.requests, 1, memory_order_relaxed);
    fuse_session_process_buf(fs->se, &buf);
    atomic_store_explicit(&e->unique, 0, memory_order_relaxed);
}

static void *casfs_uring_thread(void *arg)
{
    struct casfs_uring_ent *e = arg;
    struct casfs_uring *u = &e->fs->uring;
    struct io_uring_cqe *cqe;
    cpu_set_t cpus;
    bool stop;
    int rc;

    pthread_mutex_lock(&u->lock);
    while (!u->go)
        pthread_cond_wait(&u->cond, &u->lock);
    stop = u->stopping;
    pthread_mutex_unlock(&u->lock);
    if (stop)
        return NULL;
    e->self = pthread_self();
    /* Queue q gets the requests of CPU q (the kernel's task_cpu): served on
     * that CPU, the asker's wake-up and ours need no other core. */
    CPU_ZERO(&cpus);
    CPU_SET(e->qid, &cpus);
    rc = pthread_setaffinity_np(e->self, sizeof(cpus), &cpus);
    if (rc != 0)
        casfs_log(e->fs, "casfs: io_uring queue %u: pinning its thread: %s", e->qid, strerror(rc));
    rc = casfs_uring_register(e);
    e->registered_ok = rc == 0;
    pthread_mutex_lock(&u->lock);
    if (rc == 0) {
        u->registered++;
    } else {
        u->failed++;
        if (u->first_error == 0)
            u->first_error = rc;
    }
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
    while (rc == 0) {
        uint64_t tag;
        int res;

        rc = io_uring_wait_cqe(&e->ring, &cqe);
        if (rc == -EINTR) {
            rc = 0;
            continue;
        }
        if (rc != 0)
            break;
        tag = cqe->user_data;
        res = cqe->res;
        io_uring_cqe_seen(&e->ring, cqe);
        if (tag == CASFS_URING_TAG_STOP)
            break;
        if (res < 0) {
            /* -ENOTCONN / -ECONNABORTED: the connection ended. */
            if (res != -ENOTCONN && res != -ECONNABORTED && res != -ECANCELED)
                casfs_log(e->fs, "casfs: io_uring fetch failed: %s", strerror(-res));
            break;
        }
        casfs_uring_serve(e);
        if (!e->replied) {
            /* No reply went out (a bad request, or libfuse dropped it):
             * answer it anyway, or the caller would wait forever. */
            struct fuse_out_header *out = (void *)e->hdr->in_out;

            out->len = sizeof(*out);
            out->error = -EIO;
            out->unique = e->hdr->ent_in_out.commit_id;
            e->hdr->ent_in_out.payload_sz = 0;
        }
        if (casfs_uring_sqe(e, CASFS_URING_CMD_COMMIT, e->hdr->ent_in_out.commit_id) == NULL) {
            rc = -EBUSY;
            break;
        }
        rc = io_uring_submit(&e->ring);
        rc = rc < 0 ? rc : 0;
    }
    /* A registration failure was counted above; anything else loses this
     * entry (its queue keeps its other entries): say so. */
    if (rc != 0 && e->registered_ok)
        casfs_log(e->fs, "casfs: io_uring queue %u: a ring thread stops: %s", e->qid,
                  strerror(-rc));
    return NULL;
}

/* The entry this thread is serving a request of, when out is its reply. */
static struct casfs_uring_ent *casfs_uring_current(struct casfs *fs, uint64_t unique)
{
    struct casfs_uring *u = &fs->uring;
    pthread_t self = pthread_self();

    for (size_t i = 0; i < u->nents; i++) {
        struct casfs_uring_ent *e = &u->ents[i];

        if (atomic_load_explicit(&e->unique, memory_order_relaxed) == unique &&
            pthread_equal(e->self, self))
            return e;
    }
    return NULL;
}

ssize_t casfs_uring_capture(struct casfs *fs, const struct iovec *iov, int count)
{
    struct casfs_uring_ent *e;
    const struct fuse_out_header *out;
    size_t total = 0, header = sizeof(struct fuse_out_header);
    uint8_t *dst;

    if (!atomic_load_explicit(&fs->uring.accepted, memory_order_relaxed) || count < 1 ||
        iov[0].iov_len < sizeof(*out))
        return -ENOENT;
    out = iov[0].iov_base;
    if (out->unique == 0 || (e = casfs_uring_current(fs, out->unique)) == NULL)
        return -ENOENT;
    for (int i = 0; i < count; i++)
        total += iov[i].iov_len;
    if (total - header > fs->uring.payload_size) {
        struct fuse_out_header *h = (void *)e->hdr->in_out;

        h->len = sizeof(*h);
        h->error = -EIO;
        h->unique = out->unique;
        e->hdr->ent_in_out.payload_sz = 0;
        e->replied = true;
        return -EINVAL;
    }
    /* The out header to in_out, the rest to the payload buffer. */
    dst = e->hdr->in_out;
    for (int i = 0, done = 0; i < count; i++) {
        const uint8_t *src = iov[i].iov_base;
        size_t n = iov[i].iov_len;

        while (n > 0) {
            size_t take;

            if ((size_t)done < header) {
                take = header - (size_t)done < n ? header - (size_t)done : n;
                memcpy(dst + done, src, take);
            } else {
                take = n;
                memcpy((uint8_t *)e->payload + (done - (int)header), src, take);
            }
            src += take;
            n -= take;
            done += (int)take;
        }
    }
    e->hdr->ent_in_out.payload_sz = (uint32_t)(total - header);
    e->replied = true;
    return (ssize_t)total;
}

/* --- after INIT, and unmount --- */

void casfs_uring_probe(struct casfs *fs)
{
    struct casfs_uring *u = &fs->uring;

    if (atomic_load(&u->accepted)) {
        pthread_mutex_lock(&u->lock);
        while (u->go && !u->stopping && u->registered + u->failed < u->nents)
            pthread_cond_wait(&u->cond, &u->lock);
        if (u->failed == 0 && !u->stopping) {
            atomic_store(&u->active, true);
        } else if (u->failed > 0) {
            snprintf(u->why, sizeof(u->why), "registering the ring buffers failed: %s",
                     strerror(-u->first_error));
        }
        pthread_mutex_unlock(&u->lock);
    } else if (u->wanted && !u->offered) {
        snprintf(u->why, sizeof(u->why), "the kernel did not offer it in INIT");
    }
    if (atomic_load(&u->active))
        casfs_log(fs,
                  "casfs: FUSE over io_uring on: %u queues, %zu entries of %zu KiB: requests "
                  "come through rings, not /dev/fuse reads",
                  u->nqueues, u->nents, u->payload_size / 1024);
    else
        casfs_log(fs, "casfs: FUSE over io_uring off (%s): requests are read from /dev/fuse",
                  u->why);
}

bool casfs_uring_active(const struct casfs *fs)
{
    return atomic_load(&fs->uring.active);
}

void casfs_uring_stop(struct casfs *fs)
{
    struct casfs_uring *u = &fs->uring;
    uint64_t one = 1;

    pthread_mutex_lock(&u->lock);
    u->stopping = true;
    u->go = true;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
    if (u->stop_fd >= 0 && write(u->stop_fd, &one, sizeof(one)) != sizeof(one))
        casfs_log(fs, "casfs: stopping the io_uring threads: %s", strerror(errno));
    for (size_t i = 0; i < u->nents; i++) {
        if (u->ents[i].started)
            pthread_join(u->ents[i].thread, NULL);
        u->ents[i].started = false;
    }
}

/* Frees the entries' rings and buffers (threads stopped or never started). */
static void casfs_uring_release(struct casfs_uring *u)
{
    for (size_t i = 0; u->ents != NULL && i < u->nents; i++) {
        struct casfs_uring_ent *e = &u->ents[i];

        if (e->ring_ok)
            io_uring_queue_exit(&e->ring);
        if (e->payload != NULL)
            munmap(e->payload, u->payload_size);
        free(e->hdr);
        free(e->req);
    }
    free(u->ents);
    u->ents = NULL;
    u->nents = 0;
    if (u->stop_fd >= 0)
        close(u->stop_fd);
    u->stop_fd = -1;
    u->wanted = false;
}

void casfs_uring_destroy(struct casfs *fs)
{
    casfs_uring_stop(fs);
    casfs_uring_release(&fs->uring);
    pthread_cond_destroy(&fs->uring.cond);
    pthread_mutex_destroy(&fs->uring.lock);
}
