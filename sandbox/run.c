/*
 * run.c - one sandbox run: prepare in the caller, clone, supervise.
 *
 * The caller's side, in order: check the spec, build the seccomp program and
 * the root's plan, open the output files, create the cgroup, then clone the
 * child into new user, mount, pid, ipc, uts (and net) namespaces. The child
 * maps its own ids and joins the cgroup before it does anything else
 * (child.c), so the caller goes straight to supervising: poll on the child's
 * pidfd, its report pipe, the output pipes, the timeout and the cancel fds;
 * on a timeout or cancel it kills pid 1 (and the cgroup with cgroup.kill
 * when there is a v2 one), which takes the whole pid namespace down.
 *
 * The steps are separate (sandbox_run_begin/_poll_fds/_step/_end) so that
 * the spawner can supervise many runs from one poll loop; sandbox_run_with
 * strings them together for one run.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/pidfd.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static uint64_t run_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void run_kill(struct sandbox_run *st)
{
    /* cgroup.kill when there is a v2 cgroup (-ENOENT otherwise). Its result
     * does not matter: SIGKILL to pid 1 alone takes the whole pid namespace
     * down, and ESRCH only means pid 1 is already gone. */
    sandbox_cgroup_kill(&st->cgroup);
    pidfd_send_signal(st->pidfd, SIGKILL, NULL, 0);
}

/* Reads what pid 1 (or the command, before its exec) reported: the first
 * failure, the command's status; EOF once pid 1 has closed its fds, which
 * it does only on its way out. */
static void run_read_reports(struct sandbox_run *st)
{
    struct sandbox_report r;

    for (;;) {
        ssize_t n = read(st->report[0], &r, sizeof(r));

        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(r)) {
            /* EOF, or (cannot happen: writes are atomic) a torn message */
            st->report_eof = n <= 0;
            return;
        }
        r.msg[sizeof(r.msg) - 1] = '\0';
        if (r.kind == SANDBOX_REPORT_STATUS)
            st->status = r;
        else if (st->failure.kind == 0)
            st->failure = r;
        /* One message per readiness: poll says when there is more. */
        return;
    }
}

/* May the run end before pid 1 has exited? Only when the caller lets us
 * leave it unreaped and pid 1 has reported that the command and every other
 * process are gone: its last act before _exit (whose address-space and
 * namespace teardown then runs while the caller goes on). Only pid 1 holds
 * the report pipe's write end, and it is not dumpable, so the command cannot
 * forge this report through /proc/1/fd. */
static bool run_pid1_done(const struct sandbox_run *run)
{
    return run->opts.unreaped != NULL && run->status.kind == SANDBOX_REPORT_STATUS &&
           run->status.all_reaped && !sandbox_cgroup_in_use(&run->cgroup);
}

size_t sandbox_run_poll_fds(const struct sandbox_run *run, struct pollfd *pfd)
{
    const struct sandbox_output *outs[2] = {&run->out, &run->err};
    size_t n = 0;

    if (sandbox_run_done(run))
        return 0;
    /* pid 1's pidfd, the report pipe, both output pipes, the cancel fds:
     * always in this order, -1 for those that are done. */
    pfd[n++] = (struct pollfd){.fd = run->exited ? -1 : run->pidfd, .events = POLLIN};
    pfd[n++] = (struct pollfd){.fd = run->report_eof ? -1 : run->report[0], .events = POLLIN};
    for (int i = 0; i < 2; i++)
        pfd[n++] = (struct pollfd){.fd = outs[i]->pipe_rd, .events = POLLIN};
    for (size_t i = 0; i < run->opts.n_cancel_fds; i++)
        pfd[n++] = (struct pollfd){
            .fd = run->cancelled || run->timed_out || run->exited ? -1 : run->opts.cancel_fds[i],
            .events = POLLIN | POLLRDHUP};
    return n;
}

int sandbox_run_poll_timeout(const struct sandbox_run *run)
{
    const uint64_t timeout_us = run->spec->limits.timeout_ms * 1000u;
    uint64_t now, end;

    if (sandbox_run_done(run) || timeout_us == 0 || run->timed_out || run->cancelled)
        return -1;
    now = run_now_us();
    end = run->start_us + timeout_us;
    return now >= end ? 0 : (int)((end - now + 999) / 1000);
}

