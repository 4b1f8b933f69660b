/*
 * upstream_internal.h - the state a store keeps for its upstream CAS (the
 * fetcher, its in-flight fetches, the last failures) and for pins. Internal
 * to cas/: store.c creates and frees it and asks it whether a blob is
 * pinned before evicting; fetch.c and pin.c do the rest.
 *
 * Locking: upstream->lock protects flights and errors; pins_lock protects the
 * pin table. pins_lock is innermost (taken under the store's name_lock and
 * index_lock during eviction), held only for a table lookup or update.
 */
#ifndef CASBOX_CAS_UPSTREAM_INTERNAL_H
#define CASBOX_CAS_UPSTREAM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "cas.h"

#define CAS_FETCH_REASON_BYTES 320
#define CAS_PIN_BUCKETS        16384

struct fetch_flight {
    struct cas_digest digest;
    unsigned waiters; /* the leader counts too; the last one out frees it */
    bool done;
    int rc;
    char reason[CAS_FETCH_REASON_BYTES];
    struct fetch_flight *next;
};

struct fetch_error {
    struct cas_digest digest;
    int rc; /* 0: slot unused or cleared by a later successful fetch */
    char reason[CAS_FETCH_REASON_BYTES];
};

struct pin_entry {
    uint8_t hash[CAS_HASH_BYTES];
    uint64_t count;
    struct pin_entry *next;
};

struct store_upstream {
    pthread_mutex_t lock;
    pthread_cond_t done; /* broadcast when any flight ends */
    cas_fetch_fn fetch;
    void *fetch_ctx;
    cas_find_missing_fn find_missing;
    void *find_missing_ctx;
    struct fetch_flight *flights;
    struct fetch_error errors[CAS_FETCH_ERRORS_KEPT];
    unsigned next_error;

    pthread_mutex_t pins_lock;
    struct pin_entry *pins[CAS_PIN_BUCKETS];
};

int store_upstream_new(struct store_upstream **out);
void store_upstream_free(struct store_upstream *u);
/* True when the blob with this hash is pinned (pin.c). */
bool store_upstream_pinned(struct store_upstream *u, const uint8_t hash[CAS_HASH_BYTES]);

/* store.c: the local-only reads behind the public functions of fetch.c. */
int cas_store_open_blob_local(struct cas_store *s, const struct cas_digest *d);
int cas_store_get_local(struct cas_store *s, const struct cas_digest *d, void **buf, size_t *len);
int cas_store_blob_path_local(struct cas_store *s, const struct cas_digest *d, char *buf,
                              size_t len);

#endif
