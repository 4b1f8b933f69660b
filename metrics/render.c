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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_internal.h"
#include "util/util.h"

/* escape_quote: label values also escape '"'. */
static void metrics_buf_escaped(struct util_buf *b, const char *s, bool escape_quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            util_buf_str(b, "\\\\");
        else if (*s == '\n')
            util_buf_str(b, "\\n");
        else if (*s == '"' && escape_quote)
            util_buf_str(b, "\\\"");
        else
            util_buf_put(b, s, 1);
    }
}

static void metrics_buf_value(struct util_buf *b, double v)
{
    if (isnan(v))
        util_buf_str(b, "NaN");
    else if (isinf(v))
        util_buf_str(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        util_buf_printf(b, "%lld", (long long)v);
    else
        util_buf_printf(b, "%.17g", v);
}

/* {a="x",b="y"[,le="..."]}; nothing when there are no labels at all. */
static void metrics_buf_labels(struct util_buf *b, const struct metrics_family *f,
                               const struct metrics_series *s, const char *le)
{
    bool any = false;

    if (f->n_labels == 0 && le == NULL)
        return;
    util_buf_str(b, "{");
    for (size_t i = 0; i < f->n_labels; i++) {
        util_buf_printf(b, "%s%s=\"", any ? "," : "", f->labels[i]);
        metrics_buf_escaped(b, s->values[i], true);
        util_buf_str(b, "\"");
        any = true;
    }
    if (le != NULL)
        util_buf_printf(b, "%sle=\"%s\"", any ? "," : "", le);
    util_buf_str(b, "}");
}

static void metrics_render_histogram(struct util_buf *b, const struct metrics_family *f,
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
        util_buf_printf(b, "%s_bucket", f->name);
        metrics_buf_labels(b, f, s, le);
        util_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
    }
    util_buf_printf(b, "%s_sum", f->name);
    metrics_buf_labels(b, f, s, NULL);
    util_buf_str(b, " ");
    metrics_buf_value(b, metrics_bits_to_double(atomic_load(&s->sum)));
    util_buf_str(b, "\n");
    /* _count equals the +Inf bucket: the same sum, read once. */
    util_buf_printf(b, "%s_count", f->name);
    metrics_buf_labels(b, f, s, NULL);
    util_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
}

static void metrics_render_family(struct util_buf *b, struct metrics_family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};

    util_buf_printf(b, "# HELP %s ", f->name);
    metrics_buf_escaped(b, f->help, false);
    util_buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_series; i++) {
        const struct metrics_series *s = f->series[i];

        if (f->type == METRICS_HISTOGRAM) {
            metrics_render_histogram(b, f, s);
            continue;
        }
        util_buf_str(b, f->name);
        metrics_buf_labels(b, f, s, NULL);
        util_buf_str(b, " ");
        metrics_buf_value(b, metrics_bits_to_double(atomic_load(&s->value)));
        util_buf_str(b, "\n");
    }
    pthread_mutex_unlock(&f->lock);
}

int metrics_render(struct metrics *m, char **out, size_t *len)
{
    struct util_buf b = {0};

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
    util_buf_put(&b, "", 0);
    if (b.err != 0) {
        free(b.data);
        return b.err;
    }
    *out = b.data;
    *len = b.len;
    return 0;
}
