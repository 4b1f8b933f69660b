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
 * by SANDBOX_WIRE_MAX, not by a socket buffer. The spawner forks a supervisor
 * per request (it is single-threaded, so fork is safe) and goes back to
 * poll. The supervisor reads the encoded spec from its end, calls sandbox_run
 * and writes the struct sandbox_result back; then it exits.
 *
 * Lifetime: if the calling thread goes away (closes its end) the supervisor
 * cancels the run. If the daemon dies, the control socket hits EOF (and
 * PDEATHSIG sends SIGTERM); the spawner then sends SIGTERM to every
 * supervisor, which cancels its run (kills the namespace, removes the cgroup)
 * and exits, and the spawner exits after reaping them. A supervisor that dies
 * takes its sandbox with it (pid 1 has PDEATHSIG = SIGKILL).
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

/* The spawner's own bookkeeping (local to its loop, not global). */
struct spawner_children {
    pid_t *pids;
    size_t n;
    size_t cap;
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

/* Filters compiled once in the spawner, inherited by every supervisor. */
struct spawner_filters {
    struct sock_fprog default_prog;
    struct sock_fprog strict_prog;
};

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

/* --- the spawner's loop --- */

static int spawner_track(struct spawner_children *kids, pid_t pid)
{
    if (kids->n == kids->cap) {
        size_t cap = kids->cap ? kids->cap * 2 : 16;
        pid_t *grown = realloc(kids->pids, cap * sizeof(*grown));

        if (grown == NULL)
            return -ENOMEM;
        kids->pids = grown;
        kids->cap = cap;
    }
    kids->pids[kids->n++] = pid;
    return 0;
}

static void spawner_reap(struct spawner_children *kids, bool block)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, block ? 0 : WNOHANG);

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        for (size_t i = 0; i < kids->n; i++) {
            if (kids->pids[i] == pid) {
                kids->pids[i] = kids->pids[--kids->n];
                break;
            }
        }
        if (block && kids->n == 0)
            return;
    }
}

/* Receives one request: the run's socket. Returns 1 at EOF. */
static int spawner_receive(int control, int *sock)
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

    *sock = -1;
    n = recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return 1;
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg != NULL && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
        cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(sock, CMSG_DATA(cmsg), sizeof(int));
    if (n != 4 || memcmp(data, SPAWNER_MAGIC, 4) != 0 || (msg.msg_flags & MSG_CTRUNC)) {
        if (*sock >= 0)
            close(*sock);
        *sock = -1;
    }
    return 0;
}

static void spawner_fork_supervisor(int control, int sfd, int sock, struct spawner_children *kids,
                                    const struct spawner_filters *filters)
{
    const pid_t self = getpid();
    struct sandbox_result res;
    pid_t pid;

    pid = fork();
    if (pid == 0) {
        close(control);
        close(sfd);
        free(kids->pids);
        _exit(supervisor_main(sock, self, filters));
    }
    if (pid < 0) {
        /* The caller gets an answer either way. */
        memset(&res, 0, sizeof(res));
        res.exit_code = 125;
        sandbox_error_set(res.error, sizeof(res.error), "spawner: fork: %s", strerror(errno));
        spawner_send_all(sock, &res, sizeof(res));
    } else if (spawner_track(kids, pid) != 0) {
        /* Out of memory: an untracked supervisor would outlive a stop, so
         * cancel it now; it answers "cancelled" and is reaped as usual. */
        kill(pid, SIGTERM);
    }
    close(sock);
}

static int spawner_main(int control, pid_t parent)
{
    struct spawner_filters filters;
    struct spawner_children kids = {0};
    char err[256];
    struct pollfd pfd[2];
    sigset_t sigs;
    int sfd;

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
    sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return 1;
    /* A failure here only means each run compiles its own (and reports). */
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_DEFAULT, NULL, &filters.default_prog, err,
                              sizeof(err)) != 0)
        filters.default_prog.len = 0;
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_STRICT, NULL, &filters.strict_prog, err,
                              sizeof(err)) != 0)
        filters.strict_prog.len = 0;
    pfd[0] = (struct pollfd){.fd = control, .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
    for (;;) {
        struct signalfd_siginfo si;
        bool stop = false;
        int sock, rc;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            if (si.ssi_signo == SIGTERM)
                stop = true;
        spawner_reap(&kids, false);
        if (stop)
            break;
        if (pfd[0].revents == 0)
            continue;
        rc = spawner_receive(control, &sock);
        if (rc != 0)
            break; /* EOF: the daemon closed it or died */
        if (sock >= 0)
            spawner_fork_supervisor(control, sfd, sock, &kids, &filters);
    }
    for (size_t i = 0; i < kids.n; i++)
        kill(kids.pids[i], SIGTERM);
    if (kids.n > 0)
        spawner_reap(&kids, true);
    free(kids.pids);
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
    char control_buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = SPAWNER_MAGIC, .iov_len = 4};
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control_buf,
        .msg_controllen = sizeof(control_buf),
    };
    struct cmsghdr *cmsg;
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
    memset(control_buf, 0, sizeof(control_buf));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &pair[1], sizeof(int));
    while (sendmsg(sp->control_fd, &msg, MSG_NOSIGNAL) < 0) {
        if (errno == EINTR)
            continue;
        rc = -errno;
        sandbox_error_set(res->error, sizeof(res->error), "spawner is gone: %s", strerror(errno));
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
