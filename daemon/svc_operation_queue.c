/*
 * svc_operation_queue.c - the scheduler role: Buildbarn's
 * buildbarn.remoteworker.OperationQueue/Synchronize, which hands the
 * Execution service's queued operations to worker slots (docs/fleet.md).
 *
 * Execute queues an operation in the fleet queue (sched/) instead of the
 * local slots. Each worker slot calls Synchronize: an idle one is held up to
 * [scheduler] idle_poll waiting for work, parked without a thread (rpc.h:
 * Synchronize is event-driven) in svc->held and resumed by
 * fleet_work_wake_locked when work comes; a busy one
 * reports its stage and is answered at once with the time of its next report
 * (a third of worker_timeout, at most Buildbarn's 10 s) so a live worker is
 * never taken for lost. A completion publishes the worker's ExecuteResponse
 * to the operation's watchers exactly as a local slot does. The reaper
 * thread removes slots silent for worker_timeout and requeues their actions
 * up to max_retries times, then fails them UNAVAILABLE naming the lost
 * workers. One log line per join, loss and requeue.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buildbarn/remoteworker/remoteworker.pb-c.h"
#include "execution_internal.h"
#include "util/util.h"

typedef Buildbarn__Remoteworker__SynchronizeRequest SyncRequest;
typedef Buildbarn__Remoteworker__SynchronizeResponse SyncResponse;
typedef Buildbarn__Remoteworker__DesiredState DesiredState;
typedef Buildbarn__Remoteworker__DesiredState__Executing DesiredExecuting;
typedef Buildbarn__Remoteworker__CurrentState__Executing CurrentExecuting;

#define OQ_BUSY_INTERVAL_MAX_S 10 /* Buildbarn's busy report interval */
#define OQ_MAX_EVENTS          64
#define OQ_UNHELD_POLL_US      1000000 /* an idle slot not held polls again after this */
#define OQ_REQUEST_METADATA    "build.bazel.remote.execution.v2.requestmetadata-bin"

static void fleet_work_wake_one_locked(struct exec_service *svc);

static uint64_t oq_now_ms(void)
{
    return clock_mono_us() / 1000;
}

static void oq_digest_key(const struct cas_digest *dg, char *key, size_t len)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(dg, hex);
    snprintf(key, len, "%s/%" PRId64, hex, dg->size);
}

static int oq_platform_from_proto(const Build__Bazel__Remote__Execution__V2__Platform *p,
                                  struct sched_platform *out)
{
    const char *names[SCHED_MAX_PROPERTIES], *values[SCHED_MAX_PROPERTIES];
    size_t n = p ? p->n_properties : 0;

    if (n > SCHED_MAX_PROPERTIES)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        names[i] = p->properties[i]->name ? p->properties[i]->name : "";
        values[i] = p->properties[i]->value ? p->properties[i]->value : "";
    }
    return sched_platform_set(out, names, values, n);
}

/* --- Execute's side --- */

/* RequestMetadata.tool_invocation_id, or "" (a copy in out). */
static void oq_invocation(struct rpc_call *call, char *out, size_t len)
{
    Build__Bazel__Remote__Execution__V2__RequestMetadata *md;
    const char *raw;
    size_t raw_len = 0;

    out[0] = '\0';
    if (call == NULL)
        return;
    raw = rpc_call_metadata(call, OQ_REQUEST_METADATA, &raw_len);
    if (raw == NULL)
        return;
    md = build__bazel__remote__execution__v2__request_metadata__unpack(NULL, raw_len,
                                                                       (const uint8_t *)raw);
    if (md == NULL)
        return;
    snprintf(out, len, "%s", md->tool_invocation_id ? md->tool_invocation_id : "");
    build__bazel__remote__execution__v2__request_metadata__free_unpacked(md, NULL);
}

int fleet_scheduler_submit_locked(struct exec_service *svc, struct exec_op *op,
                                  struct rpc_call *call, int32_t priority, struct reapi_status *st)
{
    const Build__Bazel__Remote__Execution__V2__Platform *p = op->action->action->platform;
    struct sched_platform plat = {0};
    struct sched_task_desc desc;
    char key[CAS_HASH_HEX + 32], inv[256], shown[512];
    int rc;

