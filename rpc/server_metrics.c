/*
 * server_metrics.c - what the gRPC server counts: every call by service,
 * method and status code (casbox_grpc_requests_total), its latency from
 * arrival to status by method (casbox_grpc_request_duration_seconds) and
 * the calls being handled (casbox_grpc_requests_in_flight).
 *
 * Labels come from the method table, a fixed set; a method casboxd does not
 * serve is counted as service="unknown", method="unknown", never by the name
 * the client sent.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "rpc_internal.h"
#include "util/util.h"

/* OK .. UNAUTHENTICATED */
#define RPC_METRICS_CODES 17

/* "/pkg.Service/Method" -> "pkg.Service" and "Method". */
static void rpc_metrics_split(const char *path, char *service, size_t slen, const char **method)
{
    const char *start = path[0] == '/' ? path + 1 : path;
    const char *slash = strchr(start, '/');
    size_t n = slash ? (size_t)(slash - start) : strlen(start);

    if (n >= slen)
        n = slen - 1;
    memcpy(service, start, n);
    service[n] = '\0';
    *method = slash ? slash + 1 : "";
}

int rpc_server_metrics_init(struct rpc_server_metrics *sm, struct metrics *m,
                            const struct rpc_method *methods, size_t n_methods)
{
    struct metrics_family *latency, *inflight;
    char service[128];
    const char *method;

    memset(sm, 0, sizeof(*sm));
    if (m == NULL)
        return 0;
    sm->requests = metrics_counter(m, "casbox_grpc_requests_total",
                                   "gRPC calls finished, by service, method and status code.",
                                   "service,method,code");
    latency =
        metrics_histogram(m, "casbox_grpc_request_duration_seconds",
                          "Time from a call's arrival to its status, by method.", "service,method",
                          metrics_latency_buckets, metrics_latency_n_buckets);
    inflight =
        metrics_gauge(m, "casbox_grpc_requests_in_flight",
                      "gRPC calls accepted and not yet finished, by method.", "service,method");
    sm->latency = calloc(n_methods ? n_methods : 1, sizeof(*sm->latency));
    sm->inflight = calloc(n_methods ? n_methods : 1, sizeof(*sm->inflight));
    sm->by_code = calloc((n_methods ? n_methods : 1) * RPC_METRICS_CODES, sizeof(*sm->by_code));
    if (sm->latency == NULL || sm->inflight == NULL || sm->by_code == NULL) {
        rpc_server_metrics_free(sm);
        return -ENOMEM;
    }
    sm->n_methods = n_methods;
    for (size_t i = 0; i < n_methods; i++) {
        rpc_metrics_split(methods[i].path, service, sizeof(service), &method);
        sm->latency[i] = metrics_series_get(latency, METRICS_LABELS(service, method));
        sm->inflight[i] = metrics_series_get(inflight, METRICS_LABELS(service, method));
        metrics_series_add(sm->inflight[i], 0); /* shown from the start */
    }
    return 0;
}

void rpc_server_metrics_free(struct rpc_server_metrics *sm)
{
    free(sm->latency);
    free(sm->inflight);
    free((void *)sm->by_code);
    memset(sm, 0, sizeof(*sm));
}

void rpc_server_metrics_begin(struct rpc_server_metrics *sm, size_t i)
{
    if (i < sm->n_methods)
        metrics_series_add(sm->inflight[i], 1);
}

void rpc_server_metrics_end(struct rpc_server_metrics *sm, const struct rpc_method *methods,
                            size_t i, grpc_status_code code, uint64_t started_us, bool begun)
{
    char service[128] = "unknown";
    const char *method = "unknown";
    _Atomic(struct metrics_series *) *slot = NULL;
    struct metrics_series *s = NULL;

    if (sm->requests == NULL)
        return;
    if (i < sm->n_methods) {
        if (begun)
            metrics_series_add(sm->inflight[i], -1);
        metrics_series_observe(sm->latency[i], (double)(clock_mono_us() - started_us) / 1e6);
        if ((unsigned)code < RPC_METRICS_CODES) {
            slot = &sm->by_code[i * RPC_METRICS_CODES + (unsigned)code];
            s = atomic_load_explicit(slot, memory_order_acquire);
        }
        rpc_metrics_split(methods[i].path, service, sizeof(service), &method);
    }
    if (s == NULL) {
        s = metrics_series_get(sm->requests,
                               METRICS_LABELS(service, method, rpc_status_code_name(code)));
        if (slot != NULL)
            atomic_store_explicit(slot, s, memory_order_release);
    }
    metrics_series_add(s, 1);
}
