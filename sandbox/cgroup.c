/*
 * cgroup.c - memory and pids limits: cgroup v2, else cgroup v1, else rlimits.
 *
 * cgroup v2 is used when the parent cgroup (the caller's own, or
 * spec->cgroup_parent) has the needed controllers in cgroup.subtree_control;
 * it also gives cgroup.kill and memory.oom.group (kill the whole action on
 * OOM). Hosts with the controllers on v1 (this project's CI: memory and pids
 * are v1, the unified mount has none) get one child per v1 hierarchy under
 * the caller's cgroup there. A caller that may not create cgroups (an
 * ordinary user without delegation) falls back to RLIMIT_AS and RLIMIT_NPROC,
 * silently: those still contain a memory hog or a fork bomb, but a hit cannot
 * be told apart from an ordinary failure. RLIMIT_NPROC counts per user in the
 * sandbox's own user namespace (kernel >= 5.14), so it is per action; it is not
 * enforced for a sandbox that is host root.
 *
 * The cgroup is created and its limits written before clone; the caller moves
 * the child in before releasing it, so every process of the action is inside.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Is word one of the comma- or blank-separated tokens of list? */
static bool cgroup_has_token(const char *list, const char *word)
{
    size_t len = strlen(word);

    for (const char *p = list; *p != '\0';) {
        size_t n = strcspn(p, ", \n");

        if (n == len && strncmp(p, word, len) == 0)
            return true;
        p += n;
        p += strspn(p, ", \n");
    }
    return false;
}

/* Finds the mount of a v1 hierarchy with controller, or (controller NULL)
 * the cgroup2 mount: its mount point and the cgroup path it shows. */
static int cgroup_find_mount(const char *controller, char *mnt, char *root)
{
    char *line = NULL;
    size_t cap = 0;
    FILE *f;
    int rc = -ENOENT;

    f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -errno;
    while (rc == -ENOENT && getline(&line, &cap, f) > 0) {
        char *fields[6], *sep, *fstype, *super, *save = NULL;
        int i;

        sep = strstr(line, " - ");
        if (sep == NULL)
            continue;
        *sep = '\0';
        fstype = strtok_r(sep + 3, " ", &save);
        strtok_r(NULL, " ", &save); /* source */
        super = strtok_r(NULL, " \n", &save);
        if (fstype == NULL || super == NULL)
            continue;
        if (controller == NULL
                ? strcmp(fstype, "cgroup2") != 0
                : strcmp(fstype, "cgroup") != 0 || !cgroup_has_token(super, controller))
            continue;
        save = NULL;
        for (i = 0; i < 6; i++) {
            fields[i] = strtok_r(i == 0 ? line : NULL, " ", &save);
            if (fields[i] == NULL)
                break;
        }
        if (i < 5)
            continue;
        snprintf(root, PATH_MAX, "%s", fields[3]);
        snprintf(mnt, PATH_MAX, "%s", fields[4]);
        rc = 0;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Our cgroup path in a v1 hierarchy with controller, or in v2 (NULL). */
static int cgroup_own_path(const char *controller, char *out)
{
    char *line = NULL;
    size_t cap = 0;
    FILE *f;
    int rc = -ENOENT;

    f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return -errno;
    while (rc == -ENOENT && getline(&line, &cap, f) > 0) {
        char *list = strchr(line, ':'), *path;

        if (list == NULL)
            continue;
        list++;
        path = strchr(list, ':');
        if (path == NULL)
            continue;
        *path++ = '\0';
        path[strcspn(path, "\n")] = '\0';
        if (controller == NULL ? list[0] != '\0' : !cgroup_has_token(list, controller))
            continue;
        snprintf(out, PATH_MAX, "%s", path);
        rc = 0;
    }
    free(line);
    fclose(f);
    return rc;
}

/* The directory to create the action's cgroup in, for one hierarchy. */
static int cgroup_parent_dir(const char *controller, const char *parent, char *out)
{
    char mnt[PATH_MAX], root[PATH_MAX], own[PATH_MAX];
    const char *path = parent;
    size_t rlen;
    int rc, n;

    rc = cgroup_find_mount(controller, mnt, root);
    if (rc != 0)
        return rc;
    if (path == NULL) {
        rc = cgroup_own_path(controller, own);
        if (rc != 0)
            return rc;
        path = own;
    }
    /* A mount of a sub-tree (root != "/") shows paths below its root. */
    rlen = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(path, root, rlen) == 0 &&
        (path[rlen] == '/' || path[rlen] == '\0'))
        path += rlen;
    n = snprintf(out, PATH_MAX, "%s%s", mnt, strcmp(path, "/") == 0 ? "" : path);
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int cgroup_write(const char *dir, const char *file, const char *value)
{
    char path[PATH_MAX];
    size_t len = strlen(value);
    int fd, rc = 0;

    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (write(fd, value, len) != (ssize_t)len)
        rc = -errno;
    close(fd);
    return rc;
}

static int cgroup_write_u64(const char *dir, const char *file, uint64_t value)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRIu64, value);
    return cgroup_write(dir, file, buf);
}

