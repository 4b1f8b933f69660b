/*
 * action_tree.c - an output directory as a REAPI Tree: the root Directory
 * plus every distinct Directory below it, stored in the CAS as one blob.
 *
 * Each Directory is built from the merged overlay view (action_outputs.c)
 * with its files, directories and symlinks each sorted by name, serialized
 * by protobuf-c (fields in field-number order, which is the canonical form
 * Bazel hashes), and hashed; identical subdirectories share one entry in
 * Tree.children. The children are sorted by digest so that the same tree
 * always gives the same Tree blob. Files go to the CAS as they are met
 * (renamed out of the upper layer), symlinks are kept as SymlinkNodes.
 */
#include "action_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tree_entry {
    char *name;
    struct stat st;
    bool in_upper;
};

struct tree_listing {
    struct tree_entry *e;
    size_t n, cap;
};

struct tree_builder {
    struct action_collect *c;
    struct action_digest_map index; /* digest -> index in children */
    pb_directory_t **children;
    size_t n_children, cap;
};

static void listing_free(struct tree_listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const struct tree_entry *)a)->name, ((const struct tree_entry *)b)->name);
}

static const struct tree_entry *listing_find(const struct tree_listing *l, const char *name)
{
    struct tree_entry key = {.name = (char *)name};

    if (l->n == 0)
        return NULL;
    return bsearch(&key, l->e, l->n, sizeof(*l->e), compare_entries);
}

