/*
 * worker.c - the worker role: one Buildbarn Synchronize loop per execution
 * slot against [worker] scheduler (docs/fleet.md).
 *
 * A slot is idle until the scheduler's answer names an action; it then runs
 * the action on a runner thread (the same exec_run as the single host,
 * inputs read lazily through the FUSE mount from the local store, which
 * fetches misses from the remote CAS: shared_storage.c) while the slot thread
 * reports the stage by each next_synchronization_at, so that a busy worker
 * is never taken for lost. When the action is done, the runner has uploaded
 * the outputs and written the ActionCache entry (clean, cacheable results
 * only, as bb_worker does); the slot reports `completed` with the
 * ExecuteResponse, whose answer may already name the next action. The
 * worker_id is {hostname: [worker] name, slot: N}; ExecutedActionMetadata
 * names NAME/N. An answer to a busy report that takes the action away
 * (desired_state idle or another action: cancelled, orphaned, requeued
 * elsewhere) kills the action's sandbox through its cancel token
 * (sandbox_cancel), reports nothing for it and goes on with that answer.
 * SIGTERM or SIGINT: every slot sends prefer_being_idle, the
 * running actions finish and report, then the worker exits.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buildbarn/remoteworker/remoteworker.pb-c.h"
#include "casboxd.h"
#include "util/util.h"

typedef Buildbarn__Remoteworker__SynchronizeRequest SyncRequest;
typedef Buildbarn__Remoteworker__SynchronizeResponse SyncResponse;
typedef Buildbarn__Remoteworker__DesiredState__Executing DesiredExecuting;
typedef Buildbarn__Remoteworker__CurrentState CurrentState;
typedef Buildbarn__Remoteworker__CurrentState__Executing CurrentExecuting;
typedef Buildbarn__Remoteworker__SynchronizeRequest__WorkerIdEntry WorkerIdEntry;

#define WORKER_MAX_PROPERTIES 64
#define WORKER_RETRY_MAX_S    5
/* The deadline of every Synchronize: the scheduler holds an idle one until
 * shortly before it (or idle_poll), so a stopping worker learns within it. */
#define WORKER_CALL_TIMEOUT_MS (5u * 1000)

struct fleet_worker {
    struct casboxd *d;
    struct rpc_client *scheduler;
    struct exec_cleaner *cleaner;
    atomic_bool stopping;
    /* the platform announced, from [worker] platform */
    Build__Bazel__Remote__Execution__V2__Platform platform;
    Build__Bazel__Remote__Execution__V2__Platform__Property props[WORKER_MAX_PROPERTIES];
    Build__Bazel__Remote__Execution__V2__Platform__Property *prop_ptrs[WORKER_MAX_PROPERTIES];
    char platform_buf[1024];
};

/* What the runner is doing, reported in each busy Synchronize. */
enum worker_stage { WORKER_FETCHING, WORKER_RUNNING, WORKER_UPLOADING };

/* One running action: the runner thread fills the response. */
struct worker_run {
    struct fleet_worker *fw;
    const char *slot_name;
    char instance[512];
    struct cas_digest digest;
    uint64_t queued_us;
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    bool done;
    enum worker_stage stage;
    /* fired by the slot thread when the scheduler gives the action up */
    struct sandbox_cancel cancel;
    uint8_t *response;
    size_t response_len;
};

struct worker_slot {
    struct fleet_worker *fw;
    unsigned index;
    char index_str[16];
    char name[300]; /* NAME/N */
    pthread_t thread;
    bool started;
};

