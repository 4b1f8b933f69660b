/*
 * board.c - the actions the pages show: those running now (a list, bounded
 * by the execution queue and slots that feed it) and the last history_size
 * finished ones (a ring), plus per-minute counts of cache hits, misses and
 * finished actions over the last hour for the overview's charts.
 *
 * One mutex guards it all; the slots take it a few times per action and a
 * page takes it once to copy what it shows (web_board_snapshot), so a slow
 * HTTP client never holds it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"
#include "web_internal.h"

struct web_running {
    struct web_action a;
    bool has_result;
    struct web_running *next;
};

struct web_board {
    pthread_mutex_t lock;
    struct web_running *running; /* newest first */
    size_t n_running;
    struct web_action *ring;
    size_t ring_size, ring_next, ring_count;
    struct web_minute minutes[WEB_RATE_MINUTES]; /* indexed by minute % WEB_RATE_MINUTES */
};

int web_board_new(size_t history_size, struct web_board **out)
{
    struct web_board *b = calloc(1, sizeof(*b));

    *out = NULL;
    if (b == NULL)
        return -ENOMEM;
    b->ring_size = history_size ? history_size : 1;
    b->ring = calloc(b->ring_size, sizeof(*b->ring));
    if (b->ring == NULL) {
        free(b);
        return -ENOMEM;
    }
    pthread_mutex_init(&b->lock, NULL);
    *out = b;
    return 0;
}

