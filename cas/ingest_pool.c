/*
 * ingest_pool.c - the ingestion engine's pool of hashing threads (see
 * ingest_pool.h).
 */
#include "ingest_pool.h"

#include <errno.h>
#include <stdlib.h>

struct ingest_thread_arg {
    struct ingest_pool *p;
    unsigned index; /* worker index, from 1 */
    uint64_t seen;  /* the generation before the job it was started for */
};

static void *ingest_pool_main(void *a)
{
    struct ingest_thread_arg *arg = a;
    struct ingest_pool *p = arg->p;
    unsigned index = arg->index;
    uint64_t seen = arg->seen;

    free(arg);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit)
            break;
        seen = p->generation;
        if (index > p->job_workers)
            continue;
        pthread_mutex_unlock(&p->lock);
        p->job(p->job_arg, index);
        pthread_mutex_lock(&p->lock);
        if (--p->job_active == 0)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* With p->lock held: starts pool threads until `want` run. */
static int ingest_pool_grow(struct ingest_pool *p, unsigned want)
{
    while (p->started < want) {
        struct ingest_thread_arg *arg = malloc(sizeof(*arg));
        int rc;

        if (arg == NULL)
            return -ENOMEM;
        arg->p = p;
        arg->index = p->started + 1;
        arg->seen = p->generation;
        rc = pthread_create(&p->threads[p->started], NULL, ingest_pool_main, arg);
        if (rc != 0) {
            free(arg);
            return -rc;
        }
        p->started++;
    }
    return 0;
}

int ingest_pool_init(struct ingest_pool *p, unsigned max)
{
    int rc;

    *p = (struct ingest_pool){.max = max};
    p->threads = calloc(max ? max : 1, sizeof(*p->threads));
    if (p->threads == NULL)
        return -ENOMEM;
    rc = -pthread_mutex_init(&p->lock, NULL);
    if (rc < 0) {
        free(p->threads);
        return rc;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0 || pthread_cond_init(&p->idle, NULL) != 0) {
        /* Never fails on Linux; a half-made pool is not worth undoing. */
        abort();
    }
    return 0;
}

void ingest_pool_destroy(struct ingest_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->quit = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
}

int ingest_pool_start(struct ingest_pool *p, ingest_job_fn *job, void *arg, unsigned *workers)
{
    int rc;

    if (*workers > p->max)
        *workers = p->max;
    pthread_mutex_lock(&p->lock);
    rc = ingest_pool_grow(p, *workers);
    if (p->started < *workers)
        *workers = p->started;
    p->job = job;
    p->job_arg = arg;
    p->job_workers = *workers;
    p->job_active = *workers;
    p->generation++;
    if (*workers > 0)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    return *workers > 0 ? 0 : rc;
}

void ingest_pool_wait(struct ingest_pool *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->job_active > 0)
        pthread_cond_wait(&p->idle, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