/* "OSFamily=Linux,ISA=x86-64" -> fw->platform. -EINVAL on a bad entry. */
static int worker_platform_parse(struct fleet_worker *fw, const char *spec)
{
    char *save = NULL;

    snprintf(fw->platform_buf, sizeof(fw->platform_buf), "%s", spec);
    build__bazel__remote__execution__v2__platform__init(&fw->platform);
    for (char *tok = strtok_r(fw->platform_buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        size_t i = fw->platform.n_properties;

        if (eq == NULL || eq == tok || i == WORKER_MAX_PROPERTIES)
            return -EINVAL;
        *eq = '\0';
        build__bazel__remote__execution__v2__platform__property__init(&fw->props[i]);
        fw->props[i].name = tok;
        fw->props[i].value = eq + 1;
        fw->prop_ptrs[i] = &fw->props[i];
        fw->platform.n_properties++;
    }
    fw->platform.properties = fw->prop_ptrs;
    return 0;
}

/* --- running one action (the runner thread) --- */

static void worker_run_stage(struct worker_run *run, enum worker_stage stage)
{
    pthread_mutex_lock(&run->lock);
    run->stage = stage;
    pthread_mutex_unlock(&run->lock);
}

/* exec_run's steps: what the next busy report says, and this worker's own
 * board ([http] listen) while the action runs. */
static void worker_note_step(void *ctx, enum exec_step step)
{
    struct worker_run *run = ctx;

    worker_run_stage(run, step == EXEC_STEP_INPUT_FETCH ? WORKER_FETCHING
                          : step == EXEC_STEP_EXECUTION ? WORKER_RUNNING
                                                        : WORKER_UPLOADING);
    observe_action_step(run->fw->d, run->instance, &run->digest, step);
}

/* The outputs go to the fleet's CAS (shared_storage.c's helpers, as --role
 * all with [cas] remote), then, for a clean, cacheable result only, the
 * ActionCache entry naming them. */
static int worker_store_result(struct casboxd *d, const char *instance,
                               const struct cas_digest *action, const struct exec_outcome *o,
                               struct reapi_status *st)
{
    struct cas_digest *digests = NULL;
    uint8_t *buf = NULL;
    size_t n = 0, len;
    int rc;

    rc = action_cache_result_blobs(d, o->result, &digests, &n, st);
    if (rc == 0)
        rc = shared_push(d, digests, n, st);
    if (rc == 0 && o->cacheable) {
        len = build__bazel__remote__execution__v2__action_result__get_packed_size(o->result);
        buf = malloc(len ? len : 1);
        if (buf == NULL) {
            reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            rc = -ENOMEM;
        } else {
            struct rpc_client_status gst;

            /* Under the client's instance name (shared_ac_put uses the
             * configured one): the scheduler looks it up under that. */
            build__bazel__remote__execution__v2__action_result__pack(o->result, buf);
            rc = remote_ac_put(d->ac_remote, instance, action, buf, len, &gst);
            if (rc != 0)
                reapi_status_set(st, GRPC_STATUS_UNAVAILABLE, "writing the ActionCache entry: %s",
                                 gst.message);
        }
    }
    free(buf);
    free(digests);
    return rc;
}

static void worker_fail_response(struct worker_run *run, const struct reapi_status *st)
{
    if (exec_response_pack(NULL, false, st, st->message, &run->response, &run->response_len) != 0) {
        run->response = NULL;
        run->response_len = 0;
    }
}

static void *worker_runner_main(void *arg)
{
    struct worker_run *run = arg;
    struct fleet_worker *fw = run->fw;
    struct casbox_config cfg;
    struct exec_times times = {.queued = run->queued_us, .worker_start = clock_real_us()};
    struct exec_outcome o;
    struct action *act = NULL;
    struct reapi_status st;
    char hex[CAS_HASH_HEX + 1], line[512];

    reapi_status_init(&st);
    exec_outcome_init(&o);
    casboxd_config_snapshot(fw->d, &cfg);
    snprintf(cfg.worker_name, sizeof(cfg.worker_name), "%s", run->slot_name);
    cas_digest_hex(&run->digest, hex);
    LOG_I("worker %s: running action %s/%" PRId64, run->slot_name, hex, run->digest.size);
    /* [http] listen: this worker's own pages and /metrics show its runs */
    observe_action_queued(fw->d, NULL, run->instance, &run->digest, true);
    if (execution_action_load(fw->d, run->instance, &run->digest, &act, &st) != 0) {
        LOG_I("worker %s: action %s/%" PRId64 ": %s", run->slot_name, hex, run->digest.size,
              st.message);
        worker_fail_response(run, &st);
        goto out;
    }
    worker_run_stage(run, WORKER_RUNNING); /* inputs are staged lazily: fetched as read */
    times.on_step = worker_note_step;
    times.on_step_ctx = run;
    exec_run_cancellable(&fw->d->env, &cfg, act, false, &run->cancel, &times, &o);
    times.on_step = NULL;
    observe_action_result(fw->d, run->instance, act, &times, &o);
    if (sandbox_cancel_fired(&run->cancel)) {
        /* nobody wants the result: store nothing, report nothing */
        LOG_I("worker %s: action %s/%" PRId64 " killed: the scheduler gave it up", run->slot_name,
              hex, run->digest.size);
        goto out;
    }
    worker_run_stage(run, WORKER_UPLOADING);
    if (o.result != NULL && worker_store_result(fw->d, run->instance, &run->digest, &o, &st) != 0) {
        LOG_W("worker %s: action %s/%" PRId64 ": %s", run->slot_name, hex, run->digest.size,
              st.message);
        worker_fail_response(run, &st);
        goto out;
    }
    execution_log_line(act, &times, &o, line, sizeof(line));
    LOG_I("worker %s: action %s/%" PRId64 " %s", run->slot_name, hex, run->digest.size, line);
    if (exec_response_pack(o.result, false, &o.status, o.verdict[0] ? o.verdict : o.status.message,
                           &run->response, &run->response_len) != 0) {
        run->response = NULL;
        run->response_len = 0;
    }
out:
    observe_action_finished(fw->d, run->instance, &run->digest, run->response, run->response_len);
    exec_cleaner_put(fw->cleaner, o.left);
    exec_outcome_free(&o);
    if (act != NULL)
        action_free(act);
    reapi_status_free(&st);
    pthread_mutex_lock(&run->lock);
    run->done = true;
    pthread_cond_broadcast(&run->done_cond);
    pthread_mutex_unlock(&run->lock);
    return NULL;
}

/* --- the protocol loop (the slot thread) --- */

/* One Synchronize. cur is the state to report. *resp on success. */
static int worker_sync(struct worker_slot *slot, CurrentState *cur, bool prefer_idle,
                       SyncResponse **resp, struct rpc_client_status *cst)
{
    struct fleet_worker *fw = slot->fw;
    SyncRequest req = BUILDBARN__REMOTEWORKER__SYNCHRONIZE_REQUEST__INIT;
    WorkerIdEntry host = BUILDBARN__REMOTEWORKER__SYNCHRONIZE_REQUEST__WORKER_ID_ENTRY__INIT;
    WorkerIdEntry slotn = BUILDBARN__REMOTEWORKER__SYNCHRONIZE_REQUEST__WORKER_ID_ENTRY__INIT;
    WorkerIdEntry *ids[2] = {&host, &slotn};

    host.key = "hostname";
    host.value = fw->d->cfg.worker_name;
    slotn.key = "slot";
    slotn.value = slot->index_str;
    req.n_worker_id = 2;
    req.worker_id = ids;
    req.instance_name_prefix = fw->d->cfg.worker_instance_prefix;
    req.platform = &fw->platform;
    req.size_class = (uint32_t)fw->d->cfg.worker_size_class;
    req.current_state = cur;
    req.prefer_being_idle = prefer_idle;
    return rpc_client_unary(fw->scheduler, RPC_CLIENT_SYNCHRONIZE, &req.base,
                            &buildbarn__remoteworker__synchronize_response__descriptor,
                            (ProtobufCMessage **)resp, cst);
}

static uint64_t worker_next_sync_us(const SyncResponse *r)
{
    const Google__Protobuf__Timestamp *t = r->next_synchronization_at;

    if (t == NULL || t->seconds <= 0)
        return clock_real_us();
    return (uint64_t)t->seconds * 1000000 + (uint64_t)t->nanos / 1000;
}

/* Waits for the runner until the wall-clock time until_us; true when done,
 * else *stage says what it is doing. */
static bool worker_wait_run(struct worker_run *run, uint64_t until_us, enum worker_stage *stage)
{
    struct timespec ts = {.tv_sec = (time_t)(until_us / 1000000),
                          .tv_nsec = (long)(until_us % 1000000) * 1000};
    bool done;

    pthread_mutex_lock(&run->lock);
    while (!run->done && pthread_cond_timedwait(&run->done_cond, &run->lock, &ts) == 0)
        ;
    done = run->done;
    *stage = run->stage;
    pthread_mutex_unlock(&run->lock);
    return done;
}

/* True when the answer to a busy report takes the action away: any desired
 * state but "executing this very action" (no desired state: carry on). */
static bool worker_given_up(const SyncResponse *r, const struct cas_digest *running)
{
    const DesiredExecuting *ex;
    struct cas_digest dg;
    struct reapi_status st;
    bool same;

    if (r->desired_state == NULL ||
        r->desired_state->worker_state_case ==
            BUILDBARN__REMOTEWORKER__DESIRED_STATE__WORKER_STATE__NOT_SET)
        return false;
    if (r->desired_state->worker_state_case !=
        BUILDBARN__REMOTEWORKER__DESIRED_STATE__WORKER_STATE_EXECUTING)
        return true;
    ex = r->desired_state->executing;
    if (ex == NULL)
        return false;
    reapi_status_init(&st);
    same = reapi_digest_from_proto(ex->action_digest, &dg, &st, "action_digest") == 0 &&
           cas_digest_equal(&dg, running);
    reapi_status_free(&st);
    return !same;
}

/* Runs ex to completion, reporting on the way; *next is the answer to the
 * completion (may name the next action), or NULL when it could not be
 * delivered. When the scheduler gives the action up, the action is killed
 * and *next is the answer that said so (idle, or another action). */
static void worker_execute(struct worker_slot *slot, const DesiredExecuting *ex,
                           SyncResponse **next)
{
    struct fleet_worker *fw = slot->fw;
    struct worker_run run;
    struct reapi_digest_buf db;
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    CurrentState cur = BUILDBARN__REMOTEWORKER__CURRENT_STATE__INIT;
    CurrentExecuting cex = BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__INIT;
    Build__Bazel__Remote__Execution__V2__ExecuteResponse *completed = NULL;
    struct rpc_client_status cst;
    struct reapi_status st;
    const char *prefix = fw->d->cfg.worker_instance_prefix;
    const char *suffix = ex->instance_name_suffix ? ex->instance_name_suffix : "";
    pthread_t runner;
    bool runner_started;
    enum worker_stage stage;
    uint64_t until;
    int attempts = 0;

    *next = NULL;
    memset(&run, 0, sizeof(run));
    reapi_status_init(&st);
    run.fw = fw;
    run.slot_name = slot->name;
    snprintf(run.instance, sizeof(run.instance), "%s%s%s", prefix,
             prefix[0] && suffix[0] ? "/" : "", suffix);
    run.queued_us = ex->queued_timestamp ? (uint64_t)ex->queued_timestamp->seconds * 1000000 +
                                               (uint64_t)ex->queued_timestamp->nanos / 1000
                                         : clock_real_us();
    if (reapi_digest_from_proto(ex->action_digest, &run.digest, &st, "action_digest") != 0) {
        /* nothing to run and nothing to name in a report: stay idle */
        LOG_W("worker %s: the scheduler sent a bad action: %s", slot->name, st.message);
        reapi_status_free(&st);
        return;
    }
    reapi_status_free(&st);
    if (sandbox_cancel_init(&run.cancel) != 0) {
        /* without a token the action could not be killed: leave it queued
         * for another slot (the scheduler requeues it once this slot
         * reports idle) */
        LOG_W("worker %s: cannot create a cancel token; not taking the action", slot->name);
        return;
    }
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.done_cond, NULL);
    reapi_digest_to_proto(&run.digest, &db);
    cex.action_digest = &db.pd;
    cur.worker_state_case = BUILDBARN__REMOTEWORKER__CURRENT_STATE__WORKER_STATE_EXECUTING;
    cur.executing = &cex;
    runner_started = pthread_create(&runner, NULL, worker_runner_main, &run) == 0;
    if (!runner_started) {
        reapi_status_init(&st);
        reapi_status_set(&st, GRPC_STATUS_RESOURCE_EXHAUSTED, "worker %s: cannot start a thread",
                         slot->name);
        worker_fail_response(&run, &st);
        reapi_status_free(&st);
        run.done = true;
    }

    /* Busy: report by each next_synchronization_at until the runner is done. */
    until = clock_real_us() + 1000000;
    while (!worker_wait_run(&run, until, &stage)) {
        SyncResponse *r = NULL;

        if (stage == WORKER_FETCHING) {
            cex.execution_state_case =
                BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_FETCHING_INPUTS;
            cex.fetching_inputs = &empty;
        } else if (stage == WORKER_RUNNING) {
            cex.execution_state_case =
                BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_RUNNING;
            cex.running = &empty;
        } else {
            cex.execution_state_case =
                BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_UPLOADING_OUTPUTS;
            cex.uploading_outputs = &empty;
        }
        if (worker_sync(slot, &cur, atomic_load(&fw->stopping), &r, &cst) != 0) {
            LOG_W("worker %s: Synchronize failed: %s: %s", slot->name,
                  rpc_status_code_name(cst.code), cst.message);
            until = clock_real_us() + 1000000;
            continue;
        }
        if (worker_given_up(r, &run.digest)) {
            /* Cancelled, orphaned or given elsewhere: kill the sandbox and
             * hand r back (idle, or the next action) instead of a
             * completion, which the scheduler would refuse. */
            LOG_I("worker %s: the scheduler no longer wants this action (cancelled or given "
                  "elsewhere): killing it",
                  slot->name);
            int frc = sandbox_cancel_fire(&run.cancel);

            if (frc != 0) /* cannot happen with a live eventfd; the action then runs out */
                LOG_ERRNO_E(frc, "worker %s: cannot cancel the action", slot->name);
            *next = r;
            break;
        }
        until = worker_next_sync_us(r);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    if (runner_started)
        pthread_join(runner, NULL);
    if (*next != NULL)
        goto out; /* given up: nothing to report */

    completed = run.response ? build__bazel__remote__execution__v2__execute_response__unpack(
                                   NULL, run.response_len, run.response)
                             : NULL;
    cex.execution_state_case =
        BUILDBARN__REMOTEWORKER__CURRENT_STATE__EXECUTING__EXECUTION_STATE_COMPLETED;
    cex.completed = completed;
    /* Deliver the completion; the scheduler requeues after worker_timeout
     * anyway, so retrying longer than that is pointless. */
    for (;;) {
        if (completed == NULL) {
            LOG_E("worker %s: no response to report (out of memory)", slot->name);
            break;
        }
        if (worker_sync(slot, &cur, atomic_load(&fw->stopping), next, &cst) == 0)
            break;
        *next = NULL;
        LOG_W("worker %s: reporting the completion failed: %s: %s", slot->name,
              rpc_status_code_name(cst.code), cst.message);
        if (cst.code == GRPC_STATUS_FAILED_PRECONDITION ||
            cst.code == GRPC_STATUS_INVALID_ARGUMENT || ++attempts >= 10)
            break;
        sleep(1);
    }
    if (completed != NULL)
        build__bazel__remote__execution__v2__execute_response__free_unpacked(completed, NULL);
out:
    sandbox_cancel_destroy(&run.cancel);
    free(run.response);
    pthread_cond_destroy(&run.done_cond);
    pthread_mutex_destroy(&run.lock);
}

/* An idle answer may ask for the next Synchronize later (a scheduler that
 * holds no more calls): wait until then, at most WORKER_IDLE_WAIT_MAX_S,
 * and not once the worker is stopping. */
#define WORKER_IDLE_WAIT_MAX_S 10
static void worker_sleep_until(struct fleet_worker *fw, uint64_t until_us)
{
    uint64_t limit = clock_real_us() + WORKER_IDLE_WAIT_MAX_S * 1000000ULL;

    if (until_us > limit)
        until_us = limit;
    while (!atomic_load(&fw->stopping) && clock_real_us() < until_us)
        usleep(100 * 1000);
}

static void *worker_slot_main(void *arg)
{
    struct worker_slot *slot = arg;
    struct fleet_worker *fw = slot->fw;
    Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
    CurrentState idle = BUILDBARN__REMOTEWORKER__CURRENT_STATE__INIT;
    SyncResponse *r = NULL;
    unsigned backoff = 1;
    bool failing = false, told = false; /* told: the last call said prefer_being_idle */

    idle.worker_state_case = BUILDBARN__REMOTEWORKER__CURRENT_STATE__WORKER_STATE_IDLE;
    idle.idle = &empty;
    for (;;) {
        struct rpc_client_status cst;
        bool stopping = atomic_load(&fw->stopping);

        if (r == NULL) {
            told = stopping;
            if (worker_sync(slot, &idle, stopping, &r, &cst) != 0) {
                r = NULL;
                if (stopping)
                    break; /* idle and asked to stop: nothing to hand back */
                if (!failing)
                    LOG_W("worker %s: Synchronize with %s failed: %s: %s (retrying)", slot->name,
                          fw->d->cfg.worker_scheduler, rpc_status_code_name(cst.code), cst.message);
                failing = true;
                sleep(backoff);
                backoff = backoff * 2 > WORKER_RETRY_MAX_S ? WORKER_RETRY_MAX_S : backoff * 2;
                continue;
            }
            if (failing)
                LOG_I("worker %s: connected to %s", slot->name, fw->d->cfg.worker_scheduler);
            failing = false;
            backoff = 1;
        }
        if (r->desired_state != NULL &&
            r->desired_state->worker_state_case ==
                BUILDBARN__REMOTEWORKER__DESIRED_STATE__WORKER_STATE_EXECUTING &&
            r->desired_state->executing != NULL) {
            SyncResponse *next = NULL;

            worker_execute(slot, r->desired_state->executing, &next);
            told = false;
            protobuf_c_message_free_unpacked(&r->base, NULL);
            r = next; /* the answer to the completion: maybe the next action */
            continue;
        }
        worker_sleep_until(fw, worker_next_sync_us(r));
        protobuf_c_message_free_unpacked(&r->base, NULL);
        r = NULL;
        /* Stop once the scheduler has heard prefer_being_idle (it answers
         * that at once, with no work); a SIGTERM during the call that just
         * ended makes one more. */
        if (stopping && told)
            break;
    }
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return NULL;
}

/* --- life cycle --- */

int fleet_worker_run(struct casboxd *d, const sigset_t *sigs)
{
    struct fleet_worker fw;
    struct worker_slot *slots = NULL;
    struct rpc_client_options copt = {.max_message_bytes = d->cfg.max_message_bytes,
                                      .timeout_ms = WORKER_CALL_TIMEOUT_MS};
    char err[512];
    int rc, sig;

    memset(&fw, 0, sizeof(fw));
    fw.d = d;
    atomic_init(&fw.stopping, false);
    if (worker_platform_parse(&fw, d->cfg.worker_platform) != 0) {
        fprintf(stderr, "casboxd: [worker] platform '%s': expected NAME=VALUE,NAME=VALUE\n",
                d->cfg.worker_platform);
        return -EINVAL;
    }
    rc = execution_env_init(d);
    if (rc != 0) {
        LOG_ERRNO_E(rc, "cannot prepare the scratch space under %s/cas", d->cfg.state_dir);
        return rc;
    }
    /* [client]: TLS and the token of the worker permission (auth_setup.c) */
    casboxd_client_options(&d->cfg, &copt);
    copt.max_message_bytes = d->cfg.max_message_bytes;
    copt.timeout_ms = WORKER_CALL_TIMEOUT_MS;
    rc = rpc_client_open(d->cfg.worker_scheduler, &copt, &fw.scheduler, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "casboxd: --scheduler: %s\n", err);
        return rc;
    }
    if (d->remote == NULL || d->ac_remote == NULL) {
        /* config_finish defaults both to the scheduler */
        fprintf(stderr, "casboxd: role worker needs [cas] remote and [action_cache] remote\n");
        rc = -EINVAL;
        goto out;
    }
    rc = exec_cleaner_start(&d->env, d->cfg.exec_slots * 4, &fw.cleaner);
    if (rc != 0)
        goto out;
    slots = calloc(d->cfg.exec_slots, sizeof(*slots));
    if (slots == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (unsigned i = 0; i < d->cfg.exec_slots; i++) {
        slots[i].fw = &fw;
        slots[i].index = i;
        snprintf(slots[i].index_str, sizeof(slots[i].index_str), "%u", i);
        snprintf(slots[i].name, sizeof(slots[i].name), "%s/%u", d->cfg.worker_name, i);
        if (pthread_create(&slots[i].thread, NULL, worker_slot_main, &slots[i]) != 0) {
            rc = -EAGAIN;
            break;
        }
        slots[i].started = true;
    }
    LOG_I("fleet: worker %s: %" PRIu64 " slots, scheduler %s, platform %s", d->cfg.worker_name,
          d->cfg.exec_slots, d->cfg.worker_scheduler, d->cfg.worker_platform);
    fprintf(stderr, "casboxd: worker %s running %" PRIu64 " slots for %s\n", d->cfg.worker_name,
            d->cfg.exec_slots, d->cfg.worker_scheduler);
    if (rc == 0) {
        for (;;) {
            if (sigwait(sigs, &sig) != 0 || sig == SIGHUP)
                continue;
            break;
        }
        LOG_I("signal %d: preferring to be idle; finishing the running actions", sig);
    }
    atomic_store(&fw.stopping, true);
    /* Idle slots are held in a Synchronize by the scheduler for up to
     * idle_poll; their next answer comes at once (prefer_being_idle), or
     * when the held call returns. */
    for (unsigned i = 0; slots != NULL && i < d->cfg.exec_slots; i++) {
        if (slots[i].started)
            pthread_join(slots[i].thread, NULL);
    }
    /* The spawner's waiting sandboxes hold mount namespaces with the FUSE
     * mount in them, which would keep it busy: stop it (and wait for it)
     * before main unmounts. No action runs any more. */
    if (d->spawner != NULL)
        sandbox_spawner_stop(d->spawner);
    d->spawner = NULL;
    d->env.spawner = NULL;
out:
    free(slots);
    exec_cleaner_stop(fw.cleaner);
    rpc_client_close(fw.scheduler);
    return rc;
}
