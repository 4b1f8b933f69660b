/*
 * cli_signal.c - signals sent to `casbox run` reach the command.
 *
 * sandbox_run blocks until the sandbox is gone, so the forwarding happens in
 * the signal handler. The sandbox's pid 1 is our only child and ignores
 * signals (a namespace's init has no default actions, and it blocks them
 * all); the command is pid 1's first child. The handler finds both through
 * /proc/<pid>/task/<pid>/children (open, read and kill are async-signal-safe)
 * and passes the signal on to the command, whose own death then decides our
 * exit status (143 after SIGTERM, as if nothing stood in between).
 *
 * A terminal's Ctrl-C or Ctrl-\ (si_code SI_KERNEL) went to the whole
 * foreground process group, command included, so it is not sent a second
 * time. A signal that arrives before the command exists kills pid 1 (the
 * sandbox is still being set up; running the command after a SIGTERM would
 * be wrong) and is remembered: casbox run then exits 128 + that signal.
 *
 * The state below is the one piece of global mutable state in casbox: a
 * signal handler has nowhere else to look.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const int signal_forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static struct {
    pid_t self;                       /* casbox run; pid 1 runs our handler until it resets it */
    volatile sig_atomic_t stopped_by; /* signal that stopped the set-up, or 0 */
} signal_state;

/* Writes "/proc/<pid>/task/<pid>/children" into buf without stdio. */
static void signal_children_path(char *buf, pid_t pid)
{
    char digits[16];
    int n = 0;
    char *p = buf;

    do {
        digits[n++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0 && n < (int)sizeof(digits));
    memcpy(p, "/proc/", 6);
    p += 6;
    for (int i = n - 1; i >= 0; i--)
        *p++ = digits[i];
    memcpy(p, "/task/", 6);
    p += 6;
    for (int i = n - 1; i >= 0; i--)
        *p++ = digits[i];
    memcpy(p, "/children", 10);
}

/* The first child of pid (children are listed in order of creation), or 0. */
static pid_t signal_first_child(pid_t pid)
{
    char path[64], buf[32];
    pid_t child = 0;
    ssize_t n;
    int fd;

    signal_children_path(path, pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        child = child * 10 + (buf[i] - '0');
    return child;
}

static void signal_handler(int sig, siginfo_t *si, void *context)
{
    int saved_errno = errno;
    pid_t pid1, command;

    (void)context;
    /* Between the clone and its reset of dispositions, pid 1 runs this
     * handler too: the caller is the one that acts. */
    if (getpid() != signal_state.self)
        goto out;
    pid1 = signal_first_child(signal_state.self);
    command = pid1 > 0 ? signal_first_child(pid1) : 0;
    if (command > 0) {
        if (!(si != NULL && si->si_code == SI_KERNEL && (sig == SIGINT || sig == SIGQUIT)))
            kill(command, sig);
    } else {
        if (pid1 > 0)
            kill(pid1, SIGKILL);
        signal_state.stopped_by = sig;
    }
out:
    errno = saved_errno;
}

int cli_signal_forward_start(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = signal_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    signal_state.self = getpid();
    signal_state.stopped_by = 0;
    for (size_t i = 0; i < sizeof(signal_forwarded) / sizeof(signal_forwarded[0]); i++)
        if (sigaction(signal_forwarded[i], &sa, NULL) != 0)
            return -errno;
    return 0;
}

void cli_signal_forward_stop(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof(signal_forwarded) / sizeof(signal_forwarded[0]); i++)
        sigaction(signal_forwarded[i], &sa, NULL);
}

int cli_signal_stopped_by(void)
{
    return signal_state.stopped_by;
}
