/*
 * child.c - the inside of the clone: pid 1 of the new namespaces, and the
 * command it starts.
 *
 * pid 1 maps its uid/gid and joins the action's cgroup, sets the namespaces
 * up (cgroup ns, hostname, root, loopback), drops every capability and
 * installs the seccomp filter, then starts the command and reaps. Why a
 * separate pid 1: orphans of the command are re-parented to it and must be
 * reaped or they stay zombies; and when pid 1 exits the kernel kills the
 * whole pid namespace, so killing pid 1 (timeout, cancel, caller death via
 * PDEATHSIG) kills every process the command started. pid 1 runs under the
 * same filter and without capabilities too, so the command gains nothing by
 * attacking it.
 *
 * The command's wait status goes to the supervisor over the report pipe,
 * because pid 1 can only pass on "128 + signal" as an exit code: a namespace's
 * init cannot kill itself with the signal the command died of.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/close_range.h>

#include "internal.h"

static void child_send(int fd, const struct sandbox_report *r)
{
    ssize_t n;

    do {
        n = write(fd, r, sizeof(*r));
    } while (n < 0 && errno == EINTR);
    /* If the supervisor is gone there is nobody left to tell; the exit code
     * (125/127) still says what happened. */
}

static void child_report(int fd, int kind, int status, const char *msg)
{
    struct sandbox_report r;

    memset(&r, 0, sizeof(r));
    r.kind = kind;
    r.status = status;
    snprintf(r.msg, sizeof(r.msg), "%s", msg != NULL ? msg : "");
    child_send(fd, &r);
}

static int child_write_file(const char *path, const char *data, char *err, size_t err_len)
{
    size_t len = strlen(data);
    int fd, rc = 0;

    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        sandbox_error_set(err, err_len, "write %s: %s", path, strerror(-rc));
    return rc;
}

/* The first steps, done by the child itself so that the caller never waits
 * on it: map our ids (one line mapping our own euid/egid is what an
 * unprivileged process may write for itself; setgroups must be denied
 * before gid_map), then move into the action's cgroup ("0" is the writer). */
static int child_map_ids(unsigned uid, unsigned gid, bool uid0, char *err, size_t err_len)
{
    char map[64];
    int rc;

    snprintf(map, sizeof(map), "%u %u 1\n", uid0 ? 0 : uid, uid);
    rc = child_write_file("/proc/self/uid_map", map, err, err_len);
    if (rc == 0)
        rc = child_write_file("/proc/self/setgroups", "deny", err, err_len);
    if (rc == 0) {
        snprintf(map, sizeof(map), "%u %u 1\n", uid0 ? 0 : gid, gid);
        rc = child_write_file("/proc/self/gid_map", map, err, err_len);
    }
    /* Once the id maps are written (they need /proc/self owned by us): no
     * core dumps, and /proc/1 closed to the command (same uid), which could
     * otherwise open the pipes pid 1 holds or forge its report. */
    if (rc == 0 && prctl(PR_SET_DUMPABLE, 0) != 0) {
        rc = -errno;
        snprintf(err, err_len, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
    }
    return rc;
}

static int child_setup(struct sandbox_child *c, char *err, size_t err_len)
{
    const struct sandbox_spec *spec = c->spec;
    const char *hostname = sandbox_spec_hostname(spec);
    int rc;

    /* We are in the action's cgroup by now, so this namespace's root is
     * that cgroup: /proc/self/cgroup shows "/". */
    if (unshare(CLONE_NEWCGROUP) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "unshare cgroup namespace: %s", strerror(errno));
        return rc;
    }
    if (sethostname(hostname, strlen(hostname)) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "sethostname: %s", strerror(errno));
        return rc;
    }
    rc = sandbox_mounts_build_root(spec, c->plan, err, err_len);
    if (rc != 0)
        return rc;
    if (!spec->network) {
        rc = sandbox_net_loopback_up();
        if (rc != 0) {
            sandbox_error_set(err, err_len, "bring up lo: %s", strerror(-rc));
            return rc;
        }
    }
    rc = sandbox_caps_drop_all(err, err_len);
    if (rc != 0)
        return rc;
    rc = sandbox_seccomp_apply(c->seccomp);
    if (rc != 0)
        sandbox_error_set(err, err_len, "install seccomp filter: %s", strerror(-rc));
    return rc;
}

