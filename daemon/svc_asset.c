/*
 * svc_asset.c - build.bazel.remote.asset.v1: Fetch (FetchBlob,
 * FetchDirectory) and Push (PushBlob, PushDirectory), served when
 * [asset] enabled = true (otherwise the methods are not registered and
 * answer UNIMPLEMENTED).
 *
 * A URI with its qualifiers maps to a digest (asset/map.c). FetchBlob answers
 * from that map while the blob is still in the CAS; otherwise it downloads an
 * http(s) URL inside [asset] allowed_url_prefixes (asset/fetch.c), verifies
 * checksum.sri, stores the blob and remembers it. FetchDirectory answers only
 * what PushDirectory recorded (archives are not unpacked), while the whole
 * tree is in the CAS. Push records a mapping for content already in the CAS.
 *
 * Errors fetching from origin (NOT_FOUND, PERMISSION_DENIED,
 * DEADLINE_EXCEEDED, ABORTED for a checksum mismatch) are the call's status,
 * not FetchBlobResponse.status as the specification puts it: Bazel before
 * 8.1 ignores that field and downloads the unset digest, an empty file
 * (bazelbuild/bazel#25244). A failed call is understood by every client.
 */
#include <errno.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "asset/asset.h"
#include "build/bazel/remote/asset/v1/remote_asset.pb-c.h"
#include "casboxd.h"
#include "util/util.h"

typedef Build__Bazel__Remote__Asset__V1__Qualifier Qualifier;
typedef Build__Bazel__Remote__Asset__V1__FetchBlobRequest FetchBlobRequest;
typedef Build__Bazel__Remote__Asset__V1__FetchBlobResponse FetchBlobResponse;
typedef Build__Bazel__Remote__Asset__V1__FetchDirectoryRequest FetchDirectoryRequest;
typedef Build__Bazel__Remote__Asset__V1__FetchDirectoryResponse FetchDirectoryResponse;
typedef Build__Bazel__Remote__Asset__V1__PushBlobRequest PushBlobRequest;
typedef Build__Bazel__Remote__Asset__V1__PushBlobResponse PushBlobResponse;
typedef Build__Bazel__Remote__Asset__V1__PushDirectoryRequest PushDirectoryRequest;
typedef Build__Bazel__Remote__Asset__V1__PushDirectoryResponse PushDirectoryResponse;

/* A pushed or fetched directory is checked blob by blob; this bounds it. */
#define ASSET_TREE_MAX_DIRS 100000

struct asset_service {
    struct asset_map *map;
    struct asset_fetcher *fetcher;
};

int asset_service_start(struct casboxd *d, struct asset_service **out)
{
    struct asset_service *svc;
    char path[4200];
    int rc;

    *out = NULL;
    svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return -ENOMEM;
    snprintf(path, sizeof(path), "%s/asset-map.log", d->cfg.state_dir);
    rc = asset_map_open(path, d->cfg.asset_max_mappings, &svc->map);
    if (rc == 0)
        rc = asset_fetcher_new(d->store, (unsigned)d->cfg.asset_max_fetches, &svc->fetcher);
    if (rc != 0) {
        asset_service_stop(svc);
        return rc;
    }
    LOG_I("remote asset API on: %zu mapping(s) from %s, downloads from '%s'",
          asset_map_count(svc->map), path,
          d->cfg.asset_allowed_url_prefixes[0] ? d->cfg.asset_allowed_url_prefixes
                                               : "(nowhere: [asset] allowed_url_prefixes)");
    *out = svc;
    return 0;
}

void asset_service_begin_stop(struct asset_service *svc)
{
    if (svc != NULL)
        asset_fetcher_cancel(svc->fetcher);
}

void asset_service_stop(struct asset_service *svc)
{
    if (svc == NULL)
        return;
    asset_map_close(svc->map);
    asset_fetcher_free(svc->fetcher);
    free(svc);
}

/* --- requests --- */

