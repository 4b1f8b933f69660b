/*
 * ingest_uring.c - the io_uring path: the caller's thread keeps up to
 * queue_depth files in flight through one ring (statx, then openat, then
 * reads into registered page-aligned buffers), and the pool's threads hash
 * and commit what has been read, so reads overlap hashing.
 *
 * Files below 128 KiB are read in one small buffer (one read asks for one
 * byte more than the snapshot's size, which notices growth); larger files in
 * 256 KiB pieces, at most URING_READS_PER_FILE in flight each, from a pool
 * of up to URING_LARGE_BUFS buffers handed out in the order files were
 * started, so that started files finish first. Both pools are registered
 * with the ring (READ_FIXED) when the memlock limit allows, else read
 * plainly. The ring is sized to the run (queue_depth files at most) and
 * made again when a later run of the engine needs more.
 *
 * A file's pieces are hashed in order by one thread at a time: a slot is on
 * the hash queue at most once, and whoever hashes it takes every piece that
 * is ready in sequence. Hashers hand buffers and finished files back under
 * the ring's lock and wake the submitter, when it sleeps in the ring, through
 * an eventfd whose read is always armed in the ring.
 *
 * A file whose read fails or shows it changed is abandoned once its reads
 * have come back and no hasher holds it, then read again from its statx
 * (INGEST_TRIES in all) or failed.
 */
#include "ingest_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#define URING_SMALL_MAX      (128 * 1024) /* files below this: one small buffer */
#define URING_READS_PER_FILE 8            /* pieces in flight per file: 2 MiB */
#define URING_LARGE_BUFS     64           /* pieces in flight in all: 16 MiB */

enum uring_op { OP_WAKE = 1, OP_STATX, OP_OPEN, OP_READ, OP_CLOSE };

enum slot_state { SLOT_FREE, SLOT_STATX, SLOT_OPEN, SLOT_READ, SLOT_HASH };

struct uring_chunk {
    uint8_t *buf;
    uint64_t off;
    uint32_t len; /* bytes asked for */
    uint32_t got;
    uint32_t seq;
    bool used; /* holds a buffer */
    bool ready;
    bool large;
    int16_t index; /* in its pool */
};

struct uring_slot {
    /* the submitter's */
    size_t job;
    enum slot_state state;
    int attempt;
    bool reserved;
    struct statx stx;
    struct ingest_snap snap;
    uint64_t next_off;
    uint32_t next_seq;
    uint32_t inflight; /* reads submitted, not back */
    int error;         /* the submitter gave up on this attempt */
    /* under the ring's lock */
    struct uring_chunk ch[URING_READS_PER_FILE];
    uint32_t hash_seq;
    bool queued, busy, finished, abandoned;
    int result;
    int qnext;
    /* the hasher's, one at a time; fd also the submitter's until reads end */
    int fd;
    EVP_MD_CTX *ctx;
    struct cas_digest digest;
};

struct ingest_ring {
    struct io_uring ring;
    bool fixed; /* buffers registered */
    uint8_t *small_arena, *large_arena;
    unsigned n_small, n_large;
    int efd;
    uint64_t efd_value;
    bool efd_armed;
    unsigned closes; /* closes submitted, not back */
    struct uring_slot *slots;
    unsigned n_slots;
    int *active; /* slots in start order (the submitter's) */
    unsigned n_active;
    int *free_slots;
    unsigned n_free_slots;

    pthread_mutex_t lock;
    pthread_cond_t work;
    int *small_free, *large_free; /* stacks of buffer indices */
    unsigned small_top, large_top;
    int qhead, qtail; /* hash queue, through slot->qnext */
    int *done;        /* finished slots, for the submitter */
    unsigned n_done;
    uint64_t events;     /* buffers returned + slots finished */
    unsigned wake_batch; /* finished slots that are worth a wake-up */
    bool sub_waiting;
    bool finished; /* no more work: hashers leave */
};

