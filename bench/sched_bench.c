/*
 * sched_bench.c - the fleet scheduler's queue (sched/) at fleet scale, in one
 * process, without gRPC: 1,000 simulated worker slots and 20,000 queued
 * trivial actions (10 invocations, two platforms, two priorities). Each
 * round every slot syncs (sync_begin), takes an action, reports it done and
 * ends its sync, until the queue is empty. Prints dispatches per second, the
 * p99 cost of one take (the scheduler's work per dispatch, under its lock in
 * casboxd), and the p99 time from submit to take in this drain (which is the
 * queue's depth divided by the dispatch rate). A second run submits while
 * the slots take, one action per slot per round, for the Execute-to-worker
 * time when the queue does not build up. Not a test: it only prints.
 *
 *   sched_bench [WORKERS [ACTIONS]]     default 1000 20000
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "sched/sched.h"

struct slot {
    struct sched_worker *w;
    char id[64];
};

static int bench_setup(struct sched **s, struct slot *slots, size_t workers, size_t actions,
                       const struct sched_platform *wplat)
{
    struct sched_options opt = {.max_queued = actions,
                                .max_workers = workers,
                                .worker_timeout_ms = 60000,
                                .max_retries = 2};
    struct sched_worker_desc desc = {.instance_prefix = "", .platform = wplat};
    bool joined;

    if (sched_new(&opt, 0, s) != 0)
        return -1;
    for (size_t i = 0; i < workers; i++) {
        snprintf(slots[i].id, sizeof(slots[i].id), "hostname=h%zu,slot=%zu", i / 8, i % 8);
        if (sched_worker_sync_begin(*s, slots[i].id, &desc, 0, &slots[i].w, &joined) != 0)
            return -1;
        sched_worker_sync_end(*s, slots[i].w, 0);
    }
    return 0;
}

static int bench_submit(struct sched *s, size_t i, const struct sched_platform *plats,
                        double *submitted)
{
    char key[32], inv[16];
    struct sched_task_desc d;
    struct sched_task *t;

    snprintf(key, sizeof(key), "%zu/1", i);
    snprintf(inv, sizeof(inv), "inv%zu", i % 10);
    d = (struct sched_task_desc){.instance = "",
                                 .key = key,
                                 .invocation = inv,
                                 .platform = &plats[i % 2],
                                 .priority = (int32_t)(i % 7 == 0 ? -1 : 0)};
    submitted[i] = bench_now();
    return sched_submit(s, &d, NULL, 0, &t);
}

/* One round: every slot takes one action and finishes it. Returns the
 * number dispatched, or -1. */
static long bench_round(struct sched *s, struct slot *slots, size_t workers,
                        const struct sched_worker_desc *desc, double *submitted, double *wait,
                        double *take_cost, size_t *n)
{
    long dispatched = 0;
    bool joined;

    for (size_t i = 0; i < workers; i++) {
        struct sched_task *t, *done;
        double t0;

        if (sched_worker_sync_begin(s, slots[i].id, desc, 0, &slots[i].w, &joined) != 0)
            return -1;
        t0 = bench_now();
        t = sched_worker_take(s, slots[i].w, 0);
        if (t != NULL) {
            double now = bench_now();
            size_t idx = strtoull(sched_task_key(t), NULL, 10);

            take_cost[*n] = (now - t0) * 1e6;
            wait[*n] = (now - submitted[idx]) * 1e3;
            (*n)++;
            if (sched_worker_finish(s, slots[i].w, sched_task_key(t), &done) != 0)
                return -1;
            sched_task_cancel(s, done);
            dispatched++;
        }
        sched_worker_sync_end(s, slots[i].w, 0);
    }
    return dispatched;
}

int main(int argc, char **argv)
{
    size_t workers = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000;
    size_t actions = argc > 2 ? strtoull(argv[2], NULL, 10) : 20000;
    const char *wn[] = {"ISA", "OSFamily"}, *wv[] = {"x86-64", "Linux"};
    struct sched_platform wplat = {0}, plats[2] = {{0}, {0}};
    struct sched_worker_desc desc = {.instance_prefix = "", .platform = &wplat};
    struct slot *slots = calloc(workers, sizeof(*slots));
    double *submitted = calloc(actions, sizeof(double));
    double *wait = calloc(actions, sizeof(double)), *cost = calloc(actions, sizeof(double));
    struct sched *s = NULL;
    size_t n = 0;
    double t0, el;
    int rc = 1;

    if (workers == 0 || actions == 0 || slots == NULL || submitted == NULL || wait == NULL ||
        cost == NULL)
        goto out;
    if (sched_platform_set(&wplat, wn, wv, 2) != 0 ||
        sched_platform_set(&plats[0], wn + 1, wv + 1, 1) != 0)
        goto out;
    printf("sched_bench: %zu worker slots, %zu actions; load %.2f\n", workers, actions,
           bench_loadavg());

    /* 1. all queued, then drained */
    if (bench_setup(&s, slots, workers, actions, &wplat) != 0)
        goto out;
    for (size_t i = 0; i < actions; i++) {
        if (bench_submit(s, i, plats, submitted) != 0)
            goto out;
    }
    t0 = bench_now();
    while (sched_queued(s) > 0) {
        if (bench_round(s, slots, workers, &desc, submitted, wait, cost, &n) <= 0)
            goto out;
    }
    el = bench_now() - t0;
    printf("drain of %zu queued: %.0f dispatches/s; take p50 %.2f us, p99 %.2f us; submit to "
           "take p50 %.1f ms, p99 %.1f ms\n",
           n, n / el, bench_percentile(cost, n, 50), bench_percentile(cost, n, 99),
           bench_percentile(wait, n, 50), bench_percentile(wait, n, 99));
    sched_free(s);
    s = NULL;

    /* 2. steady: one action per slot submitted before each round */
    if (bench_setup(&s, slots, workers, actions, &wplat) != 0)
        goto out;
    n = 0;
    t0 = bench_now();
    for (size_t i = 0; i < actions;) {
        for (size_t k = 0; k < workers && i < actions; k++, i++) {
            if (bench_submit(s, i, plats, submitted) != 0)
                goto out;
        }
        if (bench_round(s, slots, workers, &desc, submitted, wait, cost, &n) < 0)
            goto out;
    }
    el = bench_now() - t0;
    printf("steady (%zu submitted per round): %.0f dispatches/s; submit to take p50 %.2f ms, "
           "p99 %.2f ms\n",
           workers, n / el, bench_percentile(wait, n, 50), bench_percentile(wait, n, 99));
    printf("load %.2f at the end\n", bench_loadavg());
    rc = n == actions ? 0 : 1;
out:
    if (rc != 0)
        fprintf(stderr, "sched_bench: failed\n");
    sched_free(s);
    sched_platform_clear(&wplat);
    sched_platform_clear(&plats[0]);
    free(slots);
    free(submitted);
    free(wait);
    free(cost);
    return rc;
}
