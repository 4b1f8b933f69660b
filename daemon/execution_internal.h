/*
 * execution_internal.h - the Execution service's operations and queue,
 * shared by svc_execution.c (Execute, WaitExecution, the local slots) and
 * svc_operation_queue.c (the scheduler role: Buildbarn's Synchronize hands
 * queued operations to worker slots instead). Private to daemon/.
 */
#ifndef CASBOX_EXECUTION_INTERNAL_H
#define CASBOX_EXECUTION_INTERNAL_H

#include <pthread.h>
#include <time.h>

#include "casboxd.h"
#include "sched/sched.h"

/* A stream parked (rpc.h: no thread) until its operation changes; listed
 * in op->waiting, resumed by exec_op_changed_locked. */
struct exec_watcher {
    struct rpc_call *call;
    struct exec_watcher *next;
};

struct exec_op {
    char name[64]; /* "operations/<32 hex>" */
    char *instance;
    struct cas_digest action_digest;
    enum exec_stage stage;
    struct action *action; /* owned until a slot takes it */
    uint8_t *response;     /* packed ExecuteResponse, once COMPLETED */
    size_t response_len;
    struct exec_times times;
    time_t completed_at;
    pthread_cond_t changed;       /* stage changed, or the service is stopping */
    struct exec_watcher *waiting; /* streams parked until it changes */
    unsigned refs;                /* the table's reference plus one per watcher/slot */
    struct exec_op *next;         /* all operations */
    struct exec_op *queue_next;   /* the run queue */
    struct sched_task *task;      /* role scheduler: queued for or running on a worker */
    uint64_t orphan_since_ms;     /* role scheduler: no client watching since (0: watched) */
};

/* Finished actions whose scratch space may await removal, per slot. */
#define EXEC_CLEANUP_PER_SLOT 4

struct exec_service {
    struct casboxd *d;
    pthread_mutex_t lock;
    pthread_cond_t work; /* the queue gained an operation */
    struct exec_op *ops;
    uint64_t n_ops;
    struct exec_op *queue_head, *queue_tail;
    uint64_t queued;
    uint64_t idle_slots; /* slots waiting for work */
    bool stopping;
    pthread_t *slots;
    uint64_t n_slots;
    struct exec_cleaner *cleaner; /* removes finished actions' scratch space */
    /* role scheduler (svc_operation_queue.c): the fleet's queue instead of
     * slots; fleet_work wakes idle workers' held Synchronize calls */
    struct sched *sched;
    pthread_cond_t fleet_work;
    pthread_t reaper;
    bool reaper_started;
    uint64_t held_syncs;  /* idle Synchronize calls held now (parked: no thread each) */
    struct oq_held *held; /* those calls (svc_operation_queue.c) */
};

/* op changed: wakes its parked streams (and what waits on op->changed).
 * With svc->lock held. */
void exec_op_changed_locked(struct exec_op *op);

/* Wakes the idle Synchronize calls held for work (fleet_work and the
 * parked ones). With svc->lock held. */
void fleet_work_wake_locked(struct exec_service *svc);

/* Drops a reference; the last frees op. With svc->lock held. */
void exec_op_unref_locked(struct exec_op *op);
/* Drops finished operations past their retention. With svc->lock held. */
void exec_purge_locked(struct exec_service *svc);
/* Publishes op's result (resp is taken over) and answers its watchers.
 * Without svc->lock. */
void exec_slot_complete(struct exec_service *svc, struct exec_op *op, uint8_t *resp,
                        size_t resp_len, const struct exec_times *times);

/* --- the scheduler role (svc_operation_queue.c) --- */

/* Creates the fleet queue and its reaper thread (worker loss). */
int fleet_scheduler_start(struct exec_service *svc);
/* Wakes the held Synchronize calls and stops the reaper; then frees. */
void fleet_scheduler_begin_stop(struct exec_service *svc);
void fleet_scheduler_stop(struct exec_service *svc);
/* Queues a loaded operation for the workers (svc->lock held; op->action set).
 * 0, or the gRPC status to end the Execute call with in st. */
int fleet_scheduler_submit_locked(struct exec_service *svc, struct exec_op *op,
                                  struct rpc_call *call, int32_t priority, struct reapi_status *st);

#endif
