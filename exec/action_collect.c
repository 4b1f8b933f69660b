/*
 * action_collect.c - output collection's accounting and batch: each entry
 * counted against the limits, each regular file queued (a dup of its
 * directory fd and its name) with the slot that gets its digest, and the
 * batch ingested into the CAS at once (cas_ingest_run), early when it grows
 * past ACTION_BATCH_FILES files or ACTION_BATCH_FDS fds (action_internal.h).
 */
#include "action_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int action_collect_account(struct action_collect *c, uint64_t bytes, bool is_file, bool is_symlink,
                           const char *path)
{
    struct action_output_stats *s = &c->stats;
    uint64_t entries;

    if (is_file && cas_store_blob_fits(c->cas, bytes) != 0) {
        /* Storing it would evict most of the cache ([cas] max_blob_percent). */
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "output '%s' is %" PRIu64 " bytes, more than the largest output the CAS "
                         "takes (%" PRIu64 " bytes: [cas] max_blob_percent of its size)",
                         path, bytes, cas_store_max_blob_bytes(c->cas));
        return -EFBIG;
    }
    if (is_file) {
        s->files++;
        s->bytes += bytes;
    } else if (is_symlink) {
        s->symlinks++;
    } else {
        s->dirs++;
    }
    entries = s->files + s->dirs + s->symlinks;
    if (c->limits->max_entries != 0 && entries > c->limits->max_entries) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "the action's outputs have more than %" PRIu64
                         " files, directories and symlinks (execution max_output_files), at '%s'",
                         c->limits->max_entries, path);
        return -E2BIG;
    }
    if (c->limits->max_bytes != 0 && s->bytes > c->limits->max_bytes) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "the action's output files exceed %" PRIu64
                         " bytes (execution max_output_bytes), at '%s'",
                         c->limits->max_bytes, path);
        return -EFBIG;
    }
    return 0;
}

/* Grows the batch arrays for one more file (and fd). */
static int batch_reserve(struct action_collect *c, bool fd)
{
    if (c->n_files == c->files_cap) {
        size_t cap = c->files_cap ? c->files_cap * 2 : 64;
        struct cas_ingest_file *files = realloc(c->files, cap * sizeof(*files));
        struct action_pending_dest *dests;

        if (files == NULL)
            return -ENOMEM;
        c->files = files;
        dests = realloc(c->dests, cap * sizeof(*dests));
        if (dests == NULL)
            return -ENOMEM;
        c->dests = dests;
        c->files_cap = cap;
    }
    if (fd)
        return array_reserve((void **)&c->fds, &c->fds_cap, c->n_fds, sizeof(*c->fds));
    return 0;
}

/* Forgets the queued files (names, paths, fds) and starts a new batch. */
static void batch_clear(struct action_collect *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        free((char *)c->files[i].name);
        free(c->dests[i].path);
    }
    for (size_t i = 0; i < c->n_fds; i++)
        close(c->fds[i]);
    c->n_files = c->n_fds = 0;
    c->batch++;
}

void action_collect_free(struct action_collect *c)
{
    batch_clear(c);
    free(c->files);
    free(c->dests);
    free(c->fds);
    cas_ingest_free(c->engine);
}

/* Queues name in dir_fd (AT_FDCWD: a path of ours) with its destination. */
static int batch_add(struct action_collect *c, int dir_fd, const char *name, bool move,
                     const char *path, Digest **dest, bool missing_ok)
{
    struct cas_ingest_file *f;
    struct action_pending_dest *d;

    if (batch_reserve(c, false) != 0)
        return -ENOMEM;
    f = &c->files[c->n_files];
    d = &c->dests[c->n_files];
    memset(f, 0, sizeof(*f));
    f->dir_fd = dir_fd;
    f->move = move;
    f->name = strdup(name);
    d->path = strdup(path);
    d->digest = dest;
    d->missing_ok = missing_ok;
    c->n_files++; /* freed with the batch from now on */
    return f->name && d->path ? 0 : -ENOMEM;
}

