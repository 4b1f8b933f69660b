/*
 * timer.c - the timers of event-driven calls (stall timeouts, parked long
 * polls): grpc core has no public alarm in C, so one thread sleeps until the
 * earliest of a bounded binary heap of deadlines and runs what is due. A
 * fire callback runs without the lock held and must not block; cancel and
 * advance are O(log n), so arming a timer per message sent costs little.
 */
#include "server_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "util/util.h"

static bool timer_before(const struct rpc_timer *a, const struct rpc_timer *b)
{
    return a->due_us < b->due_us;
}

static void heap_set(struct rpc_timers *ts, size_t i, struct rpc_timer *t)
{
    ts->heap[i] = t;
    t->slot = i;
}

static void heap_up(struct rpc_timers *ts, size_t i)
{
    struct rpc_timer *t = ts->heap[i];

    while (i > 0 && timer_before(t, ts->heap[(i - 1) / 2])) {
        heap_set(ts, i, ts->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(ts, i, t);
}

static void heap_down(struct rpc_timers *ts, size_t i)
{
    struct rpc_timer *t = ts->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= ts->n)
            break;
        if (c + 1 < ts->n && timer_before(ts->heap[c + 1], ts->heap[c]))
            c++;
        if (!timer_before(ts->heap[c], t))
            break;
        heap_set(ts, i, ts->heap[c]);
        i = c;
    }
    heap_set(ts, i, t);
}

/* Takes t out of the heap (lock held). */
static void heap_remove(struct rpc_timers *ts, struct rpc_timer *t)
{
    size_t i = t->slot;
    struct rpc_timer *last = ts->heap[--ts->n];

    t->slot = SIZE_MAX;
    if (last == t)
        return;
    heap_set(ts, i, last);
    heap_up(ts, i);
    heap_down(ts, last->slot);
}

static void timers_deadline(uint64_t due_us, struct timespec *ts)
{
    ts->tv_sec = (time_t)(due_us / 1000000);
    ts->tv_nsec = (long)(due_us % 1000000) * 1000;
}

static void *timers_main(void *arg)
{
    struct rpc_timers *ts = arg;

    pthread_mutex_lock(&ts->lock);
    for (;;) {
        struct rpc_timer *t;
        uint64_t now = clock_mono_us();

        if (ts->n > 0 && (ts->expedite || ts->heap[0]->due_us <= now)) {
            t = ts->heap[0];
            heap_remove(ts, t);
            pthread_mutex_unlock(&ts->lock);
            t->fire(t); /* may free t's owner */
            pthread_mutex_lock(&ts->lock);
            continue;
        }
        if (ts->stopping)
            break;
        if (ts->n == 0) {
            pthread_cond_wait(&ts->cond, &ts->lock);
        } else {
            struct timespec until;

            timers_deadline(ts->heap[0]->due_us, &until);
            pthread_cond_timedwait(&ts->cond, &ts->lock, &until);
        }
    }
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

int rpc_timers_start(struct rpc_timers *ts, size_t cap)
{
    pthread_condattr_t attr;
    int rc;

    ts->heap = calloc(cap ? cap : 1, sizeof(*ts->heap));
    if (ts->heap == NULL)
        return -ENOMEM;
    ts->cap = cap;
    pthread_mutex_init(&ts->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* clock_mono_us's clock */
    pthread_cond_init(&ts->cond, &attr);
    pthread_condattr_destroy(&attr);
    rc = -pthread_create(&ts->thread, NULL, timers_main, ts);
    if (rc != 0) {
        pthread_cond_destroy(&ts->cond);
        pthread_mutex_destroy(&ts->lock);
        free(ts->heap);
        ts->heap = NULL;
        return rc;
    }
    ts->started = true;
    return 0;
}

int rpc_timer_arm(struct rpc_timers *ts, struct rpc_timer *t, uint64_t delay_ms)
{
    int rc = 0;

    pthread_mutex_lock(&ts->lock);
    if (t->slot != SIZE_MAX) {
        rc = -EALREADY;
    } else if (ts->n >= ts->cap) {
        rc = -ENOSPC;
    } else {
        t->due_us = clock_mono_us() + delay_ms * 1000;
        ts->heap[ts->n] = t;
        t->slot = ts->n++;
        heap_up(ts, t->slot);
        if (t->slot == 0)
            pthread_cond_signal(&ts->cond);
    }
    pthread_mutex_unlock(&ts->lock);
    return rc;
}

bool rpc_timer_cancel(struct rpc_timers *ts, struct rpc_timer *t)
{
    bool armed;

    pthread_mutex_lock(&ts->lock);
    armed = t->slot != SIZE_MAX;
    if (armed)
        heap_remove(ts, t);
    pthread_mutex_unlock(&ts->lock);
    return armed;
}

bool rpc_timer_advance(struct rpc_timers *ts, struct rpc_timer *t)
{
    bool armed;

    pthread_mutex_lock(&ts->lock);
    armed = t->slot != SIZE_MAX;
    if (armed) {
        t->due_us = 0;
        heap_up(ts, t->slot);
        pthread_cond_signal(&ts->cond);
    }
    pthread_mutex_unlock(&ts->lock);
    return armed;
}

void rpc_timers_expedite(struct rpc_timers *ts)
{
    if (!ts->started)
        return;
    pthread_mutex_lock(&ts->lock);
    ts->expedite = true;
    pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
}

void rpc_timers_stop(struct rpc_timers *ts)
{
    if (!ts->started)
        return;
    pthread_mutex_lock(&ts->lock);
    ts->stopping = true;
    ts->expedite = true;
    pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    pthread_join(ts->thread, NULL);
    pthread_cond_destroy(&ts->cond);
    pthread_mutex_destroy(&ts->lock);
    free(ts->heap);
    ts->heap = NULL;
    ts->started = false;
}