static uint64_t slot_data(unsigned slot, unsigned chunk, enum uring_op op)
{
    return (uint64_t)slot << 8 | (uint64_t)chunk << 4 | (uint64_t)op;
}

static size_t slot_cap(const struct uring_slot *sl)
{
    return sl->snap.size < URING_SMALL_MAX ? URING_SMALL_MAX : INGEST_CHUNK;
}

/* --- set-up --- */

void ingest_uring_free(struct ingest_ring *r)
{
    if (r == NULL)
        return;
    if (r->ring.ring_fd > 0)
        io_uring_queue_exit(&r->ring);
    if (r->efd >= 0)
        close(r->efd);
    for (unsigned i = 0; r->slots != NULL && i < r->n_slots; i++)
        EVP_MD_CTX_free(r->slots[i].ctx);
    pthread_cond_destroy(&r->work);
    pthread_mutex_destroy(&r->lock);
    free(r->slots);
    free(r->active);
    free(r->free_slots);
    free(r->small_free);
    free(r->large_free);
    free(r->done);
    free(r->small_arena);
    free(r->large_arena);
    free(r);
}

/* Large-piece buffers for a ring of `slots` files: as many as the slots,
 * at least two files' worth of pieces, at most URING_LARGE_BUFS. */
static unsigned uring_large_bufs(unsigned slots)
{
    unsigned n = slots > 2 * URING_READS_PER_FILE ? slots : 2 * URING_READS_PER_FILE;

    return n < URING_LARGE_BUFS ? n : URING_LARGE_BUFS;
}

/* A ring for `slots` files in flight. Its buffers are pinned when
 * registered, which costs about 0.4 ms per MiB here, so it is sized to the
 * run: 8 files get 5 MiB, not the 24 MiB of a full queue depth. */
static int uring_new(unsigned slots, struct ingest_ring **out)
{
    struct io_uring_params p;
    struct ingest_ring *r;
    struct iovec iov[2];
    unsigned entries = 1;
    int rc;

    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->efd = -1;
    r->ring.ring_fd = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->work, NULL);
    r->n_slots = slots;
    r->wake_batch = r->n_slots / 4 > 0 ? r->n_slots / 4 : 1;
    r->n_small = slots;
    r->n_large = uring_large_bufs(slots);
    r->slots = calloc(r->n_slots, sizeof(*r->slots));
    r->active = calloc(r->n_slots, sizeof(int));
    r->free_slots = calloc(r->n_slots, sizeof(int));
    r->done = calloc(r->n_slots, sizeof(int));
    r->small_free = calloc(r->n_small, sizeof(int));
    r->large_free = calloc(r->n_large, sizeof(int));
    r->small_arena = aligned_alloc(INGEST_ALIGN, (size_t)r->n_small * URING_SMALL_MAX);
    r->large_arena = aligned_alloc(INGEST_ALIGN, (size_t)r->n_large * INGEST_CHUNK);
    if (r->slots == NULL || r->active == NULL || r->free_slots == NULL || r->done == NULL ||
        r->small_free == NULL || r->large_free == NULL || r->small_arena == NULL ||
        r->large_arena == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < r->n_slots; i++) {
        r->slots[i].ctx = EVP_MD_CTX_new();
        r->slots[i].fd = -1;
        if (r->slots[i].ctx == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    r->efd = eventfd(0, EFD_CLOEXEC);
    if (r->efd < 0) {
        rc = -errno;
        goto fail;
    }
    /* Enough entries for every slot's statx/open, every buffer's read and
     * the eventfd; completions beyond the CQ are kept by the kernel. */
    while (entries < r->n_slots + r->n_large + 1 && entries < 4096)
        entries <<= 1;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_COOP_TASKRUN;
    rc = io_uring_queue_init_params(entries, &r->ring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof(p));
        rc = io_uring_queue_init_params(entries, &r->ring, &p);
    }
    if (rc < 0) {
        r->ring.ring_fd = -1;
        goto fail;
    }
    iov[0].iov_base = r->small_arena;
    iov[0].iov_len = (size_t)r->n_small * URING_SMALL_MAX;
    iov[1].iov_base = r->large_arena;
    iov[1].iov_len = (size_t)r->n_large * INGEST_CHUNK;
    /* Pinning needs RLIMIT_MEMLOCK room; plain reads otherwise. */
    r->fixed = io_uring_register_buffers(&r->ring, iov, 2) == 0;
    *out = r;
    return 0;
fail:
    ingest_uring_free(r);
    return rc;
}