/* execve with the PATH of the command's own environment (execvpe would use
 * ours). Returns the errno to report. */
static int child_execvpe(char *const argv[], char *const envp[])
{
    const char *file = argv[0], *path = NULL;
    char buf[PATH_MAX];
    bool eacces = false;

    if (strchr(file, '/') != NULL) {
        execve(file, argv, envp);
        return errno;
    }
    for (size_t i = 0; envp[i] != NULL; i++)
        if (strncmp(envp[i], "PATH=", 5) == 0)
            path = envp[i] + 5;
    if (path == NULL)
        path = "/bin:/usr/bin"; /* glibc's default */
    for (const char *p = path;; p++) {
        size_t len = strcspn(p, ":");
        int n;

        /* An empty element means the current directory. */
        if (len == 0)
            n = snprintf(buf, sizeof(buf), "%s", file);
        else
            n = snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, p, file);
        if (n > 0 && (size_t)n < sizeof(buf)) {
            execve(buf, argv, envp);
            switch (errno) {
            case EACCES:
                eacces = true;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
                break;
            default:
                return errno;
            }
        }
        p += len;
        if (*p == '\0')
            break;
    }
    return eacces ? EACCES : ENOENT;
}

/* Reads a hex signal mask line ("SigIgn:\t0000000000001000") of status. */
static uint64_t child_status_mask(const char *status, const char *key)
{
    const char *p = strstr(status, key);

    return p != NULL ? strtoull(p + strlen(key), NULL, 16) : 0;
}

/* pid 1 hands its signal dispositions down through vfork and execve:
 * "ignore" survives execve (the daemon ignores SIGPIPE, which `yes | head`
 * in a build relies on), and a handler inherited from the caller must not
 * run in the vfork child, which shares our memory. /proc/self/status lists
 * both sets, so only those few are reset, not all 64. */
static int child_reset_dispositions(void)
{
    struct sigaction dfl;
    char status[4096];
    uint64_t mask = ~0ull;
    ssize_t n = -1;
    int fd;

    fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, status, sizeof(status) - 1);
        close(fd);
    }
    if (n > 0) {
        status[n] = '\0';
        mask = child_status_mask(status, "\nSigIgn:") | child_status_mask(status, "\nSigCgt:");
    }
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
        if (!(mask & (1ull << (sig - 1))) || sig == SIGKILL || sig == SIGSTOP)
            continue;
        /* glibc reserves two real-time signals and refuses to touch them */
        if (sigaction(sig, &dfl, NULL) != 0 && errno != EINVAL)
            return -errno;
    }
    return 0;
}

/* Puts the command's stdio on 0, 1, 2. A caller that runs with some of
 * 0..2 closed may have got our fds there: move those out of the way first,
 * and clear close-on-exec where an fd is already in place (dup2 onto
 * itself would leave the flag). */
static int child_dup_stdio(const struct sandbox_child *c)
{
    int fds[3] = {c->stdin_fd, c->stdout_fd, c->stderr_fd};

    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0 && fds[i] < 3 && fds[i] != i) {
            fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (fds[i] < 0)
                return -errno;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (fds[i] < 0)
            continue;
        if (fds[i] == i ? fcntl(i, F_SETFD, 0) != 0 : dup2(fds[i], i) < 0)
            return -errno;
    }
    return 0;
}