int action_collect_file(struct action_collect *c, int dir_fd, struct action_batch_fd *bfd,
                        const char *name, const struct stat *st, bool upper, const char *path,
                        Digest **dest)
{
    int rc;

    if (c->n_files >= ACTION_BATCH_FILES || c->n_fds >= ACTION_BATCH_FDS) {
        rc = action_collect_flush(c);
        if (rc != 0)
            return rc;
    }
    if (bfd->fd < 0 || bfd->batch != c->batch) {
        if (batch_reserve(c, true) != 0)
            goto nomem;
        bfd->fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
        if (bfd->fd < 0) {
            rc = -errno;
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "queueing output file '%s': %s", path,
                             strerror(-rc));
            return rc;
        }
        bfd->batch = c->batch;
        c->fds[c->n_fds++] = bfd->fd;
    }
    /* A file the command made unreadable: it is scratch, and ours. */
    if (upper && (st->st_mode & 0400) == 0)
        fchmodat(dir_fd, name, (st->st_mode & 07777) | 0400, AT_SYMLINK_NOFOLLOW);
    if (batch_add(c, bfd->fd, name, upper, path, dest, false) != 0)
        goto nomem;
    c->files[c->n_files - 1].size_hint = st->st_size > 0 ? (uint64_t)st->st_size : 0;
    return 0;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
}

static void stats_add(struct cas_ingest_stats *sum, const struct cas_ingest_stats *s)
{
    sum->mode = s->mode;
    sum->threads = s->threads;
    sum->files += s->files;
    sum->bytes += s->bytes;
    sum->renamed += s->renamed;
    sum->copied += s->copied;
    sum->present += s->present;
    sum->retries += s->retries;
    sum->micros += s->micros;
}

int action_collect_flush(struct action_collect *c)
{
    struct cas_ingest_stats stats;
    int rc = 0;

    if (c->n_files == 0)
        goto out;
    if (c->engine == NULL) {
        rc = cas_ingest_new(c->cas, c->ingest_opt, &c->engine);
        if (rc != 0) {
            reapi_status_set(c->st, GRPC_STATUS_INTERNAL,
                             "cannot set up output ingestion ([cas] ingest_*): %s", strerror(-rc));
            goto out;
        }
    }
    cas_ingest_run(c->engine, c->files, c->n_files, &stats);
    stats_add(&c->ingest, &stats);
    for (size_t i = 0; i < c->n_files; i++) {
        const struct cas_ingest_file *f = &c->files[i];
        const struct action_pending_dest *d = &c->dests[i];
        struct cas_digest digest = f->digest;

        rc = f->error;
        if (rc == -ENOENT && d->missing_ok) {
            digest = *cas_digest_empty();
            rc = 0;
        }
        if (rc != 0) {
            /* A full disk after the store evicted what it could: the
             * client may retry later, the action is not at fault. */
            reapi_status_set(c->st,
                             rc == -ENOSPC || rc == -EDQUOT ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                            : GRPC_STATUS_INTERNAL,
                             "storing output '%s' in the CAS: %s", d->path, strerror(-rc));
            goto out;
        }
        *d->digest = action_digest_proto_new(&digest);
        if (*d->digest == NULL) {
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
    }
out:
    batch_clear(c);
    return rc;
}

int action_collect_symlink(struct action_collect *c, int dir_fd, const char *name, const char *path,
                           char **target)
{
    char buf[PATH_MAX];
    ssize_t n;

    *target = NULL;
    n = readlinkat(dir_fd, name, buf, sizeof(buf));
    if (n < 0 || n == (ssize_t)sizeof(buf)) {
        int rc = n < 0 ? -errno : -ENAMETOOLONG;

        reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "reading output symlink '%s': %s", path,
                         strerror(-rc));
        return rc;
    }
    buf[n] = '\0';
    /* An absolute target is returned as it is (symlink_absolute_path_strategy
     * ALLOWED): it is the client's to resolve, and nothing here follows it. */
    if (n == 0) {
        reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                         "output symlink '%s' has an empty target", path);
        return -EINVAL;
    }
    *target = strdup(buf);
    if (*target == NULL) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int action_collect_stdio(struct action_collect *c, const char *path, const char *what, Digest **out)
{
    if (batch_add(c, AT_FDCWD, path, true, what, out, true) != 0) {
        reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    return 0;
}