    if (p == NULL || p->n_properties == 0)
        p = op->action->command->platform; /* before v2.2 */
    rc = oq_platform_from_proto(p, &plat);
    if (rc != 0) {
        reapi_status_set(st, rc == -E2BIG ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_INTERNAL,
                         "platform: %s (at most %d properties)", strerror(-rc),
                         SCHED_MAX_PROPERTIES);
        return rc;
    }
    oq_digest_key(&op->action_digest, key, sizeof(key));
    oq_invocation(call, inv, sizeof(inv));
    desc = (struct sched_task_desc){.instance = op->instance,
                                    .key = key,
                                    .invocation = inv,
                                    .platform = &plat,
                                    .priority = priority};
    rc = sched_submit(svc->sched, &desc, op, oq_now_ms(), &op->task);
    sched_platform_format(&plat, shown, sizeof(shown));
    switch (rc) {
    case 0:
        op->refs++; /* the task's */
        fleet_work_wake_one_locked(svc);
        break;
    case -ENOSPC:
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "the scheduler's queue is full (%" PRIu64
                         " actions waiting, scheduler.max_queued)",
                         svc->d->cfg.sched_max_queued);
        break;
    case -ENOENT:
        reapi_status_set(st, GRPC_STATUS_FAILED_PRECONDITION,
                         "no worker has announced an instance name prefix and platform that fit "
                         "instance '%.200s' with platform %s",
                         op->instance, shown);
        break;
    case -EAGAIN:
        reapi_status_set(st, GRPC_STATUS_UNAVAILABLE,
                         "no worker fitting instance '%.200s' with platform %s has joined yet "
                         "(the scheduler started less than scheduler.grace = %" PRIu64 " s ago)",
                         op->instance, shown, svc->d->cfg.sched_grace);
        break;
    default:
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot queue: %s", strerror(-rc));
        break;
    }
    sched_platform_clear(&plat);
    return rc;
}

/* --- completions and failures, published without the lock --- */

struct oq_done {
    struct exec_op *op;
    uint8_t *resp;
    size_t len;
};

/* Takes op's task off (with the lock) and records a failed response. */
static void oq_fail_locked(struct exec_service *svc, struct exec_op *op, grpc_status_code code,
                           const char *message, struct oq_done *out)
{
    struct reapi_status st;

    sched_task_cancel(svc->sched, op->task);
    op->task = NULL;
    reapi_status_init(&st);
    reapi_status_set(&st, code, "%s", message);
    out->op = op; /* carries the task's reference */
    out->resp = NULL;
    out->len = 0;
    if (exec_response_pack(NULL, false, &st, st.message, &out->resp, &out->len) != 0)
        out->len = 0;
    reapi_status_free(&st);
}

static void oq_publish(struct exec_service *svc, struct oq_done *done, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct exec_times times = done[i].op->times;

        exec_slot_complete(svc, done[i].op, done[i].resp, done[i].len, &times);
        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(done[i].op);
        pthread_mutex_unlock(&svc->lock);
    }
}

/* One lost slot's task: requeued (its watchers see QUEUED again) or, past
 * max_retries, failed into done. Returns 1 when done was filled. */
static int oq_lost_locked(struct exec_service *svc, const struct sched_lost_event *ev,
                          const char *why, struct oq_done *done)
{
    struct exec_op *op;
    char msg[1024];

    if (ev->task == NULL) {
        observe_fleet_lost(svc->d, false);
        LOG_I("fleet: worker %s left (%s)", ev->worker, why);
        return 0;
    }
    op = sched_task_user(ev->task);
    observe_fleet_lost(svc->d, !ev->failed);
    if (!ev->failed) {
        LOG_I("fleet: worker %s left (%s); action %s requeued", ev->worker, why,
              sched_task_key(ev->task));
        op->stage = EXEC_QUEUED;
        exec_op_changed_locked(op);
        fleet_work_wake_locked(svc);
        return 0;
    }
    snprintf(msg, sizeof(msg),
             "action %s lost its worker %" PRIu64 " times (scheduler.max_retries = %" PRIu64
             "); workers lost: %s",
             sched_task_key(ev->task), svc->d->cfg.sched_max_retries + 1,
             svc->d->cfg.sched_max_retries, sched_task_lost(ev->task));
    LOG_W("fleet: worker %s left (%s); %s", ev->worker, why, msg);
    oq_fail_locked(svc, op, GRPC_STATUS_UNAVAILABLE, msg, done);
    return 1;
}

