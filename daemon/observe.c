/*
 * observe.c - what casboxd counts and shows: the metrics registry and the
 * daemon's own families (CAS, ActionCache, execution, FUSE, sandbox), the
 * board of running and finished actions, and the HTTP server that serves
 * both ([http] listen).
 *
 * Counts that another part already keeps (the CAS's size, evictions and
 * corrupt blobs; the execution queue) are read at scrape time by collectors
 * rather than counted again on the hot path. The services call the
 * observe_* functions below once per request or per action; all of them do
 * nothing when d->obs is NULL.
 *
 * Adding a metric: register its family in observe_register() and record it
 * where it happens, or add a collector. The fleet's gauges (workers by
 * state, per-queue queued/executing) are read from sched/ by a collector
 * on a scheduler; its counters (requeues, worker losses) are counted by
 * svc_operation_queue.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "casboxd.h"
#include "fuse/casfs.h"
#include "metrics/metrics.h"
#include "sched/sched.h"
#include "util/util.h"
#include "web/web.h"

#define OBSERVE_METADATA_KEY "build.bazel.remote.execution.v2.requestmetadata-bin"
/* Fleet queue label sets (platform, size class) exported so far: each is
 * set every scrape (0 once empty); past this many, new ones count as
 * platform "other", so the series stay bounded. */
#define OBSERVE_FLEET_QUEUES 64

struct observe_fleet_queue {
    char platform[96];
    char size_class[16];
};

struct observe {
    struct metrics *metrics;
    struct web_board *board;
    struct web_server *web;
    char grpc_url[300];
    struct metrics_family *cas_blobs, *cas_bytes, *cas_evicted_blobs, *cas_evicted_bytes,
        *cas_corrupt, *cas_transfer_blobs, *cas_transfer_bytes, *find_missing_asked,
        *find_missing_missing, *ac_lookups, *actions, *queue_length, *running, *queue_wait,
        *stage_seconds, *sandbox_setup, *fuse_files, *fuse_bytes, *fuse_requests, *fleet_workers,
        *fleet_losses, *fleet_requeues, *input_bytes, *output_bytes, *fleet_queued,
        *fleet_executing, *by_stage, *remote_fetches, *remote_fetched_bytes, *remote_fetch_failures,
        *remote_rejected, *remote_pushed_blobs, *remote_pushed_bytes, *remote_find_missing,
        *cas_refused, *cas_limit;
    struct observe_fleet_queue fleet_queues[OBSERVE_FLEET_QUEUES];
    size_t n_fleet_queues;
    pthread_mutex_t fleet_lock; /* the two above: scrapes may run at once */
};

/* [cas] remote: what remote/ counts, read at scrape time (zero without a
 * remote). */
static void observe_register_remote(struct observe *o)
{
    struct metrics *m = o->metrics;

    o->remote_fetches = metrics_counter(m, "casbox_cas_remote_fetches_total",
                                        "[cas] remote: blobs fetched from the remote CAS into the "
                                        "local one (read-through), verified.",
                                        NULL);
    o->remote_fetched_bytes = metrics_counter(m, "casbox_cas_remote_fetched_bytes_total",
                                              "[cas] remote: bytes of the blobs fetched.", NULL);
    o->remote_fetch_failures = metrics_counter(
        m, "casbox_cas_remote_fetch_failures_total",
        "[cas] remote: fetches that failed (not found, unreachable, wrong bytes).", NULL);
    o->remote_rejected = metrics_counter(m, "casbox_cas_remote_rejected_blobs_total",
                                         "[cas] remote: fetched bytes that did not match their "
                                         "digest (not stored).",
                                         NULL);
    o->remote_pushed_blobs =
        metrics_counter(m, "casbox_cas_remote_pushed_blobs_total",
                        "[cas] remote: blobs written through to the remote.", NULL);
    o->remote_pushed_bytes =
        metrics_counter(m, "casbox_cas_remote_pushed_bytes_total",
                        "[cas] remote: bytes written through to the remote.", NULL);
    o->remote_find_missing =
        metrics_counter(m, "casbox_cas_remote_find_missing_calls_total",
                        "[cas] remote: FindMissingBlobs calls to the remote.", NULL);
}

