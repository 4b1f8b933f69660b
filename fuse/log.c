/*
 * log.c - casfs_log, the one log line of the fuse/ files: to the callback
 * the mount was given (casfs_options.log), or stderr. A file of its own,
 * below the others, so that they need not call casfs.c back to log.
 */
#include "casfs_internal.h"

#include <stdarg.h>
#include <stdio.h>

void casfs_log(struct casfs *fs, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (fs->log != NULL)
        fs->log(fs->log_arg, line);
    else
        fprintf(stderr, "%s\n", line);
}