static _Noreturn void child_exec_command(struct sandbox_child *c)
{
    const struct sandbox_spec *spec = c->spec;
    char msg[sizeof(((struct sandbox_report *)0)->msg)];
    sigset_t none;
    int rc;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    rc = child_dup_stdio(c);
    if (rc != 0) {
        snprintf(msg, sizeof(msg), "redirect stdio: %s", strerror(-rc));
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, msg);
        _exit(125);
    }
    rc = sandbox_rlimits_apply(&spec->limits, c->memory_method, c->pids_method);
    if (rc != 0) {
        snprintf(msg, sizeof(msg), "setrlimit: %s", strerror(-rc));
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, msg);
        _exit(125);
    }
    /* Whatever the caller leaked without O_CLOEXEC stays out of the command;
     * the report pipe is already close-on-exec, so a successful exec closes
     * it and a failed one can still use it. */
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
        snprintf(msg, sizeof(msg), "close_range: %s", strerror(errno));
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, msg);
        _exit(125);
    }
    rc = child_execvpe(spec->argv, spec->envp);
    snprintf(msg, sizeof(msg), "exec %s: %s", spec->argv[0], strerror(rc));
    child_report(c->report_wr, SANDBOX_REPORT_EXEC_ERROR, 0, msg);
    _exit(127);
}

/* After the command: whatever it left behind is killed and reaped, so that
 * the supervisor has its final answer before pid 1 exits (and before the
 * kernel tears the namespaces down). Every process of the namespace is a
 * descendant of pid 1, so once pid 1 has no child left, nothing is left. */
static void child_reap_rest(void)
{
    bool killed = false;

    for (;;) {
        pid_t w = waitpid(-1, NULL, killed ? 0 : WNOHANG);

        if (w > 0 || (w < 0 && errno == EINTR))
            continue;
        if (w < 0)
            return; /* ECHILD */
        /* Live processes left: kill every one (all but pid 1), reap them. */
        kill(-1, SIGKILL);
        killed = true;
    }
}

static uint64_t child_tv_us(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000000u + (uint64_t)tv->tv_usec;
}

/* The command's status and what every process of the run used (what wait4
 * on pid 1 would give: pid 1 itself and every child it reaped). */
static void child_report_status(int fd, int status)
{
    struct sandbox_report r;
    struct rusage self, children;

    memset(&r, 0, sizeof(r));
    r.kind = SANDBOX_REPORT_STATUS;
    r.status = status;
    if (getrusage(RUSAGE_SELF, &self) == 0 && getrusage(RUSAGE_CHILDREN, &children) == 0) {
        r.all_reaped = 1;
        r.user_us = child_tv_us(&self.ru_utime) + child_tv_us(&children.ru_utime);
        r.sys_us = child_tv_us(&self.ru_stime) + child_tv_us(&children.ru_stime);
        r.max_rss_kb =
            (uint64_t)(self.ru_maxrss > children.ru_maxrss ? self.ru_maxrss : children.ru_maxrss);
    }
    child_send(fd, &r);
}

/* pid 1's life after set-up: reap everything until the command is gone. */
static _Noreturn void child_reap(struct sandbox_child *c, pid_t command)
{
    int status = 0;

    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);

        if (w == command) {
            status = st;
            break;
        }
        if (w < 0 && errno != EINTR) {
            /* ECHILD cannot happen before the command was reaped; if it
             * does, report the failure instead of looping. */
            child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, "pid 1: waitpid failed");
            _exit(125);
        }
    }
    child_reap_rest();
    child_report_status(c->report_wr, status);
    if (WIFSIGNALED(status))
        _exit(128 + WTERMSIG(status));
    _exit(WEXITSTATUS(status));
}

/* pid 1 keeps only its own fds: the report pipe and the command's stdio.
 * The caller may hold other runs' pipes and sockets (the spawner does), and
 * none of them may reach this sandbox. close_range over the gaps between
 * the kept fds: a few syscalls however many fds the caller has. */
static void child_close_fds_but(int keep[4])
{
    unsigned next = 3;

    for (int i = 1; i < 4; i++) /* sort, ascending */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];

            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    for (int i = 0; i < 4; i++) {
        if (keep[i] < (int)next)
            continue;
        if ((unsigned)keep[i] > next)
            close_range(next, (unsigned)keep[i] - 1, 0);
        next = (unsigned)keep[i] + 1;
    }
    close_range(next, ~0u, 0);
}

