/*
 * registry.c - families and their series: registration (checked names,
 * bounded counts), lookup by label values, and lock-free updates.
 *
 * A lookup takes the family's lock and compares label values; callers on a
 * hot path look a series up once and keep the pointer. Updates are atomic
 * compare-and-swap loops on a double's bits. Nothing is freed before
 * metrics_free, which runs after every thread that records has stopped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_internal.h"
#include "util/util.h"

#define METRICS_DEFAULT_FAMILIES 256
#define METRICS_DEFAULT_SERIES   1024

const double metrics_latency_buckets[] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05,   0.1,    0.25,  0.5,    1,     2.5,  5,
                                          10,     30,     60,    120,    300,   600};
const size_t metrics_latency_n_buckets =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

double metrics_bits_to_double(uint64_t bits)
{
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

uint64_t metrics_double_to_bits(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits;
}

static void metrics_atomic_add(_Atomic uint64_t *slot, double v)
{
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
        slot, &old, metrics_double_to_bits(metrics_bits_to_double(old) + v), memory_order_relaxed,
        memory_order_relaxed))
        ;
}

static void metrics_series_free(struct metrics_series *s)
{
    for (size_t i = 0; i < METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    free(s);
}

static void metrics_family_free(struct metrics_family *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n_series; i++)
        metrics_series_free(f->series[i]);
    free(f->series);
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

int metrics_new(const struct metrics_options *opt, struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof(*m));

    *out = NULL;
    if (m == NULL)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    m->max_families = opt && opt->max_families ? opt->max_families : METRICS_DEFAULT_FAMILIES;
    m->max_series = opt && opt->max_series ? opt->max_series : METRICS_DEFAULT_SERIES;
    m->families = calloc(m->max_families, sizeof(*m->families));
    if (m->families == NULL) {
        metrics_free(m);
        return -ENOMEM;
    }
    m->dropped = metrics_counter(m, "casbox_metrics_series_dropped_total",
                                 "Updates dropped because their family had too many label "
                                 "combinations.",
                                 "family");
    *out = m;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_families; i++)
        metrics_family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Splits "a,b" into f->labels; -EINVAL on a bad or repeated name. */
static int metrics_family_labels(struct metrics_family *f, const char *labels)
{
    const char *p = labels;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);

        if (f->n_labels == METRICS_MAX_LABELS)
            return -E2BIG;
        f->labels[f->n_labels] = strndup(p, len);
        if (f->labels[f->n_labels] == NULL)
            return -ENOMEM;
        f->n_labels++;
        if (!metrics_label_name_valid(f->labels[f->n_labels - 1]) ||
            (f->type == METRICS_HISTOGRAM && strcmp(f->labels[f->n_labels - 1], "le") == 0))
            return -EINVAL;
        for (size_t i = 0; i + 1 < f->n_labels; i++) {
            if (strcmp(f->labels[i], f->labels[f->n_labels - 1]) == 0)
                return -EINVAL;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int metrics_family_check(enum metrics_type type, const char *name, const double *bounds,
                                size_t n_bounds)
{
    size_t len = name ? strlen(name) : 0;

    if (!metrics_name_valid(name))
        return -EINVAL;
    if (type == METRICS_COUNTER && (len < 6 || strcmp(name + len - 6, "_total") != 0))
        return -EINVAL;
    if (type != METRICS_COUNTER && len >= 6 && strcmp(name + len - 6, "_total") == 0)
        return -EINVAL;
    if (type == METRICS_HISTOGRAM) {
        if (n_bounds == 0 || n_bounds > METRICS_MAX_BUCKETS)
            return -EINVAL;
        for (size_t i = 1; i < n_bounds; i++) {
            if (!(bounds[i] > bounds[i - 1]))
                return -EINVAL;
        }
    }
    return 0;
}

static struct metrics_family *metrics_register(struct metrics *m, enum metrics_type type,
                                               const char *name, const char *help,
                                               const char *labels, const double *bounds,
                                               size_t n_bounds)
{
    struct metrics_family *f = NULL;
    int rc;

    if (m == NULL)
        return NULL;
    rc = metrics_family_check(type, name, bounds, n_bounds);
    if (rc != 0) {
        LOG_E("metrics: %s is not a valid %s", name ? name : "(null)",
              type == METRICS_COUNTER ? "counter (names end in _total)" : "metric");
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_families; i++) {
        if (strcmp(m->families[i]->name, name) == 0) {
            f = m->families[i]->type == type ? m->families[i] : NULL;
            if (f == NULL)
                LOG_E("metrics: %s registered twice with different types", name);
            goto out;
        }
    }
    if (m->n_families == m->max_families) {
        LOG_E("metrics: no room for %s (%zu families)", name, m->max_families);
        goto out;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        goto out;
    pthread_mutex_init(&f->lock, NULL);
    f->type = type;
    f->registry = m;
    f->max_series = m->max_series;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (n_bounds > 0)
        memcpy(f->bounds, bounds, n_bounds * sizeof(*bounds));
    f->n_bounds = n_bounds;
    rc = f->name && f->help ? metrics_family_labels(f, labels) : -ENOMEM;
    if (rc != 0) {
        LOG_E("metrics: %s: bad label names '%s'", name, labels ? labels : "");
        metrics_family_free(f);
        f = NULL;
        goto out;
    }
    m->families[m->n_families++] = f;
out:
    pthread_mutex_unlock(&m->lock);
    /* A family without labels has its one series, at 0, from the start:
     * Prometheus sees it before the first event (rate() needs that). */
    if (f != NULL && f->n_labels == 0)
        metrics_series_get(f, NULL);
    return f;
}

struct metrics_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels)
{
    return metrics_register(m, METRICS_COUNTER, name, help, labels, NULL, 0);
}

struct metrics_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return metrics_register(m, METRICS_GAUGE, name, help, labels, NULL, 0);
}

