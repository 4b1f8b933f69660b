/*
 * svc_execution.c - build.bazel.remote.execution.v2.Execution (Execute,
 * WaitExecution): operations, the bounded queue and the slot threads.
 *
 * An operation goes QUEUED -> EXECUTING -> COMPLETED; every change is
 * broadcast on the operation's own condition variable (so a change wakes only
 * the streams watching that operation) and each of them sends the new state
 * as a google.longrunning.Operation. Execute and WaitExecution are
 * event-driven (rpc.h): a stream waiting for its operation is parked in
 * op->waiting without a thread, and exec_op_changed_locked resumes it; the
 * blocking part of Execute (the cache lookup, loading the action) runs on a
 * stream_threads thread first. An operation queued while a slot is
 * idle starts as EXECUTING: the slot takes it at once, and a QUEUED message
 * followed straight away by an EXECUTING one would cost the stream two sends
 * and the client two wake-ups for nothing. The final Operation carries an
 * ExecuteResponse that always has a result. Streams also send the current
 * state every EXEC_KEEPALIVE_S seconds so proxies do not drop an idle stream.
 * Finished operations stay for execution.operation_retention seconds so that
 * WaitExecution after a broken stream still gets the result.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"
#include "casboxd.h"
#include "execution_internal.h"
#include "google/protobuf/any.pb-c.h"

#define EXEC_KEEPALIVE_S      30
#define EXEC_MAX_RETAINED_OPS 100000

#define TYPE_PREFIX       "type.googleapis.com/build.bazel.remote.execution.v2."
#define METADATA_TYPE_URL TYPE_PREFIX "ExecuteOperationMetadata"
#define RESPONSE_TYPE_URL TYPE_PREFIX "ExecuteResponse"

void exec_op_unref_locked(struct exec_op *op)
{
    if (--op->refs > 0)
        return;
    if (op->action != NULL)
        action_free(op->action);
    free(op->response);
    free(op->instance);
    pthread_cond_destroy(&op->changed);
    free(op);
}

/* Drops finished operations past their retention, and the oldest finished
 * ones when the table holds too many. Called with the lock held. */
void exec_purge_locked(struct exec_service *svc)
{
    time_t now = time(NULL);
    struct casbox_config cfg;
    time_t keep;

    casboxd_config_snapshot(svc->d, &cfg);
    keep = (time_t)cfg.operation_retention;

    for (struct exec_op **pp = &svc->ops; *pp != NULL;) {
        struct exec_op *op = *pp;

        if (op->stage == EXEC_COMPLETED &&
            (now - op->completed_at > keep || svc->n_ops > EXEC_MAX_RETAINED_OPS)) {
            *pp = op->next;
            svc->n_ops--;
            exec_op_unref_locked(op);
            continue;
        }
        pp = &op->next;
    }
}

static struct exec_op *exec_find_locked(struct exec_service *svc, const char *name)
{
    for (struct exec_op *op = svc->ops; op != NULL; op = op->next) {
        if (strcmp(op->name, name) == 0)
            return op;
    }
    return NULL;
}

static struct exec_op *exec_find_inflight_locked(struct exec_service *svc, const char *instance,
                                                 const struct cas_digest *dg)
{
    for (struct exec_op *op = svc->ops; op != NULL; op = op->next) {
        if (op->stage != EXEC_COMPLETED && cas_digest_equal(&op->action_digest, dg) &&
            strcmp(op->instance, instance) == 0)
            return op;
    }
    return NULL;
}

/* --- Operation messages --- */

/* Packs an Any around msg; the value is malloc'd into any->value. */
static int exec_pack_any(Google__Protobuf__Any *any, const char *type_url,
                         const ProtobufCMessage *msg)
{
    google__protobuf__any__init(any);
    any->type_url = (char *)type_url;
    any->value.len = protobuf_c_message_get_packed_size(msg);
    any->value.data = malloc(any->value.len ? any->value.len : 1);
    if (any->value.data == NULL)
        return -ENOMEM;
    protobuf_c_message_pack(msg, any->value.data);
    return 0;
}