static void observe_collect_remote(struct observe *o, struct remote *r)
{
    struct remote_stats rs;

    remote_get_stats(r, &rs);
    metrics_counter_set(o->remote_fetches, NULL, (double)rs.fetched_blobs);
    metrics_counter_set(o->remote_fetched_bytes, NULL, (double)rs.fetched_bytes);
    metrics_counter_set(o->remote_fetch_failures, NULL, (double)rs.fetch_failures);
    metrics_counter_set(o->remote_rejected, NULL, (double)rs.rejected_blobs);
    metrics_counter_set(o->remote_pushed_blobs, NULL, (double)rs.pushed_blobs);
    metrics_counter_set(o->remote_pushed_bytes, NULL, (double)rs.pushed_bytes);
    metrics_counter_set(o->remote_find_missing, NULL, (double)rs.find_missing_calls);
}

static void observe_register(struct observe *o)
{
    struct metrics *m = o->metrics;
    const double *lat = metrics_latency_buckets;
    size_t n_lat = metrics_latency_n_buckets;

    o->cas_blobs = metrics_gauge(m, "casbox_cas_blobs", "Blobs stored in the local CAS.", NULL);
    o->cas_bytes =
        metrics_gauge(m, "casbox_cas_bytes", "Bytes stored in the local CAS (blob sizes).", NULL);
    o->cas_evicted_blobs =
        metrics_counter(m, "casbox_cas_evicted_blobs_total",
                        "Blobs evicted to keep the CAS under [cas] max_bytes.", NULL);
    o->cas_evicted_bytes =
        metrics_counter(m, "casbox_cas_evicted_bytes_total",
                        "Bytes evicted to keep the CAS under [cas] max_bytes.", NULL);
    o->cas_refused = metrics_counter(m, "casbox_cas_refused_blobs_total",
                                     "Action outputs refused as larger than [cas] "
                                     "max_blob_percent of the CAS.",
                                     NULL);
    o->cas_limit = metrics_gauge(m, "casbox_cas_limit_bytes",
                                 "The limit the CAS evicts against: the smaller of [cas] "
                                 "max_bytes and what its filesystem can hold.",
                                 NULL);
    o->cas_corrupt = metrics_counter(m, "casbox_cas_verification_failures_total",
                                     "Blobs found not to match their digest (and removed).", NULL);
    o->cas_transfer_blobs = metrics_counter(
        m, "casbox_cas_transfer_blobs_total",
        "Blobs written by clients or read by them, by direction and API.", "direction,api");
    o->cas_transfer_bytes = metrics_counter(
        m, "casbox_cas_transfer_bytes_total",
        "Blob bytes written by clients or read by them, by direction and API.", "direction,api");
    observe_register_remote(o);
    o->find_missing_asked = metrics_counter(m, "casbox_cas_find_missing_digests_total",
                                            "Digests asked about in FindMissingBlobs.", NULL);
    o->find_missing_missing =
        metrics_counter(m, "casbox_cas_find_missing_missing_total",
                        "Digests FindMissingBlobs answered as missing.", NULL);
    o->ac_lookups = metrics_counter(
        m, "casbox_action_cache_lookups_total",
        "ActionCache lookups by GetActionResult or Execute, by result (hit, miss, or "
        "miss_blob_gone: the entry referenced a blob no longer in the CAS).",
        "via,result");
    o->actions = metrics_counter(
        m, "casbox_execution_actions_total",
        "Actions run, by outcome: ok, exit_nonzero, timeout, limit_memory, limit_pids, limit_cpu, "
        "limit_output, error.",
        "outcome");
    o->queue_length =
        metrics_gauge(m, "casbox_execution_queue_length", "Actions waiting for a slot.", NULL);
    o->running = metrics_gauge(m, "casbox_execution_running", "Actions running on a slot.", NULL);
    o->fleet_workers = metrics_gauge(m, "casbox_fleet_workers",
                                     "Role scheduler: worker slots known (Synchronize), by state: "
                                     "idle, busy, draining (drained or stopping).",
                                     "state");
    o->fleet_queued = metrics_gauge(m, "casbox_fleet_queued_actions",
                                    "Role scheduler: actions waiting for a worker, by queue "
                                    "(platform, size class).",
                                    "platform,size_class");
    o->fleet_executing = metrics_gauge(m, "casbox_fleet_executing_actions",
                                       "Role scheduler: actions on a worker, by queue (platform, "
                                       "size class).",
                                       "platform,size_class");
    o->fleet_losses = metrics_counter(m, "casbox_fleet_worker_losses_total",
                                      "Role scheduler: worker slots lost (silent past "
                                      "scheduler.worker_timeout, or restarted).",
                                      NULL);
    o->fleet_requeues = metrics_counter(m, "casbox_fleet_requeues_total",
                                        "Role scheduler: actions put back in the queue after "
                                        "their worker was lost.",
                                        NULL);
    o->by_stage =
        metrics_gauge(m, "casbox_execution_actions_by_stage",
                      "Actions queued or running now, by stage: queued, executing (taken, "
                      "step not reported yet), input_fetch, running, output_upload.",
                      "stage");
    o->queue_wait = metrics_histogram(m, "casbox_execution_queue_wait_seconds",
                                      "Time actions waited for a slot.", NULL, lat, n_lat);
    o->stage_seconds = metrics_histogram(
        m, "casbox_execution_stage_duration_seconds",
        "Time per stage of an action: queued, input_fetch (staging), execution, output_upload.",
        "stage", lat, n_lat);
    o->sandbox_setup = metrics_histogram(
        m, "casbox_sandbox_setup_seconds",
        "Execution stage time outside the command itself: sandbox set-up and tear-down.", NULL, lat,
        n_lat);
    o->fuse_files = metrics_counter(m, "casbox_fuse_files_opened_total",
                                    "Input files opened through the FUSE mount, by how they were "
                                    "served (fuse, passthrough).",
                                    "mode");
    o->fuse_bytes = metrics_counter(m, "casbox_fuse_read_bytes_total",
                                    "Bytes of input files served by FUSE reads.", NULL);
    o->fuse_requests =
        metrics_counter(m, "casbox_fuse_requests_total",
                        "FUSE requests served by the input-tree mount, by op.", "op");
    o->input_bytes = metrics_counter(m, "casbox_execution_input_bytes_total",
                                     "Bytes of input trees staged for actions.", NULL);
    o->output_bytes = metrics_counter(m, "casbox_execution_output_bytes_total",
                                      "Bytes of output files collected from actions.", NULL);
}

