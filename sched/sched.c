/*
 * sched.c - the fleet scheduler's queue and worker table (sched.h).
 *
 * The queue is a list of priority levels, lowest value first; each level
 * holds a ring of invocations (one per tool_invocation_id) and each
 * invocation a FIFO of tasks. An idle slot takes from the first level that
 * has a task fitting it, from the invocation at the level's cursor onwards,
 * and the cursor moves past the invocation it served: invocations take
 * turns, so one big build does not starve a small one. Empty invocations and
 * levels are freed at once, so the walk only visits queued work.
 */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#define SCHED_MAX_DRAINS    64
#define SCHED_MAX_ANNOUNCED 1024

struct sched_invocation;
struct sched_level;

struct sched_task {
    void *user;
    char *instance;
    char *key;
    struct sched_platform platform;
    enum sched_task_state state;
    uint64_t queued_ms;
    uint64_t retries;
    char lost[SCHED_LOST_LEN];
    struct sched_invocation *inv; /* while queued */
    struct sched_task *next;      /* in inv's FIFO */
    struct sched_worker *worker;  /* while executing */
    int32_t priority;
    uint32_t size_class; /* chosen at submit (sched_class_for) */
    char *invocation;
};

struct sched_invocation {
    char *id;
    struct sched_level *level;
    struct sched_task *head, *tail;
    struct sched_invocation *prev, *next; /* ring */
};

struct sched_level {
    int32_t priority;
    struct sched_invocation *cursor; /* the ring's next turn; NULL when empty */
    struct sched_level *next;
};

struct sched_worker {
    char *id;
    char *instance_prefix;
    struct sched_platform platform;
    uint32_t size_class;
    bool prefer_idle;
    bool in_sync;
    uint64_t last_ms;  /* end of the last Synchronize (or its start, while in one) */
    uint64_t since_ms; /* joined, or took its task */
    uint64_t runs;     /* tasks taken */
    size_t announced;  /* its entry in sched.announced; SIZE_MAX: none */
    struct sched_task *task;
    struct sched_worker *next;
};

/* What workers announced: (prefix, platform, size class), and how many
 * slots known now announce it (live). Entries are never removed, so an
 * index stays valid. */
struct sched_announced {
    char *prefix;
    struct sched_platform platform;
    uint32_t size_class;
    uint64_t live;
};

struct sched {
    struct sched_options opt;
    uint64_t started_ms;
    struct sched_level *levels;
    uint64_t queued;
    struct sched_worker *workers;
    uint64_t n_workers;
    struct sched_announced announced[SCHED_MAX_ANNOUNCED];
    size_t n_announced;
    char *drains[SCHED_MAX_DRAINS];
    size_t n_drains;
};

/* --- platforms --- */

static int sched_prop_cmp(const char *an, const char *av, const char *bn, const char *bv)
{
    int c = strcmp(an, bn);

    return c != 0 ? c : strcmp(av, bv);
}

void sched_platform_clear(struct sched_platform *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->names[i]);
        free(p->values[i]);
    }
    p->n = 0;
}

int sched_platform_set(struct sched_platform *p, const char *const *names,
                       const char *const *values, size_t n)
{
    struct sched_platform fresh = {0};

    if (n > SCHED_MAX_PROPERTIES)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        size_t j = fresh.n;

        /* insertion sort: platforms are small */
        while (j > 0 &&
               sched_prop_cmp(fresh.names[j - 1], fresh.values[j - 1], names[i], values[i]) > 0) {
            fresh.names[j] = fresh.names[j - 1];
            fresh.values[j] = fresh.values[j - 1];
            j--;
        }
        fresh.names[j] = strdup(names[i] ? names[i] : "");
        fresh.values[j] = strdup(values[i] ? values[i] : "");
        fresh.n++;
        if (fresh.names[j] == NULL || fresh.values[j] == NULL) {
            sched_platform_clear(&fresh);
            return -ENOMEM;
        }
    }
    sched_platform_clear(p);
    *p = fresh;
    return 0;
}

static int sched_platform_copy(struct sched_platform *dst, const struct sched_platform *src)
{
    return sched_platform_set(dst, (const char *const *)src->names,
                              (const char *const *)src->values, src->n);
}