static void run_drain_output(struct sandbox_run *run, int i)
{
    struct sandbox_output *out = i == 0 ? &run->out : &run->err;
    int rc = sandbox_output_drain(out);

    if (rc == 1) {
        close(out->pipe_rd);
        out->pipe_rd = -1;
    } else if (rc < 0) {
        /* The host file failed (disk full): keep draining, so the command
         * is not blocked, but drop the rest. */
        sandbox_error_set(run->res->error, sizeof(run->res->error), "writing %s: %s",
                          i == 0 ? "stdout" : "stderr", strerror(-rc));
        out->cap = out->written;
        out->truncated = true;
    }
}

void sandbox_run_step(struct sandbox_run *run, const struct pollfd *pfd, size_t n)
{
    if (sandbox_run_done(run) || n < 4)
        return;
    if (pfd[1].fd >= 0 && pfd[1].revents != 0)
        run_read_reports(run);
    if ((pfd[0].fd >= 0 && pfd[0].revents != 0) || run_pid1_done(run))
        run->exited = true;
    for (int i = 0; i < 2; i++)
        if (pfd[2 + i].fd >= 0 && pfd[2 + i].revents != 0)
            run_drain_output(run, i);
    for (size_t i = 4; i < n; i++)
        if (pfd[i].fd >= 0 && pfd[i].revents != 0)
            sandbox_run_cancel(run);
    if (sandbox_run_poll_timeout(run) == 0) {
        run->timed_out = true;
        run_kill(run);
    }
}

void sandbox_run_cancel(struct sandbox_run *run)
{
    if (run->pid <= 0 || run->exited || run->cancelled || run->timed_out)
        return;
    run->cancelled = true;
    run_kill(run);
}

bool sandbox_run_done(const struct sandbox_run *run)
{
    return run->rc != 0 || (run->exited && run->out.pipe_rd < 0 && run->err.pipe_rd < 0);
}

/* Fills the status and error fields from the reports (all read by now). */
static void run_collect(struct sandbox_run *st, int pid1_status, struct sandbox_result *res)
{
    int status = pid1_status;

    if (st->failure.kind != 0) {
        snprintf(res->error, sizeof(res->error), "%s", st->failure.msg);
        res->exit_code = st->failure.kind == SANDBOX_REPORT_EXEC_ERROR ? 127 : 125;
        return;
    }
    if (st->status.kind == SANDBOX_REPORT_STATUS)
        status = st->status.status;
    /* Without a report, pid 1 itself was killed (timeout, OOM) before the
     * command ended: its own status is all there is. */
    if (WIFSIGNALED(status)) {
        res->term_signal = WTERMSIG(status);
        res->exit_code = 128 + res->term_signal;
    } else if (WIFEXITED(status)) {
        res->exit_code = WEXITSTATUS(status);
        if (st->status.kind == 0 && res->exit_code == 125)
            snprintf(res->error, sizeof(res->error), "sandbox set-up failed");
    }
}

