/*
 * tree.c - the trees listed under the mount root (one per staged action)
 * and the inodes the kernel holds below them: reference counts, the tree
 * list and the list of every live inode, both under fs->lock.
 */
#include "casfs_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* --- inodes --- */

struct casfs_inode *casfs_inode_of(struct casfs *fs, fuse_ino_t ino)
{
    if (ino == FUSE_ROOT_ID)
        return &fs->root;
    return (struct casfs_inode *)(uintptr_t)ino;
}

/* Buckets of the child table: chains stay short up to about a million
 * live nodes, for 512 KiB. */
#define CASFS_CHILD_BUCKETS (1u << 16)

int casfs_children_init(struct casfs *fs)
{
    fs->children = calloc(CASFS_CHILD_BUCKETS, sizeof(*fs->children));
    fs->next_serial = 1; /* 0: the mount root */
    return fs->children != NULL ? 0 : -ENOMEM;
}

static struct casfs_inode **child_bucket(struct casfs *fs, uint64_t parent_serial, uint32_t index)
{
    uint64_t h = (parent_serial * 0x9E3779B97F4A7C15ULL) ^ (index * 0xC2B2AE3D27D4EB4FULL);

    return &fs->children[(h >> 32) & (CASFS_CHILD_BUCKETS - 1)];
}

/* Under fs->lock: the listed child, with a lookup taken; NULL when none is
 * alive (a child whose count reached 0 is being freed: not revived). */
static struct casfs_inode *child_take(struct casfs *fs, uint64_t parent_serial, uint32_t index)
{
    struct casfs_inode *c = *child_bucket(fs, parent_serial, index);

    for (; c != NULL; c = c->child_next) {
        uint_fast64_t n;

        if (c->parent_serial != parent_serial || c->child_index != index)
            continue;
        n = atomic_load(&c->nlookup);
        while (n != 0 && !atomic_compare_exchange_weak(&c->nlookup, &n, n + 1))
            ;
        return n != 0 ? c : NULL;
    }
    return NULL;
}

/* Under fs->lock. */
static void child_unlist(struct casfs *fs, struct casfs_inode *inode)
{
    struct casfs_inode **p = child_bucket(fs, inode->parent_serial, inode->child_index);

    for (; *p != NULL; p = &(*p)->child_next) {
        if (*p == inode) {
            *p = inode->child_next;
            break;
        }
    }
    inode->in_children = false;
}

static struct casfs_inode *inode_alloc(struct casfs_tree *tree, mode_t mode,
                                       const struct cas_digest *digest, const char *target)
{
    struct casfs_inode *inode = calloc(1, sizeof(*inode));

    if (inode == NULL)
        return NULL;
    if (target != NULL && (inode->target = strdup(target)) == NULL) {
        free(inode);
        return NULL;
    }
    atomic_init(&inode->nlookup, 1);
    inode->mode = mode;
    inode->digest = *digest;
    inode->tree = tree;
    atomic_fetch_add(&tree->refs, 1);
    return inode;
}

/* Under fs->lock. */
static void inode_list(struct casfs *fs, struct casfs_inode *inode)
{
    inode->serial = fs->next_serial++;
    inode->next = fs->inodes;
    if (fs->inodes != NULL)
        fs->inodes->prev = inode;
    fs->inodes = inode;
}

struct casfs_inode *casfs_inode_new(struct casfs *fs, struct casfs_tree *tree, mode_t mode,
                                    const struct cas_digest *digest, const char *target)
{
    struct casfs_inode *inode = inode_alloc(tree, mode, digest, target);

    if (inode == NULL)
        return NULL;
    pthread_mutex_lock(&fs->lock);
    inode_list(fs, inode);
    pthread_mutex_unlock(&fs->lock);
    return inode;
}

static void inode_free(struct casfs_inode *inode)
{
    casfs_tree_unref(inode->tree);
    free(inode->target);
    free(inode);
}

struct casfs_inode *casfs_inode_child(struct casfs *fs, struct casfs_inode *parent, uint32_t index,
                                      mode_t mode, const struct cas_digest *digest,
                                      const char *target)
{
    struct casfs_inode *inode, *fresh;

    pthread_mutex_lock(&fs->lock);
    inode = child_take(fs, parent->serial, index);
    pthread_mutex_unlock(&fs->lock);
    if (inode != NULL)
        return inode;
    fresh = inode_alloc(parent->tree, mode, digest, target);
    if (fresh == NULL)
        return NULL;
    pthread_mutex_lock(&fs->lock);
    inode = child_take(fs, parent->serial, index); /* another thread's, meanwhile */
    if (inode == NULL) {
        struct casfs_inode **b = child_bucket(fs, parent->serial, index);

        inode = fresh;
        fresh = NULL;
        inode_list(fs, inode);
        inode->parent_serial = parent->serial;
        inode->child_index = index;
        inode->in_children = true;
        inode->child_next = *b;
        *b = inode;
    }
    pthread_mutex_unlock(&fs->lock);
    if (fresh != NULL)
        inode_free(fresh);
    return inode;
}

