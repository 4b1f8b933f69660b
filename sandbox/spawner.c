/*
 * spawner.c - run sandboxes on behalf of a multi-threaded process.
 *
 * A process with threads cannot safely fork and set up namespaces (another
 * thread may hold the malloc lock; unshare(CLONE_NEWUSER) fails outright), so
 * the daemon forks this helper while it is still single-threaded, before
 * grpc_init. The three kinds of process involved:
 *
 *   daemon thread --control (SOCK_SEQPACKET)--> spawner --fork--> supervisor
 *        \_______________ request socket (SOCK_STREAM) ______________/
 *
 * For each run the calling thread makes a socketpair and passes one end to
 * the spawner with SCM_RIGHTS; that is the only thing on the control socket,
 * so the spawner never blocks on a slow client and the spec's size is bounded
 * by SANDBOX_WIRE_MAX, not by a socket buffer. Each run gets a supervisor
 * process of its own (the spawner is single-threaded, so fork is safe): one
 * is always forked ahead and idle, the request's socket is passed on to it,
 * and the next idle one is forked while the run goes on, so no request waits
 * for a fork. The supervisor reads the encoded spec from its end, calls
 * sandbox_run and writes the struct sandbox_result back; then it exits, so
 * no state carries over from one run to the next.
 *
 * Lifetime: if the calling thread goes away (closes its end) the supervisor
 * cancels the run. If the daemon dies, the control socket hits EOF (and
 * PDEATHSIG sends SIGTERM); the spawner then closes the idle supervisor's
 * channel (it exits), sends SIGTERM to every busy one, which cancels its run
 * (kills the namespace, removes the cgroup) and exits, and exits itself after
 * reaping them. A supervisor that dies takes its sandbox with it (pid 1 has
 * PDEATHSIG = SIGKILL).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/close_range.h>

#include "internal.h"

#define SPAWNER_MAGIC "CBXR"

struct sandbox_spawner {
    int control_fd;
    pid_t pid;
};

/* Filters compiled once in the spawner, inherited by every supervisor. */
struct spawner_filters {
    struct sock_fprog default_prog;
    struct sock_fprog strict_prog;
};

/* The spawner's own bookkeeping (local to its loop, not global): its
 * supervisors, and one idle supervisor forked ahead of the next request, so
 * that a request does not wait for a fork. */
struct spawner_state {
    int control;
    int sfd;
    pid_t self;
    const struct spawner_filters *filters;
    pid_t *pids;
    size_t n;
    size_t cap;
    int idle_fd; /* channel to the idle supervisor, -1 when there is none */
};

static int spawner_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int spawner_recv_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);

        if (n == 0)
            return -EPIPE;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* --- the supervisor: one per run --- */

static int supervisor_read_spec(int sock, struct sandbox_spec *spec, char *err, size_t err_len)
{
    uint8_t *buf = NULL;
    uint32_t len;
    int rc;

    rc = spawner_recv_all(sock, &len, sizeof(len));
    if (rc != 0) {
        sandbox_error_set(err, err_len, "spawner: reading the request: %s", strerror(-rc));
        return rc;
    }
    if (len == 0 || len > SANDBOX_WIRE_MAX) {
        sandbox_error_set(err, err_len, "spawner: request of %u bytes", len);
        return -E2BIG;
    }
    buf = malloc(len);
    if (buf == NULL)
        return -ENOMEM;
    rc = spawner_recv_all(sock, buf, len);
    if (rc == 0)
        rc = sandbox_spec_decode(buf, len, spec);
    if (rc != 0)
        sandbox_error_set(err, err_len, "spawner: bad request: %s", strerror(-rc));
    free(buf);
    return rc;
}

static int supervisor_main(int sock, pid_t spawner, const struct spawner_filters *filters)
{
    struct sandbox_run_options opts = {
        .n_cancel_fds = 2,
        .seccomp_default = filters->default_prog.len > 0 ? &filters->default_prog : NULL,
        .seccomp_strict = filters->strict_prog.len > 0 ? &filters->strict_prog : NULL,
    };
    struct sandbox_result res;
    struct sandbox_spec spec;
    sigset_t term;
    int cancel[2] = {sock, -1};
    int rc;

    /* SIGTERM (blocked since the spawner) means "stop": it cancels the run
     * through a signalfd instead of killing us before clean-up. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != spawner)
        return 1;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    cancel[1] = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);
    memset(&res, 0, sizeof(res));
    sandbox_spec_init(&spec);
    if (cancel[1] < 0) {
        rc = -errno;
        sandbox_error_set(res.error, sizeof(res.error), "spawner: signalfd: %s", strerror(errno));
    } else {
        rc = supervisor_read_spec(sock, &spec, res.error, sizeof(res.error));
    }
    opts.cancel_fds = cancel;
    if (rc == 0)
        sandbox_run_with(&spec, &res, &opts);
    else
        res.exit_code = 125;
    rc = spawner_send_all(sock, &res, sizeof(res));
    sandbox_spec_free(&spec);
    if (cancel[1] >= 0)
        close(cancel[1]);
    close(sock);
    return rc == 0 ? 0 : 1;
}

/* --- passing a socket: the run's, to the spawner, then to a supervisor --- */

static int spawner_send_fd(int channel, int fd)
{
    char control_buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = SPAWNER_MAGIC, .iov_len = 4};
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control_buf,
        .msg_controllen = sizeof(control_buf),
    };
    struct cmsghdr *cmsg;

    memset(control_buf, 0, sizeof(control_buf));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    while (sendmsg(channel, &msg, MSG_NOSIGNAL) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

/* Receives one socket; 1 at EOF, 0 with *fd = -1 for a malformed message. */
static int spawner_recv_fd(int channel, int *fd)
{
    char data[8];
    char control_buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control_buf,
        .msg_controllen = sizeof(control_buf),
    };
    struct cmsghdr *cmsg;
    ssize_t n;

    *fd = -1;
    n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return 1;
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg != NULL && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
        cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
    if (n != 4 || memcmp(data, SPAWNER_MAGIC, 4) != 0 || (msg.msg_flags & MSG_CTRUNC)) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
    }
    return 0;
}

