/*
 * sched.h - the fleet scheduler's queue and worker table: which queued action
 * goes to which worker slot, and what happens when a slot disappears. Pure
 * data, no gRPC and no threads: the daemon's Synchronize and Execute handlers
 * (daemon/svc_operation_queue.c, daemon/svc_execution.c) call it under their
 * own lock and pass the clock in, so the unit tests drive time by hand.
 *
 * Actions are queued by (instance name, platform properties, priority). A
 * worker slot announces an instance-name prefix and its properties; an action
 * fits it when the action's instance name starts with the prefix and every
 * property the action names is among the worker's with the same value
 * (superset match; bb_scheduler compares exactly), and the worker's size
 * class is the action's. An action's size class is chosen when it is
 * queued: the smallest one announced by a slot known now whose prefix and
 * platform fit it (when none is known now, the smallest ever announced),
 * as Buildbarn does without feedback. Lower priority values go
 * first (as the REAPI says); within one priority, invocations
 * (RequestMetadata.tool_invocation_id) take turns, and each invocation's
 * actions go in arrival order. A worker not heard from for worker_timeout is
 * removed and its action requeued, at most max_retries times; after that the
 * action fails and the caller learns which workers were lost. Every table is
 * bounded by sched_options.
 */
#ifndef CASBOX_SCHED_H
#define CASBOX_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SCHED_MAX_PROPERTIES 64
#define SCHED_LOST_LEN       512

struct sched;
struct sched_task;
struct sched_worker;

struct sched_options {
    uint64_t max_queued;        /* actions waiting for a worker */
    uint64_t max_workers;       /* worker slots known at once */
    uint64_t worker_timeout_ms; /* silence after which a slot is lost */
    uint64_t max_retries;       /* requeues of one action after lost slots */
    uint64_t grace_ms;          /* after start: an unknown platform is UNAVAILABLE, not refused */
};

/* Platform properties: name/value pairs, kept sorted by name then value. */
struct sched_platform {
    size_t n;
    char *names[SCHED_MAX_PROPERTIES];
    char *values[SCHED_MAX_PROPERTIES];
};

/* Copies n pairs into p, sorted. -E2BIG above SCHED_MAX_PROPERTIES, -ENOMEM. */
int sched_platform_set(struct sched_platform *p, const char *const *names,
                       const char *const *values, size_t n);
void sched_platform_clear(struct sched_platform *p);
/* Whether every property of want is in have with the same value. */
bool sched_platform_fits(const struct sched_platform *want, const struct sched_platform *have);
/* "ISA=x86-64,OSFamily=Linux" (or "(none)") into out, truncated with "...". */
void sched_platform_format(const struct sched_platform *p, char *out, size_t len);

struct sched_task_desc {
    const char *instance;   /* the client's instance name */
    const char *key;        /* identifies the action: "HASH/SIZE"; a completion must name it */
    const char *invocation; /* tool_invocation_id; NULL or "" share one turn */
    const struct sched_platform *platform;
    int32_t priority;
};

enum sched_task_state { SCHED_TASK_QUEUED, SCHED_TASK_EXECUTING, SCHED_TASK_DONE };

int sched_new(const struct sched_options *opt, uint64_t now_ms, struct sched **out);
/* Frees the tables; tasks still present are freed too (their user data is
 * the caller's). */
void sched_free(struct sched *s);

/* Queues an action. 0 with *out; -ENOSPC when max_queued actions wait;
 * -ENOENT when no worker has ever announced an instance prefix and platform
 * that fit it (after the grace period), -EAGAIN during it; -ENOMEM. */
int sched_submit(struct sched *s, const struct sched_task_desc *desc, void *user, uint64_t now_ms,
                 struct sched_task **out);
void *sched_task_user(const struct sched_task *t);
const char *sched_task_key(const struct sched_task *t);
const char *sched_task_instance(const struct sched_task *t);
enum sched_task_state sched_task_state(const struct sched_task *t);
uint64_t sched_task_queued_ms(const struct sched_task *t);
/* The workers that were lost while running it, comma-separated ("" if none). */
const char *sched_task_lost(const struct sched_task *t);
/* The worker running it, or NULL. */
struct sched_worker *sched_task_worker(const struct sched_task *t);
/* The size class it waits for or runs in (chosen at submit, see below). */
uint32_t sched_task_size_class(const struct sched_task *t);
/* Takes a task out of the queue or off its worker (whose next sync then
 * learns to go idle) and frees it. */
