/*
 * action_fetch.c - an action's inputs when the store is a cache of an
 * upstream CAS (remote/): pins that keep them from being evicted while the
 * action runs, and the status a failed read through the upstream becomes.
 *
 * Why the statuses: a blob the upstream does not have is the client's to
 * upload again, so it is FAILED_PRECONDITION with a MISSING violation (Bazel
 * re-uploads exactly those and retries); an upstream that cannot be reached,
 * or that sent bytes that do not match, is UNAVAILABLE with its own words
 * (the digest and the upstream's status), which Bazel retries later.
 */
#include "action_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Pins (pin = true) or unpins every Directory and file blob of act, up to
 * the first n_done directories when undoing a partial pin. */
static int action_pin_dirs(struct cas_store *cas, const struct action *act, bool pin, size_t n_dirs)
{
    for (size_t i = 0; i < n_dirs; i++) {
        const Directory *dir = act->dirs[i].dir;

        if (pin && cas_store_pin(cas, &act->dirs[i].digest) != 0) {
            action_pin_dirs(cas, act, false, i);
            return -ENOMEM;
        }
        if (!pin)
            cas_store_unpin(cas, &act->dirs[i].digest);
        for (size_t k = 0; dir != NULL && k < dir->n_files; k++) {
            struct cas_digest d;

            action_digest_valid(dir->files[k]->digest, &d);
            if (!pin) {
                cas_store_unpin(cas, &d);
            } else if (cas_store_pin(cas, &d) != 0) {
                for (size_t j = 0; j < k; j++) {
                    action_digest_valid(dir->files[j]->digest, &d);
                    cas_store_unpin(cas, &d);
                }
                cas_store_unpin(cas, &act->dirs[i].digest);
                action_pin_dirs(cas, act, false, i);
                return -ENOMEM;
            }
        }
    }
    return 0;
}

int action_pin_inputs(struct cas_store *cas, const struct action *act)
{
    return action_pin_dirs(cas, act, true, act->n_dirs);
}

void action_unpin_inputs(struct cas_store *cas, const struct action *act)
{
    action_pin_dirs(cas, act, false, act->n_dirs);
}

int action_fetch_status(struct cas_store *cas, const struct cas_digest *d, int rc, const char *what,
                        struct reapi_status *st)
{
    char hex[CAS_HASH_HEX + 1], reason[512];

    if (rc == -ENOENT) {
        if (reapi_status_add_missing(st, d) != 0) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return -ENOMEM;
        }
        return rc;
    }
    cas_digest_hex(d, hex);
    if (cas_store_fetch_error(cas, d, reason, sizeof(reason)) != 0) {
        reapi_status_set(st, GRPC_STATUS_UNAVAILABLE, "%s blobs/%s/%" PRId64 ": %s", what, hex,
                         d->size, reason);
        return rc;
    }
    reapi_status_set(st, GRPC_STATUS_INTERNAL, "reading %s blobs/%s/%" PRId64 ": %s", what, hex,
                     d->size, strerror(-rc));
    return rc;
}

void action_fetch_outcome(const struct cas_fetch_stats *fs, struct reapi_status *st)
{
    char hex[CAS_HASH_HEX + 1];

    if (fs->failures == 0 || fs->first_error == 0)
        return;
    if (fs->first_error == -ENOENT) {
        if (reapi_status_add_missing(st, &fs->first_digest) != 0)
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    cas_digest_hex(&fs->first_digest, hex);
    reapi_status_set(st, GRPC_STATUS_UNAVAILABLE,
                     "input blobs/%s/%" PRId64 " could not be fetched while the action ran: %s",
                     hex, fs->first_digest.size, fs->reason);
}