/* The index of (platform, size class) among the exported label sets,
 * adding it while there is room; the last one is "other". */
static size_t observe_fleet_queue(struct observe *o, const char *platform, uint32_t size_class)
{
    struct observe_fleet_queue *q;
    char cls[16];

    snprintf(cls, sizeof(cls), "%" PRIu32, size_class);
    for (size_t i = 0; i < o->n_fleet_queues; i++) {
        q = &o->fleet_queues[i];
        if (strcmp(q->platform, platform) == 0 && strcmp(q->size_class, cls) == 0)
            return i;
    }
    if (o->n_fleet_queues == OBSERVE_FLEET_QUEUES - 1) {
        platform = "other";
        snprintf(cls, sizeof(cls), "any");
    } else if (o->n_fleet_queues == OBSERVE_FLEET_QUEUES) {
        return OBSERVE_FLEET_QUEUES - 1;
    }
    q = &o->fleet_queues[o->n_fleet_queues++];
    snprintf(q->platform, sizeof(q->platform), "%s", platform);
    snprintf(q->size_class, sizeof(q->size_class), "%s", cls);
    return o->n_fleet_queues - 1;
}

/* Role scheduler: slots by state, actions by queue (every label set once
 * exported is set again, 0 when its queue is empty). */
static void observe_collect_fleet(struct casboxd *d, struct observe *o)
{
    struct sched_counts c;
    double queued[OBSERVE_FLEET_QUEUES] = {0}, executing[OBSERVE_FLEET_QUEUES] = {0};

    fleet_scheduler_counts(d->exec, &c);
    pthread_mutex_lock(&o->fleet_lock);
    metrics_gauge_set(o->fleet_workers, METRICS_LABELS("idle"), (double)c.idle);
    metrics_gauge_set(o->fleet_workers, METRICS_LABELS("busy"), (double)c.busy);
    metrics_gauge_set(o->fleet_workers, METRICS_LABELS("draining"), (double)c.draining);
    for (size_t i = 0; i < c.n_queues; i++) {
        size_t q = observe_fleet_queue(o, c.queues[i].platform, c.queues[i].size_class);

        queued[q] += (double)c.queues[i].queued;
        executing[q] += (double)c.queues[i].executing;
    }
    for (size_t i = 0; i < o->n_fleet_queues; i++) {
        const char *const *labels =
            METRICS_LABELS(o->fleet_queues[i].platform, o->fleet_queues[i].size_class);

        metrics_gauge_set(o->fleet_queued, labels, queued[i]);
        metrics_gauge_set(o->fleet_executing, labels, executing[i]);
    }
    pthread_mutex_unlock(&o->fleet_lock);
}

