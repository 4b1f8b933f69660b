/*
 * test_sched_queue.c - sched/: platform matching (superset, sorted), the
 * refusal of platforms nobody announced (and the grace period), priority,
 * round-robin between invocations, the bounds, worker loss with requeue up
 * to max_retries, concurrent syncs of one slot, completions naming the wrong
 * action, drains and cancellation. The clock is driven by hand.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/sched.h"

static const struct sched_options OPTS = {
    .max_queued = 100,
    .max_workers = 8,
    .worker_timeout_ms = 5000,
    .max_retries = 2,
    .grace_ms = 1000,
};

static void platform(struct sched_platform *p, const char *spec)
{
    /* "a=1,b=2" */
    const char *names[8], *values[8];
    char buf[256], *save = NULL;
    size_t n = 0;

    snprintf(buf, sizeof(buf), "%s", spec);
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');

        assert_non_null(eq);
        *eq = '\0';
        names[n] = tok;
        values[n] = eq + 1;
        n++;
    }
    memset(p, 0, sizeof(*p));
    assert_int_equal(sched_platform_set(p, names, values, n), 0);
}

static struct sched_worker *sync_worker(struct sched *s, const char *id, const char *plat,
                                        uint64_t now)
{
    struct sched_platform p;
    struct sched_worker_desc d = {.instance_prefix = "", .platform = &p};
    struct sched_worker *w = NULL;
    bool joined;

    platform(&p, plat);
    assert_int_equal(sched_worker_sync_begin(s, id, &d, now, &w, &joined), 0);
    sched_platform_clear(&p);
    return w;
}

static struct sched_task *submit(struct sched *s, const char *key, const char *inv, int prio,
                                 const char *plat, uint64_t now)
{
    struct sched_platform p;
    struct sched_task_desc d = {
        .instance = "main", .key = key, .invocation = inv, .platform = &p, .priority = prio};
    struct sched_task *t = NULL;

    platform(&p, plat);
    assert_int_equal(sched_submit(s, &d, NULL, now, &t), 0);
    sched_platform_clear(&p);
    return t;
}

static void finish(struct sched *s, struct sched_worker *w, const char *key)
{
    struct sched_task *t = NULL;

    assert_int_equal(sched_worker_finish(s, w, key, &t), 0);
    sched_task_cancel(s, t);
}

static void test_platform_match(void **state)
{
    struct sched_platform want, have, empty = {0};
    char out[64];

    (void)state;
    platform(&want, "OSFamily=Linux");
    platform(&have, "OSFamily=Linux,ISA=x86-64");
    assert_true(sched_platform_fits(&want, &have));
    assert_false(sched_platform_fits(&have, &want));
    assert_true(sched_platform_fits(&empty, &have));
    sched_platform_format(&have, out, sizeof(out));
    assert_string_equal(out, "ISA=x86-64,OSFamily=Linux"); /* sorted */
    sched_platform_clear(&want);
    platform(&want, "OSFamily=Windows");
    assert_false(sched_platform_fits(&want, &have));
    sched_platform_clear(&want);
    platform(&want, "ISA=x86-64,OSFamily=Linux,gpu=1");
    assert_false(sched_platform_fits(&want, &have));
    sched_platform_format(&empty, out, sizeof(out));
    assert_string_equal(out, "(none)");
    sched_platform_format(&want, out, 12);
    assert_string_equal(out + strlen(out) - 3, "...");
    sched_platform_clear(&want);
    sched_platform_clear(&have);
}