/* What the four requests share, checked: the URIs and the qualifiers. */
struct asset_request {
    const char *instance;
    char **uris;
    size_t n_uris;
    struct asset_qualifier quals[ASSET_MAX_QUALIFIERS];
    size_t n_quals;
    struct asset_qualifiers parsed;
};

static int asset_request_check(struct asset_request *r, const char *instance, size_t n_uris,
                               char **uris, size_t n_quals, Qualifier **quals,
                               struct reapi_status *st)
{
    char err[512];
    int rc;

    r->instance = instance ? instance : "";
    r->uris = uris;
    r->n_uris = n_uris;
    if (n_uris == 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "uris is empty: give at least one URI");
        return -EINVAL;
    }
    if (n_uris > ASSET_MAX_URIS) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%zu uris, more than the %d accepted",
                         n_uris, ASSET_MAX_URIS);
        return -EINVAL;
    }
    for (size_t i = 0; i < n_uris; i++) {
        size_t len = strlen(uris[i]);

        if (len == 0 || len >= ASSET_MAX_URI_LEN) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "uris[%zu] is %s (URIs are 1 to %d bytes)", i,
                             len ? "too long" : "empty", ASSET_MAX_URI_LEN - 1);
            return -EINVAL;
        }
    }
    if (n_quals > ASSET_MAX_QUALIFIERS) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%zu qualifiers, more than the %d accepted", n_quals,
                         ASSET_MAX_QUALIFIERS);
        return -EINVAL;
    }
    for (size_t i = 0; i < n_quals; i++) {
        r->quals[i].name = quals[i]->name ? quals[i]->name : "";
        r->quals[i].value = quals[i]->value ? quals[i]->value : "";
    }
    r->n_quals = n_quals;
    rc = asset_qualifiers_parse(r->quals, n_quals, &r->parsed, err, sizeof(err));
    if (rc == -ENOMEM) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return rc;
    }
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return rc;
    }
    /* Every URI must make a key, so that nothing fails after a download. */
    for (size_t i = 0; i < n_uris; i++) {
        uint8_t *key;
        size_t key_len;

        rc = asset_key_make(ASSET_BLOB, r->instance, uris[i], r->quals, n_quals, &key, &key_len);
        free(key);
        if (rc == -E2BIG) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "uris[%zu] with the instance name and qualifiers is longer than %u "
                             "bytes",
                             i, ASSET_MAX_KEY_BYTES);
            return rc;
        }
        if (rc != 0) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return rc;
        }
    }
    return 0;
}

static void asset_request_free(struct asset_request *r)
{
    asset_qualifiers_free(&r->parsed);
}

static uint64_t asset_timestamp_us(const Google__Protobuf__Timestamp *t)
{
    if (t == NULL || t->seconds < 0)
        return 0;
    return (uint64_t)t->seconds * 1000000u + (uint64_t)(t->nanos > 0 ? t->nanos : 0) / 1000u;
}