/* --- the reaper --- */

/* Cancels the operations that no client has watched (their references are
 * the table's and the task's alone) for [scheduler] orphan_timeout: taken
 * out of the queue, or off their worker, whose next report is answered
 * "idle". Fills done; returns how many. With the lock. */
static size_t oq_orphans_locked(struct exec_service *svc, uint64_t now_ms, struct oq_done *done,
                                size_t max)
{
    uint64_t timeout_ms = svc->d->cfg.sched_orphan_timeout * 1000;
    char msg[512];
    size_t n = 0;

    for (struct exec_op *op = svc->ops; op != NULL && n < max; op = op->next) {
        struct sched_worker *w;

        if (op->task == NULL || op->refs > 2) {
            op->orphan_since_ms = 0;
            continue;
        }
        if (op->orphan_since_ms == 0) {
            op->orphan_since_ms = now_ms;
            continue;
        }
        if (now_ms - op->orphan_since_ms < timeout_ms)
            continue;
        w = sched_task_worker(op->task);
        snprintf(msg, sizeof(msg),
                 "action %s: no client waited for it for %" PRIu64
                 " s (scheduler.orphan_timeout); cancelled%s%.300s",
                 sched_task_key(op->task), svc->d->cfg.sched_orphan_timeout,
                 w ? " on worker " : " while queued", w ? sched_worker_id(w) : "");
        LOG_I("fleet: %s", msg);
        oq_fail_locked(svc, op, GRPC_STATUS_CANCELLED, msg, &done[n++]);
    }
    return n;
}

static void *oq_reaper_main(void *arg)
{
    struct exec_service *svc = arg;
    struct sched_lost_event ev[OQ_MAX_EVENTS];
    struct oq_done done[OQ_MAX_EVENTS];
    char why[64];

    snprintf(why, sizeof(why), "no Synchronize for %" PRIu64 " s",
             svc->d->cfg.sched_worker_timeout);
    pthread_mutex_lock(&svc->lock);
    while (!svc->stopping) {
        struct timespec until;
        size_t n, n_done = 0;

        n = sched_expire(svc->sched, oq_now_ms(), ev, OQ_MAX_EVENTS);
        for (size_t i = 0; i < n; i++)
            n_done += oq_lost_locked(svc, &ev[i], why, &done[n_done]);
        n_done += oq_orphans_locked(svc, oq_now_ms(), done + n_done, OQ_MAX_EVENTS - n_done);
        if (n_done > 0) {
            pthread_mutex_unlock(&svc->lock);
            oq_publish(svc, done, n_done);
            pthread_mutex_lock(&svc->lock);
        }
        if (n == OQ_MAX_EVENTS)
            continue;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&svc->fleet_work, &svc->lock, &until);
    }
    pthread_mutex_unlock(&svc->lock);
    return NULL;
}

int fleet_scheduler_start(struct exec_service *svc)
{
    const struct casbox_config *cfg = &svc->d->cfg;
    struct sched_options opt = {
        .max_queued = cfg->sched_max_queued,
        .max_workers = cfg->sched_max_workers,
        .worker_timeout_ms = cfg->sched_worker_timeout * 1000,
        .max_retries = cfg->sched_max_retries,
        .grace_ms = cfg->sched_grace * 1000,
    };
    int rc = sched_new(&opt, oq_now_ms(), &svc->sched);

    if (rc != 0)
        return rc;
    rc = pthread_create(&svc->reaper, NULL, oq_reaper_main, svc);
    if (rc != 0)
        return -rc;
    svc->reaper_started = true;
    LOG_I("fleet: scheduler role: workers Synchronize on %s (worker_timeout %" PRIu64
          " s, max_retries %" PRIu64 ")",
          cfg->sched_worker_listen[0] ? cfg->sched_worker_listen : cfg->listen,
          cfg->sched_worker_timeout, cfg->sched_max_retries);
    return 0;
}

