/*
 * spawner.c - run sandboxes on behalf of a multi-threaded process.
 *
 * A process with threads cannot safely fork and set up namespaces (another
 * thread may hold the malloc lock; unshare(CLONE_NEWUSER) fails outright), so
 * the daemon forks this helper while it is still single-threaded, before
 * grpc_init:
 *
 *   daemon thread --control (SOCK_SEQPACKET)--> spawner --clone--> pid 1 of a run
 *        \_____ request socket (SOCK_STREAM) _____/
 *
 * For each run the calling thread makes a socketpair, writes the encoded spec
 * into its end (as much as the socket takes without blocking), passes the
 * other end to the spawner with SCM_RIGHTS (the only thing on the control
 * socket, so the spawner never blocks on a slow client, and the spec's size
 * is bounded by SANDBOX_WIRE_MAX, not by a socket buffer), writes the rest
 * and blocks reading the struct sandbox_result.
 *
 * The spawner is one poll loop over every run in flight: it reads a request
 * without blocking (usually whole at the first try), clones the run's pid 1
 * itself (sandbox_run_begin) and supervises it with the others
 * (sandbox_run_step: pidfd, report pipe, output pipes, timeout, and the
 * request socket, whose hang-up cancels the run). The answer goes out as
 * soon as pid 1 has reported that the command and everything it started are
 * gone; pid 1's own exit and the kernel's teardown of its namespaces go on
 * while the spawner serves the next request, and it reaps pid 1 later on
 * SIGCHLD. Nothing but the clone itself happens per run: no process of our
 * own is forked, and the seccomp programs are compiled once.
 *
 * What may block the loop is kept to the caller's own host paths (the
 * allow-list of the root, output files, cgroup files): the spec's paths,
 * which may lie on the daemon's FUSE filesystem, are only looked at by the
 * run's pid 1.
 *
 * Lifetime: if the calling thread goes away (closes its end) its run is
 * cancelled. If the daemon dies, the control socket hits EOF (and PDEATHSIG
 * sends SIGTERM); the spawner then cancels every run (kills its pid 1,
 * removes its cgroup), answers "cancelled" where anyone is left to hear it,
 * and exits. A spawner that dies takes every sandbox with it (pid 1 has
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

/* Filters compiled once in the spawner, shared by every run. */
struct spawner_filters {
    struct sock_fprog default_prog;
    struct sock_fprog strict_prog;
};

/* One request, from its socket to its answer. */
struct spawner_run {
    int sock;           /* the caller's request socket */
    uint8_t header[4];  /* the spec's length, as it arrives */
    size_t header_have; /* bytes of header read */
    uint8_t *buf;       /* the encoded spec, once the length is known */
    uint32_t len;
    uint32_t have;
    bool started; /* sandbox_run_begin was called */
    pid_t unreaped;
    size_t pfd_off; /* this round's place in the poll array */
    size_t pfd_n;
    struct sandbox_spec spec;
    struct sandbox_result res;
    struct sandbox_run run;
};