static void test_unknown_platform(void **state)
{
    struct sched *s;
    struct sched_platform p;
    struct sched_task_desc d = {.instance = "main", .key = "k", .platform = &p};
    struct sched_task *t;

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    platform(&p, "OSFamily=Linux");
    assert_int_equal(sched_submit(s, &d, NULL, 10, &t), -EAGAIN); /* grace */
    assert_int_equal(sched_submit(s, &d, NULL, 2000, &t), -ENOENT);
    sched_worker_sync_end(s, sync_worker(s, "w1", "OSFamily=Windows", 2000), 2000);
    assert_int_equal(sched_submit(s, &d, NULL, 2000, &t), -ENOENT);
    sched_worker_sync_end(s, sync_worker(s, "w2", "OSFamily=Linux,ISA=x86-64", 2000), 2000);
    assert_int_equal(sched_submit(s, &d, NULL, 2000, &t), 0);
    assert_int_equal(sched_queued(s), 1);
    /* Windows worker never gets it, the Linux one does */
    sched_platform_clear(&p);
    {
        struct sched_worker *w1 = sync_worker(s, "w1", "OSFamily=Windows", 2100);
        struct sched_worker *w2;

        assert_null(sched_worker_take(s, w1, 2100));
        sched_worker_sync_end(s, w1, 2100);
        w2 = sync_worker(s, "w2", "OSFamily=Linux,ISA=x86-64", 2100);
        assert_ptr_equal(sched_worker_take(s, w2, 2100), t);
        assert_int_equal(sched_queued(s), 0);
        sched_worker_sync_end(s, w2, 2100);
    }
    sched_free(s);
}

static void test_priority_and_round_robin(void **state)
{
    struct sched *s;
    struct sched_worker *w;
    const char *order[7];

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    w = sync_worker(s, "w", "", 0);
    /* invocation A queues four, then B two, then an urgent one */
    submit(s, "a1", "A", 0, "", 0);
    submit(s, "a2", "A", 0, "", 0);
    submit(s, "a3", "A", 0, "", 0);
    submit(s, "a4", "A", 0, "", 0);
    submit(s, "b1", "B", 0, "", 0);
    submit(s, "b2", "B", 0, "", 0);
    submit(s, "u1", "C", -5, "", 0);
    for (int i = 0; i < 7; i++) {
        struct sched_task *t = sched_worker_take(s, w, 1);

        assert_non_null(t);
        assert_null(sched_worker_take(s, w, 1)); /* one at a time per slot */
        order[i] = strcmp(sched_task_key(t), "u1") == 0   ? "u1"
                   : strcmp(sched_task_key(t), "a1") == 0 ? "a1"
                   : strcmp(sched_task_key(t), "a2") == 0 ? "a2"
                   : strcmp(sched_task_key(t), "a3") == 0 ? "a3"
                   : strcmp(sched_task_key(t), "a4") == 0 ? "a4"
                   : strcmp(sched_task_key(t), "b1") == 0 ? "b1"
                                                          : "b2";
        finish(s, w, sched_task_key(t));
    }
    assert_string_equal(order[0], "u1");
    assert_string_equal(order[1], "a1");
    assert_string_equal(order[2], "b1");
    assert_string_equal(order[3], "a2");
    assert_string_equal(order[4], "b2");
    assert_string_equal(order[5], "a3");
    assert_string_equal(order[6], "a4");
    assert_int_equal(sched_queued(s), 0);
    sched_worker_sync_end(s, w, 1);
    sched_free(s);
}

