/*
 * render.c - the Prometheus text exposition format (version 0.0.4): for
 * each family a # HELP and a # TYPE line, then one line per series; a
 * histogram's series as cumulative _bucket{le=...} lines, _sum and _count.
 *
 * The output is bounded by the registry's bounds (families x series x
 * buckets), so it is built in memory and handed to the HTTP layer whole.
 * Help text escapes \ and newline; label values escape \, " and newline.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_internal.h"

struct metrics_buf {
    char *data;
    size_t len, cap;
    int err;
};

static void metrics_buf_reserve(struct metrics_buf *b, size_t more)
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

static void metrics_buf_put(struct metrics_buf *b, const char *s, size_t n)
{
    metrics_buf_reserve(b, n);
    if (b->err != 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void metrics_buf_str(struct metrics_buf *b, const char *s)
{
    metrics_buf_put(b, s, strlen(s));
}

static void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = -EINVAL;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        metrics_buf_put(b, small, (size_t)n);
        return;
    }
    metrics_buf_reserve(b, (size_t)n);
    if (b->err != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* escape_quote: label values also escape '"'. */
static void metrics_buf_escaped(struct metrics_buf *b, const char *s, bool escape_quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            metrics_buf_str(b, "\\\\");
        else if (*s == '\n')
            metrics_buf_str(b, "\\n");
        else if (*s == '"' && escape_quote)
            metrics_buf_str(b, "\\\"");
        else
            metrics_buf_put(b, s, 1);
    }
}

static void metrics_buf_value(struct metrics_buf *b, double v)
{
    if (isnan(v))
        metrics_buf_str(b, "NaN");
    else if (isinf(v))
        metrics_buf_str(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        metrics_buf_printf(b, "%lld", (long long)v);
    else
        metrics_buf_printf(b, "%.17g", v);
}

/* {a="x",b="y"[,le="..."]}; nothing when there are no labels at all. */
static void metrics_buf_labels(struct metrics_buf *b, const struct metrics_family *f,
                               const struct metrics_series *s, const char *le)
{
    bool any = false;

    if (f->n_labels == 0 && le == NULL)
        return;
    metrics_buf_str(b, "{");
    for (size_t i = 0; i < f->n_labels; i++) {
        metrics_buf_printf(b, "%s%s=\"", any ? "," : "", f->labels[i]);
        metrics_buf_escaped(b, s->values[i], true);
        metrics_buf_str(b, "\"");
        any = true;
    }
    if (le != NULL)
        metrics_buf_printf(b, "%sle=\"%s\"", any ? "," : "", le);
    metrics_buf_str(b, "}");
}

static void metrics_render_histogram(struct metrics_buf *b, const struct metrics_family *f,
                                     const struct metrics_series *s)
{
    uint64_t cumulative = 0;
    char le[64];

    for (size_t i = 0; i <= f->n_bounds; i++) {
        cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->n_bounds)
            snprintf(le, sizeof(le), "%.17g", f->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        metrics_buf_printf(b, "%s_bucket", f->name);
        metrics_buf_labels(b, f, s, le);
        metrics_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
    }
    metrics_buf_printf(b, "%s_sum", f->name);
    metrics_buf_labels(b, f, s, NULL);
    metrics_buf_str(b, " ");
    metrics_buf_value(b, metrics_bits_to_double(atomic_load(&s->sum)));
    metrics_buf_str(b, "\n");
    /* _count equals the +Inf bucket: the same sum, read once. */
    metrics_buf_printf(b, "%s_count", f->name);
    metrics_buf_labels(b, f, s, NULL);
    metrics_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
}

static void metrics_render_family(struct metrics_buf *b, struct metrics_family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};

    metrics_buf_printf(b, "# HELP %s ", f->name);
    metrics_buf_escaped(b, f->help, false);
    metrics_buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_series; i++) {
        const struct metrics_series *s = f->series[i];

        if (f->type == METRICS_HISTOGRAM) {
            metrics_render_histogram(b, f, s);
            continue;
        }
        metrics_buf_str(b, f->name);
        metrics_buf_labels(b, f, s, NULL);
        metrics_buf_str(b, " ");
        metrics_buf_value(b, metrics_bits_to_double(atomic_load(&s->value)));
        metrics_buf_str(b, "\n");
    }
    pthread_mutex_unlock(&f->lock);
}

int metrics_render(struct metrics *m, char **out, size_t *len)
{
    struct metrics_buf b = {0};

    *out = NULL;
    *len = 0;
    pthread_mutex_lock(&m->lock);
    /* Collectors may register families at first use, which takes the
     * lock: run them with it released (they only store values). */
    for (size_t i = 0; i < m->n_collectors; i++) {
        struct metrics_collector c = m->collectors[i];

        pthread_mutex_unlock(&m->lock);
        c.fn(c.ctx, m);
        pthread_mutex_lock(&m->lock);
    }
    for (size_t i = 0; i < m->n_families; i++)
        metrics_render_family(&b, m->families[i]);
    pthread_mutex_unlock(&m->lock);
    metrics_buf_put(&b, "", 0);
    if (b.err != 0) {
        free(b.data);
        return b.err;
    }
    *out = b.data;
    *len = b.len;
    return 0;
}