void web_board_free(struct web_board *b)
{
    if (b == NULL)
        return;
    while (b->running != NULL) {
        struct web_running *r = b->running;

        b->running = r->next;
        free(r);
    }
    free(b->ring);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static struct web_running **web_board_find_running_locked(struct web_board *b, const char *instance,
                                                          const struct cas_digest *d)
{
    for (struct web_running **pp = &b->running; *pp != NULL; pp = &(*pp)->next) {
        if (cas_digest_equal(&(*pp)->a.digest, d) && strcmp((*pp)->a.instance, instance) == 0)
            return pp;
    }
    return NULL;
}

/* The counts of this minute, reset when the slot last held an older one. */
static struct web_minute *web_board_minute_locked(struct web_board *b)
{
    uint64_t now = clock_real_us() / 60000000u;
    struct web_minute *m = &b->minutes[now % WEB_RATE_MINUTES];

    if (m->minute != now)
        *m = (struct web_minute){.minute = now};
    return m;
}

int web_board_begin(struct web_board *b, const struct web_action *a)
{
    struct web_running *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -ENOMEM;
    r->a = *a;
    r->a.response.size = -1;
    snprintf(r->a.outcome, sizeof(r->a.outcome), "error");
    pthread_mutex_lock(&b->lock);
    r->next = b->running;
    b->running = r;
    b->n_running++;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

const char *web_stage_name(enum web_stage s)
{
    static const char *const names[] = {"queued",  "executing",     "input_fetch",
                                        "running", "output_upload", "done"};

    return (unsigned)s < WEB_STAGE_COUNT ? names[s] : "unknown";
}

/* Stamps the end of the stage left and the start of the one entered, where
 * not stamped yet (the pipeline's own times replace them at the result). */
static void web_board_stamp(struct web_action_times *t, enum web_stage from, enum web_stage to,
                            uint64_t now)
{
    uint64_t *end[WEB_STAGE_COUNT] = {[WEB_STAGE_INPUT_FETCH] = &t->input_fetch_end,
                                      [WEB_STAGE_RUNNING] = &t->execution_end,
                                      [WEB_STAGE_OUTPUT_UPLOAD] = &t->output_upload_end};
    uint64_t *start[WEB_STAGE_COUNT] = {[WEB_STAGE_EXECUTING] = &t->worker_start,
                                        [WEB_STAGE_INPUT_FETCH] = &t->input_fetch_start,
                                        [WEB_STAGE_RUNNING] = &t->execution_start,
                                        [WEB_STAGE_OUTPUT_UPLOAD] = &t->output_upload_start};

    if ((unsigned)from < WEB_STAGE_COUNT && end[from] != NULL && *end[from] == 0)
        *end[from] = now;
    if ((unsigned)to < WEB_STAGE_COUNT && start[to] != NULL && *start[to] == 0)
        *start[to] = now;
    if (to > WEB_STAGE_EXECUTING && t->worker_start == 0)
        t->worker_start = now;
}

void web_board_stage(struct web_board *b, const char *instance, const struct cas_digest *d,
                     enum web_stage stage)
{
    struct web_running **pp;

    uint64_t now = clock_real_us();

    pthread_mutex_lock(&b->lock);
    pp = web_board_find_running_locked(b, instance, d);
    if (pp != NULL) {
        web_board_stamp(&(*pp)->a.times, (*pp)->a.stage, stage, now);
        (*pp)->a.stage = stage;
    }
    pthread_mutex_unlock(&b->lock);
}

void web_board_count_stages(struct web_board *b, uint64_t *counts)
{
    memset(counts, 0, WEB_STAGE_COUNT * sizeof(*counts));
    pthread_mutex_lock(&b->lock);
    for (const struct web_running *r = b->running; r != NULL; r = r->next)
        if ((unsigned)r->a.stage < WEB_STAGE_COUNT)
            counts[r->a.stage]++;
    pthread_mutex_unlock(&b->lock);
}

void web_board_result(struct web_board *b, const struct web_action *a)
{
    struct web_running **pp;

    pthread_mutex_lock(&b->lock);
    pp = web_board_find_running_locked(b, a->instance, &a->digest);
    if (pp != NULL) {
        struct web_action *r = &(*pp)->a;

        memcpy(r->outcome, a->outcome, sizeof(r->outcome));
        memcpy(r->message, a->message, sizeof(r->message));
        memcpy(r->worker, a->worker, sizeof(r->worker));
        r->exit_code = a->exit_code;
        r->times = a->times;
        (*pp)->has_result = true;
    }
    pthread_mutex_unlock(&b->lock);
}

void web_board_finish(struct web_board *b, const char *instance, const struct cas_digest *d,
                      const struct cas_digest *response)
{
    struct web_running **pp, *r = NULL;
    struct web_minute *m;

    pthread_mutex_lock(&b->lock);
    pp = web_board_find_running_locked(b, instance, d);
    if (pp != NULL) {
        r = *pp;
        *pp = r->next;
        b->n_running--;
        r->a.stage = WEB_STAGE_DONE;
        if (response != NULL)
            r->a.response = *response;
        if (r->a.times.worker_end == 0)
            r->a.times.worker_end = clock_real_us();
        b->ring[b->ring_next] = r->a;
        b->ring_next = (b->ring_next + 1) % b->ring_size;
        if (b->ring_count < b->ring_size)
            b->ring_count++;
        m = web_board_minute_locked(b);
        m->finished++;
        if (strcmp(r->a.outcome, "ok") != 0)
            m->failed++;
    }
    pthread_mutex_unlock(&b->lock);
    free(r);
}

void web_board_note_cache(struct web_board *b, bool hit)
{
    struct web_minute *m;

    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    m = web_board_minute_locked(b);
    if (hit)
        m->hits++;
    else
        m->misses++;
    pthread_mutex_unlock(&b->lock);
}

/* The i-th newest history entry (i < ring_count). */
static const struct web_action *web_board_history_locked(const struct web_board *b, size_t i)
{
    return &b->ring[(b->ring_next + b->ring_size - 1 - i) % b->ring_size];
}

int web_board_find(struct web_board *b, const struct cas_digest *d, struct web_action *out)
{
    int rc = -ENOENT;

    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->ring_count; i++) {
        const struct web_action *a = web_board_history_locked(b, i);

        if (cas_digest_equal(&a->digest, d)) {
            *out = *a;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int web_board_snapshot(struct web_board *b, size_t max_history, struct web_board_snapshot *out)
{
    uint64_t now = clock_real_us() / 60000000u;
    size_t n_run, n_hist, i = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&b->lock);
    n_run = b->n_running < WEB_RUNNING_SHOWN ? b->n_running : WEB_RUNNING_SHOWN;
    n_hist = b->ring_count < max_history ? b->ring_count : max_history;
    out->running = calloc(n_run ? n_run : 1, sizeof(*out->running));
    out->history = calloc(n_hist ? n_hist : 1, sizeof(*out->history));
    if (out->running == NULL || out->history == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* running is newest first: list the oldest n_run, oldest first */
    for (struct web_running *r = b->running; r != NULL; r = r->next, i++) {
        if (i >= b->n_running - n_run)
            out->running[b->n_running - 1 - i] = r->a;
    }
    out->n_running = n_run;
    out->total_running = b->n_running;
    for (i = 0; i < n_hist; i++)
        out->history[i] = *web_board_history_locked(b, i);
    out->n_history = n_hist;
    for (i = 0; i < WEB_RATE_MINUTES; i++) {
        uint64_t minute = now - (WEB_RATE_MINUTES - 1) + i;
        const struct web_minute *m = &b->minutes[minute % WEB_RATE_MINUTES];

        out->minutes[i] = m->minute == minute ? *m : (struct web_minute){.minute = minute};
    }
out:
    pthread_mutex_unlock(&b->lock);
    if (rc != 0)
        web_board_snapshot_free(out);
    return rc;
}

void web_board_snapshot_free(struct web_board_snapshot *s)
{
    free(s->running);
    free(s->history);
    memset(s, 0, sizeof(*s));
}

void web_board_worker(struct web_board *b, const char *instance, const struct cas_digest *d,
                      const char *worker)
{
    struct web_running **pp;

    pthread_mutex_lock(&b->lock);
    pp = web_board_find_running_locked(b, instance, d);
    if (pp != NULL)
        snprintf((*pp)->a.worker, sizeof((*pp)->a.worker), "%s", worker);
    pthread_mutex_unlock(&b->lock);
}