/* The microseconds left before the client's deadline, at most cap. */
static uint64_t asset_call_remaining_us(struct rpc_call *call, uint64_t cap)
{
    gpr_timespec deadline = gpr_convert_clock_type(rpc_call_deadline(call), GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(deadline, gpr_now(GPR_CLOCK_MONOTONIC));
    uint64_t us;

    if (left.tv_sec < 0)
        return 0;
    if ((uint64_t)left.tv_sec >= cap / 1000000u + 1)
        return cap;
    us = (uint64_t)left.tv_sec * 1000000u + (uint64_t)left.tv_nsec / 1000u;
    return us < cap ? us : cap;
}

/* --- directories --- */

struct asset_tree_walk {
    struct cas_digest *seen; /* open addressing, used[] says which slots hold one */
    bool *used;
    size_t cap;               /* a power of two, at least twice n_queue */
    struct cas_digest *queue; /* every distinct Directory, in the order met */
    size_t n_queue, queue_cap;
};

static size_t asset_tree_slot(const struct asset_tree_walk *w, const struct cas_digest *dg)
{
    size_t i;

    memcpy(&i, dg->hash, sizeof(i));
    for (i &= w->cap - 1; w->used[i] && !cas_digest_equal(&w->seen[i], dg);
         i = (i + 1) & (w->cap - 1))
        ;
    return i;
}

static int asset_tree_grow(struct asset_tree_walk *w)
{
    struct asset_tree_walk bigger = *w;

    bigger.cap = w->cap ? 2 * w->cap : 64;
    bigger.seen = calloc(bigger.cap, sizeof(*bigger.seen));
    bigger.used = calloc(bigger.cap, sizeof(*bigger.used));
    if (bigger.seen == NULL || bigger.used == NULL) {
        free(bigger.seen);
        free(bigger.used);
        return -ENOMEM;
    }
    for (size_t i = 0; i < w->n_queue; i++) {
        size_t slot = asset_tree_slot(&bigger, &w->queue[i]);

        bigger.used[slot] = true;
        bigger.seen[slot] = w->queue[i];
    }
    free(w->seen);
    free(w->used);
    *w = bigger;
    return 0;
}

/* Queues dg unless seen: 0, or -ENOSPC past the bound, -ENOMEM. */
static int asset_tree_see(struct asset_tree_walk *w, const struct cas_digest *dg)
{
    size_t slot;

    if (w->cap != 0 && w->used[asset_tree_slot(w, dg)])
        return 0;
    if (w->n_queue == ASSET_TREE_MAX_DIRS)
        return -ENOSPC;
    if (2 * (w->n_queue + 1) > w->cap && asset_tree_grow(w) != 0)
        return -ENOMEM;
    if (array_reserve((void **)&w->queue, &w->queue_cap, w->n_queue, sizeof(*w->queue)) != 0)
        return -ENOMEM;
    slot = asset_tree_slot(w, dg);
    w->used[slot] = true;
    w->seen[slot] = *dg;
    w->queue[w->n_queue++] = *dg;
    return 0;
}

/* Checks that the Directory root and everything below it is in the CAS:
 * every missing blob goes into st (FAILED_PRECONDITION); a Directory that
 * does not parse, or a tree above ASSET_TREE_MAX_DIRS directories, is
 * INVALID_ARGUMENT. */
static int asset_tree_check(struct casboxd *d, const struct cas_digest *root,
                            struct reapi_status *st)
{
    struct asset_tree_walk w = {0};
    int rc;

    rc = asset_tree_see(&w, root);
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < w.n_queue && rc == 0; i++) {
        Directory *dir;
        void *buf = NULL;
        size_t len;
        char hex[CAS_HASH_HEX + 1];

        if (cas_store_get(d->store, &w.queue[i], &buf, &len) != 0) {
            if (reapi_status_add_missing(st, &w.queue[i]) != 0)
                rc = -ENOMEM;
            continue;
        }
        dir = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
        free(buf);
        cas_digest_hex(&w.queue[i], hex);
        if (dir == NULL) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Directory %s/%" PRId64 " does not parse", hex, w.queue[i].size);
            rc = -EINVAL;
            break;
        }
        for (size_t j = 0; j < dir->n_files && rc == 0; j++) {
            struct cas_digest f;

            if (reapi_digest_from_proto(dir->files[j]->digest, &f, st, "files.digest") != 0)
                rc = -EINVAL;
            else if (cas_store_contains(d->store, &f) != 1 && reapi_status_add_missing(st, &f) != 0)
                rc = -ENOMEM;
        }
        for (size_t j = 0; j < dir->n_directories && rc == 0; j++) {
            struct cas_digest sub;

            if (reapi_digest_from_proto(dir->directories[j]->digest, &sub, st,
                                        "directories.digest") != 0)
                rc = -EINVAL;
            else if ((rc = asset_tree_see(&w, &sub)) == -ENOSPC)
                reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "the tree below %s has more than %d directories", hex,
                                 ASSET_TREE_MAX_DIRS);
            else if (rc != 0)
                reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        }
        build__bazel__remote__execution__v2__directory__free_unpacked(dir, NULL);
    }
out:
    free(w.seen);
    free(w.used);
    free(w.queue);
    if (rc == 0 && !reapi_status_ok(st))
        rc = -ENOENT;
    return rc;
}