static void observe_collect(void *ctx, struct metrics *m)
{
    struct casboxd *d = ctx;
    struct observe *o = d->obs;
    struct cas_store_stats st;
    uint64_t queued = 0, running = 0, workers = 0, stages[WEB_STAGE_COUNT];

    (void)m;
    cas_store_get_stats(d->store, &st);
    metrics_gauge_set(o->cas_blobs, NULL, (double)st.blobs);
    metrics_gauge_set(o->cas_bytes, NULL, (double)st.bytes);
    metrics_counter_set(o->cas_evicted_blobs, NULL, (double)st.evicted_blobs);
    metrics_counter_set(o->cas_evicted_bytes, NULL, (double)st.evicted_bytes);
    metrics_counter_set(o->cas_corrupt, NULL, (double)st.corrupt_blobs);
    metrics_counter_set(o->cas_refused, NULL, (double)st.refused_blobs);
    metrics_gauge_set(o->cas_limit, NULL, (double)st.limit_bytes);
    if (d->fs != NULL) {
        struct casfs_stats fst;

        casfs_get_stats(d->fs, &fst);
        for (int i = 0; i < CASFS_OP_COUNT; i++)
            metrics_counter_set(o->fuse_requests, METRICS_LABELS(casfs_op_name(i)),
                                (double)fst.requests[i]);
        metrics_counter_set(o->fuse_bytes, NULL, (double)fst.bytes_read);
    }
    if (d->remote != NULL)
        observe_collect_remote(o, d->remote);
    web_board_count_stages(o->board, stages);
    for (int i = 0; i < WEB_STAGE_DONE; i++)
        metrics_gauge_set(o->by_stage, METRICS_LABELS(web_stage_name(i)), (double)stages[i]);
    if (d->exec != NULL) {
        exec_service_counts(d->exec, &queued, &running, &workers);
        metrics_gauge_set(o->queue_length, NULL, (double)queued);
        metrics_gauge_set(o->running, NULL, (double)running);
        if (strcmp(d->cfg.role, "scheduler") == 0)
            observe_collect_fleet(d, o);
    }
}

int observe_start(struct casboxd *d)
{
    struct observe *o = calloc(1, sizeof(*o));
    int rc;

    if (o == NULL)
        return -ENOMEM;
    rc = metrics_new(NULL, &o->metrics);
    if (rc == 0)
        rc = web_board_new(d->cfg.http_history_size, &o->board);
    if (rc == 0)
        rc = metrics_process_register(o->metrics);
    if (rc == 0)
        rc = metrics_collector_add(o->metrics, observe_collect, d);
    if (rc != 0) {
        web_board_free(o->board);
        metrics_free(o->metrics);
        free(o);
        return rc;
    }
    observe_register(o);
    pthread_mutex_init(&o->fleet_lock, NULL);
    d->obs = o;
    return 0;
}

struct metrics *observe_metrics(struct casboxd *d)
{
    return d->obs ? d->obs->metrics : NULL;
}

/* [auth] on: the pages need read on every instance (a line without
 * instance prefixes), since they show actions of all of them: a bearer
 * token, or with [tls] client_ca a client certificate, judged as the gRPC
 * side judges them. */
