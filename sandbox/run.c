/*
 * run.c - sandbox_run: prepare in the caller, clone, supervise.
 *
 * The caller's side, in order: check the spec, build the seccomp program,
 * open the output files, create the cgroup, then clone the child into new
 * user, mount, pid, ipc, uts (and net) namespaces. The child maps its own ids
 * and joins the cgroup before it does anything else (child.c), so the caller
 * goes straight to supervising: poll on the child's pidfd, the output pipes,
 * the timeout and the cancel fds; on a timeout or cancel it kills pid 1 (and
 * the cgroup with cgroup.kill when there is a v2 one), which takes the whole
 * pid namespace down. wait4 on pid 1 gives rusage covering every process it
 * reaped.
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
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define RUN_MAX_CANCEL 4

struct run_state {
    struct sock_fprog seccomp_built;  /* ours to free */
    const struct sock_fprog *seccomp; /* the program to install */
    struct sandbox_cgroup cgroup;
    struct sandbox_output out;
    struct sandbox_output err;
    int report[2];
    int stdin_fd;
    int pidfd;
    pid_t pid;
    bool timed_out;
    bool cancelled;
};

static uint64_t run_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void run_kill(struct run_state *st)
{
    /* cgroup.kill when there is a v2 cgroup (-ENOENT otherwise). Its result
     * does not matter: SIGKILL to pid 1 alone takes the whole pid namespace
     * down, and ESRCH only means pid 1 is already gone. */
    sandbox_cgroup_kill(&st->cgroup);
    pidfd_send_signal(st->pidfd, SIGKILL, NULL, 0);
}

/* Polls until pid 1 has exited and both output pipes are at EOF. */
static int run_supervise(struct run_state *st, const struct sandbox_spec *spec,
                         struct sandbox_result *res, const int *cancel_fds, size_t n_cancel,
                         uint64_t start_us)
{
    struct pollfd pfd[3 + RUN_MAX_CANCEL];
    struct sandbox_output *outs[2] = {&st->out, &st->err};
    const uint64_t timeout_us = spec->limits.timeout_ms * 1000u;
    const size_t nfds = 3 + n_cancel;
    bool exited = false;

    memset(pfd, 0, sizeof(pfd));
    pfd[0].fd = st->pidfd;
    pfd[0].events = POLLIN;
    for (int i = 0; i < 2; i++) {
        pfd[1 + i].fd = outs[i]->pipe_rd;
        pfd[1 + i].events = POLLIN;
    }
    for (size_t i = 0; i < n_cancel; i++) {
        pfd[3 + i].fd = cancel_fds[i];
        pfd[3 + i].events = POLLIN | POLLRDHUP;
    }
    while (!exited || pfd[1].fd >= 0 || pfd[2].fd >= 0) {
        int wait_ms = -1, n;

        if (timeout_us > 0 && !st->timed_out && !st->cancelled) {
            uint64_t now = run_now_us(), end = start_us + timeout_us;

            wait_ms = now >= end ? 0 : (int)((end - now + 999) / 1000);
        }
        n = poll(pfd, nfds, wait_ms);
        if (n < 0) {
            int rc = -errno;

            if (rc == -EINTR)
                continue;
            sandbox_error_set(res->error, sizeof(res->error), "poll: %s", strerror(-rc));
            run_kill(st);
            return rc;
        }
        if (n == 0) {
            st->timed_out = true;
            run_kill(st);
            continue;
        }
        if (pfd[0].revents != 0) {
            exited = true;
            pfd[0].fd = -1;
        }
        for (int i = 0; i < 2; i++) {
            int rc;

            if (pfd[1 + i].fd < 0 || pfd[1 + i].revents == 0)
                continue;
            rc = sandbox_output_drain(outs[i]);
            if (rc == 1) {
                pfd[1 + i].fd = -1;
            } else if (rc < 0) {
                /* The host file failed (disk full): keep draining, so the
                 * command is not blocked, but drop the rest. */
                sandbox_error_set(res->error, sizeof(res->error), "writing %s: %s",
                                  i == 0 ? "stdout" : "stderr", strerror(-rc));
                outs[i]->cap = outs[i]->written;
                outs[i]->truncated = true;
            }
        }
        for (size_t i = 0; i < n_cancel; i++) {
            if (pfd[3 + i].fd < 0 || pfd[3 + i].revents == 0)
                continue;
            pfd[3 + i].fd = -1;
            st->cancelled = true;
            run_kill(st);
        }
    }
    return 0;
}

/* Reads what the child reported; fills the status and error fields. */
static void run_collect(struct run_state *st, int pid1_status, struct sandbox_result *res)
{
    struct sandbox_report r;
    int status = pid1_status;
    bool have_status = false, failed = false;
    ssize_t n;

    for (;;) {
        n = read(st->report[0], &r, sizeof(r));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(r))
            break;
        r.msg[sizeof(r.msg) - 1] = '\0';
        if (r.kind == SANDBOX_REPORT_STATUS) {
            status = r.status;
            have_status = true;
        } else if (!failed) {
            failed = true;
            snprintf(res->error, sizeof(res->error), "%s", r.msg);
            res->exit_code = r.kind == SANDBOX_REPORT_EXEC_ERROR ? 127 : 125;
        }
    }
    if (failed)
        return;
    /* Without a report, pid 1 itself was killed (timeout, OOM) before the
     * command ended: its own status is all there is. */
    if (WIFSIGNALED(status)) {
        res->term_signal = WTERMSIG(status);
        res->exit_code = 128 + res->term_signal;
    } else if (WIFEXITED(status)) {
        res->exit_code = WEXITSTATUS(status);
        if (!have_status && res->exit_code == 125)
            snprintf(res->error, sizeof(res->error), "sandbox set-up failed");
    }
}