/* The spawner's own bookkeeping (local to its loop, not global). */
struct spawner_state {
    int control; /* -1 once closed (EOF, or stopping) */
    int sfd;
    bool stopping;
    struct sandbox_run_options opts; /* the prebuilt filters */
    struct sandbox_warm warm;        /* the next run's pid 1, cloned ahead */
    bool want_warm;                  /* clone one when the loop is idle */
    struct spawner_run **runs;
    size_t n_runs;
    size_t cap_runs;
    pid_t *zombies; /* pid 1s that reported and are left to exit */
    size_t n_zombies;
    size_t cap_zombies;
    struct pollfd *pfd;
    size_t cap_pfd;
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

/* --- passing the request socket --- */

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
    n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
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

/* --- one run --- */

/* Reads what has arrived of the request; 1 once the spec is whole, 0 when
 * more is to come, a negative errno (res.error set) when it cannot be. */
static int spawner_run_read(struct spawner_run *r)
{
    for (;;) {
        uint8_t *dst = r->buf != NULL ? r->buf + r->have : r->header + r->header_have;
        size_t want = r->buf != NULL ? r->len - r->have : sizeof(r->header) - r->header_have;
        ssize_t n = recv(r->sock, dst, want, MSG_DONTWAIT);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0) {
            int rc = n == 0 ? -EPIPE : -errno;

            sandbox_error_set(r->res.error, sizeof(r->res.error),
                              "spawner: reading the request: %s", strerror(-rc));
            return rc;
        }
        if (r->buf != NULL) {
            r->have += (uint32_t)n;
            if (r->have == r->len)
                return 1;
            continue;
        }
        r->header_have += (size_t)n;
        if (r->header_have < sizeof(r->header))
            continue;
        memcpy(&r->len, r->header, sizeof(r->len));
        if (r->len == 0 || r->len > SANDBOX_WIRE_MAX) {
            sandbox_error_set(r->res.error, sizeof(r->res.error), "spawner: request of %u bytes",
                              r->len);
            return -E2BIG;
        }
        r->buf = malloc(r->len);
        if (r->buf == NULL)
            return -ENOMEM;
    }
}

static int spawner_track_zombie(struct spawner_state *st, pid_t pid)
{
    if (st->n_zombies == st->cap_zombies) {
        size_t cap = st->cap_zombies ? st->cap_zombies * 2 : 16;
        pid_t *grown = realloc(st->zombies, cap * sizeof(*grown));

        if (grown == NULL)
            return -ENOMEM;
        st->zombies = grown;
        st->cap_zombies = cap;
    }
    st->zombies[st->n_zombies++] = pid;
    return 0;
}

/* The whole spec is in: decode it and start the run. */
static void spawner_run_start(struct spawner_state *st, struct spawner_run *r)
{
    struct sandbox_run_options opts = st->opts;
    int rc;

    rc = sandbox_spec_decode(r->buf, r->len, &r->spec);
    free(r->buf);
    r->buf = NULL;
    if (rc != 0) {
        sandbox_error_set(r->res.error, sizeof(r->res.error), "spawner: bad request: %s",
                          strerror(-rc));
        r->res.exit_code = 125;
        return;
    }
    /* The request socket doubles as the cancel fd: the caller closing its
     * end (or sending anything more) cancels the run. */
    opts.cancel_fds = &r->sock;
    opts.n_cancel_fds = 1;
    opts.unreaped = &r->unreaped;
    opts.warm = &st->warm;
    r->started = true;
    sandbox_run_begin(&r->run, &r->spec, &opts, &r->res);
    if (r->run.warm_discarded > 0)
        spawner_track_zombie(st, r->run.warm_discarded);
    /* The next warm pid 1 matches this request; it is cloned once the
     * loop has answered what it can (off this run's critical path). */
    if (st->warm.pid <= 0 || st->warm.uid0 != r->spec.uid0 || st->warm.network != r->spec.network) {
        if (st->warm.pid > 0)
            spawner_track_zombie(st, sandbox_warm_discard(&st->warm));
        st->warm.uid0 = r->spec.uid0;
        st->warm.network = r->spec.network;
        st->want_warm = true;
    }
}

static bool spawner_run_done(const struct spawner_run *r)
{
    return !r->started ? r->res.exit_code != 0 : sandbox_run_done(&r->run);
}

/* Answers the caller and lets the run go. */
static void spawner_run_finish(struct spawner_state *st, struct spawner_run *r)
{
    if (r->started) {
        sandbox_run_end(&r->run);
        /* Out of memory for the list: wait for this one now instead. */
        if (r->unreaped > 0 && spawner_track_zombie(st, r->unreaped) != 0)
            while (waitpid(r->unreaped, NULL, 0) < 0 && errno == EINTR)
                ;
    }
    /* One small message into an empty socket buffer: it does not block.
     * If the caller has gone, nobody hears it. */
    send(r->sock, &r->res, sizeof(r->res), MSG_NOSIGNAL | MSG_DONTWAIT);
    close(r->sock);
    sandbox_spec_free(&r->spec);
    free(r->buf);
    free(r);
}