static int observe_authorize(void *ctx, const struct web_peer *wp)
{
    struct casboxd *d = ctx;
    struct auth_policy *p = auth_guard_acquire(&d->auth);
    struct auth_peer peer;
    struct auth_identity id;
    const char *names[WEB_PEER_NAMES];
    char reason[160];
    int rc = 0;

    if (p == NULL || !auth_policy_enabled(p))
        goto out;
    memset(&peer, 0, sizeof(peer));
    if (wp->authorization != NULL && strncasecmp(wp->authorization, "Bearer ", 7) == 0) {
        peer.token = wp->authorization + 7;
        peer.token_len = strlen(peer.token);
    }
    for (size_t i = 0; i < wp->n_names; i++)
        names[i] = wp->names[i];
    peer.names = names;
    peer.n_names = wp->n_names;
    peer.has_certificate = wp->has_certificate;
    auth_policy_identify(p, &peer, &id);
    if (auth_identity_check(&id, AUTH_PERM_READ, "", reason, sizeof(reason)) != AUTH_OK)
        rc = -EACCES;
out:
    if (p != NULL)
        auth_guard_release(&d->auth, p);
    return rc;
}

/* The overview's worker table on a scheduler (web_options.fleet_workers). */
static size_t observe_fleet_workers(void *ctx, struct web_worker_row *rows, size_t max)
{
    struct casboxd *d = ctx;
    struct sched_worker_info *info = calloc(max ? max : 1, sizeof(*info));
    uint64_t now_ms = clock_mono_us() / 1000, now_us = clock_real_us();
    size_t n;

    if (info == NULL)
        return 0;
    n = fleet_scheduler_workers(d->exec, info, max);
    for (size_t i = 0; i < n; i++) {
        struct web_worker_row *r = &rows[i];
        uint64_t ago_us = now_ms > info[i].since_ms ? (now_ms - info[i].since_ms) * 1000 : 0;

        snprintf(r->id, sizeof(r->id), "%s", info[i].id);
        snprintf(r->state, sizeof(r->state), "%s",
                 info[i].draining    ? "draining"
                 : info[i].action[0] ? "busy"
                                     : "idle");
        snprintf(r->action, sizeof(r->action), "%s", info[i].action);
        snprintf(r->platform, sizeof(r->platform), "%s", info[i].platform);
        r->size_class = info[i].size_class;
        r->since_us = now_us > ago_us ? now_us - ago_us : 0;
        r->runs = info[i].runs;
    }
    free(info);
    return n;
}

int observe_serve(struct casboxd *d)
{
    struct observe *o = d->obs;
    struct web_options w;
    int rc;

    if (o == NULL || d->cfg.http_listen[0] == '\0')
        return 0;
    /* the casbox-replay line's CAS: a worker's blobs are in the fleet's */
    if (strcmp(d->cfg.role, "worker") == 0)
        snprintf(o->grpc_url, sizeof(o->grpc_url), "%s", d->cfg.cas_remote);
    else
        snprintf(o->grpc_url, sizeof(o->grpc_url), "grpc://%s", d->cfg.listen);
    memset(&w, 0, sizeof(w));
    w.listen = d->cfg.http_listen;
    w.max_connections = d->cfg.http_max_connections;
    w.connection_timeout = d->cfg.http_connection_timeout;
    w.request_bytes = d->cfg.http_request_bytes;
    w.threads = d->cfg.http_threads;
    w.inline_bytes = d->cfg.http_inline_bytes;
    w.max_message_bytes = d->cfg.http_max_message_bytes;
    w.grpc_url = o->grpc_url;
    w.worker_name = d->cfg.worker_name;
    w.store = d->store;
    w.metrics = o->metrics;
    w.board = o->board;
    if (d->exec != NULL && strcmp(d->cfg.role, "scheduler") == 0) {
        w.fleet_workers = observe_fleet_workers;
        w.fleet_workers_ctx = d;
    }
    w.authorize = observe_authorize;
    w.authorize_ctx = d;
    w.tls_certificate = d->tls.certificate_chain;
    w.tls_private_key = d->tls.private_key;
    w.tls_client_ca = d->tls.client_ca;
    rc = web_server_start(&w, &o->web);
    if (rc == 0)
        LOG_I("http: web pages and /metrics on %s://%s/%s", w.tls_certificate ? "https" : "http",
              d->cfg.http_listen, w.tls_client_ca ? " (client certificates required)" : "");
    return rc;
}

/* SIGHUP read new [tls] files: libmicrohttpd cannot swap a certificate in
 * place, so the listener is closed and opened again with them (open page
 * loads are cut; the port is closed for that moment). */