/* An idle supervisor: waits for its one request (EOF: the spawner is gone
 * or stopping, nothing to do). */
static int supervisor_idle_main(int channel, pid_t spawner, const struct spawner_filters *filters)
{
    int sock = -1, rc;

    do {
        rc = spawner_recv_fd(channel, &sock);
    } while (rc == 0 && sock < 0);
    close(channel);
    if (rc != 0)
        return 0;
    return supervisor_main(sock, spawner, filters);
}

/* --- the spawner's loop --- */

static int spawner_track(struct spawner_state *st, pid_t pid)
{
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        pid_t *grown = realloc(st->pids, cap * sizeof(*grown));

        if (grown == NULL)
            return -ENOMEM;
        st->pids = grown;
        st->cap = cap;
    }
    st->pids[st->n++] = pid;
    return 0;
}

static void spawner_reap(struct spawner_state *st, bool block)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, block ? 0 : WNOHANG);

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        for (size_t i = 0; i < st->n; i++) {
            if (st->pids[i] == pid) {
                st->pids[i] = st->pids[--st->n];
                break;
            }
        }
        if (block && st->n == 0)
            return;
    }
}

/* Forks a supervisor: for sock now, or (sock < 0) an idle one, whose
 * channel becomes st->idle_fd. Returns the pid or a negative errno. */
static pid_t spawner_fork(struct spawner_state *st, int sock)
{
    int channel[2] = {-1, -1};
    pid_t pid;

    if (sock < 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0)
        return -errno;
    pid = fork();
    if (pid == 0) {
        close(st->control);
        close(st->sfd);
        free(st->pids);
        if (sock >= 0)
            _exit(supervisor_main(sock, st->self, st->filters));
        close(channel[0]);
        _exit(supervisor_idle_main(channel[1], st->self, st->filters));
    }
    if (pid < 0) {
        pid = -errno;
        if (channel[0] >= 0) {
            close(channel[0]);
            close(channel[1]);
        }
        return pid;
    }
    if (channel[0] >= 0) {
        close(channel[1]);
        st->idle_fd = channel[0];
    }
    if (spawner_track(st, pid) != 0) {
        /* Out of memory: an untracked supervisor would outlive a stop, so
         * cancel it now; it answers "cancelled" (or, idle, just exits). */
        kill(pid, SIGTERM);
        if (channel[0] >= 0) {
            close(st->idle_fd);
            st->idle_fd = -1;
        }
    }
    return pid;
}

/* Hands a request to the idle supervisor (then forks the next idle one,
 * while the run goes on), or to a new one. */
static void spawner_dispatch(struct spawner_state *st, int sock)
{
    struct sandbox_result res;
    pid_t pid = -1;
    int rc = -1;

    if (st->idle_fd >= 0) {
        rc = spawner_send_fd(st->idle_fd, sock);
        close(st->idle_fd);
        st->idle_fd = -1;
    }
    if (rc != 0) /* none idle, or it died: the old way */
        pid = spawner_fork(st, sock);
    if (rc != 0 && pid < 0) {
        /* The caller gets an answer either way. */
        memset(&res, 0, sizeof(res));
        res.exit_code = 125;
        sandbox_error_set(res.error, sizeof(res.error), "spawner: fork: %s", strerror(-pid));
        spawner_send_all(sock, &res, sizeof(res));
    }
    close(sock);
    /* A failure leaves no idle supervisor; the next request forks. */
    spawner_fork(st, -1);
}