/* Sends the operation's current state (snapshot taken by the caller). The
 * COMPLETED one goes out with the call's OK status in one batch and ends
 * the call; another starts a send, whose completion calls sent(state). */
static int exec_send_operation(struct rpc_call *call, const char *name, enum exec_stage stage,
                               const struct cas_digest *action_digest, const uint8_t *response,
                               size_t response_len, rpc_async_fn sent, void *state)
{
    static const Build__Bazel__Remote__Execution__V2__ExecutionStage__Value stages[] = {
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTION_STAGE__VALUE__QUEUED,
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTION_STAGE__VALUE__EXECUTING,
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTION_STAGE__VALUE__COMPLETED,
    };
    Operation op = GOOGLE__LONGRUNNING__OPERATION__INIT;
    ExecuteOperationMetadata md =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTE_OPERATION_METADATA__INIT;
    Google__Protobuf__Any md_any, resp_any;
    struct reapi_unknown_out md_new;
    struct reapi_digest_buf db;
    int rc;

    reapi_digest_to_proto(action_digest, &db);
    md.stage = stages[stage];
    md.action_digest = &db.pd;
    /* API 2.3's digest_function, which the v2.2 type lacks: the one in use. */
    reapi_unknown_out_init(&md_new);
    reapi_unknown_out_varint(&md_new, REAPI_FIELD_EXECUTE_OPERATION_METADATA_DIGEST_FUNCTION,
                             REAPI_DIGEST_FUNCTION_SHA256);
    reapi_unknown_out_attach(&md_new, &md.base);
    rc = exec_pack_any(&md_any, METADATA_TYPE_URL, &md.base);
    if (rc != 0) {
        if (stage == EXEC_COMPLETED)
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return rc;
    }
    op.name = (char *)name;
    op.metadata = &md_any;
    if (stage == EXEC_COMPLETED) {
        google__protobuf__any__init(&resp_any);
        resp_any.type_url = RESPONSE_TYPE_URL;
        resp_any.value.data = (uint8_t *)response;
        resp_any.value.len = response_len;
        op.done = 1;
        op.result_case = GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE;
        op.response = &resp_any;
    }
    if (stage == EXEC_COMPLETED)
        rc = rpc_call_finish(call, &op.base, NULL);
    else
        rc = rpc_call_async_send(call, &op.base, sent, state);
    free(md_any.value.data);
    return rc;
}

static void exec_watcher_unlink_locked(struct exec_op *op, struct exec_watcher *w)
{
    for (struct exec_watcher **pp = &op->waiting; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return;
        }
    }
}

void exec_op_changed_locked(struct exec_op *op)
{
    pthread_cond_broadcast(&op->changed);
    for (struct exec_watcher *w = op->waiting; w != NULL; w = w->next)
        rpc_call_resume(w->call); /* listed: still parked */
}

/* One stream watching op: sends each state it reaches, parked in between
 * (and resending it every EXEC_KEEPALIVE_S), until the COMPLETED one ends
 * the call or the client leaves. Holds a reference on op. */
struct exec_watch {
    struct exec_service *svc;
    struct rpc_call *call;
    struct exec_op *op;
    struct exec_watcher w; /* in op->waiting while parked */
    enum exec_stage sent;
    bool first; /* (re)send the current state: at the start, as a keep-alive */
    bool listed;
};

/* Ends the watch: rc -ECANCELED when the send failed or the service stops. */
static void exec_watch_end(struct exec_watch *ew, int rc)
{
    struct exec_service *svc = ew->svc;
    struct rpc_call *call = ew->call;
    bool stopping;

    pthread_mutex_lock(&svc->lock);
    stopping = svc->stopping;
    exec_op_unref_locked(ew->op);
    pthread_mutex_unlock(&svc->lock);
    free(ew);
    if (rc == -ECANCELED && stopping)
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "casboxd is shutting down");
    else
        rpc_call_finish(call, NULL, NULL);
}

