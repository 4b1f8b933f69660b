/*
 * ns_floor.c - the least any `casbox run` can do, for casbox_run_bench to
 * print beside it: clone into new user, mount, pid, net, ipc and uts
 * namespaces, map the caller's uid/gid (to themselves, as casbox run does without --root) from the
 * child, then (as pid 1) vfork and exec the command and wait for it. No root, no mounts, no
 * capabilities dropped, no seccomp, no report: none of the sandbox, only the
 * kernel work its namespaces cost.
 *
 *   casbox_ns_floor [--vm] -- COMMAND [ARGS...]
 *
 * Without --vm the clone is fork-like, as casbox run's is (the child gets a
 * copy of our address space); --vm shares it (CLONE_VM, a stack of its own),
 * which is what a design without that copy could reach. Exit status: the
 * command's, 125 when the floor itself failed. A benchmark helper, not a
 * sandbox: it isolates nothing that matters.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct floor_args {
    char **argv;
    unsigned uid, gid;
};

static int floor_write(const char *path, const char *data)
{
    size_t len = strlen(data);
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -1;
    if (write(fd, data, len) != (ssize_t)len)
        rc = -1;
    close(fd);
    return rc;
}

static int floor_child(void *arg)
{
    const struct floor_args *a = arg;
    char map[64];
    pid_t pid;
    int status;

    snprintf(map, sizeof(map), "%u %u 1\n", a->uid, a->uid);
    if (floor_write("/proc/self/uid_map", map) != 0 ||
        floor_write("/proc/self/setgroups", "deny") != 0)
        _exit(125);
    snprintf(map, sizeof(map), "%u %u 1\n", a->gid, a->gid);
    if (floor_write("/proc/self/gid_map", map) != 0)
        _exit(125);
    pid = vfork();
    if (pid == 0) {
        execvp(a->argv[0], a->argv);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        _exit(125);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

int main(int argc, char **argv)
{
    static char stack[256 * 1024] __attribute__((aligned(16)));
    struct floor_args a = {.uid = geteuid(), .gid = getegid()};
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                CLONE_NEWUTS | SIGCHLD;
    int i = 1, status;
    pid_t pid;

    if (i < argc && strcmp(argv[i], "--vm") == 0) {
        flags |= CLONE_VM;
        i++;
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc) {
        fprintf(stderr, "usage: casbox_ns_floor [--vm] -- COMMAND [ARGS...]\n");
        return 2;
    }
    a.argv = argv + i + 1;
    if (flags & CLONE_VM) {
        pid = clone(floor_child, stack + sizeof(stack), flags, &a);
    } else {
        /* fork-like, on our own stack, as sandbox/run.c clones */
        pid = (pid_t)syscall(SYS_clone, (unsigned long)flags, NULL, NULL, NULL, 0);
        if (pid == 0)
            floor_child(&a);
    }
    if (pid < 0) {
        fprintf(stderr, "casbox_ns_floor: clone: %s\n", strerror(errno));
        return 125;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return 125;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 125;
}