struct metrics_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds)
{
    return metrics_register(m, METRICS_HISTOGRAM, name, help, labels, bounds, n_bounds);
}

static bool metrics_series_matches(const struct metrics_series *s, size_t n,
                                   const char *const *values)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    }
    return true;
}

/* Counts the values; SIZE_MAX when there are more than METRICS_MAX_LABELS. */
static size_t metrics_values_count(const char *const *values)
{
    size_t n = 0;

    while (values != NULL && values[n] != NULL) {
        if (++n > METRICS_MAX_LABELS)
            return SIZE_MAX;
    }
    return n;
}

static struct metrics_series *metrics_series_new(struct metrics_family *f,
                                                 const char *const *values)
{
    struct metrics_series *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->family = f;
    for (size_t i = 0; i < f->n_labels; i++) {
        s->values[i] = strdup(values[i]);
        if (s->values[i] == NULL) {
            metrics_series_free(s);
            return NULL;
        }
    }
    return s;
}

struct metrics_series *metrics_series_get(struct metrics_family *f, const char *const *values)
{
    struct metrics_series *s = NULL, **grown;
    bool dropped = false;

    if (f == NULL || metrics_values_count(values) != f->n_labels)
        return NULL;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_series; i++) {
        if (metrics_series_matches(f->series[i], f->n_labels, values)) {
            s = f->series[i];
            goto out;
        }
    }
    if (f->n_series == f->max_series) {
        dropped = true;
        goto out;
    }
    s = metrics_series_new(f, values);
    grown = s ? realloc(f->series, (f->n_series + 1) * sizeof(*f->series)) : NULL;
    if (grown == NULL) {
        if (s != NULL)
            metrics_series_free(s);
        s = NULL;
        goto out;
    }
    f->series = grown;
    f->series[f->n_series++] = s;
out:
    pthread_mutex_unlock(&f->lock);
    if (dropped && f != f->registry->dropped)
        metrics_counter_add(f->registry->dropped, METRICS_LABELS(f->name), 1);
    return s;
}

void metrics_series_add(struct metrics_series *s, double v)
{
    if (s != NULL && s->family->type != METRICS_HISTOGRAM)
        metrics_atomic_add(&s->value, v);
}

void metrics_series_set(struct metrics_series *s, double v)
{
    if (s != NULL && s->family->type != METRICS_HISTOGRAM)
        atomic_store_explicit(&s->value, metrics_double_to_bits(v), memory_order_relaxed);
}

void metrics_series_observe(struct metrics_series *s, double v)
{
    const struct metrics_family *f;
    size_t b = 0;

    if (s == NULL || s->family->type != METRICS_HISTOGRAM)
        return;
    f = s->family;
    while (b < f->n_bounds && v > f->bounds[b])
        b++;
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    metrics_atomic_add(&s->sum, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

void metrics_counter_add(struct metrics_family *f, const char *const *values, double v)
{
    if (v >= 0)
        metrics_series_add(metrics_series_get(f, values), v);
}

void metrics_counter_set(struct metrics_family *f, const char *const *values, double v)
{
    metrics_series_set(metrics_series_get(f, values), v);
}

void metrics_gauge_add(struct metrics_family *f, const char *const *values, double v)
{
    metrics_series_add(metrics_series_get(f, values), v);
}

void metrics_gauge_set(struct metrics_family *f, const char *const *values, double v)
{
    metrics_series_set(metrics_series_get(f, values), v);
}

void metrics_histogram_observe(struct metrics_family *f, const char *const *values, double v)
{
    metrics_series_observe(metrics_series_get(f, values), v);
}

int metrics_collector_add(struct metrics *m, metrics_collect_fn fn, void *ctx)
{
    int rc = 0;

    if (m == NULL || fn == NULL)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    if (m->n_collectors == METRICS_MAX_COLLECTORS)
        rc = -E2BIG;
    else
        m->collectors[m->n_collectors++] = (struct metrics_collector){fn, ctx};
    pthread_mutex_unlock(&m->lock);
    return rc;
}

double metrics_value(struct metrics *m, const char *name, const char *const *values)
{
    struct metrics_family *f = NULL;
    struct metrics_series *s = NULL;
    size_t n = metrics_values_count(values);

    if (m == NULL)
        return 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_families && f == NULL; i++) {
        if (strcmp(m->families[i]->name, name) == 0)
            f = m->families[i];
    }
    pthread_mutex_unlock(&m->lock);
    if (f == NULL || n != f->n_labels)
        return 0;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_series && s == NULL; i++) {
        if (metrics_series_matches(f->series[i], n, values))
            s = f->series[i];
    }
    pthread_mutex_unlock(&f->lock);
    if (s == NULL)
        return 0;
    if (f->type == METRICS_HISTOGRAM)
        return (double)atomic_load(&s->count);
    return metrics_bits_to_double(atomic_load(&s->value));
}