void observe_tls_reload(struct casboxd *d)
{
    int rc;

    if (d->obs == NULL || d->obs->web == NULL)
        return;
    web_server_stop(d->obs->web);
    d->obs->web = NULL;
    rc = observe_serve(d);
    if (rc != 0)
        LOG_ERRNO_E(rc, "reload: the web pages and /metrics are off: their listener did not "
                        "start again with the new [tls] files");
}

void observe_stop_serving(struct casboxd *d)
{
    if (d->obs != NULL) {
        web_server_stop(d->obs->web);
        d->obs->web = NULL;
    }
}

void observe_stop(struct casboxd *d)
{
    struct observe *o = d->obs;

    if (o == NULL)
        return;
    web_server_stop(o->web);
    web_board_free(o->board);
    metrics_free(o->metrics);
    pthread_mutex_destroy(&o->fleet_lock);
    free(o);
    d->obs = NULL;
}

void observe_cache_lookup(struct casboxd *d, const char *via, enum observe_cache result)
{
    static const char *const names[] = {"hit", "miss", "miss_blob_gone"};

    if (d->obs == NULL)
        return;
    metrics_counter_add(d->obs->ac_lookups, METRICS_LABELS(via, names[result]), 1);
    web_board_note_cache(d->obs->board, result == OBSERVE_CACHE_HIT);
}

void observe_transfer(struct casboxd *d, const char *direction, const char *api, uint64_t blobs,
                      uint64_t bytes)
{
    if (d->obs == NULL)
        return;
    metrics_counter_add(d->obs->cas_transfer_blobs, METRICS_LABELS(direction, api), (double)blobs);
    metrics_counter_add(d->obs->cas_transfer_bytes, METRICS_LABELS(direction, api), (double)bytes);
}

void observe_fleet_lost(struct casboxd *d, bool requeued)
{
    if (d->obs == NULL)
        return;
    metrics_counter_add(d->obs->fleet_losses, NULL, 1);
    if (requeued)
        metrics_counter_add(d->obs->fleet_requeues, NULL, 1);
}

void observe_find_missing(struct casboxd *d, uint64_t asked, uint64_t missing)
{
    if (d->obs == NULL)
        return;
    metrics_counter_add(d->obs->find_missing_asked, NULL, (double)asked);
    metrics_counter_add(d->obs->find_missing_missing, NULL, (double)missing);
}

/* RequestMetadata's mnemonic and target, when the client sent them. */
static void observe_request_metadata(struct rpc_call *call, struct web_action *a)
{
    Build__Bazel__Remote__Execution__V2__RequestMetadata *md;
    size_t len = 0;
    const char *v = call ? rpc_call_metadata(call, OBSERVE_METADATA_KEY, &len) : NULL;

    if (v == NULL || len == 0)
        return;
    md = build__bazel__remote__execution__v2__request_metadata__unpack(NULL, len,
                                                                       (const uint8_t *)v);
    if (md == NULL)
        return;
    snprintf(a->mnemonic, sizeof(a->mnemonic), "%s",
             md->action_mnemonic ? md->action_mnemonic : "");
    snprintf(a->target, sizeof(a->target), "%s", md->target_id ? md->target_id : "");
    build__bazel__remote__execution__v2__request_metadata__free_unpacked(md, NULL);
}

void observe_action_queued(struct casboxd *d, struct rpc_call *call, const char *instance,
                           const struct cas_digest *dg, bool executing)
{
    struct web_action a;
    int rc;

    if (d->obs == NULL)
        return;
    memset(&a, 0, sizeof(a));
    snprintf(a.instance, sizeof(a.instance), "%s", instance);
    a.digest = *dg;
    snprintf(a.worker, sizeof(a.worker), "%s", d->cfg.worker_name);
    a.stage = executing ? WEB_STAGE_EXECUTING : WEB_STAGE_QUEUED;
    a.times.queued = clock_real_us();
    observe_request_metadata(call, &a);
    rc = web_board_begin(d->obs->board, &a);
    if (rc != 0)
        LOG_ERRNO_W(rc, "http: the board cannot show a queued action");
}