/* --- the map --- */

/* Whether the mapping's content is (still) whole in the CAS. */
static bool asset_content_present(struct casboxd *d, enum asset_kind kind,
                                  const struct cas_digest *dg)
{
    struct reapi_status st;
    bool ok;

    if (kind == ASSET_BLOB)
        return cas_store_contains(d->store, dg) == 1;
    reapi_status_init(&st);
    ok = asset_tree_check(d, dg, &st) == 0;
    reapi_status_free(&st);
    return ok;
}

/* The first URI of r with a usable mapping: 0 with *out and *index, else
 * -ENOENT. A mapping past its expiry or whose content is gone is dropped;
 * one older than oldest_us is passed over. */
static int asset_lookup(struct casboxd *d, enum asset_kind kind, const struct asset_request *r,
                        uint64_t oldest_us, struct cas_digest *out, size_t *index)
{
    for (size_t i = 0; i < r->n_uris; i++) {
        struct asset_entry e;
        uint8_t *key;
        size_t key_len;
        bool drop = false, hit = false;

        if (asset_key_make(kind, r->instance, r->uris[i], r->quals, r->n_quals, &key, &key_len))
            continue;
        if (asset_map_get(d->asset->map, key, key_len, &e) == 0) {
            if (e.expire_us != 0 && clock_real_us() > e.expire_us)
                drop = true; /* expired */
            else if (e.stored_us < oldest_us)
                ; /* too old for this client: fetched again, and replaced */
            else if (asset_content_present(d, kind, &e.digest))
                hit = true;
            else
                drop = true; /* evicted from the CAS */
        }
        if (drop)
            asset_map_remove(d->asset->map, key, key_len);
        free(key);
        if (hit) {
            *out = e.digest;
            *index = i;
            return 0;
        }
    }
    return -ENOENT;
}

/* Records uri -> digest for every URI given (Push) or one (a fetch). */
static int asset_remember(struct casboxd *d, enum asset_kind kind, const struct asset_request *r,
                          size_t first, size_t count, const struct asset_entry *e,
                          struct reapi_status *st)
{
    for (size_t i = first; i < first + count; i++) {
        uint8_t *key;
        size_t key_len;
        int rc =
            asset_key_make(kind, r->instance, r->uris[i], r->quals, r->n_quals, &key, &key_len);

        if (rc == 0) {
            rc = asset_map_put(d->asset->map, key, key_len, e);
            free(key);
        }
        if (rc == -E2BIG) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "uris[%zu] with its qualifiers is longer than %u bytes", i,
                             ASSET_MAX_KEY_BYTES);
            return rc;
        }
        if (rc != 0) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return rc;
        }
    }
    return 0;
}

/* --- Fetch --- */

struct fetch_blob_result {
    struct casboxd *d;
    const struct asset_request *r;
    struct asset_entry e;
    struct reapi_status *st;
    int rc;
};

/* The download's mapping, recorded before a request waiting for it wakes. */
static void fetch_blob_stored(void *ctx, const struct cas_digest *digest, size_t uri_index)
{
    struct fetch_blob_result *res = ctx;

    res->e.digest = *digest;
    res->rc = asset_remember(res->d, ASSET_BLOB, res->r, uri_index, 1, &res->e, res->st);
}