static int spawner_main(int control, pid_t parent)
{
    struct spawner_filters filters;
    struct spawner_state st = {.control = control, .idle_fd = -1, .filters = &filters};
    char err[256];
    struct pollfd pfd[2];
    sigset_t sigs;

    /* Own session: the terminal's ^C goes to the daemon, which then stops us. */
    setsid();
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGCHLD);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_SETMASK, &sigs, NULL);
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
        return 1;
    /* Nothing of the daemon's but the control socket and stdio. */
    if (control > 3)
        close_range(3, (unsigned)control - 1, 0);
    close_range((unsigned)control + 1, ~0u, 0);
    st.self = getpid();
    st.sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (st.sfd < 0)
        return 1;
    /* A failure here only means each run compiles its own (and reports). */
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_DEFAULT, NULL, &filters.default_prog, err,
                              sizeof(err)) != 0)
        filters.default_prog.len = 0;
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_STRICT, NULL, &filters.strict_prog, err,
                              sizeof(err)) != 0)
        filters.strict_prog.len = 0;
    spawner_fork(&st, -1);
    pfd[0] = (struct pollfd){.fd = control, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = st.sfd, .events = POLLIN};
    for (;;) {
        struct signalfd_siginfo si;
        bool stop = false;
        int sock, rc;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        while (read(st.sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            if (si.ssi_signo == SIGTERM)
                stop = true;
        spawner_reap(&st, false);
        if (stop)
            break;
        if (pfd[0].revents == 0)
            continue;
        rc = spawner_recv_fd(control, &sock);
        if (rc != 0)
            break; /* EOF: the daemon closed it or died */
        if (sock >= 0)
            spawner_dispatch(&st, sock);
    }
    /* The idle supervisor sees EOF, the busy ones cancel their runs. */
    if (st.idle_fd >= 0)
        close(st.idle_fd);
    for (size_t i = 0; i < st.n; i++)
        kill(st.pids[i], SIGTERM);
    if (st.n > 0)
        spawner_reap(&st, true);
    free(st.pids);
    sandbox_seccomp_program_free(&filters.default_prog);
    sandbox_seccomp_program_free(&filters.strict_prog);
    return 0;
}

int sandbox_spawner_start(struct sandbox_spawner **out)
{
    struct sandbox_spawner *sp;
    const pid_t parent = getpid();
    int sv[2], rc;

    sp = calloc(1, sizeof(*sp));
    if (sp == NULL)
        return -ENOMEM;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = -errno;
        free(sp);
        return rc;
    }
    sp->pid = fork();
    if (sp->pid < 0) {
        rc = -errno;
        close(sv[0]);
        close(sv[1]);
        free(sp);
        return rc;
    }
    if (sp->pid == 0) {
        close(sv[0]);
        _exit(spawner_main(sv[1], parent));
    }
    close(sv[1]);
    sp->control_fd = sv[0];
    *out = sp;
    return 0;
}

int sandbox_spawner_run(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                        struct sandbox_result *res)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t len32;
    int pair[2] = {-1, -1};
    int rc;

    memset(res, 0, sizeof(*res));
    rc = sandbox_spec_check(spec, res->error, sizeof(res->error));
    if (rc != 0)
        goto out;
    rc = sandbox_spec_encode(spec, &buf, &len);
    if (rc != 0) {
        sandbox_error_set(res->error, sizeof(res->error), "spec too large to send (%s)",
                          strerror(-rc));
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        rc = -errno;
        sandbox_error_set(res->error, sizeof(res->error), "socketpair: %s", strerror(errno));
        goto out;
    }
    rc = spawner_send_fd(sp->control_fd, pair[1]);
    if (rc != 0) {
        sandbox_error_set(res->error, sizeof(res->error), "spawner is gone: %s", strerror(-rc));
        goto out;
    }
    close(pair[1]);
    pair[1] = -1;
    len32 = (uint32_t)len;
    rc = spawner_send_all(pair[0], &len32, sizeof(len32));
    if (rc == 0)
        rc = spawner_send_all(pair[0], buf, len);
    /* A failed send still leaves an answer to read when the supervisor
     * rejected the request early. */
    rc = spawner_recv_all(pair[0], res, sizeof(*res));
    if (rc != 0) {
        memset(res, 0, sizeof(*res));
        sandbox_error_set(res->error, sizeof(res->error), "spawner: no result: %s", strerror(-rc));
    }
out:
    if (rc != 0)
        res->exit_code = 125;
    if (pair[0] >= 0)
        close(pair[0]);
    if (pair[1] >= 0)
        close(pair[1]);
    free(buf);
    return rc;
}

void sandbox_spawner_cancel(struct sandbox_spawner *sp)
{
    /* SIGTERM makes the spawner leave its loop and SIGTERM its busy
     * supervisors, which kill their namespaces and still send a result. */
    if (sp != NULL)
        kill(sp->pid, SIGTERM);
}

void sandbox_spawner_stop(struct sandbox_spawner *sp)
{
    if (sp == NULL)
        return;
    /* EOF on the control socket: the spawner cancels every run and exits. */
    close(sp->control_fd);
    while (waitpid(sp->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    free(sp);
}
