/*
 * svc_store_error.c - the gRPC status of a failed store write, shared by
 * ByteStream, BatchUpdateBlobs and the ActionCache so that a full disk is
 * answered the same way everywhere: RESOURCE_EXHAUSTED naming the
 * filesystem and the sizes (the store already evicted what it could and
 * retried once, cas/store_space.c), never INTERNAL. Any other write error
 * (EIO, EROFS) fails that call only, as INTERNAL with the errno's text.
 */
#include "casboxd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

grpc_status_code svc_store_error(struct casboxd *d, int rc, uint64_t need, char *msg, size_t len)
{
    if (rc == -ENOSPC || rc == -EDQUOT) {
        if (cas_store_space_describe(d->store, need, msg, len) != 0)
            snprintf(msg, len, "no space left on the store's filesystem");
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    if (rc == -ENOMEM) {
        snprintf(msg, len, "out of memory");
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    snprintf(msg, len, "%s", strerror(-rc));
    return GRPC_STATUS_INTERNAL;
}