static bool sched_platform_equal(const struct sched_platform *a, const struct sched_platform *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (sched_prop_cmp(a->names[i], a->values[i], b->names[i], b->values[i]) != 0)
            return false;
    }
    return true;
}

bool sched_platform_fits(const struct sched_platform *want, const struct sched_platform *have)
{
    size_t j = 0;

    /* both sorted: one merge pass */
    for (size_t i = 0; i < want->n; i++) {
        while (j < have->n &&
               sched_prop_cmp(have->names[j], have->values[j], want->names[i], want->values[i]) < 0)
            j++;
        if (j == have->n ||
            sched_prop_cmp(have->names[j], have->values[j], want->names[i], want->values[i]) != 0)
            return false;
        j++;
    }
    return true;
}

void sched_platform_format(const struct sched_platform *p, char *out, size_t len)
{
    size_t used = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    if (p->n == 0) {
        snprintf(out, len, "(none)");
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        int w =
            snprintf(out + used, len - used, "%s%s=%s", i ? "," : "", p->names[i], p->values[i]);

        if (w < 0 || (size_t)w >= len - used) {
            if (len > 4)
                memcpy(out + len - 4, "...", 4);
            return;
        }
        used += (size_t)w;
    }
}

/* --- the queue --- */

static bool sched_fits(const struct sched_task *t, const struct sched_worker *w)
{
    return t->size_class == w->size_class &&
           strncmp(t->instance, w->instance_prefix, strlen(w->instance_prefix)) == 0 &&
           sched_platform_fits(&t->platform, &w->platform);
}

static void sched_task_free(struct sched_task *t)
{
    sched_platform_clear(&t->platform);
    free(t->instance);
    free(t->key);
    free(t->invocation);
    free(t);
}

static struct sched_level *sched_level_get(struct sched *s, int32_t priority)
{
    struct sched_level **pp = &s->levels, *l;

    while (*pp != NULL && (*pp)->priority < priority)
        pp = &(*pp)->next;
    if (*pp != NULL && (*pp)->priority == priority)
        return *pp;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->priority = priority;
    l->next = *pp;
    *pp = l;
    return l;
}

static void sched_level_drop_if_empty(struct sched *s, struct sched_level *l)
{
    if (l->cursor != NULL)
        return;
    for (struct sched_level **pp = &s->levels; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            free(l);
            return;
        }
    }
}

static struct sched_invocation *sched_invocation_get(struct sched_level *l, const char *id)
{
    struct sched_invocation *inv = l->cursor;

    if (inv != NULL) {
        do {
            if (strcmp(inv->id, id) == 0)
                return inv;
            inv = inv->next;
        } while (inv != l->cursor);
    }
    inv = calloc(1, sizeof(*inv));
    if (inv == NULL || (inv->id = strdup(id)) == NULL) {
        free(inv);
        return NULL;
    }
    inv->level = l;
    if (l->cursor == NULL) {
        inv->prev = inv->next = inv;
        l->cursor = inv;
    } else {
        /* joins the ring just before the cursor: its turn comes last */
        inv->next = l->cursor;
        inv->prev = l->cursor->prev;
        inv->prev->next = inv;
        l->cursor->prev = inv;
    }
    return inv;
}

/* Unlinks a queued task from its invocation, dropping an emptied invocation
 * and level. */
static void sched_unqueue(struct sched *s, struct sched_task *t)
{
    struct sched_invocation *inv = t->inv;
    struct sched_level *l = inv->level;

    for (struct sched_task **pp = &inv->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            if (inv->tail == t) {
                inv->tail = NULL;
                for (struct sched_task *x = inv->head; x != NULL; x = x->next)
                    inv->tail = x;
            }
            break;
        }
    }
    t->next = NULL;
    t->inv = NULL;
    s->queued--;
    if (inv->head != NULL)
        return;
    if (inv->next == inv) {
        l->cursor = NULL;
    } else {
        inv->prev->next = inv->next;
        inv->next->prev = inv->prev;
        if (l->cursor == inv)
            l->cursor = inv->next;
    }
    free(inv->id);
    free(inv);
    sched_level_drop_if_empty(s, l);
}