/* Reaps pid 1, unless it may be left to the caller; fills the usage. */
static int run_reap(struct sandbox_run *run, int *status)
{
    const struct sandbox_report *r = &run->status;
    struct sandbox_result *res = run->res;
    struct rusage ru;

    if (run->rc == 0 && run_pid1_done(run)) {
        *run->opts.unreaped = run->pid;
        *status = r->status;
        res->user_us = r->user_us;
        res->sys_us = r->sys_us;
        res->max_rss_bytes = r->max_rss_kb * 1024u;
        return 0;
    }
    if (run->rc != 0) /* could not start or supervise: take it down */
        pidfd_send_signal(run->pidfd, SIGKILL, NULL, 0);
    while (wait4(run->pid, status, 0, &ru) < 0) {
        if (errno != EINTR) {
            sandbox_error_set(res->error, sizeof(res->error), "wait4: %s", strerror(errno));
            return -errno;
        }
    }
    res->user_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec;
    res->sys_us = (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
    res->max_rss_bytes = (uint64_t)ru.ru_maxrss * 1024u;
    return run->rc;
}

static void run_set_limit(struct sandbox_run *st, const struct sandbox_spec *spec,
                          struct sandbox_result *res)
{
    const uint64_t cpu_us = res->user_us + res->sys_us;
    bool oom = false, pids = false;

    sandbox_cgroup_collect(&st->cgroup, &oom, &pids);
    if (oom)
        res->limit = SANDBOX_LIMIT_MEMORY;
    else if (pids)
        res->limit = SANDBOX_LIMIT_PIDS;
    else if (st->timed_out)
        res->limit = SANDBOX_LIMIT_TIMEOUT;
    else if (spec->limits.cpu_seconds > 0 &&
             (res->term_signal == SIGXCPU ||
              (res->term_signal == SIGKILL && cpu_us >= spec->limits.cpu_seconds * 1000000u)))
        res->limit = SANDBOX_LIMIT_CPU;
    else if (st->out.truncated || st->err.truncated)
        res->limit = SANDBOX_LIMIT_OUTPUT;
}

static void run_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Everything before clone; on failure res->error says why. */
static int run_prepare(struct sandbox_run *st, const struct sandbox_spec *spec,
                       const struct sandbox_run_options *opts, struct sandbox_result *res)
{
    char *err = res->error;
    const size_t err_len = sizeof(res->error);
    int rc;

    if (opts->n_cancel_fds > SANDBOX_RUN_MAX_CANCEL) {
        sandbox_error_set(err, err_len, "too many cancel fds");
        return -EINVAL;
    }
    rc = sandbox_spec_check(spec, err, err_len);
    if (rc != 0)
        return rc;
    if (spec->seccomp == SANDBOX_SECCOMP_DEFAULT && opts->seccomp_default != NULL) {
        st->seccomp = opts->seccomp_default;
    } else if (spec->seccomp == SANDBOX_SECCOMP_STRICT && opts->seccomp_strict != NULL) {
        st->seccomp = opts->seccomp_strict;
    } else {
        rc = sandbox_seccomp_build(spec->seccomp, spec->seccomp_file, &st->seccomp_built, err,
                                   err_len);
        if (rc != 0)
            return rc;
        st->seccomp = &st->seccomp_built;
    }
    rc = sandbox_output_open(&st->out, spec->stdout_path, spec->limits.output_bytes, err, err_len);
    if (rc != 0)
        return rc;
    rc = sandbox_output_open(&st->err, spec->stderr_path, spec->limits.output_bytes, err, err_len);
    if (rc != 0)
        return rc;
    if (spec->stdin_null) {
        st->stdin_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (st->stdin_fd < 0) {
            rc = -errno;
            sandbox_error_set(err, err_len, "open /dev/null: %s", strerror(errno));
            return rc;
        }
    }
    if (pipe2(st->report, O_CLOEXEC) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "pipe: %s", strerror(errno));
        return rc;
    }
    rc = sandbox_cgroup_create(&st->cgroup, spec, err, err_len);
    if (rc != 0)
        return rc;
    res->memory_method = st->cgroup.memory_method;
    res->pids_method = st->cgroup.pids_method;
    return 0;
}

/* After the clone (or the go message): the child's ends are its own. */
static void run_started(struct sandbox_run *st)
{
    run_close(&st->report[1]);
    run_close(&st->stdin_fd);
    sandbox_output_close_child(&st->out);
    sandbox_output_close_child(&st->err);
}

/* Can this run use the warm pid 1? */
static bool run_warm_fits(const struct sandbox_run *st, const struct sandbox_spec *spec)
{
    const struct sandbox_warm *w = st->opts.warm;

    return w != NULL && w->pid > 0 && w->uid0 == spec->uid0 && w->network == spec->network &&
           (spec->seccomp == SANDBOX_SECCOMP_NONE ||
            (spec->seccomp == SANDBOX_SECCOMP_DEFAULT && st->seccomp == st->opts.seccomp_default) ||
            (spec->seccomp == SANDBOX_SECCOMP_STRICT && st->seccomp == st->opts.seccomp_strict));
}

