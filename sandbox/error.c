/*
 * error.c - sandbox_error_set, the one-line error message every sandbox
 * file writes into its caller's buffer. A file of its own, below all the
 * others, so that no two of them call each other just for it.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

void sandbox_error_set(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (buf == NULL || len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}