static void test_bounds_and_bad_input(void **state)
{
    struct sched_options o = OPTS;
    struct sched *s;
    struct sched_platform p = {0};
    struct sched_worker_desc d = {.instance_prefix = "", .platform = &p};
    struct sched_worker *w, *w2;
    struct sched_task *t;
    bool joined;

    (void)state;
    o.max_queued = 2;
    o.max_workers = 2;
    assert_int_equal(sched_new(&o, 0, &s), 0);
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 0, &w, &joined), 0);
    assert_true(joined);
    /* the same slot twice at once */
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 0, &w2, &joined), -EBUSY);
    sched_worker_sync_end(s, w, 0);
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 0, &w, &joined), 0);
    assert_false(joined);
    sched_worker_sync_end(s, w, 0);
    assert_int_equal(sched_worker_sync_begin(s, "x", &d, 0, &w2, &joined), 0);
    sched_worker_sync_end(s, w2, 0);
    assert_int_equal(sched_worker_sync_begin(s, "y", &d, 0, &w2, &joined), -ENOSPC);
    submit(s, "k1", "", 0, "", 0);
    submit(s, "k2", "", 0, "", 0);
    {
        struct sched_task_desc td = {.instance = "", .key = "k3", .platform = &p};

        assert_int_equal(sched_submit(s, &td, NULL, 0, &t), -ENOSPC);
    }
    /* a completion for an action the slot was not given */
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 0, &w, &joined), 0);
    assert_int_equal(sched_worker_finish(s, w, "k1", &t), -ENOENT);
    t = sched_worker_take(s, w, 0);
    assert_non_null(t);
    assert_int_equal(sched_worker_finish(s, w, "k2", &t), -ENOENT);
    finish(s, w, "k1");
    sched_worker_sync_end(s, w, 0);
    sched_free(s);
}

static void test_worker_loss_requeue(void **state)
{
    struct sched *s;
    struct sched_worker *w;
    struct sched_task *t, *t2;
    struct sched_lost_event ev[4];
    char name[16];

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    sched_worker_sync_end(s, sync_worker(s, "w0", "", 0), 0);
    t = submit(s, "k", "", 0, "", 0);
    (void)t;
    for (int round = 0; round < 3; round++) {
        uint64_t now = 10000 * (uint64_t)(round + 1);

        snprintf(name, sizeof(name), "w%d", round);
        w = sync_worker(s, name, "", now);
        t2 = sched_worker_take(s, w, now);
        assert_non_null(t2);
        assert_int_equal(sched_task_state(t2), SCHED_TASK_EXECUTING);
        sched_worker_sync_end(s, w, now);
        /* not yet timed out */
        assert_int_equal(sched_expire(s, now + 4999, ev, 4), 0);
        assert_int_equal(sched_expire(s, now + 5000, ev, 4), 1);
        assert_string_equal(ev[0].worker, name);
        assert_ptr_equal(ev[0].task, t2);
        if (round < 2) {
            assert_false(ev[0].failed);
            assert_int_equal(sched_queued(s), 1);
        } else {
            assert_true(ev[0].failed);
            assert_int_equal(sched_queued(s), 0);
            assert_string_equal(sched_task_lost(t2), "w0; w1; w2");
            sched_task_cancel(s, t2);
        }
        assert_int_equal(sched_workers(s), 0);
    }
    sched_free(s);
}

static void test_reset_and_in_sync_not_expired(void **state)
{
    struct sched *s;
    struct sched_worker *w;
    struct sched_task *t;
    struct sched_lost_event ev;

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    w = sync_worker(s, "w", "", 0);
    submit(s, "k", "", 0, "", 0);
    t = sched_worker_take(s, w, 0);
    assert_non_null(t);
    /* a long poll in progress does not time out */
    assert_int_equal(sched_expire(s, 60000, &ev, 1), 0);
    /* the slot restarted: reports idle while it should run k */
    assert_int_equal(sched_worker_reset(s, w, &ev), 0);
    assert_false(ev.failed);
    assert_ptr_equal(sched_worker_take(s, w, 0), t);
    sched_worker_sync_end(s, w, 0);
    sched_free(s);
}

