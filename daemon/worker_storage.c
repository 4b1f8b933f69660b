/*
 * worker_storage.c - the worker role's side of the fleet's shared storage
 * (remote/remote.h, opened by shared_storage.c from [cas] remote, which a
 * worker defaults to its scheduler): the local store is a read-through cache,
 * so the FUSE mount fetches an input only when the action opens it; after a
 * run the outputs the remote lacks are pushed (remote_push) and then the
 * ActionResult is written to [action_cache] remote, else the CAS remote's
 * ActionCache: outputs before the entry naming them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"
#include "worker_internal.h"

/* Output directories' Trees hold digests of their own: at most this many
 * blobs are pushed for one action. */
#define WORKER_MAX_PUSH 1000000

struct worker_storage {
    struct casboxd *d;
    struct remote *cas; /* borrowed from d */
    struct remote *ac;
};

int worker_storage_open(struct casboxd *d, struct worker_storage **out, char *err, size_t err_len)
{
    struct worker_storage *ws;

    if (d->remote == NULL) {
        snprintf(err, err_len, "role worker needs a CAS: --cas grpc://HOST:PORT or [cas] remote");
        return -EINVAL;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return -ENOMEM;
    ws->d = d;
    ws->cas = d->remote;
    ws->ac = d->ac_remote != NULL ? d->ac_remote : d->remote;
    *out = ws;
    return 0;
}

void worker_storage_close(struct worker_storage *ws)
{
    free(ws);
}

struct digest_list {
    struct cas_digest *v;
    size_t n, cap;
};

static int digest_list_add(struct digest_list *l,
                           const Build__Bazel__Remote__Execution__V2__Digest *pd)
{
    struct cas_digest dg;
    struct reapi_status st;
    int rc;

    if (pd == NULL)
        return 0;
    reapi_status_init(&st);
    rc = reapi_digest_from_proto(pd, &dg, &st, "output");
    reapi_status_free(&st);
    if (rc != 0)
        return rc;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct cas_digest *v;

        if (cap > WORKER_MAX_PUSH)
            return -E2BIG;
        v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = dg;
    return 0;
}

/* An output directory's Tree and every file digest in it (the Directory
 * messages are inside the Tree; their files are separate blobs). */
static int digest_list_add_tree(struct worker_storage *ws, struct digest_list *l,
                                const Build__Bazel__Remote__Execution__V2__Digest *tree_digest)
{
    Build__Bazel__Remote__Execution__V2__Tree *tree = NULL;
    struct reapi_status st;
    struct cas_digest dg;
    void *buf = NULL;
    size_t len = 0;
    int rc;

    rc = digest_list_add(l, tree_digest);
    if (rc != 0)
        return rc;
    reapi_status_init(&st);
    rc = reapi_digest_from_proto(tree_digest, &dg, &st, "tree_digest");
    reapi_status_free(&st);
    if (rc == 0)
        rc = cas_store_get(ws->d->store, &dg, &buf, &len);
    if (rc != 0)
        return rc;
    tree = build__bazel__remote__execution__v2__tree__unpack(NULL, len, buf);
    free(buf);
    if (tree == NULL)
        return -EBADMSG;
    for (size_t i = 0; rc == 0 && i <= tree->n_children; i++) {
        const Build__Bazel__Remote__Execution__V2__Directory *dir =
            i == 0 ? tree->root : tree->children[i - 1];

        for (size_t j = 0; rc == 0 && dir != NULL && j < dir->n_files; j++)
            rc = digest_list_add(l, dir->files[j]->digest);
    }
    build__bazel__remote__execution__v2__tree__free_unpacked(tree, NULL);
    return rc;
}

int worker_storage_upload_result(struct worker_storage *ws, const char *instance,
                                 const Build__Bazel__Remote__Execution__V2__ActionResult *r,
                                 struct reapi_status *st)
{
    struct digest_list l = {0};
    struct rpc_client_status cst;
    int rc = 0;

    if (r->stdout_digest != NULL && r->stdout_digest->size_bytes > 0)
        rc = digest_list_add(&l, r->stdout_digest);
    if (rc == 0 && r->stderr_digest != NULL && r->stderr_digest->size_bytes > 0)
        rc = digest_list_add(&l, r->stderr_digest);
    for (size_t i = 0; rc == 0 && i < r->n_output_files; i++)
        rc = digest_list_add(&l, r->output_files[i]->digest);
    for (size_t i = 0; rc == 0 && i < r->n_output_directories; i++)
        rc = digest_list_add_tree(ws, &l, r->output_directories[i]->tree_digest);
    if (rc != 0) {
        reapi_status_set(st, GRPC_STATUS_INTERNAL, "listing the outputs to upload: %s",
                         strerror(-rc));
        goto out;
    }
    rc = remote_push(ws->cas, ws->d->store, instance, l.v, l.n, &cst);
    if (rc != 0)
        reapi_status_set(st, GRPC_STATUS_UNAVAILABLE, "uploading the outputs: %s", cst.message);
out:
    free(l.v);
    return rc;
}

int worker_storage_cache_result(struct worker_storage *ws, const char *instance,
                                const struct cas_digest *action,
                                const Build__Bazel__Remote__Execution__V2__ActionResult *r,
                                struct reapi_status *st)
{
    struct rpc_client_status cst;
    size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(r);
    uint8_t *buf = malloc(len ? len : 1);
    int rc;

    if (buf == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    build__bazel__remote__execution__v2__action_result__pack(r, buf);
    rc = remote_ac_put(ws->ac, instance, action, buf, len, &cst);
    free(buf);
    if (rc != 0)
        reapi_status_set(st, GRPC_STATUS_UNAVAILABLE, "writing the ActionCache entry: %s",
                         cst.message);
    return rc;
}
