/*
 * seccomp_prebuilt_none.c - no seccomp programs compiled at build time (the
 * generator itself links this, and so does a cross build, which cannot run
 * it): every program is compiled with libseccomp when it is needed.
 */
#include "internal.h"

bool sandbox_seccomp_prebuilt(enum sandbox_seccomp_mode mode, const struct sock_filter **filter,
                              size_t *len)
{
    (void)mode;
    *filter = NULL;
    *len = 0;
    return false;
}
