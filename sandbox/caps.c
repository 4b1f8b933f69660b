/*
 * caps.c - drop every capability before the command runs.
 *
 * The child holds all capabilities in its new user namespace; uid 0 inside
 * would even regain them on execve. So: lock the securebits that make uid 0
 * ordinary (NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, no ambient raise), empty
 * the bounding and ambient sets, then clear permitted/effective/inheritable
 * (what libcap's cap_set_proc(cap_init()) does). The order matters:
 * securebits and the bounding set need CAP_SETPCAP, which the last step
 * removes. Raw prctl/capset rather than libcap: no allocation after clone,
 * and one syscall per step (this runs for every action).
 */
#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/securebits.h>

#include "internal.h"

int sandbox_caps_drop_all(char *err, size_t err_len)
{
    const unsigned long secbits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                  SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                  SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    int rc;

    if (prctl(PR_SET_SECUREBITS, secbits, 0, 0, 0) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "set securebits: %s", strerror(errno));
        return rc;
    }
    /* The kernel may know more capabilities than our headers: drop until it
     * says there are no more. */
    for (unsigned long c = 0;; c++) {
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL && c > CAP_LAST_CAP / 2)
            break;
        rc = -errno;
        sandbox_error_set(err, err_len, "drop bounding capability %lu: %s", c, strerror(errno));
        return rc;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "clear ambient capabilities: %s", strerror(errno));
        return rc;
    }
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &header, data) != 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "clear capabilities: %s", strerror(errno));
        return rc;
    }
    return 0;
}