/* --- the submitter's side --- */

static struct io_uring_sqe *uring_sqe(struct ingest_ring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

    if (sqe == NULL) {
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
    }
    return sqe; /* never NULL: the ring was just emptied */
}

static void uring_arm_wake(struct ingest_ring *r)
{
    struct io_uring_sqe *sqe = uring_sqe(r);

    io_uring_prep_read(sqe, r->efd, &r->efd_value, sizeof(r->efd_value), 0);
    io_uring_sqe_set_data64(sqe, slot_data(0, 0, OP_WAKE));
    r->efd_armed = true;
}

static void uring_submit_statx(struct cas_ingest *ing, struct ingest_ring *r, unsigned si)
{
    struct uring_slot *sl = &r->slots[si];
    const struct cas_ingest_file *f = &ing->run->files[sl->job];
    struct io_uring_sqe *sqe = uring_sqe(r);

    sl->state = SLOT_STATX;
    io_uring_prep_statx(sqe, f->dir_fd, f->name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sl->stx);
    io_uring_sqe_set_data64(sqe, slot_data(si, 0, OP_STATX));
}

static void uring_submit_open(struct cas_ingest *ing, struct ingest_ring *r, unsigned si)
{
    struct uring_slot *sl = &r->slots[si];
    const struct cas_ingest_file *f = &ing->run->files[sl->job];
    struct io_uring_sqe *sqe = uring_sqe(r);

    sl->state = SLOT_OPEN;
    io_uring_prep_openat(sqe, f->dir_fd, f->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    io_uring_sqe_set_data64(sqe, slot_data(si, 0, OP_OPEN));
}

static void uring_submit_read(struct ingest_ring *r, unsigned si, unsigned ci)
{
    struct uring_slot *sl = &r->slots[si];
    struct uring_chunk *c = &sl->ch[ci];
    struct io_uring_sqe *sqe = uring_sqe(r);

    if (r->fixed)
        io_uring_prep_read_fixed(sqe, sl->fd, c->buf + c->got, c->len - c->got, c->off + c->got,
                                 c->large ? 1 : 0);
    else
        io_uring_prep_read(sqe, sl->fd, c->buf + c->got, c->len - c->got, c->off + c->got);
    io_uring_sqe_set_data64(sqe, slot_data(si, ci, OP_READ));
    sl->inflight++;
}

/* With the lock held: returns chunk c's buffer to its pool. */
static void uring_put_buffer(struct ingest_ring *r, struct uring_chunk *c)
{
    if (!c->used)
        return;
    if (c->large)
        r->large_free[r->large_top++] = c->index;
    else
        r->small_free[r->small_top++] = c->index;
    c->used = c->ready = false;
    c->buf = NULL;
}

/* With the lock held: queues slot si for hashing if its next piece is ready
 * and nobody has it. Returns true when a hasher should be woken. */
static bool uring_queue_if_ready(struct ingest_ring *r, unsigned si)
{
    struct uring_slot *sl = &r->slots[si];
    const struct uring_chunk *c = &sl->ch[sl->hash_seq % URING_READS_PER_FILE];

    if (sl->queued || sl->busy || sl->abandoned || !c->used || !c->ready || c->seq != sl->hash_seq)
        return false;
    sl->queued = true;
    sl->qnext = -1;
    if (r->qtail >= 0)
        r->slots[r->qtail].qnext = (int)si;
    else
        r->qhead = (int)si;
    r->qtail = (int)si;
    return true;
}

/* Submits the reads slot si may have: pieces in order while it has fewer
 * than URING_READS_PER_FILE out and buffers remain. With the lock held. */
static void uring_fill_reads(struct ingest_ring *r, unsigned si)
{
    struct uring_slot *sl = &r->slots[si];
    size_t cap = slot_cap(sl);

    while (sl->state == SLOT_READ && sl->error == 0 && sl->next_off < sl->snap.size) {
        struct uring_chunk *c = &sl->ch[sl->next_seq % URING_READS_PER_FILE];
        uint64_t left = sl->snap.size - sl->next_off;
        bool large = cap == INGEST_CHUNK;

        if (c->used)
            break; /* that piece is still being hashed */
        if (large ? r->large_top == 0 : r->small_top == 0)
            break;
        c->index = (int16_t)(large ? r->large_free[--r->large_top] : r->small_free[--r->small_top]);
        c->buf = large ? r->large_arena + (size_t)c->index * INGEST_CHUNK
                       : r->small_arena + (size_t)c->index * URING_SMALL_MAX;
        c->large = large;
        c->used = true;
        c->ready = false;
        c->off = sl->next_off;
        c->len = left < cap ? (uint32_t)left + 1 : (uint32_t)cap;
        c->got = 0;
        c->seq = sl->next_seq++;
        sl->next_off += c->len > left ? left : c->len;
        uring_submit_read(r, si, (unsigned)(c - sl->ch));
    }
}

static void uring_slot_reset(struct uring_slot *sl)
{
    sl->state = SLOT_FREE;
    sl->next_off = 0;
    sl->next_seq = 0;
    sl->inflight = 0;
    sl->error = 0;
    sl->hash_seq = 0;
    sl->queued = sl->busy = sl->finished = sl->abandoned = false;
    sl->result = 0;
    sl->fd = -1;
}

static void uring_start(struct cas_ingest *ing, struct ingest_ring *r, size_t job)
{
    unsigned si = (unsigned)r->free_slots[--r->n_free_slots];
    struct uring_slot *sl = &r->slots[si];

    uring_slot_reset(sl);
    sl->job = job;
    sl->attempt = 1;
    sl->reserved = false;
    r->active[r->n_active++] = (int)si;
    uring_submit_statx(ing, r, si);
}

/* The end of one attempt at slot si (no reads out, no hasher on it): the
 * file is done, or read again, or failed. */
static void uring_end_attempt(struct cas_ingest *ing, struct ingest_ring *r, unsigned si, int rc)
{
    struct uring_slot *sl = &r->slots[si];
    struct cas_ingest_file *f = &ing->run->files[sl->job];
    struct ingest_counts *counts = &ing->workers[0].counts;

    pthread_mutex_lock(&r->lock);
    for (unsigned i = 0; i < URING_READS_PER_FILE; i++)
        uring_put_buffer(r, &sl->ch[i]);
    pthread_mutex_unlock(&r->lock);
    if (sl->fd >= 0) {
        struct io_uring_sqe *sqe = uring_sqe(r);

        io_uring_prep_close(sqe, sl->fd);
        io_uring_sqe_set_data64(sqe, slot_data(si, 0, OP_CLOSE));
        r->closes++;
        sl->fd = -1;
    }
    if (rc != 0 && sl->reserved) {
        ingest_release(ing, sl->snap.size);
        sl->reserved = false;
    }
    if (rc == -ESTALE && sl->attempt < INGEST_TRIES && !atomic_load(&ing->run->stop)) {
        int attempt = sl->attempt + 1;

        counts->retries++;
        uring_slot_reset(sl);
        sl->attempt = attempt;
        uring_submit_statx(ing, r, si);
        return;
    }
    f->error = rc;
    if (rc == 0) {
        f->digest = sl->digest;
        counts->files++;
        counts->bytes += sl->snap.size;
    }
    uring_slot_reset(sl);
    r->free_slots[r->n_free_slots++] = (int)si;
}

static void uring_on_statx(struct cas_ingest *ing, struct ingest_ring *r, unsigned si, int res)
{
    struct uring_slot *sl = &r->slots[si];
    struct cas_ingest_file *f = &ing->run->files[sl->job];
    int rc = res;

    if (rc == 0)
        rc = ingest_snap_from_statx(&sl->stx, &sl->snap, f);
    if (rc == 0) {
        rc = ingest_reserve(ing, sl->snap.size);
        sl->reserved = rc == 0;
    }
    if (rc == 0 && sl->snap.size == 0) {
        sl->digest = *cas_digest_empty();
        rc = ingest_commit(ing, &ing->workers[0], f, -1, &sl->snap, &sl->digest, NULL);
        uring_end_attempt(ing, r, si, rc);
        return;
    }
    if (rc < 0) {
        uring_end_attempt(ing, r, si, rc);
        return;
    }
    uring_submit_open(ing, r, si);
}

static void uring_on_open(struct cas_ingest *ing, struct ingest_ring *r, unsigned si, int res)
{
    struct uring_slot *sl = &r->slots[si];

    if (res < 0) {
        uring_end_attempt(ing, r, si, res == -ENOENT ? -ESTALE : res);
        return;
    }
    sl->fd = res;
    sl->state = SLOT_READ;
}

/* Returns true when a hasher should be woken. */
static bool uring_on_read(struct ingest_ring *r, unsigned si, unsigned ci, int res)
{
    struct uring_slot *sl = &r->slots[si];
    struct uring_chunk *c = &sl->ch[ci];
    bool wake = false;
    uint64_t end;

    sl->inflight--;
    if (sl->error != 0)
        return false;
    if (res == -EINTR || res == -EAGAIN) {
        uring_submit_read(r, si, ci);
        return false;
    }
    if (res < 0) {
        sl->error = res;
        return false;
    }
    c->got += (uint32_t)res;
    end = c->off + c->got;
    if (end > sl->snap.size || (res == 0 && end < sl->snap.size)) {
        sl->error = -ESTALE; /* grew or shrank */
        return false;
    }
    if (c->got < c->len && end < sl->snap.size) {
        uring_submit_read(r, si, ci); /* a short read: the rest */
        return false;
    }
    pthread_mutex_lock(&r->lock);
    c->ready = true;
    wake = uring_queue_if_ready(r, si);
    pthread_mutex_unlock(&r->lock);
    return wake;
}

/* Slots given up on (a read failed or showed a change, or hashing failed),
 * once no read is out and no hasher holds them: end the attempt. Also drops
 * ended slots from the active list. */
static void uring_sweep(struct cas_ingest *ing, struct ingest_ring *r)
{
    unsigned kept = 0;

    for (unsigned i = 0; i < r->n_active; i++) {
        unsigned si = (unsigned)r->active[i];
        struct uring_slot *sl = &r->slots[si];

        if (sl->state == SLOT_READ && sl->inflight == 0) {
            bool end;
            int rc;

            pthread_mutex_lock(&r->lock);
            if (sl->error != 0)
                sl->abandoned = true;
            end = sl->abandoned && !sl->busy && !sl->queued && !sl->finished;
            rc = sl->error != 0 ? sl->error : sl->result;
            pthread_mutex_unlock(&r->lock);
            if (end)
                uring_end_attempt(ing, r, si, rc);
        }
        if (sl->state != SLOT_FREE)
            r->active[kept++] = (int)si;
    }
    r->n_active = kept;
}

static void uring_on_cqe(struct cas_ingest *ing, struct ingest_ring *r, uint64_t data, int res,
                         bool *wake_hashers)
{
    unsigned op = data & 0xf, ci = (data >> 4) & 0xf, si = (unsigned)(data >> 8);

    switch (op) {
    case OP_WAKE:
        r->efd_armed = false;
        break;
    case OP_STATX:
        uring_on_statx(ing, r, si, res);
        break;
    case OP_OPEN:
        uring_on_open(ing, r, si, res);
        break;
    case OP_READ:
        *wake_hashers |= uring_on_read(r, si, ci, res);
        break;
    case OP_CLOSE:
        r->closes--; /* nothing to do about a failed close of a read-only file */
        break;
    }
}

/* --- the hashers' side --- */

/* Hashes piece c of slot sl (and commits the file after its last piece),
 * without the lock. Returns the file's result when c was its last piece. */
static int uring_hash_piece(struct cas_ingest *ing, struct ingest_worker *w, struct uring_slot *sl,
                            struct uring_chunk *c, bool *last)
{
    struct cas_ingest_file *f = &ing->run->files[sl->job];
    int rc = 0;

    *last = c->off + c->got == sl->snap.size;
    if (c->seq == 0)
        rc = ingest_hash_begin(ing, sl->ctx);
    if (rc == 0)
        rc = ingest_hash_update(sl->ctx, c->buf, c->got);
    if (!*last)
        return rc;
    if (rc == 0)
        rc = ingest_hash_end(sl->ctx, sl->snap.size, &sl->digest);
    if (rc == 0)
        rc = ingest_commit(ing, w, f, sl->fd, &sl->snap, &sl->digest, c->seq == 0 ? c->buf : NULL);
    return rc; /* the submitter closes the file, through the ring */
}

static void uring_hash_job(void *arg, unsigned worker)
{
    struct cas_ingest *ing = arg;
    struct ingest_ring *r = ing->ring;
    struct ingest_worker *w = &ing->workers[worker];

    pthread_mutex_lock(&r->lock);
    for (;;) {
        struct uring_slot *sl;
        bool wake_sub = false;
        unsigned si;

        while (r->qhead < 0 && !r->finished)
            pthread_cond_wait(&r->work, &r->lock);
        if (r->qhead < 0)
            break;
        si = (unsigned)r->qhead;
        sl = &r->slots[si];
        r->qhead = sl->qnext;
        if (r->qhead < 0)
            r->qtail = -1;
        sl->queued = false;
        sl->busy = true;
        while (!sl->abandoned) {
            struct uring_chunk *c = &sl->ch[sl->hash_seq % URING_READS_PER_FILE];
            bool last;
            int rc;

            if (!c->used || !c->ready || c->seq != sl->hash_seq)
                break;
            pthread_mutex_unlock(&r->lock);
            rc = uring_hash_piece(ing, w, sl, c, &last);
            pthread_mutex_lock(&r->lock);
            wake_sub |= c->large; /* a file may be waiting for that buffer */
            uring_put_buffer(r, c);
            sl->hash_seq++;
            r->events++;
            if (last) {
                sl->finished = true;
                sl->result = rc;
                r->done[r->n_done++] = (int)si;
                break;
            }
            if (rc != 0) {
                /* Reads may still be out: the submitter ends it (sweep). */
                sl->result = rc;
                sl->abandoned = true;
            }
        }
        sl->busy = false;
        if (sl->abandoned) {
            r->events++;
            wake_sub = true; /* the submitter may end it now */
        } else if (!sl->finished && uring_queue_if_ready(r, si))
            pthread_cond_signal(&r->work);
        /* Waking the submitter costs two context switches: do it when the
         * hashers run out of work or a quarter of the slots are done, so
         * that it refills many slots per wake-up. */
        wake_sub |= r->qhead < 0 || r->n_done >= r->wake_batch;
        if (wake_sub && r->sub_waiting) {
            uint64_t one = 1;

            r->sub_waiting = false;
            if (write(r->efd, &one, sizeof(one)) < 0) {
                /* An eventfd write only fails on overflow: it is awake. */
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
}

/* Ends the attempts the hashers finished. */
static void uring_collect_done(struct cas_ingest *ing, struct ingest_ring *r, uint64_t *seen)
{
    int done[CAS_INGEST_MAX_QUEUE_DEPTH];
    unsigned n;

    pthread_mutex_lock(&r->lock);
    n = r->n_done;
    memcpy(done, r->done, n * sizeof(int));
    r->n_done = 0;
    *seen = r->events;
    pthread_mutex_unlock(&r->lock);
    for (unsigned i = 0; i < n; i++) {
        struct uring_slot *sl = &r->slots[done[i]];

        uring_end_attempt(ing, r, (unsigned)done[i], sl->result);
    }
}

int ingest_uring_run(struct cas_ingest *ing)
{
    struct ingest_run *run = ing->run;
    struct ingest_ring *r;
    unsigned workers = ing->threads;
    uint64_t seen = 0;
    size_t next = 0;
    unsigned want = run->n < ing->queue_depth ? (unsigned)run->n : ing->queue_depth;
    int rc;

    if (want == 0)
        want = 1;
    if (ing->ring != NULL && ing->ring->n_slots < want) {
        ingest_uring_free(ing->ring); /* a bigger run than the ring was made for */
        ing->ring = NULL;
    }
    if (ing->ring == NULL) {
        rc = uring_new(want, &ing->ring);
        if (rc < 0)
            return rc;
    }
    r = ing->ring;
    r->n_active = 0;
    r->n_free_slots = 0;
    r->closes = 0;
    for (unsigned i = r->n_slots; i-- > 0;) {
        uring_slot_reset(&r->slots[i]);
        r->free_slots[r->n_free_slots++] = (int)i;
    }
    r->small_top = r->large_top = 0;
    for (unsigned i = r->n_small; i-- > 0;)
        r->small_free[r->small_top++] = (int)i;
    for (unsigned i = r->n_large; i-- > 0;)
        r->large_free[r->large_top++] = (int)i;
    r->qhead = r->qtail = -1;
    r->n_done = 0;
    r->events = 0;
    r->sub_waiting = false;
    r->finished = false;
    rc = ingest_pool_start(&ing->pool, uring_hash_job, ing, &workers);
    if (rc < 0)
        return rc;

    for (;;) {
        struct io_uring_cqe *cqe;
        bool wake_hashers = false, wait;
        unsigned head, seen_cqes = 0;

        uring_collect_done(ing, r, &seen);
        uring_sweep(ing, r); /* before starting: it drops ended slots from the list */
        while (r->n_free_slots > 0 && next < run->n && !atomic_load(&run->stop))
            uring_start(ing, r, next++);
        pthread_mutex_lock(&r->lock);
        for (unsigned i = 0; i < r->n_active; i++)
            uring_fill_reads(r, (unsigned)r->active[i]);
        pthread_mutex_unlock(&r->lock);
        if (r->n_active == 0 && (next >= run->n || atomic_load(&run->stop)))
            break;
        if (!r->efd_armed)
            uring_arm_wake(r);
        pthread_mutex_lock(&r->lock);
        wait = r->events == seen && r->n_done == 0;
        r->sub_waiting = wait;
        pthread_mutex_unlock(&r->lock);
        rc = wait ? io_uring_submit_and_wait(&r->ring, 1) : io_uring_submit(&r->ring);
        if (rc < 0 && rc != -EINTR && rc != -EBUSY)
            break; /* cannot happen with a sane ring; the sweep below fails the rest */
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            uring_on_cqe(ing, r, cqe->user_data, cqe->res, &wake_hashers);
            seen_cqes++;
        }
        io_uring_cq_advance(&r->ring, seen_cqes);
        pthread_mutex_lock(&r->lock);
        r->sub_waiting = false;
        if (wake_hashers)
            pthread_cond_broadcast(&r->work);
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_lock(&r->lock);
    r->finished = true;
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->lock);
    ingest_pool_wait(&ing->pool);
    /* The last closes: no file stays open after the run. */
    while (r->closes > 0) {
        struct io_uring_cqe *cqe;
        bool ignored = false;
        unsigned head, seen_cqes = 0;

        if (io_uring_submit_and_wait(&r->ring, 1) < 0)
            break;
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            uring_on_cqe(ing, r, cqe->user_data, cqe->res, &ignored);
            seen_cqes++;
        }
        io_uring_cq_advance(&r->ring, seen_cqes);
    }
    return 0;
}
