/*
 * net.c - bring up the loopback interface of a fresh network namespace.
 *
 * A new network namespace has only `lo`, and it is down: without this even
 * 127.0.0.1 is unreachable and tests that listen on localhost fail. The kernel
 * assigns 127.0.0.1/8 and ::1 itself when the interface goes up, so one
 * SIOCSIFFLAGS is enough (bubblewrap does the same over netlink).
 */
#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

int sandbox_net_loopback_up(void)
{
    struct ifreq ifr;
    int fd, rc = 0;

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
        rc = -errno;
        goto out;
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
        rc = -errno;
out:
    close(fd);
    return rc;
}
