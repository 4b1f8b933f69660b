/*
 * action_tree.c - an output directory as a REAPI Tree: the root Directory
 * plus every distinct Directory below it, stored in the CAS as one blob.
 *
 * Two steps around the batch ingestion of the outputs (action_internal.h).
 * The walk builds each Directory from the merged overlay view
 * (action_outputs.c) with its files, directories and symlinks each sorted
 * by name, queueing every file for the batch and leaving its digest to it;
 * symlinks are kept as SymlinkNodes. After the batch, the finish step
 * computes digests bottom-up: each Directory serialized by protobuf-c
 * (fields in field-number order, the canonical form Bazel hashes) and
 * hashed; identical subdirectories share one entry in Tree.children, which
 * are sorted by digest so that the same tree always gives the same Tree
 * blob.
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

/* An output directory's Directory before its digest: the message, whose
 * file nodes get their digests from the batch, and the subdirectories in
 * the order of its directory nodes. */
struct action_tree {
    Directory *dir;
    struct action_tree **subdirs;
    size_t n_subdirs, subdirs_cap;
};

struct tree_builder {
    struct action_collect *c;
    struct action_digest_map index; /* digest -> index in children */
    Directory **children;
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

    /* A fresh open for reading: fd may be an O_PATH (lower) directory. */
    dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
        rc = array_reserve((void **)&l->e, &l->cap, l->n, sizeof(*l->e));
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
        rc = array_reserve((void **)&out->e, &out->cap, out->n, sizeof(*out->e));
        if (rc != 0)
            goto out;
        out->e[out->n++] = lower.e[i];
        lower.e[i].name = NULL;
    }
    for (size_t i = 0; i < upper.n; i++) {
        if (action_view_is_whiteout(&upper.e[i].st))
            continue;
        rc = array_reserve((void **)&out->e, &out->cap, out->n, sizeof(*out->e));
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

static void directory_free(Directory *d)
{
    if (d != NULL)
        build__bazel__remote__execution__v2__directory__free_unpacked(d, NULL);
}

static int directory_digest(const Directory *d, struct cas_digest *out)
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
 * freeing the Directory frees a half-built node too. Digests come later. */
static FileNode *add_file_node(Directory *d, size_t *cap, const char *name, bool executable)
{
    FileNode *f;

    if (array_reserve((void **)&d->files, cap, d->n_files, sizeof(*d->files)) != 0 ||
        (f = malloc(sizeof(*f))) == NULL)
        return NULL;
    build__bazel__remote__execution__v2__file_node__init(f);
    d->files[d->n_files++] = f;
    f->name = strdup(name);
    f->is_executable = executable;
    return f->name ? f : NULL;
}

static int add_directory_node(Directory *d, size_t *cap, const char *name)
{
    DirectoryNode *n;

    if (array_reserve((void **)&d->directories, cap, d->n_directories, sizeof(*d->directories)) !=
            0 ||
        (n = malloc(sizeof(*n))) == NULL)
        return -ENOMEM;
    build__bazel__remote__execution__v2__directory_node__init(n);
    d->directories[d->n_directories++] = n;
    n->name = strdup(name);
    return n->name ? 0 : -ENOMEM;
}

static int add_symlink_node(Directory *d, size_t *cap, const char *name, char *target)
{
    SymlinkNode *s;

    if (array_reserve((void **)&d->symlinks, cap, d->n_symlinks, sizeof(*d->symlinks)) != 0 ||
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

void action_tree_free(struct action_tree *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_subdirs; i++)
        action_tree_free(t->subdirs[i]);
    free(t->subdirs);
    directory_free(t->dir);
    free(t);
}

static struct action_tree *tree_node_new(void)
{
    struct action_tree *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->dir = malloc(sizeof(*t->dir));
    if (t->dir == NULL) {
        free(t);
        return NULL;
    }
    build__bazel__remote__execution__v2__directory__init(t->dir);
    return t;
}

static int walk_directory(struct action_collect *c, const struct action_view_dir *view,
                          const char *path, int depth, struct action_tree **out);

/* One entry of a listed directory: a file is queued for the batch, a
 * symlink read, a directory walked. bfd caches the batch's fds of this
 * directory's upper [0] and lower [1] layers. */
static int walk_entry(struct action_collect *c, const struct action_view_dir *view,
                      const struct tree_entry *e, const char *path, int depth,
                      struct action_tree *t, size_t caps[3], struct action_batch_fd bfd[2])
{
    int fd = e->in_upper ? view->upper : view->lower;
    int rc;

    if (S_ISREG(e->st.st_mode)) {
        FileNode *f;

        rc = action_collect_account(c, (uint64_t)e->st.st_size, true, false, path);
        if (rc != 0)
            return rc;
        f = add_file_node(t->dir, &caps[0], e->name, e->st.st_mode & 0100);
        if (f == NULL)
            goto nomem;
        return action_collect_file(c, fd, &bfd[e->in_upper ? 0 : 1], e->name, &e->st, e->in_upper,
                                   path, &f->digest);
    }
    if (S_ISLNK(e->st.st_mode)) {
        char *target;

        rc = action_collect_account(c, 0, false, true, path);
        if (rc == 0)
            rc = action_collect_symlink(c, fd, e->name, path, &target);
        if (rc == 0 && add_symlink_node(t->dir, &caps[2], e->name, target) != 0)
            goto nomem;
        return rc;
    }
    if (S_ISDIR(e->st.st_mode)) {
        struct action_view_dir child = {-1, -1};
        struct action_tree *sub = NULL;

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
        rc = walk_directory(c, &child, path, depth + 1, &sub);
        action_view_dir_close(&child);
        if (rc != 0)
            return rc;
        if (array_reserve((void **)&t->subdirs, &t->subdirs_cap, t->n_subdirs,
                          sizeof(*t->subdirs)) != 0) {
            action_tree_free(sub);
            goto nomem;
        }
        t->subdirs[t->n_subdirs++] = sub;
        if (add_directory_node(t->dir, &caps[1], e->name) != 0)
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

/* Builds the skeleton of view's Directory (caller owns *out): names sorted,
 * files queued, subdirectories walked. */
static int walk_directory(struct action_collect *c, const struct action_view_dir *view,
                          const char *path, int depth, struct action_tree **out)
{
    struct action_batch_fd bfd[2] = {{-1, 0}, {-1, 0}};
    struct tree_listing l = {0};
    struct action_tree *t = NULL;
    size_t caps[3] = {0, 0, 0};
    int rc;

    *out = NULL;
    rc = list_merged(view, &l);
    if (rc != 0) {
        reapi_status_set(c->st, GRPC_STATUS_INTERNAL, "listing output directory '%s': %s", path,
                         strerror(-rc));
        return rc;
    }
    t = tree_node_new();
    if (t == NULL) {
        rc = -ENOMEM;
        goto nomem;
    }
    for (size_t i = 0; i < l.n; i++) {
        char *child_path = action_path_join(path, l.e[i].name);

        if (child_path == NULL) {
            rc = -ENOMEM;
            goto nomem;
        }
        rc = walk_entry(c, view, &l.e[i], child_path, depth, t, caps, bfd);
        free(child_path);
        if (rc != 0)
            goto out;
    }
    *out = t;
    t = NULL;
    goto out;
nomem:
    reapi_status_set(c->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
    action_tree_free(t);
    listing_free(&l);
    return rc;
}

int action_tree_walk(struct action_collect *c, const struct action_view_dir *dir, const char *path,
                     struct action_tree **out)
{
    int rc = action_collect_account(c, 0, false, false, path);

    *out = NULL;
    if (rc != 0)
        return rc;
    return walk_directory(c, dir, path, 0, out);
}

/* Keeps a child Directory once per digest; takes d. */
static int builder_keep(struct tree_builder *b, Directory *d, const struct cas_digest *digest)
{
    int rc;

    rc = action_digest_map_put(&b->index, digest, b->n_children, NULL);
    if (rc <= 0) {
        directory_free(d); /* already kept (0) or no memory */
        return rc;
    }
    rc = array_reserve((void **)&b->children, &b->cap, b->n_children, sizeof(*b->children));
    if (rc != 0) {
        directory_free(d);
        return rc;
    }
    b->children[b->n_children++] = d;
    return 0;
}

/* Digests bottom-up, now that every file's is known: fills the directory
 * nodes, keeps each child Directory once in b, and hashes t's. */
static int finish_directory(struct tree_builder *b, struct action_tree *t,
                            struct cas_digest *digest)
{
    int rc;

    for (size_t i = 0; i < t->n_subdirs; i++) {
        struct action_tree *sub = t->subdirs[i];
        struct cas_digest d;

        rc = finish_directory(b, sub, &d);
        if (rc != 0)
            return rc;
        t->dir->directories[i]->digest = action_digest_proto_new(&d);
        if (t->dir->directories[i]->digest == NULL)
            return -ENOMEM;
        rc = builder_keep(b, sub->dir, &d);
        sub->dir = NULL; /* taken */
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < t->dir->n_files; i++) {
        if (t->dir->files[i]->digest == NULL)
            return -EINVAL; /* not flushed: a bug, never a wrong digest */
    }
    return directory_digest(t->dir, digest);
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
    Directory *dir;
};

int action_tree_finish(struct action_collect *c, struct action_tree *t, const char *path,
                       struct cas_digest *tree_digest)
{
    struct tree_builder b = {.c = c};
    Tree tree = BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
    struct keyed_child *keyed = NULL;
    struct cas_digest root_digest;
    uint8_t *buf = NULL;
    size_t len;
    int rc;

    rc = finish_directory(&b, t, &root_digest);
    if (rc == -EINVAL) {
        reapi_status_set(c->st, GRPC_STATUS_INTERNAL,
                         "output directory '%s': a file was never ingested", path);
        goto out;
    }
    if (rc != 0)
        goto nomem;
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
    tree.root = t->dir;
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
    action_tree_free(t);
    for (size_t i = 0; i < b.n_children; i++)
        directory_free(b.children[i]);
    free(b.children);
    action_digest_map_free(&b.index);
    return rc;
}