void casfs_inode_forget(struct casfs *fs, struct casfs_inode *inode, uint64_t n)
{
    if (inode == &fs->root)
        return;
    if (atomic_fetch_sub(&inode->nlookup, n) != n)
        return;
    pthread_mutex_lock(&fs->lock);
    if (inode->in_children)
        child_unlist(fs, inode);
    if (inode->prev != NULL)
        inode->prev->next = inode->next;
    else
        fs->inodes = inode->next;
    if (inode->next != NULL)
        inode->next->prev = inode->prev;
    pthread_mutex_unlock(&fs->lock);
    inode_free(inode);
}

/* --- trees --- */

void casfs_tree_unref(struct casfs_tree *tree)
{
    if (tree == NULL || atomic_fetch_sub(&tree->refs, 1) != 1)
        return;
    free(tree->name);
    free(tree);
}

/* Under fs->lock. */
static struct casfs_tree **tree_slot(struct casfs *fs, const char *name)
{
    struct casfs_tree **p = &fs->trees;

    while (*p != NULL && strcmp((*p)->name, name) != 0)
        p = &(*p)->next;
    return p;
}

struct casfs_tree *casfs_tree_find(struct casfs *fs, const char *name)
{
    struct casfs_tree *tree;

    pthread_mutex_lock(&fs->lock);
    tree = *tree_slot(fs, name);
    if (tree != NULL)
        atomic_fetch_add(&tree->refs, 1);
    pthread_mutex_unlock(&fs->lock);
    return tree;
}

int casfs_tree_names(struct casfs *fs, char **buf, size_t *len, size_t *count)
{
    size_t total = 0, n = 0;
    char *out, *p;

    pthread_mutex_lock(&fs->lock);
    for (struct casfs_tree *t = fs->trees; t != NULL; t = t->next) {
        total += strlen(t->name) + 1;
        n++;
    }
    out = malloc(total ? total : 1);
    if (out == NULL) {
        pthread_mutex_unlock(&fs->lock);
        return -ENOMEM;
    }
    p = out;
    for (struct casfs_tree *t = fs->trees; t != NULL; t = t->next) {
        size_t l = strlen(t->name) + 1;

        memcpy(p, t->name, l);
        p += l;
    }
    pthread_mutex_unlock(&fs->lock);
    *buf = out;
    *len = total;
    *count = n;
    return 0;
}

int casfs_tree_add(struct casfs *fs, const char *name, const struct cas_digest *root)
{
    struct casfs_tree *tree, **slot;
    int rc = 0;

    if (name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0 || strlen(name) > 255)
        return -EINVAL;
    tree = calloc(1, sizeof(*tree));
    if (tree == NULL || (tree->name = strdup(name)) == NULL) {
        free(tree);
        return -ENOMEM;
    }
    tree->root = *root;
    atomic_init(&tree->refs, 1);
    pthread_mutex_lock(&fs->lock);
    slot = tree_slot(fs, name);
    if (*slot != NULL)
        rc = -EEXIST;
    else
        *slot = tree;
    pthread_mutex_unlock(&fs->lock);
    if (rc != 0)
        casfs_tree_unref(tree);
    return rc;
}

static void tree_read_stats(struct casfs_tree *tree, struct casfs_tree_stats *out)
{
    out->files_opened = atomic_load(&tree->files_opened);
    out->lookups = atomic_load(&tree->lookups);
    out->files_passthrough = atomic_load(&tree->files_passthrough);
    out->bytes_read = atomic_load(&tree->bytes_read);
    out->read_errors = atomic_load(&tree->read_errors);
    cas_fetch_counters_read(&tree->fetch, &out->fetch);
}

int casfs_tree_stats(struct casfs *fs, const char *name, struct casfs_tree_stats *out)
{
    struct casfs_tree *tree = casfs_tree_find(fs, name);

    if (tree == NULL)
        return -ENOENT;
    tree_read_stats(tree, out);
    casfs_tree_unref(tree);
    return 0;
}

int casfs_tree_remove(struct casfs *fs, const char *name, struct casfs_tree_stats *final)
{
    struct casfs_tree *tree, **slot;

    pthread_mutex_lock(&fs->lock);
    slot = tree_slot(fs, name);
    tree = *slot;
    if (tree != NULL)
        *slot = tree->next;
    pthread_mutex_unlock(&fs->lock);
    if (tree == NULL)
        return -ENOENT;
    if (final != NULL)
        tree_read_stats(tree, final);
    /* Drop the kernel's dentry for it (and below it): the name is gone at
     * once. -ENOENT when the kernel never looked it up. This takes the mount
     * root's inode lock only, which no FUSE request of ours holds for long. */
    fuse_lowlevel_notify_inval_entry(fs->se, FUSE_ROOT_ID, name, strlen(name));
    casfs_tree_unref(tree);
    return 0;
}

void casfs_trees_free(struct casfs *fs)
{
    struct casfs_inode *inode, *next;
    struct casfs_tree *tree, *tnext;

    for (inode = fs->inodes; inode != NULL; inode = next) {
        next = inode->next;
        inode_free(inode);
    }
    for (tree = fs->trees; tree != NULL; tree = tnext) {
        tnext = tree->next;
        casfs_tree_unref(tree);
    }
    fs->inodes = NULL;
    fs->trees = NULL;
    free(fs->children);
    fs->children = NULL;
}