static void test_drain_and_cancel(void **state)
{
    struct sched *s;
    struct sched_worker *w, *v;
    struct sched_task *t;
    struct sched_platform none = {0};
    struct sched_worker_desc stop = {.instance_prefix = "", .platform = &none, .prefer_idle = true};
    bool joined;
    FILE *f;
    char buf[2048] = {0};

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    w = sync_worker(s, "hostname=a,slot=1", "", 0);
    sched_worker_sync_end(s, w, 0);
    v = sync_worker(s, "hostname=b,slot=1", "", 0);
    sched_worker_sync_end(s, v, 0);
    assert_int_equal(sched_drain_add(s, "hostname=a,*"), 0);
    t = submit(s, "k", "", 0, "", 0);
    assert_null(sched_worker_take(s, w, 0));
    /* a slot stopping (SIGTERM) takes nothing either */
    assert_int_equal(sched_worker_sync_begin(s, "hostname=b,slot=1", &stop, 0, &v, &joined), 0);
    assert_null(sched_worker_take(s, v, 0));
    sched_worker_sync_end(s, v, 0);
    f = fmemopen(buf, sizeof(buf) - 1, "w");
    sched_status_print(s, 0, f);
    fclose(f);
    assert_non_null(strstr(buf, "hostname=a,slot=1: idle"));
    assert_non_null(strstr(buf, "drained"));
    assert_non_null(strstr(buf, "queued 1"));
    assert_int_equal(sched_drain_remove(s, "hostname=a,*"), 0);
    assert_int_equal(sched_drain_remove(s, "hostname=a,*"), -ENOENT);
    assert_ptr_equal(sched_worker_take(s, w, 0), t);
    /* cancelled while running: the slot learns it has no task */
    sched_task_cancel(s, t);
    assert_null(sched_worker_task(w));
    /* cancelled while queued */
    t = submit(s, "k2", "", 0, "", 0);
    sched_task_cancel(s, t);
    assert_int_equal(sched_queued(s), 0);
    sched_free(s);
}

static void test_instance_prefix(void **state)
{
    struct sched *s;
    struct sched_platform none = {0};
    struct sched_worker_desc d = {.instance_prefix = "other", .platform = &none};
    struct sched_task_desc td = {.instance = "main/x", .key = "k", .platform = &none};
    struct sched_worker *w;
    struct sched_task *t;
    bool joined;

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 5000, &w, &joined), 0);
    assert_int_equal(sched_submit(s, &td, NULL, 5000, &t), -ENOENT);
    sched_worker_sync_end(s, w, 5000);
    d.instance_prefix = "main";
    assert_int_equal(sched_worker_sync_begin(s, "w", &d, 5000, &w, &joined), 0);
    assert_int_equal(sched_submit(s, &td, NULL, 5000, &t), 0);
    assert_ptr_equal(sched_worker_take(s, w, 5000), t);
    sched_worker_sync_end(s, w, 5000);
    sched_free(s);
}

static struct sched_worker *sync_class(struct sched *s, const char *id, const char *plat,
                                       uint32_t size_class, uint64_t now)
{
    struct sched_platform p;
    struct sched_worker_desc d = {.instance_prefix = "", .platform = &p, .size_class = size_class};
    struct sched_worker *w = NULL;
    bool joined;

    platform(&p, plat);
    assert_int_equal(sched_worker_sync_begin(s, id, &d, now, &w, &joined), 0);
    sched_platform_clear(&p);
    return w;
}

/* An action goes to the smallest size class a live slot that fits it
 * announces, and only slots of that class take it; when that class's slots
 * are all lost, new actions go to the next class. */
static void test_size_class(void **state)
{
    struct sched *s = NULL;
    struct sched_worker *small, *big, *other;
    struct sched_task *t, *u;
    struct sched_lost_event ev[4];

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    big = sync_class(s, "big", "OSFamily=Linux", 4, 0);
    sched_worker_sync_end(s, big, 0);
    small = sync_class(s, "small", "OSFamily=Linux", 1, 0);
    sched_worker_sync_end(s, small, 0);
    /* a smaller class whose platform does not fit does not count */
    other = sync_class(s, "other", "OSFamily=Windows", 0, 0);
    sched_worker_sync_end(s, other, 0);
    t = submit(s, "a", "", 0, "OSFamily=Linux", 0);
    assert_int_equal(sched_task_size_class(t), 1);
    assert_null(sched_worker_take(s, big, 0));
    assert_null(sched_worker_take(s, other, 0));
    assert_ptr_equal(sched_worker_take(s, small, 0), t);
    finish(s, small, "a");
    /* the small slot is lost (silent): the next action goes to class 4 */
    sync_class(s, "big", "OSFamily=Linux", 4, 4000);
    sched_worker_sync_end(s, big, 4000);
    sync_class(s, "other", "OSFamily=Windows", 0, 4000);
    sched_worker_sync_end(s, other, 4000);
    assert_int_equal(sched_expire(s, 6000, ev, 4), 1);
    assert_string_equal(ev[0].worker, "small");
    u = submit(s, "b", "", 0, "OSFamily=Linux", 6000);
    assert_int_equal(sched_task_size_class(u), 4);
    assert_ptr_equal(sched_worker_take(s, big, 6000), u);
    finish(s, big, "b");
    sched_free(s);
}

