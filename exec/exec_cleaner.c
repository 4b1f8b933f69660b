/*
 * exec_cleaner.c - removes finished actions' scratch directories and FUSE
 * trees on a thread of its own, so that a slot takes its next action at once.
 *
 * Right after a sandbox exits, the kernel is still tearing its mount
 * namespace down (the overlay over the scratch directory among it), and
 * removing the scratch directory then took 30 ms per action on average in a
 * zlib build (up to 80 ms): a slot that did it itself left its CPU idle that
 * long between two actions. The queue is bounded (4 per slot): when it is
 * full, the slot removes its own leftovers as before, so leftovers on disk
 * never outgrow that bound. Stopping drains the queue.
 */
#include "exec.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct exec_cleaner {
    const struct exec_env *env;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct exec_leftovers **ring; /* pending leftovers, FIFO */
    size_t cap, head, n;
    bool stopping;
    pthread_t thread;
};

static void *exec_cleaner_main(void *arg)
{
    struct exec_cleaner *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        struct exec_leftovers *left;

        while (c->n == 0 && !c->stopping)
            pthread_cond_wait(&c->wake, &c->lock);
        if (c->n == 0)
            break; /* stopping, and drained */
        left = c->ring[c->head];
        c->head = (c->head + 1) % c->cap;
        c->n--;
        pthread_mutex_unlock(&c->lock);
        exec_leftovers_remove(c->env, left);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int exec_cleaner_start(const struct exec_env *env, size_t max_pending, struct exec_cleaner **out)
{
    struct exec_cleaner *c = calloc(1, sizeof(*c));
    int rc;

    *out = NULL;
    if (c == NULL)
        return -ENOMEM;
    c->env = env;
    c->cap = max_pending > 0 ? max_pending : 1;
    c->ring = calloc(c->cap, sizeof(*c->ring));
    if (c->ring == NULL) {
        free(c);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    rc = pthread_create(&c->thread, NULL, exec_cleaner_main, c);
    if (rc != 0) {
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        free(c->ring);
        free(c);
        return -rc;
    }
    *out = c;
    return 0;
}

void exec_cleaner_put(struct exec_cleaner *c, struct exec_leftovers *left)
{
    bool queued = false;

    if (left == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->n < c->cap && !c->stopping) {
        c->ring[(c->head + c->n) % c->cap] = left;
        c->n++;
        queued = true;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->lock);
    if (!queued)
        exec_leftovers_remove(c->env, left); /* full: the caller waits, as before */
}

void exec_cleaner_stop(struct exec_cleaner *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    free(c->ring);
    free(c);
}