static void exec_watch_step(struct exec_watch *ew);

static void exec_watch_sent(void *state, int rc)
{
    struct exec_watch *ew = state;

    if (rc != 0)
        exec_watch_end(ew, -ECANCELED);
    else
        exec_watch_step(ew);
}

static void exec_watch_woken(void *state, int rc)
{
    struct exec_watch *ew = state;

    pthread_mutex_lock(&ew->svc->lock);
    if (ew->listed)
        exec_watcher_unlink_locked(ew->op, &ew->w);
    ew->listed = false;
    if (rc == -ETIMEDOUT)
        ew->first = true; /* resend the current state as a keep-alive */
    pthread_mutex_unlock(&ew->svc->lock);
    exec_watch_step(ew);
}

static void exec_watch_step(struct exec_watch *ew)
{
    struct exec_service *svc = ew->svc;
    struct exec_op *op = ew->op;
    enum exec_stage stage;
    int rc;

    pthread_mutex_lock(&svc->lock);
    stage = op->stage;
    if (ew->first || stage != ew->sent) {
        char name[sizeof(op->name)];
        struct cas_digest dg = op->action_digest;

        memcpy(name, op->name, sizeof(name));
        /* Not over the network with the lock: op stays alive by our ref and
         * its response bytes are immutable once COMPLETED. */
        pthread_mutex_unlock(&svc->lock);
        ew->first = false;
        ew->sent = stage;
        if (stage == EXEC_COMPLETED) {
            /* ends the call; the message is packed before it returns */
            exec_send_operation(ew->call, name, stage, &dg, op->response, op->response_len, NULL,
                                NULL);
            pthread_mutex_lock(&svc->lock);
            exec_op_unref_locked(op);
            pthread_mutex_unlock(&svc->lock);
            free(ew);
            return;
        }
        if (exec_send_operation(ew->call, name, stage, &dg, NULL, 0, exec_watch_sent, ew) != 0)
            exec_watch_end(ew, -ECANCELED);
        return;
    }
    if (svc->stopping) {
        pthread_mutex_unlock(&svc->lock);
        exec_watch_end(ew, -ECANCELED);
        return;
    }
    ew->w.call = ew->call;
    ew->w.next = op->waiting;
    op->waiting = &ew->w;
    ew->listed = true;
    rc = rpc_call_park(ew->call, EXEC_KEEPALIVE_S * 1000, exec_watch_woken, ew);
    if (rc != 0) {
        exec_watcher_unlink_locked(op, &ew->w);
        ew->listed = false;
    }
    pthread_mutex_unlock(&svc->lock);
    if (rc != 0)
        exec_watch_end(ew, -ECANCELED);
}

/* Streams op's states to the client until it completes (the last message
 * ends the call) or the client leaves, without a thread. Takes over a
 * reference on op. */