static void child_close_others(const struct sandbox_child *c)
{
    int keep[4] = {c->report_wr, c->stdin_fd, c->stdout_fd, c->stderr_fd};

    child_close_fds_but(keep);
}

/* From the id maps on: the cgroup, the namespaces' set-up, the command. */
static _Noreturn void child_run(struct sandbox_child *c)
{
    char err[sizeof(((struct sandbox_report *)0)->msg)];
    sigset_t all;
    pid_t command;
    int rc;

    err[0] = '\0';
    rc = sandbox_cgroup_attach(c->cgroup, 0);
    if (rc != 0)
        snprintf(err, sizeof(err), "move into the action's cgroup: %s", strerror(-rc));
    if (rc != 0 || child_setup(c, err, sizeof(err)) != 0) {
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, err);
        _exit(125);
    }
    /* vfork: no copy of our page tables, and we sleep until the command has
     * exec'd. The child only makes syscalls on its own stack frames and
     * never returns. Signals are blocked across it, and every disposition
     * is the default before the child unblocks them. */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    rc = child_reset_dispositions();
    if (rc != 0) {
        snprintf(err, sizeof(err), "reset signal dispositions: %s", strerror(-rc));
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, err);
        _exit(125);
    }
    command = vfork();
    if (command < 0) {
        snprintf(err, sizeof(err), "fork the command: %s", strerror(errno));
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, err);
        _exit(125);
    }
    if (command == 0)
        child_exec_command(c);
    /* pid 1 keeps no end of the command's output pipes: the supervisor
     * reads until every writer is gone. */
    if (c->stdout_fd >= 0)
        close(c->stdout_fd);
    if (c->stderr_fd >= 0)
        close(c->stderr_fd);
    if (c->stdin_fd >= 0)
        close(c->stdin_fd);
    child_reap(c, command);
}

/* If the caller dies, so does the whole sandbox; if it died before this, its
 * end of fd (the report pipe, the warm channel) is closed already. */
static bool child_watch_parent(int fd)
{
    struct pollfd parent = {.fd = fd, .events = POLLOUT};

    return prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && poll(&parent, 1, 0) == 1 &&
           (parent.revents & (POLLERR | POLLHUP)) == 0;
}

_Noreturn void sandbox_child_main(struct sandbox_child *c)
{
    char err[sizeof(((struct sandbox_report *)0)->msg)];

    child_close_others(c);
    if (!child_watch_parent(c->report_wr))
        _exit(125);
    err[0] = '\0';
    if (child_map_ids(c->outer_uid, c->outer_gid, c->spec->uid0, err, sizeof(err)) != 0) {
        child_report(c->report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, err);
        _exit(125);
    }
    child_run(c);
}

/* --- a warm pid 1: cloned ahead, waiting for its run --- */

static int child_warm_no_program(char *err, size_t err_len)
{
    snprintf(err, err_len, "warm pid 1: no seccomp program for the mode");
    return -EINVAL;
}

/* Is there a go message, or may one still come? */
static bool child_warm_wanted(int sock)
{
    struct pollfd p = {.fd = sock, .events = POLLIN};

    if (poll(&p, 1, 0) < 0)
        return false;
    return (p.revents & POLLIN) != 0 || (p.revents & (POLLHUP | POLLERR)) == 0;
}

/* Receives the go message: header, spec bytes and fds. */
static int child_warm_receive(int sock, struct sandbox_warm_go *go, uint8_t *spec_buf, int fds[4])
{
    char control_buf[CMSG_SPACE(4 * sizeof(int))];
    struct iovec iov[2] = {{.iov_base = go, .iov_len = sizeof(*go)},
                           {.iov_base = spec_buf, .iov_len = SANDBOX_WARM_SPEC_MAX}};
    struct msghdr msg = {
        .msg_iov = iov,
        .msg_iovlen = 2,
        .msg_control = control_buf,
        .msg_controllen = sizeof(control_buf),
    };
    struct cmsghdr *cmsg;
    ssize_t n;

    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < (ssize_t)sizeof(*go))
        return -EPIPE; /* EOF: not needed after all */
    cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg == NULL || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
        cmsg->cmsg_len != CMSG_LEN(4 * sizeof(int)) || (msg.msg_flags & MSG_CTRUNC) ||
        (size_t)n != sizeof(*go) + go->spec_len)
        return -EPROTO;
    memcpy(fds, CMSG_DATA(cmsg), 4 * sizeof(int));
    return 0;
}