static void run_set_limit(struct run_state *st, const struct sandbox_spec *spec,
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
static int run_prepare(struct run_state *st, const struct sandbox_spec *spec,
                       const struct sandbox_run_options *opts, struct sandbox_result *res)
{
    char *err = res->error;
    const size_t err_len = sizeof(res->error);
    int rc;

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

/* clone; the child maps its ids and joins the cgroup itself. */
static int run_start(struct run_state *st, const struct sandbox_spec *spec,
                     struct sandbox_result *res)
{
    struct sandbox_child child = {
        .spec = spec,
        .seccomp = st->seccomp,
        .cgroup = &st->cgroup,
        .outer_uid = geteuid(),
        .outer_gid = getegid(),
        .report_rd = st->report[0],
        .report_wr = st->report[1],
        .stdin_fd = st->stdin_fd,
        .stdout_fd = st->out.child_fd,
        .stderr_fd = st->err.child_fd,
        .close_fds = {st->out.pipe_rd, st->err.pipe_rd, -1, -1},
        .memory_method = st->cgroup.memory_method,
        .pids_method = st->cgroup.pids_method,
    };
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_PIDFD | SIGCHLD;
    int rc;

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
    run_close(&st->report[1]);
    run_close(&st->stdin_fd);
    sandbox_output_close_child(&st->out);
    sandbox_output_close_child(&st->err);
    return 0;
}

int sandbox_run_with(const struct sandbox_spec *spec, struct sandbox_result *res,
                     const struct sandbox_run_options *opts)
{
    const struct sandbox_run_options none = {0};
    struct run_state st = {
        .report = {-1, -1},
        .stdin_fd = -1,
        .pidfd = -1,
        .pid = -1,
    };
    const uint64_t start_us = run_now_us();
    struct rusage ru;
    int status = 0, rc;

    memset(res, 0, sizeof(*res));
    st.out.file_fd = st.out.pipe_rd = st.out.child_fd = -1;
    st.err.file_fd = st.err.pipe_rd = st.err.child_fd = -1;
    if (opts == NULL)
        opts = &none;
    if (opts->n_cancel_fds > RUN_MAX_CANCEL) {
        rc = -EINVAL;
        sandbox_error_set(res->error, sizeof(res->error), "too many cancel fds");
        goto out;
    }
    rc = run_prepare(&st, spec, opts, res);
    if (rc == 0)
        rc = run_start(&st, spec, res);
    if (rc == 0)
        rc = run_supervise(&st, spec, res, opts->cancel_fds, opts->n_cancel_fds, start_us);
    if (st.pid > 0) {
        if (rc != 0) /* could not start or supervise: take it down */
            pidfd_send_signal(st.pidfd, SIGKILL, NULL, 0);
        while (wait4(st.pid, &status, 0, &ru) < 0) {
            if (errno != EINTR) {
                rc = -errno;
                sandbox_error_set(res->error, sizeof(res->error), "wait4: %s", strerror(errno));
                memset(&ru, 0, sizeof(ru));
                break;
            }
        }
        res->wall_us = run_now_us() - start_us;
        res->user_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec;
        res->sys_us = (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
        res->max_rss_bytes = (uint64_t)ru.ru_maxrss * 1024u;
    }
    if (rc != 0)
        goto out;
    run_collect(&st, status, res);
    if (st.timed_out || st.cancelled) {
        res->term_signal = SIGKILL;
        res->exit_code = 128 + SIGKILL;
    }
    if (st.cancelled && res->error[0] == '\0')
        snprintf(res->error, sizeof(res->error), "cancelled");
    res->stdout_truncated = st.out.truncated;
    res->stderr_truncated = st.err.truncated;
    run_set_limit(&st, spec, res);
out:
    if (rc != 0) {
        res->exit_code = 125;
        if (res->error[0] == '\0')
            snprintf(res->error, sizeof(res->error), "sandbox: %s", strerror(-rc));
    }
    run_close(&st.pidfd);
    run_close(&st.report[0]);
    run_close(&st.report[1]);
    run_close(&st.stdin_fd);
    sandbox_output_close(&st.out);
    sandbox_output_close(&st.err);
    sandbox_seccomp_program_free(&st.seccomp_built);
    if (sandbox_cgroup_destroy(&st.cgroup) != 0 && res->error[0] == '\0')
        snprintf(res->error, sizeof(res->error), "could not remove the action's cgroup");
    return rc;
}

int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *res)
{
    return sandbox_run_with(spec, res, NULL);
}
