/*
 * metrics_bench.c - what recording a metric costs on the hot path, beside
 * the floor of a plain relaxed atomic add measured in the same run: a kept
 * series (the gRPC server's latency and in-flight, its per-code requests
 * after the first call), a histogram observation, and a lookup by label
 * values (what a one-line metrics_counter_add does), with 1 and 2 threads.
 * Prints ns per update and the ratio to the floor; judges nothing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "metrics/metrics.h"

#define ROUNDS 2000000

struct worker {
    int kind;
    struct metrics_family *counter, *histogram;
    struct metrics_series *series;
    _Atomic uint64_t *floor;
};

static void *bench_worker(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < ROUNDS; i++) {
        switch (w->kind) {
        case 0:
            atomic_fetch_add_explicit(w->floor, 1, memory_order_relaxed);
            break;
        case 1:
            metrics_series_add(w->series, 1);
            break;
        case 2:
            metrics_histogram_observe(w->histogram, NULL, 0.003);
            break;
        default:
            metrics_counter_add(w->counter,
                                METRICS_LABELS("build.bazel.remote.execution.v2.ActionCache",
                                               "GetActionResult", "OK"),
                                1);
            break;
        }
    }
    return NULL;
}

static double bench_run(struct worker *proto, int threads)
{
    pthread_t t[2];
    double start = bench_now();

    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, bench_worker, proto) != 0)
            return -1;
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return (bench_now() - start) * 1e9 / ((double)ROUNDS * threads);
}

int main(void)
{
    static const char *const names[] = {"atomic add (floor)", "kept series add",
                                        "histogram observe (no labels)",
                                        "counter add, 3 labels looked up"};
    struct metrics *m;
    struct worker w;
    _Atomic uint64_t floor = 0;
    char svc[64];

    if (metrics_new(NULL, &m) != 0)
        return 1;
    memset(&w, 0, sizeof(w));
    w.floor = &floor;
    w.counter = metrics_counter(m, "casbox_bench_total", "Bench.", "service,method,code");
    w.histogram = metrics_histogram(m, "casbox_bench_seconds", "Bench.", NULL,
                                    metrics_latency_buckets, metrics_latency_n_buckets);
    w.series = metrics_series_get(w.counter, METRICS_LABELS("s", "m", "OK"));
    /* a realistic family: 20 methods x 3 codes already there */
    for (int i = 0; i < 60; i++) {
        snprintf(svc, sizeof(svc), "service%d", i / 3);
        metrics_counter_add(w.counter, METRICS_LABELS(svc, "Method", i % 3 ? "OK" : "NOT_FOUND"),
                            1);
    }
    printf("metrics_bench: %d updates per thread, load %.2f\n", ROUNDS, bench_loadavg());
    for (int threads = 1; threads <= 2; threads++) {
        double base = 0;

        for (int kind = 0; kind < 4; kind++) {
            double ns;

            w.kind = kind;
            ns = bench_run(&w, threads);
            if (ns < 0)
                return 1;
            if (kind == 0)
                base = ns;
            printf("  %d thread%s  %-34s %7.1f ns  x%.1f\n", threads, threads > 1 ? "s" : " ",
                   names[kind], ns, base > 0 ? ns / base : 0);
        }
    }
    metrics_free(m);
    return 0;
}