static grpc_status_code asset_fetch_code(int rc)
{
    switch (rc) {
    case -EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case -EPERM:
    case -EACCES:
        return GRPC_STATUS_PERMISSION_DENIED;
    case -ENOENT:
    case -EPROTONOSUPPORT:
        return GRPC_STATUS_NOT_FOUND;
    case -EINPROGRESS:
    case -EALREADY:
    case -ECANCELED:
        return GRPC_STATUS_UNAVAILABLE; /* being downloaded, or stopping: ask again */
    case -ETIMEDOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case -EBADMSG:
        return GRPC_STATUS_ABORTED;
    case -EFBIG:
    case -EAGAIN:
    case -ENOMEM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

static void fetch_blob(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    FetchBlobRequest *req = NULL;
    FetchBlobResponse resp = BUILD__BAZEL__REMOTE__ASSET__V1__FETCH_BLOB_RESPONSE__INIT;
    struct asset_request r = {0};
    struct asset_fetch_request fr = {0};
    struct reapi_digest_buf digest_buf;
    struct reapi_status st;
    struct casbox_config *cfg = NULL;
    struct cas_digest dg;
    struct fetch_blob_result res = {0};
    uint64_t timeout_us, oldest_us;
    uint8_t *flight_key = NULL;
    size_t index = 0;
    char err[1024];
    int rc;

    reapi_status_init(&st);
    if (rpc_call_request(call, &build__bazel__remote__asset__v1__fetch_blob_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "FetchBlobRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (asset_request_check(&r, req->instance_name, req->n_uris, req->uris, req->n_qualifiers,
                            req->qualifiers, &st) != 0)
        goto out;
    oldest_us = asset_timestamp_us(req->oldest_content_accepted);
    if (asset_lookup(d, ASSET_BLOB, &r, oldest_us, &dg, &index) == 0) {
        LOG_D("asset: FetchBlob %s answered from the map", r.uris[index]);
        goto answer;
    }
    if (r.parsed.unsupported != NULL) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                         "\"%s\" not supported: casboxd cannot fetch with this qualifier, and "
                         "nothing was pushed with these qualifiers",
                         r.parsed.unsupported);
        goto out;
    }
    /* A copy: SIGHUP may change the prefixes and the timeout meanwhile. */
    cfg = malloc(sizeof(*cfg));
    if (cfg == NULL) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    casboxd_config_snapshot(d, cfg);
    timeout_us = cfg->asset_timeout * 1000000u;
    if (req->timeout != NULL && (req->timeout->seconds > 0 || req->timeout->nanos > 0)) {
        uint64_t asked = (uint64_t)req->timeout->seconds * 1000000u +
                         (uint64_t)(req->timeout->nanos > 0 ? req->timeout->nanos : 0) / 1000u;

        if (req->timeout->seconds >= 0 && asked < timeout_us)
            timeout_us = asked;
    }
    fr.uris = (const char *const *)r.uris;
    fr.n_uris = r.n_uris;
    fr.qualifiers = &r.parsed;
    fr.prefixes = cfg->asset_allowed_url_prefixes;
    fr.max_bytes = cfg->asset_max_bytes;
    fr.timeout_us = timeout_us;
    /* Waiting (for a slot, or for the same download in flight) ends a little
     * before the client gives up, so that it learns why. */
    fr.wait_deadline_us = clock_mono_us() + asset_call_remaining_us(call, timeout_us) / 10 * 9;
    /* A retry of this request waits for its download instead of starting
     * another: the request's key (its first URI, its qualifiers). */
    if (asset_key_make(ASSET_BLOB, r.instance, r.uris[0], r.quals, r.n_quals, &flight_key,
                       &fr.flight_key_len) == 0)
        fr.flight_key = flight_key;
    res.d = d;
    res.r = &r;
    res.e.stored_us = clock_real_us();
    res.st = &st;
    fr.on_stored = fetch_blob_stored;
    fr.ctx = &res;
    rc = asset_fetch_blob(d->asset->fetcher, &fr, &dg, &index, err, sizeof(err));
    if (rc == -EALREADY) {
        /* An earlier request downloaded it meanwhile: its result, if it
         * worked, else a download of our own. */
        if (asset_lookup(d, ASSET_BLOB, &r, oldest_us, &dg, &index) == 0)
            goto answer;
        rc = asset_fetch_blob(d->asset->fetcher, &fr, &dg, &index, err, sizeof(err));
    }
    if (rc != 0) {
        reapi_status_set(&st, asset_fetch_code(rc), "%s", err);
        LOG_I("asset: FetchBlob: %s: %s", rpc_status_code_name(st.code), err);
        goto out;
    }
    if (res.rc != 0)
        goto out; /* st says why */
answer:
    reapi_digest_to_proto(&dg, &digest_buf);
    resp.uri = r.uris[index];
    resp.blob_digest = &digest_buf.pd;
out:
    rpc_call_finish(call, reapi_status_ok(&st) ? &resp.base : NULL, &st);
    reapi_status_free(&st);
    asset_request_free(&r);
    free(flight_key);
    free(cfg);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void fetch_directory(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    FetchDirectoryRequest *req = NULL;
    FetchDirectoryResponse resp = BUILD__BAZEL__REMOTE__ASSET__V1__FETCH_DIRECTORY_RESPONSE__INIT;
    struct asset_request r = {0};
    struct reapi_digest_buf digest_buf;
    struct reapi_status st;
    struct cas_digest dg;
    size_t index = 0;

    reapi_status_init(&st);
    if (rpc_call_request(call,
                         &build__bazel__remote__asset__v1__fetch_directory_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "FetchDirectoryRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (asset_request_check(&r, req->instance_name, req->n_uris, req->uris, req->n_qualifiers,
                            req->qualifiers, &st) != 0)
        goto out;
    if (asset_lookup(d, ASSET_DIRECTORY, &r, asset_timestamp_us(req->oldest_content_accepted), &dg,
                     &index) != 0) {
        reapi_status_set(&st, GRPC_STATUS_NOT_FOUND,
                         "no directory was pushed for %s%s with these qualifiers (FetchDirectory "
                         "answers what PushDirectory recorded; archives are not unpacked)",
                         r.uris[0], r.n_uris > 1 ? " or the other URIs" : "");
        goto out;
    }
    reapi_digest_to_proto(&dg, &digest_buf);
    resp.uri = r.uris[index];
    resp.root_directory_digest = &digest_buf.pd;
out:
    rpc_call_finish(call, reapi_status_ok(&st) ? &resp.base : NULL, &st);
    reapi_status_free(&st);
    asset_request_free(&r);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* --- Push --- */

/* Every blob of refs must be present; missing ones go into st. */
static int asset_check_blobs(struct casboxd *d, Digest **refs, size_t n, const char *field,
                             struct reapi_status *st)
{
    for (size_t i = 0; i < n; i++) {
        struct cas_digest dg;

        if (reapi_digest_from_proto(refs[i], &dg, st, field) != 0)
            return -EINVAL;
        if (cas_store_contains(d->store, &dg) != 1 && reapi_status_add_missing(st, &dg) != 0)
            return -ENOMEM;
    }
    return reapi_status_ok(st) ? 0 : -ENOENT;
}

/* FAILED_PRECONDITION's message naming the first missing blob. */
static void asset_name_missing(struct reapi_status *st, const char *what)
{
    char hex[CAS_HASH_HEX + 1];

    if (st->code != GRPC_STATUS_FAILED_PRECONDITION || st->n_missing == 0)
        return;
    cas_digest_hex(&st->missing[0], hex);
    snprintf(st->message, sizeof(st->message),
             "%s: blob %s/%" PRId64 " is not in the CAS%s; upload it before pushing", what, hex,
             st->missing[0].size, st->n_missing > 1 ? " (and others, listed in the details)" : "");
}

static void push_blob(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    PushBlobRequest *req = NULL;
    PushBlobResponse resp = BUILD__BAZEL__REMOTE__ASSET__V1__PUSH_BLOB_RESPONSE__INIT;
    struct asset_request r = {0};
    struct reapi_status st;
    struct asset_entry e = {0};

    reapi_status_init(&st);
    if (rpc_call_request(call, &build__bazel__remote__asset__v1__push_blob_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "PushBlobRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (asset_request_check(&r, req->instance_name, req->n_uris, req->uris, req->n_qualifiers,
                            req->qualifiers, &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->blob_digest, &e.digest, &st, "blob_digest") != 0)
        goto out;
    /* A sha256 checksum.sri can be checked against the digest for free. */
    for (size_t i = 0; r.parsed.has_sri && i < r.parsed.sri.n; i++) {
        const struct asset_sri_hash *h = &r.parsed.sri.hashes[i];

        if (h->alg == ASSET_SHA256 && memcmp(h->digest, e.digest.hash, CAS_HASH_BYTES) != 0) {
            reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT,
                             "checksum.sri does not match blob_digest %s", req->blob_digest->hash);
            goto out;
        }
    }
    if (asset_check_blobs(d, &req->blob_digest, 1, "blob_digest", &st) == -ENOMEM ||
        asset_check_blobs(d, req->references_blobs, req->n_references_blobs, "references_blobs",
                          &st) == -ENOMEM ||
        asset_check_blobs(d, req->references_directories, req->n_references_directories,
                          "references_directories", &st) == -ENOMEM) {
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (!reapi_status_ok(&st)) {
        asset_name_missing(&st, "PushBlob");
        goto out;
    }
    e.stored_us = clock_real_us();
    e.expire_us = asset_timestamp_us(req->expire_at);
    if (asset_remember(d, ASSET_BLOB, &r, 0, r.n_uris, &e, &st) != 0)
        goto out;
    LOG_D("asset: PushBlob %s -> %s/%" PRId64, r.uris[0], req->blob_digest->hash, e.digest.size);
out:
    rpc_call_finish(call, reapi_status_ok(&st) ? &resp.base : NULL, &st);
    reapi_status_free(&st);
    asset_request_free(&r);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void push_directory(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    PushDirectoryRequest *req = NULL;
    PushDirectoryResponse resp = BUILD__BAZEL__REMOTE__ASSET__V1__PUSH_DIRECTORY_RESPONSE__INIT;
    struct asset_request r = {0};
    struct reapi_status st;
    struct asset_entry e = {0};

    reapi_status_init(&st);
    if (rpc_call_request(call, &build__bazel__remote__asset__v1__push_directory_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "PushDirectoryRequest not parseable");
        goto out;
    }
    if (rpc_call_authorize(call, req->instance_name ? req->instance_name : "", &st) != 0)
        goto out;
    if (asset_request_check(&r, req->instance_name, req->n_uris, req->uris, req->n_qualifiers,
                            req->qualifiers, &st) != 0)
        goto out;
    if (reapi_digest_from_proto(req->root_directory_digest, &e.digest, &st,
                                "root_directory_digest") != 0)
        goto out;
    if (asset_tree_check(d, &e.digest, &st) != 0) {
        asset_name_missing(&st, "PushDirectory");
        goto out;
    }
    e.stored_us = clock_real_us();
    e.expire_us = asset_timestamp_us(req->expire_at);
    if (asset_remember(d, ASSET_DIRECTORY, &r, 0, r.n_uris, &e, &st) != 0)
        goto out;
    LOG_D("asset: PushDirectory %s -> %s/%" PRId64, r.uris[0], req->root_directory_digest->hash,
          e.digest.size);
out:
    rpc_call_finish(call, reapi_status_ok(&st) ? &resp.base : NULL, &st);
    reapi_status_free(&st);
    asset_request_free(&r);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* FetchBlob waits on a remote server: the transfer pool, as ByteStream's
 * calls wait on the client, so that it never holds a short-call thread. */
const struct rpc_method asset_methods[] = {
    {"/build.bazel.remote.asset.v1.Fetch/FetchBlob", RPC_UNARY, RPC_POOL_TRANSFER, fetch_blob,
     AUTH_PERM_READ | AUTH_PERM_WRITE},
    {"/build.bazel.remote.asset.v1.Fetch/FetchDirectory", RPC_UNARY, RPC_POOL_SHORT,
     fetch_directory, AUTH_PERM_READ},
    {"/build.bazel.remote.asset.v1.Push/PushBlob", RPC_UNARY, RPC_POOL_SHORT, push_blob,
     AUTH_PERM_WRITE_AC},
    {"/build.bazel.remote.asset.v1.Push/PushDirectory", RPC_UNARY, RPC_POOL_SHORT, push_directory,
     AUTH_PERM_WRITE_AC},
};
const size_t asset_n_methods = sizeof(asset_methods) / sizeof(asset_methods[0]);