/* Reads one layer's directory into l (whiteouts included; the caller sorts). */
static int list_layer(int fd, bool upper, struct tree_listing *l)
{
    struct dirent *de;
    DIR *dir;
    int dfd, rc = 0;

    dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0)
        return -errno;
    dir = fdopendir(dfd);
    if (dir == NULL) {
        rc = -errno;
        close(dfd);
        return rc;
    }
    rewinddir(dir);
    while ((errno = 0, de = readdir(dir)) != NULL) {
        struct tree_entry *e;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = action_array_reserve((void **)&l->e, &l->cap, l->n, sizeof(*l->e));
        if (rc != 0)
            break;
        e = &l->e[l->n];
        if (fstatat(fd, de->d_name, &e->st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = -errno;
            break;
        }
        e->name = strdup(de->d_name);
        if (e->name == NULL) {
            rc = -ENOMEM;
            break;
        }
        e->in_upper = upper;
        l->n++;
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(dir);
    return rc;
}

/* The merged listing: upper entries minus whiteouts, then lower entries the
 * upper layer neither has nor whited out; sorted by name. */
static int list_merged(const struct action_view_dir *dir, struct tree_listing *out)
{
    struct tree_listing upper = {0}, lower = {0};
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (dir->upper >= 0)
        rc = list_layer(dir->upper, true, &upper);
    if (rc == 0 && dir->lower >= 0)
        rc = list_layer(dir->lower, false, &lower);
    if (rc != 0)
        goto out;
    if (upper.n > 1)
        qsort(upper.e, upper.n, sizeof(*upper.e), compare_entries);
    for (size_t i = 0; i < lower.n; i++) {
        if (listing_find(&upper, lower.e[i].name) != NULL)
            continue;
        rc = action_array_reserve((void **)&out->e, &out->cap, out->n, sizeof(*out->e));
        if (rc != 0)
            goto out;
        out->e[out->n++] = lower.e[i];
        lower.e[i].name = NULL;
    }
    for (size_t i = 0; i < upper.n; i++) {
        if (action_view_is_whiteout(&upper.e[i].st))
            continue;
        rc = action_array_reserve((void **)&out->e, &out->cap, out->n, sizeof(*out->e));
        if (rc != 0)
            goto out;
        out->e[out->n++] = upper.e[i];
        upper.e[i].name = NULL;
    }
    if (out->n > 1)
        qsort(out->e, out->n, sizeof(*out->e), compare_entries);
out:
    listing_free(&upper);
    listing_free(&lower);
    if (rc != 0)
        listing_free(out);
    return rc;
}

static void directory_free(pb_directory_t *d)
{
    if (d != NULL)
        build__bazel__remote__execution__v2__directory__free_unpacked(d, NULL);
}

static int directory_digest(const pb_directory_t *d, struct cas_digest *out)
{
    size_t len = build__bazel__remote__execution__v2__directory__get_packed_size(d);
    uint8_t *buf = malloc(len ? len : 1);

    if (buf == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__directory__pack(d, buf);
    cas_digest_buffer(buf, len, out);
    free(buf);
    return 0;
}

/* Node appenders: the node is attached before its fields are filled, so that
 * freeing the Directory frees a half-built node too. */
static int add_file_node(pb_directory_t *d, size_t *cap, const char *name,
                         const struct cas_digest *digest, bool executable)
{
    pb_file_node_t *f;

    if (action_array_reserve((void **)&d->files, cap, d->n_files, sizeof(*d->files)) != 0 ||
        (f = malloc(sizeof(*f))) == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__file_node__init(f);
    d->files[d->n_files++] = f;
    f->name = strdup(name);
    f->digest = action_digest_proto_new(digest);
    f->is_executable = executable;
    return f->name && f->digest ? 0 : -ENOMEM;
}

static int add_directory_node(pb_directory_t *d, size_t *cap, const char *name,
                              const struct cas_digest *digest)
{
    pb_directory_node_t *n;

    if (action_array_reserve((void **)&d->directories, cap, d->n_directories,
                             sizeof(*d->directories)) != 0 ||
        (n = malloc(sizeof(*n))) == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__directory_node__init(n);
    d->directories[d->n_directories++] = n;
    n->name = strdup(name);
    n->digest = action_digest_proto_new(digest);
    return n->name && n->digest ? 0 : -ENOMEM;
}

static int add_symlink_node(pb_directory_t *d, size_t *cap, const char *name, char *target)
{
    pb_symlink_node_t *s;

    if (action_array_reserve((void **)&d->symlinks, cap, d->n_symlinks, sizeof(*d->symlinks)) !=
            0 ||
        (s = malloc(sizeof(*s))) == NULL) {
        free(target);
        return -ENOMEM;
    }
    build__bazel__remote__execution__v2__symlink_node__init(s);
    d->symlinks[d->n_symlinks++] = s;
    s->name = strdup(name);
    s->target = target; /* taken */
    return s->name ? 0 : -ENOMEM;
}

/* Keeps a child Directory once per digest; takes d. */
static int builder_keep(struct tree_builder *b, pb_directory_t *d, const struct cas_digest *digest)
{
    int rc;

    rc = action_digest_map_put(&b->index, digest, b->n_children, NULL);
    if (rc <= 0) {
        directory_free(d); /* already kept (0) or no memory */
        return rc;
    }
    rc = action_array_reserve((void **)&b->children, &b->cap, b->n_children, sizeof(*b->children));
    if (rc != 0) {
        directory_free(d);
        return rc;
    }
    b->children[b->n_children++] = d;
    return 0;
}

static int build_directory(struct tree_builder *b, const struct action_view_dir *view,
                           const char *path, int depth, pb_directory_t **out,
                           struct cas_digest *digest);

static int build_entry(struct tree_builder *b, const struct action_view_dir *view,
                       const struct tree_entry *e, const char *path, int depth, pb_directory_t *d,
                       size_t caps[3])
{
    struct action_collect *c = b->c;
    int fd = e->in_upper ? view->upper : view->lower;
    struct cas_digest digest;
    int rc;

    if (S_ISREG(e->st.st_mode)) {
        rc = action_collect_account(c, (uint64_t)e->st.st_size, true, false, path);
        if (rc == 0)
            rc = action_collect_file(c, fd, e->name, e->in_upper, path, &digest);
        if (rc == 0 && add_file_node(d, &caps[0], e->name, &digest, e->st.st_mode & 0100) != 0)
            goto nomem;
        return rc;
    }
    if (S_ISLNK(e->st.st_mode)) {
        char *target;

        rc = action_collect_account(c, 0, false, true, path);
        if (rc == 0)
            rc = action_collect_symlink(c, fd, e->name, path, &target);
        if (rc == 0 && add_symlink_node(d, &caps[2], e->name, target) != 0)
            goto nomem;
        return rc;
    }
    if (S_ISDIR(e->st.st_mode)) {
        struct action_view_dir child = {-1, -1};
        pb_directory_t *sub = NULL;

        rc = action_collect_account(c, 0, false, false, path);
        if (rc != 0)
            return rc;
        if (depth + 1 > ACTION_MAX_OUTPUT_DEPTH) {
            reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                             "output directory '%s' is more than %d levels deep", path,
                             ACTION_MAX_OUTPUT_DEPTH);
            return -E2BIG;
        }
        rc = action_view_descend(view, e->name, e->in_upper, &child);
        if (rc < 0)
            goto io_error;
        rc = build_directory(b, &child, path, depth + 1, &sub, &digest);
        action_view_dir_close(&child);
        if (rc != 0)
            return rc;
        rc = builder_keep(b, sub, &digest);
        if (rc == 0 && add_directory_node(d, &caps[1], e->name, &digest) != 0)
            goto nomem;
        if (rc < 0)
            goto nomem;
        return 0;
    }
    reapi_status_set(c->st, GRPC_STATUS_FAILED_PRECONDITION,
                     "'%s' in an output directory is not a regular file, directory or symlink",
                     path);
    return -EINVAL;
io_error:
    reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "opening output directory '%s': %s", path,
                     strerror(-rc));
    return rc;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
}

/* Builds the Directory for view (caller owns *out) and its digest. */
static int build_directory(struct tree_builder *b, const struct action_view_dir *view,
                           const char *path, int depth, pb_directory_t **out,
                           struct cas_digest *digest)
{
    struct tree_listing l = {0};
    pb_directory_t *d = NULL;
    size_t caps[3] = {0, 0, 0};
    int rc;

    *out = NULL;
    rc = list_merged(view, &l);
    if (rc != 0) {
        reapi_status_set(b->c->st, GRPC_STATUS_INTERNAL, "listing output directory '%s': %s", path,
                         strerror(-rc));
        return rc;
    }
    d = malloc(sizeof(*d));
    if (d == NULL) {
        rc = -ENOMEM;
        goto nomem;
    }
    build__bazel__remote__execution__v2__directory__init(d);
    for (size_t i = 0; i < l.n; i++) {
        char *child_path = action_path_join(path, l.e[i].name);

        if (child_path == NULL) {
            rc = -ENOMEM;
            goto nomem;
        }
        rc = build_entry(b, view, &l.e[i], child_path, depth, d, caps);
        free(child_path);
        if (rc != 0)
            goto out;
    }
    rc = directory_digest(d, digest);
    if (rc != 0)
        goto nomem;
    *out = d;
    d = NULL;
    goto out;
nomem:
    reapi_status_set(b->c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
    directory_free(d);
    listing_free(&l);
    return rc;
}

static int compare_children(const void *a, const void *b)
{
    const struct cas_digest *da = a, *db = b;
    int cmp = memcmp(da->hash, db->hash, CAS_HASH_BYTES);

    if (cmp != 0)
        return cmp;
    return da->size < db->size ? -1 : da->size > db->size;
}

struct keyed_child {
    struct cas_digest digest; /* first: compare_children sees it */
    pb_directory_t *dir;
};

int action_tree_collect(struct action_collect *c, const struct action_view_dir *dir,
                        const char *path, struct cas_digest *tree_digest)
{
    struct tree_builder b = {.c = c};
    pb_tree_t tree = BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
    struct keyed_child *keyed = NULL;
    struct cas_digest root_digest;
    pb_directory_t *root = NULL;
    uint8_t *buf = NULL;
    size_t len;
    int rc;

    rc = action_collect_account(c, 0, false, false, path);
    if (rc == 0)
        rc = build_directory(&b, dir, path, 0, &root, &root_digest);
    if (rc != 0)
        goto out;
    /* Children in digest order: the index maps each digest to its Directory. */
    keyed = calloc(b.n_children ? b.n_children : 1, sizeof(*keyed));
    if (keyed == NULL)
        goto nomem;
    for (size_t i = 0; i < b.index.cap; i++) {
        if (b.index.slots[i].used)
            keyed[b.index.slots[i].value] =
                (struct keyed_child){b.index.slots[i].key, b.children[b.index.slots[i].value]};
    }
    qsort(keyed, b.n_children, sizeof(*keyed), compare_children);
    for (size_t i = 0; i < b.n_children; i++)
        b.children[i] = keyed[i].dir;
    tree.root = root;
    tree.children = b.children;
    tree.n_children = b.n_children;
    len = build__bazel__remote__execution__v2__tree__get_packed_size(&tree);
    buf = malloc(len ? len : 1);
    if (buf == NULL)
        goto nomem;
    build__bazel__remote__execution__v2__tree__pack(&tree, buf);
    cas_digest_buffer(buf, len, tree_digest);
    rc = cas_store_put(c->cas, tree_digest, buf, len);
    if (rc != 0)
        reapi_status_set(c->st, GRPC_STATUS_INTERNAL,
                         "storing the Tree of output directory '%s' in the CAS: %s", path,
                         strerror(-rc));
    goto out;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = -ENOMEM;
out:
    free(buf);
    free(keyed);
    directory_free(root);
    for (size_t i = 0; i < b.n_children; i++)
        directory_free(b.children[i]);
    free(b.children);
    action_digest_map_free(&b.index);
    return rc;
}