/* The counts /metrics reads: slots by state, actions by (platform, class),
 * and a bounded number of label sets. */
static void test_counts(void **state)
{
    struct sched *s = NULL;
    struct sched_worker *a, *b, *c;
    struct sched_counts n;
    char key[32], plat[32];

    (void)state;
    assert_int_equal(sched_new(&OPTS, 0, &s), 0);
    a = sync_class(s, "a", "OSFamily=Linux", 0, 0);
    sched_worker_sync_end(s, a, 0);
    b = sync_class(s, "b", "OSFamily=Linux", 0, 0);
    sched_worker_sync_end(s, b, 0);
    c = sync_class(s, "c", "a=1,b=1,c=1,d=1,e=1,f=1", 2, 0);
    sched_worker_sync_end(s, c, 0);
    sched_counts_get(s, &n);
    assert_int_equal(n.idle, 3);
    assert_int_equal(n.busy + n.draining + n.n_queues, 0);
    submit(s, "x", "", 0, "OSFamily=Linux", 0);
    submit(s, "y", "", 0, "OSFamily=Linux", 0);
    assert_non_null(sched_worker_take(s, a, 0));
    assert_int_equal(sched_drain_add(s, "b"), 0);
    sched_counts_get(s, &n);
    assert_int_equal(n.idle, 1);
    assert_int_equal(n.busy, 1);
    assert_int_equal(n.draining, 1);
    assert_int_equal(n.n_queues, 1);
    assert_string_equal(n.queues[0].platform, "OSFamily=Linux");
    assert_int_equal(n.queues[0].size_class, 0);
    assert_int_equal(n.queues[0].queued, 1);
    assert_int_equal(n.queues[0].executing, 1);
    /* many platforms: at most SCHED_MAX_QUEUE_COUNTS sets, the rest "other" */
    for (int i = 1; i <= 40; i++) {
        size_t used = 0;

        /* 40 different subsets of c's properties: each fits c */
        snprintf(key, sizeof(key), "k%d", i);
        for (int bit = 0; bit < 6; bit++) {
            if (i & (1 << bit))
                used += (size_t)snprintf(plat + used, sizeof(plat) - used, "%s%c=1",
                                         used ? "," : "", 'a' + bit);
        }
        submit(s, key, "", 0, plat, 0);
    }
    sched_counts_get(s, &n);
    assert_int_equal(n.n_queues, SCHED_MAX_QUEUE_COUNTS);
    assert_string_equal(n.queues[SCHED_MAX_QUEUE_COUNTS - 1].platform, "other");
    uint64_t total = 0;
    for (size_t i = 0; i < n.n_queues; i++)
        total += n.queues[i].queued;
    assert_int_equal(total, 41);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_platform_match),
        cmocka_unit_test(test_unknown_platform),
        cmocka_unit_test(test_priority_and_round_robin),
        cmocka_unit_test(test_bounds_and_bad_input),
        cmocka_unit_test(test_worker_loss_requeue),
        cmocka_unit_test(test_reset_and_in_sync_not_expired),
        cmocka_unit_test(test_drain_and_cancel),
        cmocka_unit_test(test_instance_prefix),
        cmocka_unit_test(test_size_class),
        cmocka_unit_test(test_counts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
