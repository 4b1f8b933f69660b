/*
 * metrics_internal.h - the registry's data, shared by the files of metrics/
 * (registry.c keeps it, render.c writes it out).
 *
 * Values are doubles kept as their bit patterns in 64-bit atomics, so that an
 * update is a compare-and-swap and never takes a lock. Series are found under
 * the family's lock and never freed before the registry, so a caller may keep
 * a series pointer.
 */
#ifndef CASBOX_METRICS_INTERNAL_H
#define CASBOX_METRICS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "metrics.h"

#define METRICS_MAX_COLLECTORS 32

struct metrics_series {
    char *values[METRICS_MAX_LABELS];
    _Atomic uint64_t value; /* counter, gauge: a double's bits */
    /* histogram: counts per bucket (the last is +Inf), sum as a double's bits */
    _Atomic uint64_t buckets[METRICS_MAX_BUCKETS + 1];
    _Atomic uint64_t sum;
    _Atomic uint64_t count;
    const struct metrics_family *family;
};

struct metrics_family {
    char *name;
    char *help;
    enum metrics_type type;
    char *labels[METRICS_MAX_LABELS];
    size_t n_labels;
    double bounds[METRICS_MAX_BUCKETS];
    size_t n_bounds;
    pthread_mutex_t lock; /* series, n_series */
    struct metrics_series **series;
    size_t n_series;
    size_t max_series;
    struct metrics *registry;
};

struct metrics_collector {
    metrics_collect_fn fn;
    void *ctx;
};

struct metrics {
    pthread_mutex_t lock; /* families, collectors; held through a render */
    struct metrics_family **families;
    size_t n_families;
    size_t max_families;
    size_t max_series;
    struct metrics_collector collectors[METRICS_MAX_COLLECTORS];
    size_t n_collectors;
    struct metrics_family *dropped; /* casbox_metrics_series_dropped_total */
};

double metrics_bits_to_double(uint64_t bits);
uint64_t metrics_double_to_bits(double v);

#endif