/* Reads "key N" from a flat-keyed file (memory.events, pids.events, ...). */
static uint64_t cgroup_read_key(const char *dir, const char *file, const char *key)
{
    char path[PATH_MAX], line[256];
    uint64_t value = 0;
    size_t klen = strlen(key);
    FILE *f;

    if (dir[0] == '\0' || snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
        return 0;
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            value = strtoull(line + klen + 1, NULL, 10);
    fclose(f);
    return value;
}

static bool cgroup_cannot_create(int rc)
{
    return rc == -EACCES || rc == -EPERM || rc == -EROFS || rc == -ENOENT;
}

static void cgroup_name(char *out, size_t len)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(out, len, "casbox-%d-%llx", (int)getpid(),
             (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
}

/* Makes dir = parent/name; 1 when not allowed (fall back), 0 made, <0 error. */
static int cgroup_mkdir(char *dir, const char *parent, const char *name)
{
    if (snprintf(dir, PATH_MAX, "%s/%s", parent, name) >= PATH_MAX)
        return -ENAMETOOLONG;
    if (mkdir(dir, 0755) == 0)
        return 0;
    dir[0] = '\0';
    return cgroup_cannot_create(-errno) ? 1 : -errno;
}

static int cgroup_try_v2(struct sandbox_cgroup *cg, const struct sandbox_spec *spec,
                         const char *name, char *err, size_t err_len)
{
    const struct sandbox_limits *l = &spec->limits;
    char parent[PATH_MAX], path[PATH_MAX], control[256];
    ssize_t n;
    int fd, rc;

    if (cgroup_parent_dir(NULL, spec->cgroup_parent, parent) != 0)
        return 1;
    if (snprintf(path, sizeof(path), "%s/cgroup.subtree_control", parent) >= (int)sizeof(path))
        return 1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    n = read(fd, control, sizeof(control) - 1);
    close(fd);
    if (n < 0)
        return 1;
    control[n] = '\0';
    if ((l->memory_bytes > 0 && !cgroup_has_token(control, "memory")) ||
        (l->pids_max > 0 && !cgroup_has_token(control, "pids")))
        return 1;
    rc = cgroup_mkdir(cg->v2_dir, parent, name);
    if (rc != 0)
        return rc;
    if (l->memory_bytes > 0) {
        rc = cgroup_write_u64(cg->v2_dir, "memory.max", l->memory_bytes);
        /* no swapping around the limit; absent without swap accounting */
        if (rc == 0 && (rc = cgroup_write(cg->v2_dir, "memory.swap.max", "0")) == -ENOENT)
            rc = 0;
        /* an OOM kills the whole action, not one random process of it */
        if (rc == 0 && (rc = cgroup_write(cg->v2_dir, "memory.oom.group", "1")) == -ENOENT)
            rc = 0;
        cg->memory_method = SANDBOX_METHOD_CGROUP_V2;
    }
    if (rc == 0 && l->pids_max > 0) {
        rc = cgroup_write_u64(cg->v2_dir, "pids.max", l->pids_max);
        cg->pids_method = SANDBOX_METHOD_CGROUP_V2;
    }
    if (rc != 0)
        sandbox_error_set(err, err_len, "cgroup %s: set limits: %s", cg->v2_dir, strerror(-rc));
    return rc;
}

static int cgroup_try_v1(char *dir, const char *controller, const struct sandbox_spec *spec,
                         const char *name)
{
    char parent[PATH_MAX];

    if (cgroup_parent_dir(controller, spec->cgroup_parent, parent) != 0)
        return 1;
    return cgroup_mkdir(dir, parent, name);
}

int sandbox_cgroup_create(struct sandbox_cgroup *cg, const struct sandbox_spec *spec, char *err,
                          size_t err_len)
{
    const struct sandbox_limits *l = &spec->limits;
    char name[64];
    int rc;

    memset(cg, 0, sizeof(*cg));
    if (l->memory_bytes == 0 && l->pids_max == 0)
        return 0;
    cgroup_name(name, sizeof(name));
    rc = cgroup_try_v2(cg, spec, name, err, err_len);
    if (rc <= 0)
        goto out;
    if (l->memory_bytes > 0) {
        rc = cgroup_try_v1(cg->v1_memory_dir, "memory", spec, name);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            rc = cgroup_write_u64(cg->v1_memory_dir, "memory.limit_in_bytes", l->memory_bytes);
            /* memory+swap at the same limit: no swapping around it. Absent
             * without swap accounting. */
            if (rc == 0 && (rc = cgroup_write_u64(cg->v1_memory_dir, "memory.memsw.limit_in_bytes",
                                                  l->memory_bytes)) == -ENOENT)
                rc = 0;
            if (rc != 0) {
                sandbox_error_set(err, err_len, "cgroup %s: set limit: %s", cg->v1_memory_dir,
                                  strerror(-rc));
                goto out;
            }
            cg->memory_method = SANDBOX_METHOD_CGROUP_V1;
        } else {
            cg->memory_method = SANDBOX_METHOD_RLIMIT;
        }
    }
    if (l->pids_max > 0) {
        rc = cgroup_try_v1(cg->v1_pids_dir, "pids", spec, name);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            rc = cgroup_write_u64(cg->v1_pids_dir, "pids.max", l->pids_max);
            if (rc != 0) {
                sandbox_error_set(err, err_len, "cgroup %s: set limit: %s", cg->v1_pids_dir,
                                  strerror(-rc));
                goto out;
            }
            cg->pids_method = SANDBOX_METHOD_CGROUP_V1;
        } else {
            cg->pids_method = SANDBOX_METHOD_RLIMIT;
        }
    }
    rc = 0;
out:
    if (rc < 0) {
        if (err != NULL && err[0] == '\0')
            sandbox_error_set(err, err_len, "cgroup: %s", strerror(-rc));
        sandbox_cgroup_destroy(cg);
    }
    return rc < 0 ? rc : 0;
}

