/*
 * metrics.h - a registry of Prometheus metrics: counters, gauges and
 * histograms with a small fixed set of labels, updated with atomics on the
 * hot path and written out in the text exposition format at scrape time.
 *
 * A registry lives in the daemon's context (never a global) and is handed to
 * what records into it. Adding a metric is one line where it is counted:
 *
 *     f = metrics_counter(m, "casbox_foo_total", "Foos done.", "kind");
 *     ...
 *     metrics_counter_add(f, METRICS_LABELS("bar"), 1);
 *
 * Registration returns NULL (and logs why) when the name breaks the naming
 * rules or the registry is full; every update accepts a NULL family and does
 * nothing, so a metric that could not be registered never stops the daemon.
 * Each family holds at most metrics_options.max_series label combinations;
 * further ones are dropped (counted in casbox_metrics_series_dropped_total).
 * Label values must come from a small fixed set: never a digest, a path or a
 * token.
 *
 * Values read from elsewhere at scrape time (the CAS's own counters, /proc)
 * are set by collectors, callbacks the registry runs before it writes.
 */
#ifndef CASBOX_METRICS_H
#define CASBOX_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_LABELS  4
#define METRICS_MAX_BUCKETS 24

struct metrics;
struct metrics_family;
struct metrics_series;

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics_options {
    size_t max_families; /* 0: 256 */
    size_t max_series;   /* per family; 0: 1024 */
};

/* A NULL-terminated list of label values for one update. */
#define METRICS_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Bucket bounds (seconds) for latencies from 100 us to 10 min. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_n_buckets;

int metrics_new(const struct metrics_options *opt, struct metrics **out);
void metrics_free(struct metrics *m);

/* Registers a family. labels: comma-separated label names ("service,method"),
 * NULL or "" for none. Counters' names end in _total; names follow
 * [a-zA-Z_:][a-zA-Z0-9_:]*. Registering the same name and type again returns
 * the existing family. */
struct metrics_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels);
struct metrics_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels);
/* bounds: increasing upper bounds, at most METRICS_MAX_BUCKETS (+Inf is
 * implied). */
struct metrics_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds);

/* The series of a family for these label values (as many as the family has
 * label names; NULL when it has none), created on first use. NULL when f is
 * NULL, the count is wrong or the family is full. The pointer stays valid
 * until metrics_free: hot paths may look a series up once and keep it. */
struct metrics_series *metrics_series_get(struct metrics_family *f, const char *const *values);

void metrics_series_add(struct metrics_series *s, double v);     /* counter, gauge */
void metrics_series_set(struct metrics_series *s, double v);     /* gauge; collectors */
void metrics_series_observe(struct metrics_series *s, double v); /* histogram */

/* One lookup and one update. */
void metrics_counter_add(struct metrics_family *f, const char *const *values, double v);
void metrics_gauge_add(struct metrics_family *f, const char *const *values, double v);
void metrics_gauge_set(struct metrics_family *f, const char *const *values, double v);
void metrics_histogram_observe(struct metrics_family *f, const char *const *values, double v);

/* A counter kept elsewhere (the CAS's statistics) copied in by a collector:
 * sets the value, which must never go down. */
void metrics_counter_set(struct metrics_family *f, const char *const *values, double v);

/* Runs fn(ctx, m) before every metrics_render. At most 32 collectors. */
typedef void (*metrics_collect_fn)(void *ctx, struct metrics *m);
int metrics_collector_add(struct metrics *m, metrics_collect_fn fn, void *ctx);

/* Runs the collectors and writes every family in the text exposition format
 * (version 0.0.4) into a malloc'd buffer. 0 or -ENOMEM. */
int metrics_render(struct metrics *m, char **out, size_t *len);

/* The value of one series (0 when it does not exist); a histogram's count.
 * For tests and for pages that show a number. */
double metrics_value(struct metrics *m, const char *name, const char *const *values);

/* Registers the standard process_* metrics (CPU seconds, resident and
 * virtual memory, open and max fds, threads, start time) read from /proc at
 * scrape time (process.c). */
int metrics_process_register(struct metrics *m);

/* Whether name is a valid metric name / label name (names.c). */
bool metrics_name_valid(const char *name);
bool metrics_label_name_valid(const char *name);

#endif
