/* TEMPORARY (removed when the worker role lands with branch `remote`): the
 * worker role refuses to start until then. */
#include <errno.h>
#include <stdio.h>

#include "casboxd.h"

int fleet_worker_run(struct casboxd *d, const sigset_t *sigs)
{
    (void)d;
    (void)sigs;
    fprintf(stderr, "casboxd: --role worker is not built in yet\n");
    return -ENOSYS;
}
