/*
 * casfs.c - the casfs mount's life cycle (stale-mount cleanup, mount, the
 * request loop's thread, unmount). Its trees and inodes are tree.c's, the
 * FUSE operations ops.c's.
 *
 * Shutdown never depends on the kernel forgetting inodes or on readers
 * finishing: the connection is aborted through fusectl when it is mounted
 * (stuck readers get ENOTCONN), the mount is detached lazily, and every inode
 * still alive is freed from the inode list.
 */
#include "casfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* --- mounting --- */

/* Runs fusermount3 -u -z mountpoint; 0 when it exits 0. */
static int run_fusermount_unmount(const char *mountpoint)
{
    char *const argv[] = {"fusermount3", "-u", "-z", "-q", (char *)mountpoint, NULL};
    posix_spawn_file_actions_t fa;
    int status, rc;
    pid_t pid;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    rc = posix_spawnp(&pid, "fusermount3", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -rc;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EINVAL;
}

int casfs_cleanup_stale(const char *mountpoint)
{
    int detached = 0;

    /* Several mounts may be stacked by repeated crashes: detach them all. */
    for (int i = 0; i < 16; i++) {
        if (umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
            detached = 1;
            continue;
        }
        if (errno == EPERM && run_fusermount_unmount(mountpoint) == 0) {
            detached = 1;
            continue;
        }
        break;
    }
    return detached ? 0 : -EINVAL;
}

static void *casfs_loop_thread(void *arg)
{
    struct casfs *fs = arg;
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();

    if (cfg == NULL) {
        fs->loop_rc = -ENOMEM;
        return NULL;
    }
    fuse_loop_cfg_set_max_threads(cfg, fs->threads);
    fuse_loop_cfg_set_idle_threads(cfg, fs->threads);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fs->loop_rc = fuse_session_loop_mt(fs->se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return NULL;
}

const char *casfs_mountpoint(const struct casfs *fs)
{
    return fs->mountpoint;
}

void casfs_get_stats(struct casfs *fs, struct casfs_stats *out)
{
    for (int i = 0; i < CASFS_OP_COUNT; i++)
        out->requests[i] = atomic_load_explicit(&fs->op_counts[i], memory_order_relaxed);
    out->bytes_read = atomic_load_explicit(&fs->bytes_read, memory_order_relaxed);
    out->ring_requests = atomic_load_explicit(&fs->uring.requests, memory_order_relaxed);
}

const char *casfs_op_name(enum casfs_op op)
{
    static const char *const names[] = {"lookup",  "forget", "getattr", "readlink",
                                        "readdir", "open",   "read",    "release"};

    return (unsigned)op < CASFS_OP_COUNT ? names[op] : "unknown";
}

int casfs_passthrough_parse(const char *s, enum casfs_passthrough_mode *out)
{
    if (strcmp(s, "auto") == 0)
        *out = CASFS_PASSTHROUGH_AUTO;
    else if (strcmp(s, "off") == 0)
        *out = CASFS_PASSTHROUGH_OFF;
    else
        return -EINVAL;
    return 0;
}

int casfs_mount(struct cas_store *cas, const struct casfs_options *opt, struct casfs **out)
{
    char *argv[] = {"casfs", "-o", "ro,default_permissions,fsname=casfs,subtype=casfs", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct casfs *fs;
    struct stat st;
    int rc, fd;

    *out = NULL;
    if (opt->threads > CASFS_MAX_THREADS)
        return -EINVAL;
    /* libfuse only says why on stderr; find out first. */
    fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    close(fd);

    fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return -ENOMEM;
    pthread_mutex_init(&fs->lock, NULL);
    fs->cas = cas;
    fs->uid = getuid();
    fs->gid = getgid();
    fs->threads = opt->threads ? opt->threads : 8;
    fs->log = opt->log;
    fs->log_arg = opt->log_arg;
    fs->root.mode = S_IFDIR | 0755;
    atomic_init(&fs->root.nlookup, 1);
    casfs_pt_init(fs, opt->passthrough != CASFS_PASSTHROUGH_OFF);
    rc = casfs_uring_init(fs, opt->uring);
    if (rc != 0)
        casfs_log(fs, "casfs: FUSE over io_uring is required but off (%s)", fs->uring.why);
    if (rc == 0)
        rc = casfs_dircache_init(&fs->cache, opt->dir_cache);
    if (rc == 0)
        rc = casfs_children_init(fs);
    if (rc != 0)
        goto out;
    fs->mountpoint = strdup(opt->mountpoint);
    if (fs->mountpoint == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (casfs_cleanup_stale(fs->mountpoint) == 0)
        casfs_log(fs, "casfs: detached a stale mount on %s", fs->mountpoint);
    if (mkdir(fs->mountpoint, 0755) < 0 && errno != EEXIST) {
        rc = -errno;
        goto out;
    }
    fs->se = fuse_session_new(&args, &casfs_ops, sizeof(casfs_ops), fs);
    fuse_opt_free_args(&args); /* the session may have added to them */
    if (fs->se == NULL) {
        rc = -EINVAL;
        goto out;
    }
    if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
        rc = -EPERM;
        fuse_session_destroy(fs->se);
        fs->se = NULL;
        goto out;
    }
    rc = casfs_pt_attach(fs);
    if (rc == 0)
        rc = -pthread_create(&fs->loop_thread, NULL, casfs_loop_thread, fs);
    if (rc != 0) {
        fuse_session_unmount(fs->se);
        fuse_session_destroy(fs->se);
        fs->se = NULL;
        goto out;
    }
    fs->loop_started = true;
    /* Served by the loop: also waits for the kernel's INIT to be answered. */
    if (stat(fs->mountpoint, &st) < 0) {
        rc = -errno;
        goto out;
    }
    fs->dev = st.st_dev;
    casfs_pt_probe(fs);
    casfs_uring_probe(fs);
    if (opt->uring == CASFS_URING_ON && !casfs_uring_active(fs)) {
        rc = -EOPNOTSUPP;
        goto out;
    }
    *out = fs;
    return 0;
out:
    if (fs->loop_started) {
        casfs_unmount(fs);
        return rc;
    }
    fuse_opt_free_args(&args);
    casfs_dircache_destroy(&fs->cache);
    casfs_uring_destroy(fs);
    casfs_pt_destroy(fs);
    pthread_mutex_destroy(&fs->lock);
    free(fs->children);
    free(fs->mountpoint);
    free(fs);
    return rc;
}

/* Makes every pending and future request of the connection fail at once. */
static void casfs_abort_connection(struct casfs *fs)
{
    char path[64];
    int fd;

    if (fs->dev == 0)
        return;
    snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(fs->dev));
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* fusectl not mounted: the unmount ends the connection */
    if (write(fd, "1", 1) < 0)
        casfs_log(fs, "casfs: aborting the connection through %s: %s", path, strerror(errno));
    close(fd);
}

void casfs_unmount(struct casfs *fs)
{
    struct timespec deadline;
    bool joined = true;

    if (fs == NULL)
        return;
    if (fs->se != NULL) {
        fuse_session_exit(fs->se);
        casfs_abort_connection(fs);
        fuse_session_unmount(fs->se);
    }
    /* Before the loop: a ring thread holds no request of libfuse's loop,
     * and a busy mount's connection would keep the rings waiting. */
    casfs_uring_stop(fs);
    if (fs->loop_started) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 10;
        if (pthread_timedjoin_np(fs->loop_thread, NULL, &deadline) != 0) {
            /* A connection we could not abort and a busy mount: leave the
             * loop (and what it may touch) to the process's exit. */
            casfs_log(fs, "casfs: the request loop on %s did not stop; leaving it", fs->mountpoint);
            pthread_detach(fs->loop_thread);
            joined = false;
        }
    }
    if (!joined)
        return;
    if (fs->se != NULL)
        fuse_session_destroy(fs->se);
    casfs_uring_destroy(fs);
    casfs_trees_free(fs);
    casfs_dircache_destroy(&fs->cache);
    casfs_pt_destroy(fs);
    pthread_mutex_destroy(&fs->lock);
    free(fs->mountpoint);
    free(fs);
}