void fleet_scheduler_begin_stop(struct exec_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    fleet_work_wake_locked(svc);
    pthread_mutex_unlock(&svc->lock);
}

void fleet_scheduler_stop(struct exec_service *svc)
{
    if (svc->reaper_started)
        pthread_join(svc->reaper, NULL);
    svc->reaper_started = false;
    pthread_mutex_lock(&svc->lock);
    for (struct exec_op *op = svc->ops; op != NULL; op = op->next) {
        if (op->task != NULL) {
            sched_task_cancel(svc->sched, op->task);
            op->task = NULL;
            exec_op_unref_locked(op); /* the table still holds one */
        }
    }
    pthread_mutex_unlock(&svc->lock);
    sched_free(svc->sched);
    svc->sched = NULL;
}

void fleet_scheduler_counts(struct exec_service *svc, struct sched_counts *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&svc->lock);
    if (svc->sched != NULL)
        sched_counts_get(svc->sched, out);
    pthread_mutex_unlock(&svc->lock);
}

size_t fleet_scheduler_workers(struct exec_service *svc, struct sched_worker_info *out, size_t max)
{
    size_t n = 0;

    pthread_mutex_lock(&svc->lock);
    if (svc->sched != NULL)
        n = sched_workers_get(svc->sched, out, max);
    pthread_mutex_unlock(&svc->lock);
    return n;
}

/* --- Synchronize --- */

/* "hostname=a,slot=1": the worker_id's entries sorted by key. -EINVAL when
 * empty or too long. */
static int oq_worker_id(const SyncRequest *req, char *out, size_t len)
{
    size_t used = 0, n = req->n_worker_id;
    const Buildbarn__Remoteworker__SynchronizeRequest__WorkerIdEntry *sorted[64];

    if (n == 0 || n > 64)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t j = i;

        while (j > 0 && strcmp(sorted[j - 1]->key ? sorted[j - 1]->key : "",
                               req->worker_id[i]->key ? req->worker_id[i]->key : "") > 0) {
            sorted[j] = sorted[j - 1];
            j--;
        }
        sorted[j] = req->worker_id[i];
    }
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + used, len - used, "%s%s=%s", i ? "," : "",
                         sorted[i]->key ? sorted[i]->key : "",
                         sorted[i]->value ? sorted[i]->value : "");

        if (w < 0 || (size_t)w >= len - used)
            return -EINVAL;
        used += (size_t)w;
    }
    return 0;
}

/* What the handler answers, filled under the lock and sent after it. */
struct oq_answer {
    enum { OQ_CARRY_ON, OQ_IDLE, OQ_EXECUTE } what;
    uint64_t next_sync_us; /* wall clock */
    struct exec_op *op;    /* OQ_EXECUTE: a reference held for the send */
    const char *suffix;    /* OQ_EXECUTE: instance name after the prefix */
};

static void oq_timestamp(uint64_t us, Google__Protobuf__Timestamp *ts)
{
    google__protobuf__timestamp__init(ts);
    ts->seconds = (int64_t)(us / 1000000);
    ts->nanos = (int32_t)(us % 1000000) * 1000;
}

static int oq_send(struct rpc_call *call, const struct oq_answer *a)
{
    SyncResponse resp = BUILDBARN__REMOTEWORKER__SYNCHRONIZE_RESPONSE__INIT;
    DesiredState desired = BUILDBARN__REMOTEWORKER__DESIRED_STATE__INIT;
    DesiredExecuting ex = BUILDBARN__REMOTEWORKER__DESIRED_STATE__EXECUTING__INIT;
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    Google__Protobuf__Timestamp next, queued;
    struct reapi_digest_buf db;

    oq_timestamp(a->next_sync_us, &next);
    resp.next_synchronization_at = &next;
    if (a->what == OQ_IDLE) {
        desired.worker_state_case = BUILDBARN__REMOTEWORKER__DESIRED_STATE__WORKER_STATE_IDLE;
        desired.idle = &empty;
        resp.desired_state = &desired;
    } else if (a->what == OQ_EXECUTE) {
        reapi_digest_to_proto(&a->op->action_digest, &db);
        ex.action_digest = &db.pd;
        ex.action = a->op->action->action; /* immutable while the op lives */
        oq_timestamp(a->op->times.queued, &queued);
        ex.queued_timestamp = &queued;
        ex.instance_name_suffix = (char *)a->suffix;
        ex.digest_function = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
        desired.worker_state_case = BUILDBARN__REMOTEWORKER__DESIRED_STATE__WORKER_STATE_EXECUTING;
        desired.executing = &ex;
        resp.desired_state = &desired;
    }
    return rpc_call_finish(call, &resp.base, NULL);
}