static void spawner_cancel_run(struct spawner_run *r)
{
    if (r->started) {
        sandbox_run_cancel(&r->run);
    } else if (r->res.exit_code == 0) {
        snprintf(r->res.error, sizeof(r->res.error), "cancelled");
        r->res.exit_code = 128 + SIGKILL;
        r->res.term_signal = SIGKILL;
    }
}

/* A new request: its socket has just arrived on the control socket. */
static void spawner_accept(struct spawner_state *st, int sock)
{
    struct spawner_run *r = calloc(1, sizeof(*r));
    struct spawner_run **grown;
    int rc;

    if (r == NULL || (st->n_runs == st->cap_runs &&
                      (grown = realloc(st->runs, (st->cap_runs ? st->cap_runs * 2 : 16) *
                                                     sizeof(*grown))) == NULL)) {
        struct sandbox_result res;

        memset(&res, 0, sizeof(res));
        res.exit_code = 125;
        snprintf(res.error, sizeof(res.error), "spawner: out of memory");
        send(sock, &res, sizeof(res), MSG_NOSIGNAL | MSG_DONTWAIT);
        close(sock);
        free(r);
        return;
    }
    if (st->n_runs == st->cap_runs) {
        st->runs = grown;
        st->cap_runs = st->cap_runs ? st->cap_runs * 2 : 16;
    }
    r->sock = sock;
    r->unreaped = -1;
    sandbox_spec_init(&r->spec);
    st->runs[st->n_runs++] = r;
    if (st->stopping) {
        spawner_cancel_run(r);
        return;
    }
    /* The caller wrote before it sent the socket: usually all is there. */
    rc = spawner_run_read(r);
    if (rc == 1)
        spawner_run_start(st, r);
    else if (rc < 0)
        r->res.exit_code = 125;
}

/* --- the loop --- */

static int spawner_grow_pfd(struct spawner_state *st, size_t need)
{
    struct pollfd *grown;
    size_t cap = st->cap_pfd ? st->cap_pfd : 64;

    if (need <= st->cap_pfd)
        return 0;
    while (cap < need)
        cap *= 2;
    grown = realloc(st->pfd, cap * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    st->pfd = grown;
    st->cap_pfd = cap;
    return 0;
}

/* Fills st->pfd: the control socket, the signalfd, then each run's fds;
 * returns how many, and the poll timeout in *timeout_ms. */
static size_t spawner_poll_set(struct spawner_state *st, int *timeout_ms)
{
    size_t n = 0;

    *timeout_ms = -1;
    st->pfd[n++] = (struct pollfd){.fd = st->control, .events = POLLIN};
    st->pfd[n++] = (struct pollfd){.fd = st->sfd, .events = POLLIN};
    for (size_t i = 0; i < st->n_runs; i++) {
        struct spawner_run *r = st->runs[i];

        r->pfd_off = n;
        if (spawner_run_done(r))
            *timeout_ms = 0; /* over (refused, cancelled): finish it now */
        if (!r->started) {
            st->pfd[n++] = (struct pollfd){.fd = r->sock, .events = POLLIN | POLLRDHUP};
        } else {
            int t = sandbox_run_poll_timeout(&r->run);

            n += sandbox_run_poll_fds(&r->run, st->pfd + n);
            if (t >= 0 && (*timeout_ms < 0 || t < *timeout_ms))
                *timeout_ms = t;
        }
        r->pfd_n = n - r->pfd_off;
    }
    return n;
}

static void spawner_stop(struct spawner_state *st)
{
    st->stopping = true;
    if (st->warm.pid > 0)
        spawner_track_zombie(st, sandbox_warm_discard(&st->warm));
    if (st->control >= 0)
        close(st->control);
    st->control = -1;
    for (size_t i = 0; i < st->n_runs; i++)
        spawner_cancel_run(st->runs[i]);
}

static void spawner_reap_zombies(struct spawner_state *st, bool block)
{
    for (size_t i = 0; i < st->n_zombies;) {
        pid_t w = waitpid(st->zombies[i], NULL, block ? 0 : WNOHANG);

        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0) {
            i++;
            continue;
        }
        st->zombies[i] = st->zombies[--st->n_zombies];
    }
}