static void exec_watch(struct exec_service *svc, struct rpc_call *call, struct exec_op *op)
{
    struct exec_watch *ew = calloc(1, sizeof(*ew));

    if (ew == NULL) {
        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(op);
        pthread_mutex_unlock(&svc->lock);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    *ew = (struct exec_watch){.svc = svc, .call = call, .op = op, .first = true};
    exec_watch_step(ew);
}

static void exec_new_name(char *name, size_t len)
{
    unsigned char r[16];
    char hex[33];

    if (RAND_bytes(r, sizeof(r)) != 1) {
        uint64_t t = clock_real_us();

        memcpy(r, &t, 8);
        memcpy(r + 8, &name, 8);
    }
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    snprintf(name, len, "operations/%s", hex);
}

/* Sends a single completed Operation (cache hit, or error), which ends the call. */
static void exec_answer_now(struct rpc_call *call, const struct cas_digest *dg, const uint8_t *resp,
                            size_t len)
{
    char name[64];

    exec_new_name(name, sizeof(name));
    exec_send_operation(call, name, EXEC_COMPLETED, dg, resp, len, NULL, NULL);
}

/* A cache hit answers at once; returns true when it did. */
static bool exec_try_cache(struct casboxd *d, struct rpc_call *call, const char *instance,
                           const struct cas_digest *dg)
{
    Build__Bazel__Remote__Execution__V2__ActionResult *result = NULL;
    uint8_t *resp = NULL;
    void *buf = NULL;
    size_t len, resp_len;
    bool hit = false;
    struct reapi_status st;

    reapi_status_init(&st);
    if (shared_ac_get(d, instance, dg, &buf, &len, &st) != 0) {
        observe_cache_lookup(d, "execute", OBSERVE_CACHE_MISS);
        goto out;
    }
    result = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, buf);
    /* Not complete, or cannot be told: run it (a remote that is down then
     * shows in the action's own status). */
    if (result == NULL || action_cache_result_complete(d, result, &st) != 1) {
        observe_cache_lookup(d, "execute",
                             result ? OBSERVE_CACHE_MISS_BLOB_GONE : OBSERVE_CACHE_MISS);
        goto out;
    }
    observe_cache_lookup(d, "execute", OBSERVE_CACHE_HIT);
    if (exec_response_pack(result, true, NULL, NULL, &resp, &resp_len) != 0)
        goto out;
    exec_answer_now(call, dg, resp, resp_len);
    hit = true;
out:
    reapi_status_free(&st);
    free(resp);
    if (result != NULL)
        build__bazel__remote__execution__v2__action_result__free_unpacked(result, NULL);
    free(buf);
    return hit;
}

/* Execute's first part, on a stream_threads thread: it may block (the
 * ActionCache and the action's blobs may be on [cas] remote). */
struct exec_execute_job {
    struct casboxd *d;
    struct rpc_call *call;
};