/* A completion: the worker's ExecuteResponse becomes the operation's. */
static int oq_complete_locked(struct exec_service *svc, struct sched_worker *w, const char *key,
                              const Build__Bazel__Remote__Execution__V2__ExecuteResponse *r,
                              struct oq_done *done, struct reapi_status *st)
{
    struct sched_task *t;
    struct exec_op *op;

    if (sched_worker_finish(svc->sched, w, key, &t) != 0) {
        reapi_status_set(st, GRPC_STATUS_FAILED_PRECONDITION,
                         "worker %.300s reported action %s completed, but it was not running it "
                         "(never given, cancelled, or given to another worker after a loss)",
                         sched_worker_id(w), key);
        return -ENOENT;
    }
    op = sched_task_user(t);
    sched_task_cancel(svc->sched, t);
    op->task = NULL;
    done->op = op;
    done->len = protobuf_c_message_get_packed_size(&r->base);
    done->resp = malloc(done->len ? done->len : 1);
    if (done->resp == NULL) {
        done->len = 0; /* published as an empty (failed) response */
        return 0;
    }
    protobuf_c_message_pack(&r->base, done->resp);
    observe_fleet_result(svc->d, op->instance, &op->action_digest, sched_worker_id(w), r);
    LOG_I("fleet: action %s completed on worker %s (exit %d)", key, sched_worker_id(w),
          r->result ? r->result->exit_code : -1);
    return 0;
}

/* The stage a busy report names, for the board. */
static enum observe_fleet_stage oq_stage(const CurrentExecuting *ex)
{
    switch (ex->execution_state_case) {
    case BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_FETCHING_INPUTS:
        return OBSERVE_FLEET_FETCHING;
    case BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_RUNNING:
        return OBSERVE_FLEET_RUNNING;
    case BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_UPLOADING_OUTPUTS:
        return OBSERVE_FLEET_UPLOADING;
    default:
        return OBSERVE_FLEET_TAKEN;
    }
}

static uint64_t oq_busy_interval_s(const struct casbox_config *cfg)
{
    uint64_t s = cfg->sched_worker_timeout / 3;

    return s == 0 ? 1 : s > OQ_BUSY_INTERVAL_MAX_S ? OQ_BUSY_INTERVAL_MAX_S : s;
}

/* Hands w the next task, waiting up to wait_us for one. With the lock. */
static void oq_take_locked(struct exec_service *svc, struct sched_worker *w, const char *prefix,
                           uint64_t wait_us, struct oq_answer *a)
{
    uint64_t deadline = clock_mono_us() + wait_us;

    for (;;) {
        struct sched_task *t = sched_worker_take(svc->sched, w, oq_now_ms());
        struct timespec until;
        uint64_t now_us, left_us, real_until;

        if (t != NULL) {
            struct exec_op *op = sched_task_user(t);
            const char *suffix = op->instance + strlen(prefix);

            if (*suffix == '/')
                suffix++;
            op->refs++; /* for the send */
            if (op->stage != EXEC_EXECUTING) {
                op->stage = EXEC_EXECUTING;
                exec_op_changed_locked(op);
            }
            a->what = OQ_EXECUTE;
            a->op = op;
            a->suffix = suffix;
            a->next_sync_us = clock_real_us() + oq_busy_interval_s(&svc->d->cfg) * 1000000;
            observe_fleet_stage(svc->d, op->instance, &op->action_digest, sched_worker_id(w),
                                OBSERVE_FLEET_TAKEN);
            LOG_D("fleet: action %s to worker %s", sched_task_key(t), sched_worker_id(w));
            return;
        }
        now_us = clock_mono_us();
        if (svc->stopping || now_us >= deadline) {
            a->what = OQ_IDLE;
            a->next_sync_us = clock_real_us();
            return;
        }
        left_us = deadline - now_us;
        real_until = clock_real_us() + left_us;
        until.tv_sec = (time_t)(real_until / 1000000);
        until.tv_nsec = (long)(real_until % 1000000) * 1000;
        pthread_cond_timedwait(&svc->fleet_work, &svc->lock, &until);
    }
}

