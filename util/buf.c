/*
 * buf.c - a growing text buffer for what is built in memory and then sent
 * whole (the metrics exposition, a web page): append, printf, and one
 * sticky error, so that a builder checks for out-of-memory once at the end
 * instead of after every line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void util_buf_reserve(struct util_buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 4096;
    char *grown;

    if (b->err != 0 || b->len + more + 1 <= b->cap)
        return;
    while (cap < b->len + more + 1)
        cap *= 2;
    grown = realloc(b->data, cap);
    if (grown == NULL) {
        b->err = -ENOMEM;
        return;
    }
    b->data = grown;
    b->cap = cap;
}

void util_buf_put(struct util_buf *b, const char *s, size_t n)
{
    util_buf_reserve(b, n);
    if (b->err != 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void util_buf_str(struct util_buf *b, const char *s)
{
    util_buf_put(b, s, strlen(s));
}

void util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = -EINVAL;
        return;
    }
    util_buf_reserve(b, (size_t)n);
    if (b->err != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void util_buf_free(struct util_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