static void spawner_signals(struct spawner_state *st)
{
    struct signalfd_siginfo si;

    while (read(st->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM && !st->stopping)
            spawner_stop(st);
    }
    spawner_reap_zombies(st, false);
}

/* One round's events for one run; true when it is over. */
static bool spawner_run_events(struct spawner_state *st, struct spawner_run *r)
{
    const struct pollfd *pfd = st->pfd + r->pfd_off;

    if (!r->started && r->pfd_n == 1 && pfd->revents != 0 && r->res.exit_code == 0) {
        int rc = spawner_run_read(r);

        if (rc == 1)
            spawner_run_start(st, r);
        else if (rc < 0)
            r->res.exit_code = 125;
    } else if (r->started) {
        sandbox_run_step(&r->run, pfd, r->pfd_n);
    }
    if (st->stopping)
        spawner_cancel_run(r);
    return spawner_run_done(r);
}

/* A warm pid 1 for the next request, when one is wanted. Done after the
 * round's answers went out, so a run never waits for it. */
static void spawner_warm_up(struct spawner_state *st)
{
    if (!st->want_warm || st->stopping || st->warm.pid > 0)
        return;
    st->want_warm = false;
    /* On failure runs clone their own; the next request asks again. */
    sandbox_warm_start(&st->warm, st->warm.uid0, st->warm.network, &st->opts);
}

static void spawner_loop(struct spawner_state *st)
{
    while (st->control >= 0 || st->n_runs > 0) {
        size_t n, kept = 0;
        int timeout_ms;

        if (spawner_grow_pfd(st, 2 + st->n_runs * SANDBOX_RUN_POLL_MAX) != 0) {
            spawner_stop(st); /* out of memory: wind down */
            if (spawner_grow_pfd(st, 2 + st->n_runs * SANDBOX_RUN_POLL_MAX) != 0)
                break;
        }
        n = spawner_poll_set(st, &timeout_ms);
        if (poll(st->pfd, n, timeout_ms) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (st->pfd[1].revents != 0)
            spawner_signals(st);
        /* Runs first: their poll slots are this round's. */
        for (size_t i = 0; i < st->n_runs; i++) {
            struct spawner_run *r = st->runs[i];

            if (spawner_run_events(st, r))
                spawner_run_finish(st, r);
            else
                st->runs[kept++] = r;
        }
        /* After an answer, or when idle: not while a run waits to start. */
        if (kept < st->n_runs || kept == 0)
            spawner_warm_up(st);
        st->n_runs = kept;
        if (st->control >= 0 && st->pfd[0].revents != 0) {
            int sock = -1, rc = spawner_recv_fd(st->control, &sock);

            if (rc != 0)
                spawner_stop(st); /* EOF: the daemon closed it or died */
            else if (sock >= 0)
                spawner_accept(st, sock);
            /* A request answered at once (bad, or refused) is over now. */
            if (st->n_runs > 0 && spawner_run_done(st->runs[st->n_runs - 1]))
                spawner_run_finish(st, st->runs[--st->n_runs]);
        }
    }
    /* Leave nothing behind: runs that could not be supervised any more are
     * killed by ending them, and every pid 1 is reaped. */
    for (size_t i = 0; i < st->n_runs; i++) {
        spawner_cancel_run(st->runs[i]);
        spawner_run_finish(st, st->runs[i]);
    }
    st->n_runs = 0;
    spawner_reap_zombies(st, true);
}

static int spawner_main(int control, pid_t parent)
{
    struct spawner_filters filters;
    struct spawner_state st = {.control = control, .want_warm = true};
    char err[256];
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
    st.sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (st.sfd < 0)
        return 1;
    /* A failure here only means each run compiles its own (and reports). */
    memset(&filters, 0, sizeof(filters));
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_DEFAULT, NULL, &filters.default_prog, err,
                              sizeof(err)) == 0)
        st.opts.seccomp_default = &filters.default_prog;
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_STRICT, NULL, &filters.strict_prog, err,
                              sizeof(err)) == 0)
        st.opts.seccomp_strict = &filters.strict_prog;
    st.warm.pid = -1;
    st.warm.pidfd = st.warm.sock = -1;
    spawner_loop(&st);
    free(st.runs);
    free(st.zombies);
    free(st.pfd);
    close(st.sfd);
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