/* How long an idle Synchronize may be held: idle_poll, within the caller's
 * deadline (less a second for the answer to travel). */
static uint64_t oq_hold_us(struct rpc_call *call, const struct casbox_config *cfg)
{
    gpr_timespec dl = gpr_convert_clock_type(rpc_call_deadline(call), GPR_CLOCK_REALTIME);
    uint64_t hold = cfg->sched_idle_poll * 1000000;
    int64_t dl_us = dl.tv_sec * 1000000LL + dl.tv_nsec / 1000 - (int64_t)clock_real_us() - 1000000;

    if (dl_us <= 0)
        return 0;
    return (uint64_t)dl_us < hold ? (uint64_t)dl_us : hold;
}

/* An idle Synchronize parked until work comes or its hold ends: what the
 * answer needs. The worker's sync stays begun (sched/) while it is held. */
struct oq_held {
    struct exec_service *svc;
    struct rpc_call *call;
    SyncRequest *req;
    struct sched_platform plat;
    struct sched_worker *w;
    uint64_t until_us; /* clock_mono_us */
    /* Resumed and not yet run by the timer thread: wake_one skips it, or a
     * burst of submissions before the timer thread runs would resume this
     * one call again and again and wake no other slot (issue 15). */
    bool woken;
    struct oq_held *prev, *next;
};

static void oq_held_free(struct oq_held *h)
{
    sched_platform_clear(&h->plat);
    if (h->req != NULL)
        protobuf_c_message_free_unpacked(&h->req->base, NULL);
    free(h);
}

static void oq_held_unlist_locked(struct exec_service *svc, struct oq_held *h)
{
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        svc->held = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    svc->held_syncs--;
}

static void oq_held_woken(void *state, int rc);

/* Parks h's call until fleet_work_wake_locked or its hold ends: 0, or a
 * negative errno when it could not (then it is not listed). With the lock. */
static int oq_held_park_locked(struct exec_service *svc, struct oq_held *h)
{
    uint64_t now = clock_mono_us();
    int rc;

    if (now >= h->until_us)
        return -ETIMEDOUT;
    h->woken = false;
    h->prev = NULL;
    h->next = svc->held;
    if (svc->held != NULL)
        svc->held->prev = h;
    svc->held = h;
    svc->held_syncs++;
    rc = rpc_call_park(h->call, (h->until_us - now + 999) / 1000, oq_held_woken, h);
    if (rc != 0)
        oq_held_unlist_locked(svc, h);
    return rc;
}

void fleet_work_wake_locked(struct exec_service *svc)
{
    pthread_cond_broadcast(&svc->fleet_work);
    for (struct oq_held *h = svc->held; h != NULL; h = h->next) {
        if (!h->woken)
            rpc_call_resume(h->call); /* listed: still parked */
        h->woken = true;
    }
}

/* One new task: one held call is woken, the longest held (waking every one
 * per task made 20,000 submissions 20 million wake-ups with 1,000 slots
 * held); one that cannot take it is held again, and the task goes to the
 * next slot that comes for work. */
static void fleet_work_wake_one_locked(struct exec_service *svc)
{
    struct oq_held *last = svc->held;

    pthread_cond_broadcast(&svc->fleet_work);
    while (last != NULL && last->next != NULL)
        last = last->next;
    /* false: its hold ended just now, and its callback will unlist it */
    while (last != NULL && (last->woken || !rpc_call_resume(last->call)))
        last = last->prev;
    if (last != NULL)
        last->woken = true;
}

