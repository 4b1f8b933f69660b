/*
 * ingest_pool.h - the ingestion engine's pool of hashing threads. Threads
 * are started on first use and kept; each waits for a job, runs it as
 * worker i (from 1; the caller is worker 0) and waits again. The engine
 * owns one pool (struct cas_ingest); the two I/O paths (ingest_threads.c,
 * ingest_uring.c) hand it their job. It knows nothing of ingestion: a job
 * is a function and its argument, so that calls go one way, from the
 * engine and its paths to the pool.
 */
#ifndef CASBOX_CAS_INGEST_POOL_H
#define CASBOX_CAS_INGEST_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef void ingest_job_fn(void *arg, unsigned worker);

struct ingest_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a new job, or quit */
    pthread_cond_t idle; /* the job's last worker returned */
    pthread_t *threads;  /* threads[i] is worker i + 1 */
    unsigned max;        /* threads at most */
    unsigned started;
    uint64_t generation;
    unsigned job_workers; /* workers 1..job_workers take the job */
    unsigned job_active;
    ingest_job_fn *job;
    void *job_arg;
    bool quit;
};

/* A pool of at most max threads, none started yet. 0 or -ENOMEM. */
int ingest_pool_init(struct ingest_pool *p, unsigned max);
/* Stops and joins the threads (no job may be running), then frees. */
void ingest_pool_destroy(struct ingest_pool *p);
/* Starts job(arg, i) on workers i = 1..*workers (starting threads as
 * needed); the caller then does its part and calls ingest_pool_wait.
 * -errno when no thread could be started (*workers is then lowered to what
 * runs). */
int ingest_pool_start(struct ingest_pool *p, ingest_job_fn *job, void *arg, unsigned *workers);
void ingest_pool_wait(struct ingest_pool *p);

#endif