/* Writes as much of the request (its length, then the spec) as the socket
 * takes without blocking, before the spawner has the socket, so that it
 * usually finds the whole spec at once; returns how many bytes went. */
static size_t spawner_send_early(int sock, uint32_t *len32, const uint8_t *buf, size_t len)
{
    struct iovec iov[2] = {{.iov_base = len32, .iov_len = sizeof(*len32)},
                           {.iov_base = (void *)buf, .iov_len = len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t n;

    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n > 0 ? (size_t)n : 0;
}

/* The rest of the request, from byte `sent` on (blocking). */
static int spawner_send_rest(int sock, const uint32_t *len32, const uint8_t *buf, size_t len,
                             size_t sent)
{
    int rc = 0;

    if (sent < sizeof(*len32))
        rc = spawner_send_all(sock, (const uint8_t *)len32 + sent, sizeof(*len32) - sent);
    sent = sent > sizeof(*len32) ? sent - sizeof(*len32) : 0;
    if (rc == 0)
        rc = spawner_send_all(sock, buf + sent, len - sent);
    return rc;
}

/* Waits until the answer is ready to read on sock; when cancel fires
 * first, half-closes sock, which the spawner takes as "cancel this run"
 * (it still answers). */
static void spawner_wait_answer(int sock, const struct sandbox_cancel *cancel)
{
    struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = cancel->fd, .events = POLLIN}};

    for (;;) {
        int n = poll(p, 2, -1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[0].revents != 0)
            return;
        if (p[1].revents != 0) {
            shutdown(sock, SHUT_WR);
            return;
        }
    }
}

int sandbox_spawner_run(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                        struct sandbox_result *res)
{
    return sandbox_spawner_run_cancellable(sp, spec, NULL, res);
}

int sandbox_spawner_run_cancellable(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                                    const struct sandbox_cancel *cancel, struct sandbox_result *res)
{
    uint8_t *buf = NULL;
    size_t len = 0, sent = 0;
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
    if (cancel != NULL && sandbox_cancel_fired(cancel)) {
        rc = -ECANCELED;
        sandbox_error_set(res->error, sizeof(res->error), "cancelled");
        goto out;
    }
    len32 = (uint32_t)len;
    sent = spawner_send_early(pair[0], &len32, buf, len);
    rc = spawner_send_fd(sp->control_fd, pair[1]);
    if (rc != 0) {
        sandbox_error_set(res->error, sizeof(res->error), "spawner is gone: %s", strerror(-rc));
        goto out;
    }
    close(pair[1]);
    pair[1] = -1;
    spawner_send_rest(pair[0], &len32, buf, len, sent);
    if (cancel != NULL)
        spawner_wait_answer(pair[0], cancel);
    /* A failed send still leaves an answer to read when the spawner
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
    /* SIGTERM makes the spawner cancel every run (each still gets its
     * answer, "cancelled") and exit once they are over. */
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
