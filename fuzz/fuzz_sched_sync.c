/*
 * fuzz_sched_sync.c - feeds SynchronizeRequest bytes (Buildbarn's worker
 * protocol, the only bytes a worker sends a casbox scheduler) through
 * protobuf-c and into the fleet queue (sched/) the way the scheduler does:
 * the worker_id and platform become a slot, an idle state takes a queued
 * task, a completion names a digest. Whatever the bytes, the queue's counts
 * must stay consistent and nothing may leak or crash.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buildbarn/remoteworker/remoteworker.pb-c.h"
#include "sched/sched.h"

typedef Buildbarn__Remoteworker__SynchronizeRequest SyncRequest;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct sched_options opt = {
        .max_queued = 4, .max_workers = 4, .worker_timeout_ms = 10, .max_retries = 1};
    const char *names[SCHED_MAX_PROPERTIES], *values[SCHED_MAX_PROPERTIES];
    struct sched_platform plat = {0}, none = {0};
    struct sched_worker_desc desc;
    struct sched_task_desc td;
    struct sched_lost_event ev[8];
    struct sched_worker *w;
    struct sched_task *t, *done;
    struct sched *s;
    SyncRequest *req;
    char id[256] = "";
    bool joined;
    size_t used = 0, n;

    req = buildbarn__remoteworker__synchronize_request__unpack(NULL, size, data);
    if (req == NULL)
        return 0;
    for (size_t i = 0; i < req->n_worker_id && used < sizeof(id) - 1; i++)
        used += (size_t)snprintf(id + used, sizeof(id) - used, "%s%s=%s", i ? "," : "",
                                 req->worker_id[i]->key, req->worker_id[i]->value);
    n = req->platform ? req->platform->n_properties : 0;
    if (n > SCHED_MAX_PROPERTIES)
        n = SCHED_MAX_PROPERTIES;
    for (size_t i = 0; i < n; i++) {
        names[i] = req->platform->properties[i]->name;
        values[i] = req->platform->properties[i]->value;
    }
    if (sched_platform_set(&plat, names, values, n) != 0 || sched_new(&opt, 0, &s) != 0) {
        sched_platform_clear(&plat);
        buildbarn__remoteworker__synchronize_request__free_unpacked(req, NULL);
        return 0;
    }
    assert(sched_platform_fits(&none, &plat));
    assert(sched_platform_fits(&plat, &plat));
    desc = (struct sched_worker_desc){.instance_prefix = req->instance_name_prefix,
                                      .platform = &plat,
                                      .size_class = req->size_class,
                                      .prefer_idle = req->prefer_being_idle};
    if (sched_worker_sync_begin(s, id, &desc, 0, &w, &joined) == 0) {
        /* an action with the worker's own platform and prefix fits it */
        td = (struct sched_task_desc){.instance = req->instance_name_prefix,
                                      .key = "k/1",
                                      .invocation = id,
                                      .platform = &plat};
        assert(sched_submit(s, &td, NULL, 0, &t) == 0);
        assert(sched_queued(s) == 1);
        t = sched_worker_take(s, w, 0);
        assert((t == NULL) == (bool)req->prefer_being_idle);
        if (t != NULL) {
            assert(sched_queued(s) == 0);
            /* oneof members share storage: look at the case first */
            if (req->current_state &&
                req->current_state->worker_state_case ==
                    BUILDBARN__REMOTEWORKER__CURRENT_STATE__WORKER_STATE_EXECUTING &&
                req->current_state->executing->action_digest) {
                const char *h = req->current_state->executing->action_digest->hash;

                if (sched_worker_finish(s, w, h ? h : "", &done) == 0) {
                    assert(done == t);
                    sched_task_cancel(s, done);
                }
            }
        }
        sched_worker_sync_end(s, w, 0);
        /* lose the slot: its task is requeued once, then fails */
        assert(sched_expire(s, 100, ev, 8) == 1);
        if (ev[0].task != NULL && ev[0].failed)
            sched_task_cancel(s, ev[0].task);
        assert(sched_workers(s) == 0);
    }
    sched_platform_clear(&plat);
    sched_free(s);
    buildbarn__remoteworker__synchronize_request__free_unpacked(req, NULL);
    return 0;
}