static int sched_enqueue(struct sched *s, struct sched_task *t, bool front)
{
    struct sched_level *l = sched_level_get(s, t->priority);
    struct sched_invocation *inv;

    if (l == NULL)
        return -ENOMEM;
    inv = sched_invocation_get(l, t->invocation);
    if (inv == NULL) {
        sched_level_drop_if_empty(s, l);
        return -ENOMEM;
    }
    t->inv = inv;
    t->state = SCHED_TASK_QUEUED;
    t->worker = NULL;
    if (front) {
        t->next = inv->head;
        inv->head = t;
        if (inv->tail == NULL)
            inv->tail = t;
    } else {
        t->next = NULL;
        if (inv->tail != NULL)
            inv->tail->next = t;
        else
            inv->head = t;
        inv->tail = t;
    }
    s->queued++;
    return 0;
}

/* The size class of a new action: the smallest that a slot known now
 * announces with an instance prefix and platform that fit it; when no such
 * slot is known (all restarting), the smallest ever announced. false when
 * nothing that fits was ever announced. */
static bool sched_class_for(const struct sched *s, const struct sched_task_desc *d,
                            uint32_t *size_class)
{
    bool found = false, live = false;

    for (size_t i = 0; i < s->n_announced; i++) {
        const struct sched_announced *a = &s->announced[i];
        bool now = a->live > 0;

        if (strncmp(d->instance, a->prefix, strlen(a->prefix)) != 0 ||
            !sched_platform_fits(d->platform, &a->platform))
            continue;
        if (!found || (now && !live) || (now == live && a->size_class < *size_class))
            *size_class = a->size_class;
        found = true;
        live |= now;
    }
    return found;
}

int sched_submit(struct sched *s, const struct sched_task_desc *desc, void *user, uint64_t now_ms,
                 struct sched_task **out)
{
    struct sched_task *t;
    uint32_t size_class = 0;
    int rc;

