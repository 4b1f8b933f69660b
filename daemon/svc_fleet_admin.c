/*
 * svc_fleet_admin.c - casbox.fleet.v1.FleetAdmin: the scheduler role's small
 * admin view, for `casbox-replay fleet status|drain|undrain` (Buildbarn keeps
 * the same in its buildqueuestate service). Status answers the queues, the
 * worker slots and the drains as text; Drain and Undrain take an fnmatch
 * pattern over worker ids ("hostname=build3,*"): a drained slot finishes its
 * action and gets no more. Messages are google.protobuf.StringValue, so the
 * service needs no .proto of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "execution_internal.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "util/util.h"

#define ADMIN_MAX_PATTERN 256

/* The scheduler's service, once the caller may use this method on the
 * fleet (auth/: Status needs read, Drain and Undrain worker); NULL when the
 * call has been answered. */
static struct exec_service *admin_service(struct casboxd *d, struct rpc_call *call)
{
    struct reapi_status st;

    if (d->exec == NULL || d->exec->sched == NULL) {
        rpc_call_fail(call, GRPC_STATUS_UNIMPLEMENTED,
                      "this casboxd is not a scheduler (--role scheduler)");
        return NULL;
    }
    reapi_status_init(&st);
    if (rpc_call_authorize(call, "", &st) != 0) {
        rpc_call_finish(call, NULL, &st);
        reapi_status_free(&st);
        return NULL;
    }
    return d->exec;
}

static void admin_status(void *ctx, struct rpc_call *call)
{
    struct exec_service *svc = admin_service(ctx, call);
    Google__Protobuf__StringValue out = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    if (svc == NULL)
        return;
    f = open_memstream(&text, &len);
    if (f == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    pthread_mutex_lock(&svc->lock);
    sched_status_print(svc->sched, clock_mono_us() / 1000, f);
    pthread_mutex_unlock(&svc->lock);
    if (fclose(f) != 0 || text == NULL) {
        free(text);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    out.value = text;
    rpc_call_finish(call, &out.base, NULL);
    free(text);
}

static void admin_drain_change(struct rpc_call *call, struct exec_service *svc, bool add)
{
    Google__Protobuf__StringValue *req = NULL;
    Google__Protobuf__StringValue out = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    int rc;

    if (rpc_call_request(call, &google__protobuf__string_value__descriptor,
                         (ProtobufCMessage **)&req) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "expected a StringValue pattern");
        return;
    }
    if (req->value == NULL || req->value[0] == '\0' || strlen(req->value) > ADMIN_MAX_PATTERN) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "the drain pattern must be 1 to %d characters", ADMIN_MAX_PATTERN);
        goto out;
    }
    pthread_mutex_lock(&svc->lock);
    rc = add ? sched_drain_add(svc->sched, req->value) : sched_drain_remove(svc->sched, req->value);
    if (rc == 0 && !add)
        fleet_work_wake_locked(svc); /* undrained slots may take work */
    pthread_mutex_unlock(&svc->lock);
    if (rc == -ENOENT) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no drain '%s'", req->value);
    } else if (rc != 0) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot add the drain: %s",
                      strerror(-rc));
    } else {
        LOG_I("fleet: %s workers matching '%s'", add ? "draining" : "undrained", req->value);
        out.value = req->value;
        rpc_call_finish(call, &out.base, NULL);
    }
out:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void admin_drain(void *ctx, struct rpc_call *call)
{
    struct exec_service *svc = admin_service(ctx, call);

    if (svc != NULL)
        admin_drain_change(call, svc, true);
}

static void admin_undrain(void *ctx, struct rpc_call *call)
{
    struct exec_service *svc = admin_service(ctx, call);

    if (svc != NULL)
        admin_drain_change(call, svc, false);
}

const struct rpc_method fleet_admin_methods[] = {
    {"/casbox.fleet.v1.FleetAdmin/Status", RPC_UNARY, RPC_POOL_SHORT, admin_status, AUTH_PERM_READ},
    {"/casbox.fleet.v1.FleetAdmin/Drain", RPC_UNARY, RPC_POOL_SHORT, admin_drain, AUTH_PERM_WORKER},
    {"/casbox.fleet.v1.FleetAdmin/Undrain", RPC_UNARY, RPC_POOL_SHORT, admin_undrain,
     AUTH_PERM_WORKER},
};
const size_t fleet_admin_n_methods = sizeof(fleet_admin_methods) / sizeof(fleet_admin_methods[0]);