/* An fd sent for "inherit" (the caller's placeholder) is dropped: pid 1 has
 * the caller's own stdio from its clone. */
static int child_warm_fd(int fd, bool inherit)
{
    if (!inherit)
        return fd;
    close(fd);
    return -1;
}

/* The struct sandbox_child of the run the go message describes. fds: the
 * report pipe, then the command's stdin, stdout, stderr. */
static void child_warm_fill(struct sandbox_child *c, const struct sandbox_warm_child *w,
                            struct sandbox_warm_go *go, const int fds[4])
{
    memset(c, 0, sizeof(*c));
    c->cgroup = &go->cgroup;
    c->outer_uid = w->outer_uid;
    c->outer_gid = w->outer_gid;
    c->report_wr = fds[0];
    c->stdin_fd = child_warm_fd(fds[1], go->inherit & 1);
    c->stdout_fd = child_warm_fd(fds[2], go->inherit & 2);
    c->stderr_fd = child_warm_fd(fds[3], go->inherit & 4);
    c->memory_method = go->cgroup.memory_method;
    c->pids_method = go->cgroup.pids_method;
    if (go->seccomp == SANDBOX_SECCOMP_DEFAULT)
        c->seccomp = w->seccomp_default;
    else if (go->seccomp == SANDBOX_SECCOMP_STRICT)
        c->seccomp = w->seccomp_strict;
    else if (go->seccomp == SANDBOX_SECCOMP_NONE)
        c->seccomp = &w->seccomp_none;
    else
        c->seccomp = NULL;
}

_Noreturn void sandbox_child_warm_main(int sock, const struct sandbox_warm_child *w)
{
    struct sandbox_warm_go *go = malloc(sizeof(*go));
    uint8_t *spec_buf = malloc(SANDBOX_WARM_SPEC_MAX);
    struct sandbox_mounts_plan *plan = NULL;
    struct sandbox_spec spec;
    struct sandbox_child c;
    char err[sizeof(((struct sandbox_report *)0)->msg)];
    int fds[4], keep[4] = {sock, -1, -1, -1};
    int rc;

    child_close_fds_but(keep);
    /* The caller may have sent the go message and closed its end before we
     * ran at all: a hang-up alone (no message) means it is gone. */
    if (go == NULL || spec_buf == NULL || prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
        !child_warm_wanted(sock) ||
        child_map_ids(w->outer_uid, w->outer_gid, w->uid0, err, sizeof(err)) != 0)
        _exit(125);
    rc = child_warm_receive(sock, go, spec_buf, fds);
    close(sock);
    if (rc != 0)
        _exit(rc == -EPIPE ? 0 : 125);
    /* As in a cold start: if the caller died before our PDEATHSIG was set,
     * its end of the report pipe is closed. */
    if (!child_watch_parent(fds[0]))
        _exit(125);
    sandbox_spec_init(&spec);
    child_warm_fill(&c, w, go, fds);
    c.spec = &spec;
    err[0] = '\0';
    rc = sandbox_spec_decode(spec_buf, go->spec_len, &spec);
    if (rc != 0)
        snprintf(err, sizeof(err), "warm pid 1: bad spec: %s", strerror(-rc));
    else if (c.seccomp == NULL)
        rc = child_warm_no_program(err, sizeof(err));
    else
        rc = sandbox_mounts_plan(&plan, &spec, err, sizeof(err));
    if (rc != 0) {
        child_report(c.report_wr, SANDBOX_REPORT_SETUP_ERROR, 0, err);
        _exit(125);
    }
    c.plan = plan;
    free(spec_buf);
    child_run(&c);
}