    if (s->queued >= s->opt.max_queued)
        return -ENOSPC;
    if (!sched_class_for(s, desc, &size_class))
        return now_ms < s->started_ms + s->opt.grace_ms ? -EAGAIN : -ENOENT;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->size_class = size_class;
    t->user = user;
    t->priority = desc->priority;
    t->queued_ms = now_ms;
    t->instance = strdup(desc->instance ? desc->instance : "");
    t->key = strdup(desc->key ? desc->key : "");
    t->invocation = strdup(desc->invocation ? desc->invocation : "");
    if (t->instance == NULL || t->key == NULL || t->invocation == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = sched_platform_copy(&t->platform, desc->platform);
    if (rc == 0)
        rc = sched_enqueue(s, t, false);
    if (rc != 0)
        goto fail;
    *out = t;
    return 0;
fail:
    sched_task_free(t);
    return rc;
}

void *sched_task_user(const struct sched_task *t)
{
    return t->user;
}

const char *sched_task_key(const struct sched_task *t)
{
    return t->key;
}

const char *sched_task_instance(const struct sched_task *t)
{
    return t->instance;
}

enum sched_task_state sched_task_state(const struct sched_task *t)
{
    return t->state;
}

uint64_t sched_task_queued_ms(const struct sched_task *t)
{
    return t->queued_ms;
}

const char *sched_task_lost(const struct sched_task *t)
{
    return t->lost;
}

struct sched_worker *sched_task_worker(const struct sched_task *t)
{
    return t->worker;
}

uint32_t sched_task_size_class(const struct sched_task *t)
{
    return t->size_class;
}

void sched_task_cancel(struct sched *s, struct sched_task *t)
{
    if (t->state == SCHED_TASK_QUEUED)
        sched_unqueue(s, t);
    else if (t->state == SCHED_TASK_EXECUTING && t->worker != NULL)
        t->worker->task = NULL;
    sched_task_free(t);
}

/* --- workers --- */

static bool sched_drained(const struct sched *s, const char *id)
{
    for (size_t i = 0; i < s->n_drains; i++) {
        if (fnmatch(s->drains[i], id, 0) == 0)
            return true;
    }
    return false;
}

/* w's announcement moves to entry i (SIZE_MAX: none). */
static void sched_announced_move(struct sched *s, struct sched_worker *w, size_t i)
{
    if (w->announced != SIZE_MAX)
        s->announced[w->announced].live--;
    w->announced = i;
    if (i != SIZE_MAX)
        s->announced[i].live++;
}

static int sched_announce(struct sched *s, struct sched_worker *w)
{
    struct sched_announced *a;

    for (size_t i = 0; i < s->n_announced; i++) {
        a = &s->announced[i];
        if (a->size_class == w->size_class && strcmp(a->prefix, w->instance_prefix) == 0 &&
            sched_platform_equal(&a->platform, &w->platform)) {
            if (w->announced != i)
                sched_announced_move(s, w, i);
            return 0;
        }
    }
    if (s->n_announced == SCHED_MAX_ANNOUNCED) {
        /* remembered enough: later ones still take work */
        sched_announced_move(s, w, SIZE_MAX);
        return 0;
    }
    a = &s->announced[s->n_announced];
    memset(a, 0, sizeof(*a));
    a->prefix = strdup(w->instance_prefix);
    if (a->prefix == NULL || sched_platform_copy(&a->platform, &w->platform) != 0) {
        free(a->prefix);
        return -ENOMEM;
    }
    a->size_class = w->size_class;
    s->n_announced++;
    sched_announced_move(s, w, s->n_announced - 1);
    return 0;
}

static void sched_worker_free(struct sched_worker *w)
{
    sched_platform_clear(&w->platform);
    free(w->id);
    free(w->instance_prefix);
    free(w);
}

int sched_worker_sync_begin(struct sched *s, const char *id, const struct sched_worker_desc *desc,
                            uint64_t now_ms, struct sched_worker **out, bool *joined)
{
    struct sched_worker *w;
    char *prefix;
    int rc;

    *joined = false;
    for (w = s->workers; w != NULL; w = w->next) {
        if (strcmp(w->id, id) == 0)
            break;
    }
    if (w != NULL && w->in_sync)
        return -EBUSY;
    if (w == NULL) {
        if (s->n_workers >= s->opt.max_workers)
            return -ENOSPC;
        w = calloc(1, sizeof(*w));
        if (w == NULL || (w->id = strdup(id)) == NULL ||
            (w->instance_prefix = strdup("")) == NULL) {
            if (w != NULL)
                free(w->id);
            free(w);
            return -ENOMEM;
        }
        w->since_ms = now_ms;
        w->announced = SIZE_MAX;
        w->next = s->workers;
        s->workers = w;
        s->n_workers++;
        *joined = true;
    }
    prefix = strdup(desc->instance_prefix ? desc->instance_prefix : "");
    if (prefix == NULL)
        return -ENOMEM;
    free(w->instance_prefix);
    w->instance_prefix = prefix;
    rc = sched_platform_copy(&w->platform, desc->platform);
    if (rc != 0)
        return rc;
    w->size_class = desc->size_class;
    w->prefer_idle = desc->prefer_idle;
    w->in_sync = true;
    w->last_ms = now_ms;
    rc = sched_announce(s, w);
    if (rc != 0) {
        w->in_sync = false;
        return rc;
    }
    *out = w;
    return 0;
}

void sched_worker_sync_end(struct sched *s, struct sched_worker *w, uint64_t now_ms)
{
    (void)s;
    w->in_sync = false;
    w->last_ms = now_ms;
}

const char *sched_worker_id(const struct sched_worker *w)
{
    return w->id;
}

struct sched_task *sched_worker_task(const struct sched_worker *w)
{
    return w->task;
}

struct sched_task *sched_worker_take(struct sched *s, struct sched_worker *w, uint64_t now_ms)
{
    if (w->task != NULL || w->prefer_idle || sched_drained(s, w->id))
        return NULL;
    for (struct sched_level *l = s->levels; l != NULL; l = l->next) {
        struct sched_invocation *inv = l->cursor;

        do {
            for (struct sched_task *t = inv->head; t != NULL; t = t->next) {
                if (!sched_fits(t, w))
                    continue;
                /* the turn passes to the invocation after the one served */
                l->cursor = inv->next;
                sched_unqueue(s, t);
                t->state = SCHED_TASK_EXECUTING;
                t->worker = w;
                w->task = t;
                w->since_ms = now_ms;
                w->runs++;
                return t;
            }
            inv = inv->next;
        } while (inv != l->cursor);
    }
    return NULL;
}

int sched_worker_finish(struct sched *s, struct sched_worker *w, const char *key,
                        struct sched_task **out)
{
    struct sched_task *t = w->task;