static void exec_execute_run(void *state, int unused)
{
    struct exec_execute_job *job = state;
    struct casboxd *d = job->d;
    struct rpc_call *call = job->call;
    struct exec_service *svc = d->exec;
    ExecuteRequest *req = NULL;
    struct exec_op *op = NULL;
    struct action *act = NULL;
    struct reapi_status st;
    struct cas_digest dg;
    const char *instance;
    uint8_t *resp = NULL;
    size_t resp_len;
    int rc;

    (void)unused;
    free(job);
    reapi_status_init(&st);
    if (rpc_call_request(call, &build__bazel__remote__execution__v2__execute_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "ExecuteRequest not parseable");
        goto out;
    }
    rc = reapi_digest_function_check(&req->base, REAPI_FIELD_EXECUTE_REQUEST_DIGEST_FUNCTION, &st);
    if (rc == 0)
        rc = reapi_digest_from_proto(req->action_digest, &dg, &st, "action_digest");
    if (rc != 0) {
        rpc_call_finish(call, NULL, &st);
        goto out;
    }
    instance = req->instance_name ? req->instance_name : "";
    if (rpc_call_authorize(call, instance, &st) != 0) {
        rpc_call_finish(call, NULL, &st);
        goto out;
    }
    if (!req->skip_cache_lookup && exec_try_cache(d, call, instance, &dg))
        goto out;

    /* Join an identical action already queued or running. */
    pthread_mutex_lock(&svc->lock);
    op = exec_find_inflight_locked(svc, instance, &dg);
    if (op != NULL)
        op->refs++;
    pthread_mutex_unlock(&svc->lock);
    if (op != NULL) {
        exec_watch(svc, call, op);
        goto out;
    }

    if (execution_action_load(d, instance, &dg, &act, &st) != 0) {
        char hex[CAS_HASH_HEX + 1];

        cas_digest_hex(&dg, hex);
        LOG_I("action %s/%" PRId64 ": %s", hex, dg.size, st.message);
        if (exec_response_pack(NULL, false, &st, st.message, &resp, &resp_len) != 0) {
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        exec_answer_now(call, &dg, resp, resp_len);
        goto out;
    }

    op = calloc(1, sizeof(*op));
    if (op == NULL || (op->instance = strdup(instance)) == NULL) {
        free(op);
        op = NULL;
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    pthread_cond_init(&op->changed, NULL);
    exec_new_name(op->name, sizeof(op->name));
    op->action_digest = dg;
    op->action = act;
    act = NULL;
    op->stage = EXEC_QUEUED;
    op->times.queued = clock_real_us();
    op->refs = 2; /* the table and this watcher */

    pthread_mutex_lock(&svc->lock);
    exec_purge_locked(svc);
    if (svc->sched != NULL && !svc->stopping) {
        /* role scheduler: the fleet's queue, drained by workers' Synchronize */
        int32_t priority = req->execution_policy ? req->execution_policy->priority : 0;

        if (fleet_scheduler_submit_locked(svc, op, call, priority, &st) != 0) {
            op->refs = 1;
            exec_op_unref_locked(op);
            pthread_mutex_unlock(&svc->lock);
            rpc_call_finish(call, NULL, &st);
            goto out;
        }
        op->next = svc->ops;
        svc->ops = op;
        svc->n_ops++;
        /* on the board before a worker can finish it (under the lock) */
        observe_action_queued(d, call, instance, &dg, false);
        pthread_mutex_unlock(&svc->lock);
        exec_watch(svc, call, op);
        goto out;
    }
    if (svc->queued >= svc->d->cfg.exec_queue_length || svc->stopping) {
        bool stopping = svc->stopping;

        op->refs = 1;
        exec_op_unref_locked(op);
        pthread_mutex_unlock(&svc->lock);
        if (stopping)
            rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "casboxd is shutting down");
        else
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                          "execution queue is full (%" PRIu64
                          " actions waiting, execution.queue_length)",
                          svc->d->cfg.exec_queue_length);
        goto out;
    }
    op->next = svc->ops;
    svc->ops = op;
    svc->n_ops++;
    if (svc->queue_tail != NULL)
        svc->queue_tail->queue_next = op;
    else
        svc->queue_head = op;
    svc->queue_tail = op;
    svc->queued++;
    if (svc->queued <= svc->idle_slots)
        op->stage = EXEC_EXECUTING; /* every queued action has an idle slot */
    /* on the board before a slot can finish it (under the lock) */
    observe_action_queued(d, call, instance, &dg, op->stage == EXEC_EXECUTING);
    pthread_cond_signal(&svc->work);
    pthread_mutex_unlock(&svc->lock);

    exec_watch(svc, call, op);
out:
    if (act != NULL)
        action_free(act);
    free(resp);
    reapi_status_free(&st);
    if (req != NULL)
        protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void exec_execute(void *ctx, struct rpc_call *call)
{
    struct exec_execute_job *job = malloc(sizeof(*job));

    if (job == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    *job = (struct exec_execute_job){.d = ctx, .call = call};
    if (rpc_call_offload(call, RPC_POOL_STREAM, exec_execute_run, job) != 0) {
        free(job);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "server busy: too many calls in flight (server.max_inflight_calls)");
    }
}

static void exec_wait_execution(void *ctx, struct rpc_call *call)
{
    struct casboxd *d = ctx;
    struct exec_service *svc = d->exec;
    WaitExecutionRequest *req = NULL;
    struct exec_op *op;
    struct reapi_status st;

    reapi_status_init(&st);
    if (rpc_call_request(call,
                         &build__bazel__remote__execution__v2__wait_execution_request__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "WaitExecutionRequest not parseable");
        return;
    }
    pthread_mutex_lock(&svc->lock);
    op = req->name ? exec_find_locked(svc, req->name) : NULL;
    if (op != NULL)
        op->refs++;
    pthread_mutex_unlock(&svc->lock);
    if (op == NULL) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "operation '%.200s' is unknown or expired",
                      req->name ? req->name : "");
    } else if (rpc_call_authorize(call, op->instance, &st) != 0) {
        /* The operation's instance is the one its Execute named. */
        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(op);
        pthread_mutex_unlock(&svc->lock);
        rpc_call_finish(call, NULL, &st);
    } else {
        exec_watch(svc, call, op);
    }
    reapi_status_free(&st);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* --- slots --- */