void observe_action_started(struct casboxd *d, const char *instance, const struct cas_digest *dg)
{
    if (d->obs != NULL)
        web_board_stage(d->obs->board, instance, dg, WEB_STAGE_EXECUTING);
}

void observe_action_step(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                         enum exec_step step)
{
    static const enum web_stage stages[] = {[EXEC_STEP_INPUT_FETCH] = WEB_STAGE_INPUT_FETCH,
                                            [EXEC_STEP_EXECUTION] = WEB_STAGE_RUNNING,
                                            [EXEC_STEP_OUTPUT_UPLOAD] = WEB_STAGE_OUTPUT_UPLOAD};

    if (d->obs != NULL && (unsigned)step < sizeof(stages) / sizeof(stages[0]))
        web_board_stage(d->obs->board, instance, dg, stages[step]);
}

static const char *observe_outcome(const struct exec_outcome *o)
{
    if (o->ran && o->sandbox.limit != SANDBOX_LIMIT_NONE)
        return o->sandbox.limit == SANDBOX_LIMIT_TIMEOUT  ? "timeout"
               : o->sandbox.limit == SANDBOX_LIMIT_MEMORY ? "limit_memory"
               : o->sandbox.limit == SANDBOX_LIMIT_PIDS   ? "limit_pids"
               : o->sandbox.limit == SANDBOX_LIMIT_CPU    ? "limit_cpu"
                                                          : "limit_output";
    if (o->status.code == GRPC_STATUS_DEADLINE_EXCEEDED)
        return "timeout";
    if (!reapi_status_ok(&o->status))
        return "error";
    if (o->result == NULL || o->result->exit_code != 0)
        return "exit_nonzero";
    return "ok";
}

static double observe_span(uint64_t from, uint64_t to)
{
    return from != 0 && to > from ? (double)(to - from) / 1e6 : 0;
}

void observe_action_result(struct casboxd *d, const char *instance, const struct action *act,
                           const struct exec_times *t, const struct exec_outcome *o)
{
    struct observe *obs = d->obs;
    struct web_action a;
    const char *outcome = observe_outcome(o);
    double exec_s = observe_span(t->execution_start, t->execution_end);

    if (obs == NULL)
        return;
    metrics_counter_add(obs->actions, METRICS_LABELS(outcome), 1);
    metrics_histogram_observe(obs->queue_wait, NULL, observe_span(t->queued, t->worker_start));
    metrics_histogram_observe(obs->stage_seconds, METRICS_LABELS("queued"),
                              observe_span(t->queued, t->worker_start));
    if (t->input_fetch_start != 0)
        metrics_histogram_observe(obs->stage_seconds, METRICS_LABELS("input_fetch"),
                                  observe_span(t->input_fetch_start, t->input_fetch_end));
    if (t->execution_start != 0)
        metrics_histogram_observe(obs->stage_seconds, METRICS_LABELS("execution"), exec_s);
    if (t->output_upload_start != 0)
        metrics_histogram_observe(obs->stage_seconds, METRICS_LABELS("output_upload"),
                                  observe_span(t->output_upload_start, t->output_upload_end));
    if (o->ran && exec_s > (double)o->sandbox.wall_us / 1e6)
        metrics_histogram_observe(obs->sandbox_setup, NULL,
                                  exec_s - (double)o->sandbox.wall_us / 1e6);
    if (o->fuse) {
        metrics_counter_add(obs->fuse_files, METRICS_LABELS("fuse"),
                            (double)(o->fuse_stats.files_opened - o->fuse_stats.files_passthrough));
        metrics_counter_add(obs->fuse_files, METRICS_LABELS("passthrough"),
                            (double)o->fuse_stats.files_passthrough);
    }
    metrics_counter_add(obs->input_bytes, NULL, (double)act->input_bytes);
    metrics_counter_add(obs->output_bytes, NULL, (double)o->outputs.bytes);

    memset(&a, 0, sizeof(a));
    snprintf(a.instance, sizeof(a.instance), "%s", instance);
    a.digest = act->digest;
    snprintf(a.outcome, sizeof(a.outcome), "%s", outcome);
    snprintf(a.worker, sizeof(a.worker), "%s", d->cfg.worker_name);
    snprintf(a.message, sizeof(a.message), "%s", o->verdict[0] ? o->verdict : o->status.message);
    a.exit_code = o->result ? o->result->exit_code : -1;
    a.times = (struct web_action_times){
        t->queued,          t->worker_start,  t->input_fetch_start,   t->input_fetch_end,
        t->execution_start, t->execution_end, t->output_upload_start, t->output_upload_end,
        t->worker_end};
    web_board_result(obs->board, &a);
}