/* On the timer thread: work came (rc 0) or the hold ended (-ETIMEDOUT). */
static void oq_held_woken(void *state, int rc)
{
    struct oq_held *h = state;
    struct exec_service *svc = h->svc;
    const char *prefix = h->req->instance_name_prefix ? h->req->instance_name_prefix : "";
    struct oq_answer a = {.what = OQ_CARRY_ON};

    pthread_mutex_lock(&svc->lock);
    oq_held_unlist_locked(svc, h);
    oq_take_locked(svc, h->w, prefix, 0, &a);
    if (a.what == OQ_IDLE && rc == 0 && !svc->stopping && oq_held_park_locked(svc, h) == 0) {
        pthread_mutex_unlock(&svc->lock); /* woken for work another slot took */
        return;
    }
    sched_worker_sync_end(svc->sched, h->w, oq_now_ms());
    pthread_mutex_unlock(&svc->lock);
    oq_send(h->call, &a);
    if (a.op != NULL) {
        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(a.op);
        pthread_mutex_unlock(&svc->lock);
    }
    oq_held_free(h);
}

static void oq_synchronize(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    struct exec_service *svc = d->exec;
    SyncRequest *req = NULL;
    struct sched_platform plat = {0};
    struct sched_worker_desc desc;
    struct sched_worker *w = NULL;
    struct oq_answer a = {.what = OQ_CARRY_ON};
    struct oq_done done[2];
    size_t n_done = 0;
    struct reapi_status st;
    char id[512], key[CAS_HASH_HEX + 32], shown[512];
    bool joined;
    int rc;

    reapi_status_init(&st);
    if (svc == NULL || svc->sched == NULL) {
        rpc_call_fail(call, GRPC_STATUS_UNIMPLEMENTED, "this casboxd is not a scheduler");
        goto out;
    }
    if (rpc_call_request(call, &buildbarn__remoteworker__synchronize_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "SynchronizeRequest not parseable");
        goto out;
    }
    /* A worker needs the worker permission on the instances it announces
     * (auth/): a build client's token cannot pose as one. */
    if (rpc_call_authorize(call, req->instance_name_prefix ? req->instance_name_prefix : "", &st) !=
        0) {
        rpc_call_finish(call, NULL, &st);
        goto out;
    }
    if (oq_worker_id(req, id, sizeof(id)) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "worker_id is empty or too long: it must name the worker slot, e.g. "
                      "{hostname: NAME, slot: N}");
        goto out;
    }
    if (req->current_state == NULL ||
        req->current_state->worker_state_case ==
            BUILDBARN__REMOTEWORKER__CURRENT_STATE__WORKER_STATE__NOT_SET) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "worker %.300s: current_state must be idle or executing", id);
        goto out;
    }
    rc = oq_platform_from_proto(req->platform, &plat);
    if (rc != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "worker %.300s: platform: %s", id,
                      strerror(-rc));
        goto out;
    }
    desc = (struct sched_worker_desc){.instance_prefix = req->instance_name_prefix,
                                      .platform = &plat,
                                      .size_class = req->size_class,
                                      .prefer_idle = req->prefer_being_idle};

    pthread_mutex_lock(&svc->lock);
    rc = sched_worker_sync_begin(svc->sched, id, &desc, oq_now_ms(), &w, &joined);
    if (rc != 0) {
        pthread_mutex_unlock(&svc->lock);
        if (rc == -EBUSY)
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                          "worker %.300s already has a Synchronize in progress: each worker_id "
                          "names one slot",
                          id);
        else if (rc == -ENOSPC)
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                          "the scheduler knows %" PRIu64 " worker slots (scheduler.max_workers)",
                          d->cfg.sched_max_workers);
        else
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (joined) {
        sched_platform_format(&plat, shown, sizeof(shown));
        LOG_I("fleet: worker %s joined (platform %s, instance prefix '%s')", id, shown,
              desc.instance_prefix ? desc.instance_prefix : "");
    }
    if (req->current_state->worker_state_case ==
        BUILDBARN__REMOTEWORKER__CURRENT_STATE__WORKER_STATE_EXECUTING) {
        const CurrentExecuting *ex = req->current_state->executing;
        struct sched_task *t = sched_worker_task(w);
        struct cas_digest dg;

        if (ex == NULL ||
            reapi_digest_from_proto(ex->action_digest, &dg, &st, "executing.action_digest") != 0) {
            if (ex == NULL)
                reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "executing is empty");
            goto fail_locked;
        }
        oq_digest_key(&dg, key, sizeof(key));
        if (ex->execution_state_case ==
            BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_COMPLETED) {
            if (ex->completed == NULL) {
                reapi_status_set(&st, GRPC_STATUS_INVALID_ARGUMENT, "completed is empty");
                goto fail_locked;
            }
            if (oq_complete_locked(svc, w, key, ex->completed, &done[n_done], &st) != 0)
                goto fail_locked;
            n_done++;
            /* the next action, if one waits; no holding: it may have more to do */
            oq_take_locked(svc, w, desc.instance_prefix ? desc.instance_prefix : "", 0, &a);
        } else if (t != NULL && strcmp(sched_task_key(t), key) == 0) {
            struct exec_op *op = sched_task_user(t);

            observe_fleet_stage(d, op->instance, &op->action_digest, id, oq_stage(ex));
            a.what = OQ_CARRY_ON;
            a.next_sync_us = clock_real_us() + oq_busy_interval_s(&d->cfg) * 1000000;
        } else {
            /* cancelled, or requeued elsewhere after this slot was lost: stop it */
            a.what = OQ_IDLE;
            a.next_sync_us = clock_real_us();
        }
    } else {
        struct sched_lost_event ev;

        /* idle while it should run a task: it restarted; the task goes again */
        if (sched_worker_reset(svc->sched, w, &ev) == 0)
            n_done += oq_lost_locked(svc, &ev, "restarted", &done[n_done]);
        /* Held calls are parked (no thread each) but open event-driven
         * calls, which ByteStream needs too: at most half of [server]
         * max_async_calls are held; past that an idle slot is told to poll
         * again in a second. */
        bool hold = !req->prefer_being_idle && svc->held_syncs < d->cfg.max_async_calls / 2;
        uint64_t wait_us = hold ? oq_hold_us(call, &d->cfg) : 0;

        oq_take_locked(svc, w, desc.instance_prefix ? desc.instance_prefix : "", 0, &a);
        if (a.what == OQ_IDLE && wait_us > 0) {
            struct oq_held *h = calloc(1, sizeof(*h));

            if (h != NULL) {
                *h = (struct oq_held){.svc = svc,
                                      .call = call,
                                      .req = req,
                                      .plat = plat,
                                      .w = w,
                                      .until_us = clock_mono_us() + wait_us};
                if (oq_held_park_locked(svc, h) == 0) {
                    /* h owns the request and the platform now */
                    pthread_mutex_unlock(&svc->lock);
                    oq_publish(svc, done, n_done);
                    reapi_status_free(&st);
                    return;
                }
                free(h);
            }
            a.next_sync_us = clock_real_us(); /* not held after all: poll again */
        }
        if (!hold && !req->prefer_being_idle && a.what == OQ_IDLE)
            a.next_sync_us = clock_real_us() + OQ_UNHELD_POLL_US;
    }
    sched_worker_sync_end(svc->sched, w, oq_now_ms());
    pthread_mutex_unlock(&svc->lock);
    oq_publish(svc, done, n_done);
    oq_send(call, &a);
    if (a.op != NULL) {
        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(a.op);
        pthread_mutex_unlock(&svc->lock);
    }
    goto out;

fail_locked:
    sched_worker_sync_end(svc->sched, w, oq_now_ms());
    pthread_mutex_unlock(&svc->lock);
    rpc_call_finish(call, NULL, &st);
out:
    sched_platform_clear(&plat);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

const struct rpc_method operation_queue_methods[] = {
    /* event-driven: an idle slot's held call is parked, not a thread */
    {"/buildbarn.remoteworker.OperationQueue/Synchronize", RPC_UNARY, RPC_POOL_EVENT,
     oq_synchronize, AUTH_PERM_WORKER},
};
const size_t operation_queue_n_methods =
    sizeof(operation_queue_methods) / sizeof(operation_queue_methods[0]);