/* Publishes op's result and sends the final Operation on every stream
 * blocked waiting for it: those are marked taken (they leave their call to
 * this thread) until their batch is started. Streams busy elsewhere see the
 * new stage when they next look. */
void exec_slot_complete(struct exec_service *svc, struct exec_op *op, uint8_t *resp,
                        size_t resp_len, const struct exec_times *times)
{
    pthread_mutex_lock(&svc->lock);
    if (svc->stopping) {
        /* Killed by the stop (or done just as it began): no result to hand
         * out. The op stays EXECUTING, and its watchers, woken here, end
         * their calls UNAVAILABLE so that the client retries elsewhere or
         * later, as they do when they see the stop first. */
        exec_op_changed_locked(op);
        pthread_mutex_unlock(&svc->lock);
        free(resp);
        return;
    }
    op->response = resp;
    op->response_len = resp_len;
    op->times = *times;
    op->stage = EXEC_COMPLETED;
    op->completed_at = time(NULL);
    exec_op_changed_locked(op); /* its streams send the result */
    pthread_mutex_unlock(&svc->lock);
}

static void exec_slot_log(const struct exec_op *op, const char *log_line)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(&op->action_digest, hex);
    LOG_I("action %s/%" PRId64 " %s: %s", hex, op->action_digest.size, op->name,
          log_line[0] ? log_line : "done");
}

static void *exec_slot_main(void *arg)
{
    struct exec_service *svc = arg;
    char log_line[512];

    for (;;) {
        struct exec_op *op;
        struct action *act;
        struct exec_times times;
        struct exec_leftovers *left = NULL;
        uint8_t *resp = NULL;
        size_t resp_len = 0;
        int rc;

        pthread_mutex_lock(&svc->lock);
        svc->idle_slots++;
        while (svc->queue_head == NULL && !svc->stopping)
            pthread_cond_wait(&svc->work, &svc->lock);
        svc->idle_slots--;
        if (svc->stopping) {
            pthread_mutex_unlock(&svc->lock);
            break;
        }
        op = svc->queue_head;
        svc->queue_head = op->queue_next;
        if (svc->queue_head == NULL)
            svc->queue_tail = NULL;
        svc->queued--;
        if (op->stage != EXEC_EXECUTING) {
            op->stage = EXEC_EXECUTING;
            exec_op_changed_locked(op);
        }
        op->refs++;
        act = op->action;
        op->action = NULL;
        times = op->times;
        pthread_mutex_unlock(&svc->lock);

        times.worker_start = clock_real_us();
        observe_action_started(svc->d, op->instance, &op->action_digest);
        log_line[0] = '\0';
        rc = execution_run_action(svc->d, op->instance, act, &times, &resp, &resp_len, log_line,
                                  sizeof(log_line), &left);
        action_free(act);
        if (rc != 0 || resp == NULL) {
            struct reapi_status st;

            reapi_status_init(&st);
            reapi_status_set(&st, GRPC_STATUS_INTERNAL, "execution failed: %s", strerror(-rc));
            free(resp);
            resp = NULL;
            if (exec_response_pack(NULL, false, &st, st.message, &resp, &resp_len) != 0)
                resp_len = 0;
        }
        /* Publish first; the log line and the clean-up are not the
         * client's to wait for. op stays alive by this slot's reference. */
        exec_slot_complete(svc, op, resp, resp_len, &times);
        /* op->response is set and immutable once COMPLETED (NULL when the
         * stop came first); this slot's reference keeps op alive */
        observe_action_finished(svc->d, op->instance, &op->action_digest,
                                op->stage == EXEC_COMPLETED ? op->response : NULL,
                                op->response_len);

        exec_slot_log(op, log_line);
        exec_cleaner_put(svc->cleaner, left);

        pthread_mutex_lock(&svc->lock);
        exec_op_unref_locked(op);
        pthread_mutex_unlock(&svc->lock);
    }
    return NULL;
}