void observe_action_finished(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                             const uint8_t *response, size_t response_len)
{
    struct cas_digest rd;
    bool stored = false;
    int rc;

    if (d->obs == NULL)
        return;
    /* The ExecuteResponse goes into the CAS (after the client has it) so
     * that the action page can show a failed result, which the ActionCache
     * does not keep. */
    if (response != NULL) {
        cas_digest_buffer(response, response_len, &rd);
        rc = cas_store_put(d->store, &rd, response, response_len);
        stored = rc == 0;
        if (rc != 0)
            LOG_ERRNO_W(rc, "http: keeping an ExecuteResponse for the web pages failed");
    }
    web_board_finish(d->obs->board, instance, dg, stored ? &rd : NULL);
}

void observe_fleet_stage(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                         const char *worker, enum observe_fleet_stage stage)
{
    static const enum web_stage stages[] = {[OBSERVE_FLEET_TAKEN] = WEB_STAGE_EXECUTING,
                                            [OBSERVE_FLEET_FETCHING] = WEB_STAGE_INPUT_FETCH,
                                            [OBSERVE_FLEET_RUNNING] = WEB_STAGE_RUNNING,
                                            [OBSERVE_FLEET_UPLOADING] = WEB_STAGE_OUTPUT_UPLOAD};

    if (d->obs == NULL || (unsigned)stage >= sizeof(stages) / sizeof(stages[0]))
        return;
    web_board_stage(d->obs->board, instance, dg, stages[stage]);
    web_board_worker(d->obs->board, instance, dg, worker);
}

static uint64_t observe_timestamp_us(const Google__Protobuf__Timestamp *t)
{
    return t == NULL || t->seconds <= 0
               ? 0
               : (uint64_t)t->seconds * 1000000 + (uint64_t)t->nanos / 1000;
}

void observe_fleet_result(struct casboxd *d, const char *instance, const struct cas_digest *dg,
                          const char *worker,
                          const Build__Bazel__Remote__Execution__V2__ExecuteResponse *r)
{
    const Build__Bazel__Remote__Execution__V2__ActionResult *res = r->result;
    const Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata *md =
        res ? res->execution_metadata : NULL;
    int code = r->status ? r->status->code : 0;
    struct web_action a;
    const char *outcome = code == GRPC_STATUS_DEADLINE_EXCEEDED ? "timeout"
                          : code != 0                           ? "error"
                          : res == NULL || res->exit_code != 0  ? "exit_nonzero"
                                                                : "ok";

    if (d->obs == NULL)
        return;
    metrics_counter_add(d->obs->actions, METRICS_LABELS(outcome), 1);
    memset(&a, 0, sizeof(a));
    snprintf(a.instance, sizeof(a.instance), "%s", instance);
    a.digest = *dg;
    snprintf(a.outcome, sizeof(a.outcome), "%s", outcome);
    snprintf(a.worker, sizeof(a.worker), "%s",
             md && md->worker && md->worker[0] ? md->worker : worker);
    snprintf(a.message, sizeof(a.message), "%s",
             r->status && r->status->message ? r->status->message : "");
    a.exit_code = res ? res->exit_code : -1;
    if (md != NULL)
        a.times =
            (struct web_action_times){observe_timestamp_us(md->queued_timestamp),
                                      observe_timestamp_us(md->worker_start_timestamp),
                                      observe_timestamp_us(md->input_fetch_start_timestamp),
                                      observe_timestamp_us(md->input_fetch_completed_timestamp),
                                      observe_timestamp_us(md->execution_start_timestamp),
                                      observe_timestamp_us(md->execution_completed_timestamp),
                                      observe_timestamp_us(md->output_upload_start_timestamp),
                                      observe_timestamp_us(md->output_upload_completed_timestamp),
                                      observe_timestamp_us(md->worker_completed_timestamp)};
    web_board_result(d->obs->board, &a);
}
