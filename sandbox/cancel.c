/*
 * cancel.c - a per-run cancel token for sandbox_spawner_run_cancellable.
 *
 * sandbox_spawner_cancel kills every run at once (a daemon shutting down);
 * a fleet worker must kill one action (the scheduler gave it up) while the
 * other slots go on. The token is an eventfd: firing it from any thread
 * makes it readable, and the thread waiting in
 * sandbox_spawner_run_cancellable polls it next to the request socket, then
 * half-closes that socket, which the spawner takes as "cancel this run"
 * (as on a timeout: pid 1 and the cgroup are killed, the namespaces torn
 * down) and still answers "cancelled". An eventfd rather than a flag so
 * that the wait needs no polling interval.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

int sandbox_cancel_init(struct sandbox_cancel *c)
{
    c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return c->fd < 0 ? -errno : 0;
}

int sandbox_cancel_fire(struct sandbox_cancel *c)
{
    uint64_t one = 1;

    if (c->fd < 0)
        return -EBADF;
    /* EAGAIN: the counter is full, so it has fired already */
    if (write(c->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

bool sandbox_cancel_fired(const struct sandbox_cancel *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    return c->fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

void sandbox_cancel_destroy(struct sandbox_cancel *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