void exec_service_counts(struct exec_service *svc, uint64_t *queued, uint64_t *running,
                         uint64_t *workers)
{
    pthread_mutex_lock(&svc->lock);
    *queued = svc->sched ? sched_queued(svc->sched) : svc->queued;
    *running = svc->n_slots > svc->idle_slots ? svc->n_slots - svc->idle_slots : 0;
    *workers = svc->sched ? sched_workers(svc->sched) : 0;
    pthread_mutex_unlock(&svc->lock);
}

int exec_service_start(struct casboxd *d, struct exec_service **out)
{
    struct exec_service *svc = calloc(1, sizeof(*svc));
    int rc;

    if (svc == NULL)
        return -ENOMEM;
    svc->d = d;
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->work, NULL);
    pthread_cond_init(&svc->fleet_work, NULL);
    if (strcmp(d->cfg.role, "scheduler") == 0) {
        /* no slots: workers take the actions (svc_operation_queue.c) */
        rc = fleet_scheduler_start(svc);
        if (rc != 0) {
            exec_service_stop(svc);
            return rc;
        }
        *out = svc;
        return 0;
    }
    rc = execution_env_init(d);
    if (rc != 0) {
        LOG_ERRNO_E(rc, "cannot prepare the scratch space under %s/cas", d->cfg.state_dir);
        exec_service_stop(svc);
        return rc;
    }
    rc = exec_cleaner_start(&d->env, d->cfg.exec_slots * EXEC_CLEANUP_PER_SLOT, &svc->cleaner);
    if (rc != 0) {
        exec_service_stop(svc);
        return rc;
    }
    svc->slots = calloc(d->cfg.exec_slots, sizeof(*svc->slots));
    if (svc->slots == NULL) {
        exec_service_stop(svc);
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < d->cfg.exec_slots; i++) {
        rc = pthread_create(&svc->slots[i], NULL, exec_slot_main, svc);
        if (rc != 0) {
            exec_service_stop(svc);
            return -rc;
        }
        svc->n_slots++;
    }
    *out = svc;
    return 0;
}

void exec_service_begin_stop(struct exec_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    svc->stopping = true;
    pthread_cond_broadcast(&svc->work);
    for (struct exec_op *op = svc->ops; op != NULL; op = op->next)
        exec_op_changed_locked(op);
    pthread_mutex_unlock(&svc->lock);
    if (svc->sched != NULL)
        fleet_scheduler_begin_stop(svc);
    /* Running actions are killed, not waited for: a stop must not take as
     * long as the longest timeout. Their results are not cached. */
    sandbox_spawner_cancel(svc->d->spawner);
}

void exec_service_stop(struct exec_service *svc)
{
    if (svc == NULL)
        return;
    exec_service_begin_stop(svc);
    for (uint64_t i = 0; i < svc->n_slots; i++)
        pthread_join(svc->slots[i], NULL);
    free(svc->slots);
    if (svc->cleaner != NULL)
        exec_cleaner_stop(svc->cleaner); /* after the slots: it drains what they left */
    if (svc->sched != NULL)
        fleet_scheduler_stop(svc); /* drops the references its tasks hold */
    while (svc->ops != NULL) {
        struct exec_op *op = svc->ops;

        svc->ops = op->next;
        exec_op_unref_locked(op);
    }
    pthread_cond_destroy(&svc->work);
    pthread_cond_destroy(&svc->fleet_work);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

const struct rpc_method execution_methods[] = {
    {"/build.bazel.remote.execution.v2.Execution/Execute", RPC_SERVER_STREAM, RPC_POOL_EVENT,
     exec_execute, AUTH_PERM_EXECUTE},
    {"/build.bazel.remote.execution.v2.Execution/WaitExecution", RPC_SERVER_STREAM, RPC_POOL_EVENT,
     exec_wait_execution, AUTH_PERM_EXECUTE},
};
const size_t execution_n_methods = sizeof(execution_methods) / sizeof(execution_methods[0]);