/* Sends the warm pid 1 its run; on success it becomes this run's pid 1. */
static int run_start_warm(struct sandbox_run *st, const struct sandbox_spec *spec)
{
    struct sandbox_warm *w = st->opts.warm;
    struct sandbox_warm_go go;
    int fds[4] = {st->report[1], st->stdin_fd, st->out.child_fd, st->err.child_fd};
    char control_buf[CMSG_SPACE(sizeof(fds))];
    uint8_t *buf = NULL;
    size_t len = 0;
    struct iovec iov[2];
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    struct cmsghdr *cmsg;
    int rc;

    rc = sandbox_spec_encode(spec, &buf, &len);
    if (rc != 0 || len > SANDBOX_WARM_SPEC_MAX) {
        free(buf);
        return rc != 0 ? rc : -E2BIG;
    }
    memset(&go, 0, sizeof(go));
    go.cgroup = st->cgroup;
    go.seccomp = (int)spec->seccomp;
    go.spec_len = (uint32_t)len;
    for (int i = 1; i < 4; i++) {
        if (fds[i] < 0) { /* inherit: pid 1 has the caller's own already */
            go.inherit |= 1u << (i - 1);
            fds[i] = fds[0];
        }
    }
    iov[0] = (struct iovec){.iov_base = &go, .iov_len = sizeof(go)};
    iov[1] = (struct iovec){.iov_base = buf, .iov_len = len};
    memset(control_buf, 0, sizeof(control_buf));
    msg.msg_control = control_buf;
    msg.msg_controllen = sizeof(control_buf);
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(cmsg), fds, sizeof(fds));
    while ((rc = (int)sendmsg(w->sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    rc = rc < 0 ? -errno : 0;
    free(buf);
    if (rc != 0)
        return rc; /* it died: the caller clones instead */
    st->pid = w->pid;
    st->pidfd = w->pidfd;
    w->pid = -1;
    w->pidfd = -1;
    run_close(&w->sock);
    run_started(st);
    return 0;
}

/* clone; the child maps its ids and joins the cgroup itself. */
static int run_start(struct sandbox_run *st, const struct sandbox_spec *spec,
                     struct sandbox_result *res)
{
    struct sandbox_child child = {
        .spec = spec,
        .seccomp = st->seccomp,
        .cgroup = &st->cgroup,
        .outer_uid = geteuid(),
        .outer_gid = getegid(),
        .report_wr = st->report[1],
        .stdin_fd = st->stdin_fd,
        .stdout_fd = st->out.child_fd,
        .stderr_fd = st->err.child_fd,
        .memory_method = st->cgroup.memory_method,
        .pids_method = st->cgroup.pids_method,
    };
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_PIDFD | SIGCHLD;
    int rc;

    if (run_warm_fits(st, spec)) {
        if (run_start_warm(st, spec) == 0)
            return 0;
        /* A warm pid 1 that cannot take it is of no further use; its
         * owner reaps it. */
        st->warm_discarded = sandbox_warm_discard(st->opts.warm);
    }
    rc = sandbox_mounts_plan(&st->plan, spec, res->error, sizeof(res->error));
    if (rc != 0)
        return rc;
    child.plan = st->plan;
    if (!spec->network)
        flags |= CLONE_NEWNET;
    /* A fork-like raw clone: the child runs on its copy of our stack, as
     * after fork, so no separate stack (sanitizers cannot follow one). The
     * pidfd lands in the parent_tid argument; the last two arguments, whose
     * order differs between architectures, are both unused. glibc's cached
     * thread id is stale in the child, which only matters to raise() and
     * pthread calls; pid 1 makes none and the command is vforked normally. */
    st->pid = (pid_t)syscall(SYS_clone, (unsigned long)flags, NULL, &st->pidfd, NULL, 0);
    if (st->pid == 0)
        sandbox_child_main(&child);
    if (st->pid < 0) {
        rc = -errno;
        st->pidfd = -1;
        sandbox_error_set(res->error, sizeof(res->error),
                          "clone new namespaces: %s (are user namespaces enabled?)",
                          strerror(errno));
        return rc;
    }
    run_started(st);
    return 0;
}

int sandbox_warm_start(struct sandbox_warm *w, bool uid0, bool network,
                       const struct sandbox_run_options *opts)
{
    struct sandbox_warm_child child = {
        .outer_uid = geteuid(),
        .outer_gid = getegid(),
        .uid0 = uid0,
        .seccomp_default = opts->seccomp_default,
        .seccomp_strict = opts->seccomp_strict,
    };
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_PIDFD | SIGCHLD;
    int sv[2], rc;

    w->pid = -1;
    w->pidfd = w->sock = -1;
    w->uid0 = uid0;
    w->network = network;
    if (!network)
        flags |= CLONE_NEWNET;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    /* The same fork-like clone as run_start's. */
    w->pid = (pid_t)syscall(SYS_clone, (unsigned long)flags, NULL, &w->pidfd, NULL, 0);
    if (w->pid == 0)
        sandbox_child_warm_main(sv[1], &child);
    rc = w->pid < 0 ? -errno : 0;
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        w->pid = -1;
        w->pidfd = -1;
        return rc;
    }
    w->sock = sv[0];
    return 0;
}

pid_t sandbox_warm_discard(struct sandbox_warm *w)
{
    pid_t pid = w->pid;

    run_close(&w->sock); /* EOF: it exits */
    run_close(&w->pidfd);
    w->pid = -1;
    return pid;
}

int sandbox_run_begin(struct sandbox_run *run, const struct sandbox_spec *spec,
                      const struct sandbox_run_options *opts, struct sandbox_result *res)
{
    static const struct sandbox_run_options none = {0};

    memset(run, 0, sizeof(*run));
    memset(res, 0, sizeof(*res));
    run->start_us = run_now_us();
    run->spec = spec;
    run->opts = opts != NULL ? *opts : none;
    run->res = res;
    run->report[0] = run->report[1] = -1;
    run->stdin_fd = run->pidfd = -1;
    run->pid = -1;
    run->warm_discarded = -1;
    run->out.file_fd = run->out.pipe_rd = run->out.child_fd = -1;
    run->err.file_fd = run->err.pipe_rd = run->err.child_fd = -1;
    if (run->opts.unreaped != NULL)
        *run->opts.unreaped = -1;
    run->rc = run_prepare(run, spec, &run->opts, res);
    if (run->rc == 0)
        run->rc = run_start(run, spec, res);
    return run->rc;
}

int sandbox_run_end(struct sandbox_run *run)
{
    struct sandbox_result *res = run->res;
    int status = 0, rc = run->rc;

    if (run->pid > 0) {
        rc = run_reap(run, &status);
        res->wall_us = run_now_us() - run->start_us;
    }
    if (rc != 0)
        goto out;
    /* What pid 1 sent before it died (when it is left unreaped, its STATUS,
     * the last word, is in already). */
    while (!run->report_eof && !(run->opts.unreaped != NULL && *run->opts.unreaped > 0))
        run_read_reports(run);
    run_collect(run, status, res);
    if (run->timed_out || run->cancelled) {
        res->term_signal = SIGKILL;
        res->exit_code = 128 + SIGKILL;
    }
    if (run->cancelled && res->error[0] == '\0')
        snprintf(res->error, sizeof(res->error), "cancelled");
    res->stdout_truncated = run->out.truncated;
    res->stderr_truncated = run->err.truncated;
    run_set_limit(run, run->spec, res);
out:
    if (rc != 0) {
        res->exit_code = 125;
        if (res->error[0] == '\0')
            snprintf(res->error, sizeof(res->error), "sandbox: %s", strerror(-rc));
    }
    run_close(&run->pidfd);
    run_close(&run->report[0]);
    run_close(&run->report[1]);
    run_close(&run->stdin_fd);
    sandbox_output_close(&run->out);
    sandbox_output_close(&run->err);
    sandbox_seccomp_program_free(&run->seccomp_built);
    sandbox_mounts_plan_free(run->plan);
    run->plan = NULL;
    if (sandbox_cgroup_destroy(&run->cgroup) != 0 && res->error[0] == '\0')
        snprintf(res->error, sizeof(res->error), "could not remove the action's cgroup");
    return rc;
}

int sandbox_run_with(const struct sandbox_spec *spec, struct sandbox_result *res,
                     const struct sandbox_run_options *opts)
{
    struct sandbox_run run;
    struct pollfd pfd[SANDBOX_RUN_POLL_MAX];

    sandbox_run_begin(&run, spec, opts, res);
    while (!sandbox_run_done(&run)) {
        size_t n = sandbox_run_poll_fds(&run, pfd);

        if (poll(pfd, n, sandbox_run_poll_timeout(&run)) < 0) {
            if (errno == EINTR)
                continue;
            run.rc = -errno;
            sandbox_error_set(res->error, sizeof(res->error), "poll: %s", strerror(errno));
            break;
        }
        sandbox_run_step(&run, pfd, n);
    }
    return sandbox_run_end(&run);
}

int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *res)
{
    return sandbox_run_with(spec, res, NULL);
}