int sandbox_cgroup_attach(const struct sandbox_cgroup *cg, pid_t pid)
{
    const char *dirs[] = {cg->v2_dir, cg->v1_memory_dir, cg->v1_pids_dir};
    char buf[32];

    snprintf(buf, sizeof(buf), "%d", (int)pid);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        int rc;

        if (dirs[i][0] == '\0')
            continue;
        rc = cgroup_write(dirs[i], "cgroup.procs", buf);
        if (rc != 0)
            return rc;
    }
    return 0;
}

bool sandbox_cgroup_in_use(const struct sandbox_cgroup *cg)
{
    return cg->v2_dir[0] != '\0' || cg->v1_memory_dir[0] != '\0' || cg->v1_pids_dir[0] != '\0';
}

int sandbox_cgroup_kill(const struct sandbox_cgroup *cg)
{
    if (cg->v2_dir[0] == '\0')
        return -ENOENT;
    return cgroup_write(cg->v2_dir, "cgroup.kill", "1");
}

void sandbox_cgroup_collect(const struct sandbox_cgroup *cg, bool *oom_killed, bool *pids_hit)
{
    *oom_killed = false;
    *pids_hit = false;
    if (cg->memory_method == SANDBOX_METHOD_CGROUP_V2)
        *oom_killed = cgroup_read_key(cg->v2_dir, "memory.events", "oom_kill") > 0 ||
                      cgroup_read_key(cg->v2_dir, "memory.events", "oom_group_kill") > 0;
    if (cg->memory_method == SANDBOX_METHOD_CGROUP_V1)
        *oom_killed = cgroup_read_key(cg->v1_memory_dir, "memory.oom_control", "oom_kill") > 0;
    if (cg->pids_method == SANDBOX_METHOD_CGROUP_V2)
        *pids_hit = cgroup_read_key(cg->v2_dir, "pids.events", "max") > 0;
    if (cg->pids_method == SANDBOX_METHOD_CGROUP_V1)
        *pids_hit = cgroup_read_key(cg->v1_pids_dir, "pids.events", "max") > 0;
}

/* rmdir, retried for a moment while the last exiting tasks leave. */
static int cgroup_remove(char *dir)
{
    const struct timespec pause = {.tv_nsec = 2 * 1000 * 1000};
    int rc = 0;

    if (dir[0] == '\0')
        return 0;
    for (int i = 0; i < 500; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT) {
            rc = 0;
            break;
        }
        rc = -errno;
        if (errno != EBUSY)
            break;
        nanosleep(&pause, NULL);
    }
    if (rc == 0)
        dir[0] = '\0';
    return rc;
}

int sandbox_cgroup_destroy(struct sandbox_cgroup *cg)
{
    int rc = cgroup_remove(cg->v2_dir);
    int rc1 = cgroup_remove(cg->v1_memory_dir);
    int rc2 = cgroup_remove(cg->v1_pids_dir);

    return rc != 0 ? rc : rc1 != 0 ? rc1 : rc2;
}

/* Lowers one rlimit to value (never above the caller's hard limit). */
static int rlimit_lower(int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit cur, want;

    if (getrlimit(resource, &cur) != 0)
        return -errno;
    want.rlim_max = hard < cur.rlim_max ? hard : cur.rlim_max;
    want.rlim_cur = soft < want.rlim_max ? soft : want.rlim_max;
    if (setrlimit(resource, &want) != 0)
        return -errno;
    return 0;
}

int sandbox_rlimits_apply(const struct sandbox_limits *limits,
                          enum sandbox_limit_method memory_method,
                          enum sandbox_limit_method pids_method)
{
    int rc = 0;

    /* SIGXCPU at the limit, SIGKILL a second later if it is caught. */
    if (limits->cpu_seconds > 0)
        rc = rlimit_lower(RLIMIT_CPU, limits->cpu_seconds, limits->cpu_seconds + 1);
    if (rc == 0 && memory_method == SANDBOX_METHOD_RLIMIT)
        rc = rlimit_lower(RLIMIT_AS, limits->memory_bytes, limits->memory_bytes);
    if (rc == 0 && pids_method == SANDBOX_METHOD_RLIMIT)
        rc = rlimit_lower(RLIMIT_NPROC, limits->pids_max, limits->pids_max);
    return rc;
}