void sched_task_cancel(struct sched *s, struct sched_task *t);

struct sched_worker_desc {
    const char *instance_prefix;
    const struct sched_platform *platform;
    uint32_t size_class;
    bool prefer_idle; /* SIGTERM'd: no new work */
};

/* Starts one Synchronize of worker id (a canonical "k=v,k=v" string): finds
 * or adds the slot and refreshes what it announces. *joined is set when the
 * slot is new. -EBUSY when another Synchronize of the same id is in
 * progress; -ENOSPC past max_workers; -ENOMEM. End it with
 * sched_worker_sync_end. */
int sched_worker_sync_begin(struct sched *s, const char *id, const struct sched_worker_desc *desc,
                            uint64_t now_ms, struct sched_worker **out, bool *joined);
void sched_worker_sync_end(struct sched *s, struct sched_worker *w, uint64_t now_ms);
const char *sched_worker_id(const struct sched_worker *w);
/* The task the slot runs, or NULL. */
struct sched_task *sched_worker_task(const struct sched_worker *w);
/* The next task that fits the idle slot w, now assigned to it; NULL when
 * none does, or w is drained or prefers to be idle. */
struct sched_task *sched_worker_take(struct sched *s, struct sched_worker *w, uint64_t now_ms);
/* The slot reports its task finished: the task leaves it (DONE); the caller
 * publishes the result and frees it with sched_task_cancel. -ENOENT when the
 * slot runs no task with that key. */
int sched_worker_finish(struct sched *s, struct sched_worker *w, const char *key,
                        struct sched_task **out);
/* The slot came back idle while it was meant to run its task (it restarted):
 * the task is requeued as after a loss. Returns as sched_expire's event. */

/* What sched_expire did with one lost slot's task. */
struct sched_lost_event {
    char worker[256];
    struct sched_task *task; /* NULL: the slot was idle */
    bool failed;             /* past max_retries: not requeued; the caller fails and frees it */
};

/* Removes the slots silent for worker_timeout (none in a Synchronize), and
 * requeues or fails their tasks. Fills at most max events; returns how many
 * (call again when it returns max). */
size_t sched_expire(struct sched *s, uint64_t now_ms, struct sched_lost_event *events, size_t max);
/* The same for one slot now, which reported idle while running a task. */
int sched_worker_reset(struct sched *s, struct sched_worker *w, struct sched_lost_event *ev);

/* Drains: slots whose id matches the fnmatch pattern finish their task and
 * get no more. -ENOSPC above 64 patterns. */
int sched_drain_add(struct sched *s, const char *pattern);
int sched_drain_remove(struct sched *s, const char *pattern);

/* Counts, for status and tests. */
uint64_t sched_queued(const struct sched *s);
uint64_t sched_workers(const struct sched *s);

/* For /metrics: slots by state and actions by queue, with few label sets
 * (at most SCHED_MAX_QUEUE_COUNTS; the last one gathers the rest as
 * platform "other"). */
#define SCHED_MAX_QUEUE_COUNTS 16
struct sched_queue_count {
    char platform[96]; /* sched_platform_format, truncated */
    uint32_t size_class;
    uint64_t queued, executing;
};
struct sched_counts {
    uint64_t idle, busy, draining; /* draining: drained or prefer_being_idle, busy or not */
    size_t n_queues;
    struct sched_queue_count queues[SCHED_MAX_QUEUE_COUNTS];
};
void sched_counts_get(const struct sched *s, struct sched_counts *out);

/* The worker slots for a page: copies of at most max of them; returns how
 * many were copied. */
struct sched_worker_info {
    char id[128];
    char action[96]; /* the key of its task, "" when idle */
    char platform[96];
    uint32_t size_class;
    bool draining; /* drained or prefer_being_idle */
    uint64_t since_ms, runs;
};
size_t sched_workers_get(const struct sched *s, struct sched_worker_info *out, size_t max);
/* A human-readable status: queues, workers, drains. */
void sched_status_print(const struct sched *s, uint64_t now_ms, FILE *out);

#endif