    (void)s;
    if (t == NULL || strcmp(t->key, key) != 0)
        return -ENOENT;
    w->task = NULL;
    t->worker = NULL;
    t->state = SCHED_TASK_DONE;
    *out = t;
    return 0;
}

/* Takes w's task off it: requeued at the front of its turn (it has waited
 * longest), or failed past max_retries. */
static void sched_lose_task(struct sched *s, struct sched_worker *w, struct sched_lost_event *ev)
{
    struct sched_task *t = w->task;
    size_t used;

    snprintf(ev->worker, sizeof(ev->worker), "%s", w->id);
    ev->task = t;
    ev->failed = false;
    if (t == NULL)
        return;
    w->task = NULL;
    t->worker = NULL;
    used = strlen(t->lost);
    snprintf(t->lost + used, sizeof(t->lost) - used, "%s%s", used ? "; " : "", w->id);
    t->retries++;
    if (t->retries > s->opt.max_retries || sched_enqueue(s, t, true) != 0) {
        t->state = SCHED_TASK_DONE;
        ev->failed = true;
    }
}

int sched_worker_reset(struct sched *s, struct sched_worker *w, struct sched_lost_event *ev)
{
    if (w->task == NULL)
        return -ENOENT;
    sched_lose_task(s, w, ev);
    return 0;
}

size_t sched_expire(struct sched *s, uint64_t now_ms, struct sched_lost_event *events, size_t max)
{
    size_t n = 0;

    for (struct sched_worker **pp = &s->workers; *pp != NULL && n < max;) {
        struct sched_worker *w = *pp;

        if (w->in_sync || now_ms < w->last_ms + s->opt.worker_timeout_ms) {
            pp = &w->next;
            continue;
        }
        sched_lose_task(s, w, &events[n++]);
        sched_announced_move(s, w, SIZE_MAX);
        *pp = w->next;
        s->n_workers--;
        sched_worker_free(w);
    }
    return n;
}

/* --- drains, status --- */

int sched_drain_add(struct sched *s, const char *pattern)
{
    for (size_t i = 0; i < s->n_drains; i++) {
        if (strcmp(s->drains[i], pattern) == 0)
            return 0;
    }
    if (s->n_drains == SCHED_MAX_DRAINS)
        return -ENOSPC;
    s->drains[s->n_drains] = strdup(pattern);
    if (s->drains[s->n_drains] == NULL)
        return -ENOMEM;
    s->n_drains++;
    return 0;
}

int sched_drain_remove(struct sched *s, const char *pattern)
{
    for (size_t i = 0; i < s->n_drains; i++) {
        if (strcmp(s->drains[i], pattern) == 0) {
            free(s->drains[i]);
            s->drains[i] = s->drains[--s->n_drains];
            return 0;
        }
    }
    return -ENOENT;
}

uint64_t sched_queued(const struct sched *s)
{
    return s->queued;
}

uint64_t sched_workers(const struct sched *s)
{
    return s->n_workers;
}

/* Adds one action of platform p, class c to the counts' queue entry. */
static void sched_counts_add(struct sched_counts *out, const struct sched_platform *p, uint32_t c,
                             bool executing)
{
    struct sched_queue_count *q = NULL;
    char plat[sizeof(q->platform)];

    sched_platform_format(p, plat, sizeof(plat));
    for (size_t i = 0; i < out->n_queues && q == NULL; i++) {
        if (out->queues[i].size_class == c && strcmp(out->queues[i].platform, plat) == 0)
            q = &out->queues[i];
    }
    if (q == NULL && out->n_queues < SCHED_MAX_QUEUE_COUNTS - 1) {
        q = &out->queues[out->n_queues++];
        snprintf(q->platform, sizeof(q->platform), "%s", plat);
        q->size_class = c;
    }
    if (q == NULL) {
        /* past the bound: one last set for everything else */
        q = &out->queues[SCHED_MAX_QUEUE_COUNTS - 1];
        if (out->n_queues < SCHED_MAX_QUEUE_COUNTS) {
            out->n_queues = SCHED_MAX_QUEUE_COUNTS;
            snprintf(q->platform, sizeof(q->platform), "other");
            q->size_class = 0;
        }
    }
    if (executing)
        q->executing++;
    else
        q->queued++;
}

void sched_counts_get(const struct sched *s, struct sched_counts *out)
{
    memset(out, 0, sizeof(*out));
    for (const struct sched_worker *w = s->workers; w != NULL; w = w->next) {
        if (w->prefer_idle || sched_drained(s, w->id))
            out->draining++;
        else if (w->task != NULL)
            out->busy++;
        else
            out->idle++;
        if (w->task != NULL)
            sched_counts_add(out, &w->task->platform, w->task->size_class, true);
    }
    for (const struct sched_level *l = s->levels; l != NULL; l = l->next) {
        const struct sched_invocation *inv = l->cursor;

        do {
            for (const struct sched_task *t = inv->head; t != NULL; t = t->next)
                sched_counts_add(out, &t->platform, t->size_class, false);
            inv = inv->next;
        } while (inv != l->cursor);
    }
}

size_t sched_workers_get(const struct sched *s, struct sched_worker_info *out, size_t max)
{
    size_t n = 0;

    for (const struct sched_worker *w = s->workers; w != NULL && n < max; w = w->next, n++) {
        struct sched_worker_info *i = &out[n];

        snprintf(i->id, sizeof(i->id), "%s", w->id);
        snprintf(i->action, sizeof(i->action), "%s", w->task ? w->task->key : "");
        sched_platform_format(&w->platform, i->platform, sizeof(i->platform));
        i->size_class = w->size_class;
        i->draining = w->prefer_idle || sched_drained(s, w->id);
        i->since_ms = w->since_ms;
        i->runs = w->runs;
    }
    return n;
}

void sched_status_print(const struct sched *s, uint64_t now_ms, FILE *out)
{
    struct sched_counts c;
    char plat[512];

    fprintf(out, "queued %" PRIu64 ", workers %" PRIu64 "\n", s->queued, s->n_workers);
    sched_counts_get(s, &c);
    for (size_t i = 0; i < c.n_queues; i++)
        fprintf(out,
                "queue platform %s size class %" PRIu32 ": %" PRIu64 " queued, %" PRIu64
                " executing\n",
                c.queues[i].platform, c.queues[i].size_class, c.queues[i].queued,
                c.queues[i].executing);
    for (const struct sched_level *l = s->levels; l != NULL; l = l->next) {
        const struct sched_invocation *inv = l->cursor;

        do {
            uint64_t n = 0;

            for (const struct sched_task *t = inv->head; t != NULL; t = t->next)
                n++;
            fprintf(out, "queue priority %d invocation '%s': %" PRIu64 " queued\n", l->priority,
                    inv->id, n);
            inv = inv->next;
        } while (inv != l->cursor);
    }
    for (const struct sched_worker *w = s->workers; w != NULL; w = w->next) {
        sched_platform_format(&w->platform, plat, sizeof(plat));
        fprintf(out,
                "worker %s: %s%s, platform %s, size class %" PRIu32 ", prefix '%s', ran %" PRIu64
                ", since %" PRIu64 " s%s%s\n",
                w->id, w->task ? "executing " : "idle", w->task ? w->task->key : "", plat,
                w->size_class, w->instance_prefix, w->runs, (now_ms - w->since_ms) / 1000,
                sched_drained(s, w->id) ? ", drained" : "", w->prefer_idle ? ", stopping" : "");
    }
    for (size_t i = 0; i < s->n_drains; i++)
        fprintf(out, "drain %s\n", s->drains[i]);
}

/* --- life cycle --- */

int sched_new(const struct sched_options *opt, uint64_t now_ms, struct sched **out)
{
    struct sched *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return -ENOMEM;
    s->opt = *opt;
    s->started_ms = now_ms;
    *out = s;
    return 0;
}

void sched_free(struct sched *s)
{
    if (s == NULL)
        return;
    while (s->levels != NULL) {
        struct sched_invocation *inv = s->levels->cursor;

        sched_task_cancel(s, inv->head); /* drops emptied invocations and levels */
    }
    while (s->workers != NULL) {
        struct sched_worker *w = s->workers;

        s->workers = w->next;
        if (w->task != NULL)
            sched_task_free(w->task);
        sched_worker_free(w);
    }
    for (size_t i = 0; i < s->n_announced; i++) {
        free(s->announced[i].prefix);
        sched_platform_clear(&s->announced[i].platform);
    }
    for (size_t i = 0; i < s->n_drains; i++)
        free(s->drains[i]);
    free(s);
}
