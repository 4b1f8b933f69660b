/*
 * test_metrics.c - the metrics registry: naming rules enforced, counters,
 * gauges and histograms written in the exposition format with escaped label
 * values, the per-family series bound, updates from many threads adding up,
 * and the process_* collector.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics/metrics.h"

static char *render(struct metrics *m)
{
    char *text;
    size_t len;

    assert_int_equal(metrics_render(m, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_names(void **state)
{
    struct metrics *m;

    (void)state;
    assert_int_equal(metrics_new(NULL, &m), 0);
    assert_null(metrics_counter(m, "casbox_requests", "no _total", NULL));
    assert_null(metrics_gauge(m, "casbox_requests_total", "gauge named like a counter", NULL));
    assert_null(metrics_counter(m, "9casbox_total", "digit first", NULL));
    assert_null(metrics_counter(m, "casbox-x_total", "dash", NULL));
    assert_null(metrics_counter(m, "casbox_x_total", "bad label", "__reserved"));
    assert_null(metrics_counter(m, "casbox_y_total", "repeated label", "a,a"));
    assert_null(metrics_counter(m, "casbox_z_total", "too many", "a,b,c,d,e"));
    assert_null(
        metrics_histogram(m, "casbox_h_seconds", "le is reserved", "le", (double[]){1, 2}, 2));
    assert_null(
        metrics_histogram(m, "casbox_h_seconds", "not increasing", NULL, (double[]){2, 1}, 2));
    assert_non_null(metrics_counter(m, "casbox_ok_total", "fine", "a,b"));
    /* the same name again: the same family; another type: refused */
    assert_ptr_equal(metrics_counter(m, "casbox_ok_total", "fine", "a,b"),
                     metrics_counter(m, "casbox_ok_total", "fine", "a,b"));
    assert_null(metrics_gauge(m, "casbox_ok_total", "x", NULL));
    assert_true(metrics_name_valid("process_cpu_seconds_total"));
    assert_false(metrics_name_valid(""));
    assert_false(metrics_label_name_valid("a:b"));
    metrics_free(m);
}

static void test_exposition(void **state)
{
    struct metrics *m;
    struct metrics_family *c, *g, *h;
    char *text;

    (void)state;
    assert_int_equal(metrics_new(NULL, &m), 0);
    c = metrics_counter(m, "casbox_calls_total", "Calls.\nSecond line \\ here.", "method,code");
    g = metrics_gauge(m, "casbox_queue_length", "Queued.", NULL);
    h = metrics_histogram(m, "casbox_wait_seconds", "Wait.", "stage", (double[]){0.5, 1, 5}, 3);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);
    metrics_counter_add(c, METRICS_LABELS("Read", "OK"), 2);
    metrics_counter_add(c, METRICS_LABELS("Read", "OK"), 1);
    metrics_counter_add(c, METRICS_LABELS("a\"b\\c\nd", "NOT_FOUND"), 1);
    metrics_counter_add(c, METRICS_LABELS("Read", "OK"), -5); /* counters never go down */
    metrics_counter_add(c, METRICS_LABELS("only one"), 1);    /* wrong count: dropped */
    metrics_gauge_set(g, NULL, 7);
    metrics_gauge_add(g, NULL, -2);
    metrics_histogram_observe(h, METRICS_LABELS("exec"), 0.25);
    metrics_histogram_observe(h, METRICS_LABELS("exec"), 0.5); /* le is inclusive */
    metrics_histogram_observe(h, METRICS_LABELS("exec"), 3);
    metrics_histogram_observe(h, METRICS_LABELS("exec"), 100);
    metrics_counter_add(NULL, METRICS_LABELS("x"), 1); /* a NULL family is a no-op */

    text = render(m);
    assert_non_null(strstr(text, "# HELP casbox_calls_total Calls.\\nSecond line \\\\ here.\n"));
    assert_non_null(strstr(text, "# TYPE casbox_calls_total counter\n"));
    assert_non_null(strstr(text, "casbox_calls_total{method=\"Read\",code=\"OK\"} 3\n"));
    assert_non_null(
        strstr(text, "casbox_calls_total{method=\"a\\\"b\\\\c\\nd\",code=\"NOT_FOUND\"} 1\n"));
    assert_null(strstr(text, "only one"));
    assert_non_null(strstr(text, "# TYPE casbox_queue_length gauge\ncasbox_queue_length 5\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_bucket{stage=\"exec\",le=\"0.5\"} 2\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_bucket{stage=\"exec\",le=\"1\"} 2\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_bucket{stage=\"exec\",le=\"5\"} 3\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_bucket{stage=\"exec\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_sum{stage=\"exec\"} 103.75\n"));
    assert_non_null(strstr(text, "casbox_wait_seconds_count{stage=\"exec\"} 4\n"));
    assert_true(metrics_value(m, "casbox_calls_total", METRICS_LABELS("Read", "OK")) == 3);
    assert_true(metrics_value(m, "casbox_wait_seconds", METRICS_LABELS("exec")) == 4);
    assert_true(metrics_value(m, "casbox_nothing", NULL) == 0);
    free(text);
    metrics_free(m);
}

static void test_series_bound(void **state)
{
    struct metrics_options opt = {.max_series = 3};
    struct metrics *m;
    struct metrics_family *c;
    char v[16];

    (void)state;
    assert_int_equal(metrics_new(&opt, &m), 0);
    c = metrics_counter(m, "casbox_many_total", "Many.", "k");
    for (int i = 0; i < 10; i++) {
        snprintf(v, sizeof(v), "v%d", i);
        metrics_counter_add(c, METRICS_LABELS(v), 1);
    }
    assert_true(metrics_value(m, "casbox_many_total", METRICS_LABELS("v2")) == 1);
    assert_true(metrics_value(m, "casbox_many_total", METRICS_LABELS("v3")) == 0);
    assert_true(metrics_value(m, "casbox_metrics_series_dropped_total",
                              METRICS_LABELS("casbox_many_total")) == 7);
    metrics_free(m);
}

struct adder {
    struct metrics_family *c, *h;
};

static void *adder_main(void *arg)
{
    struct adder *a = arg;
    struct metrics_series *s = metrics_series_get(a->c, METRICS_LABELS("x"));

    for (int i = 0; i < 10000; i++) {
        metrics_series_add(s, 1);
        metrics_histogram_observe(a->h, NULL, 0.001);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct metrics *m;
    struct adder a;
    pthread_t t[4];

    (void)state;
    assert_int_equal(metrics_new(NULL, &m), 0);
    a.c = metrics_counter(m, "casbox_adds_total", "Adds.", "k");
    a.h = metrics_histogram(m, "casbox_lat_seconds", "Latency.", NULL, metrics_latency_buckets,
                            metrics_latency_n_buckets);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder_main, &a), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(metrics_value(m, "casbox_adds_total", METRICS_LABELS("x")) == 40000);
    assert_true(metrics_value(m, "casbox_lat_seconds", NULL) == 40000);
    metrics_free(m);
}

static void test_process(void **state)
{
    struct metrics *m;
    char *text;

    (void)state;
    assert_int_equal(metrics_new(NULL, &m), 0);
    assert_int_equal(metrics_process_register(m), 0);
    text = render(m);
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(text, "\nprocess_open_fds "));
    assert_non_null(strstr(text, "\nprocess_start_time_seconds "));
    assert_true(metrics_value(m, "process_resident_memory_bytes", NULL) > 0);
    assert_true(metrics_value(m, "process_threads", NULL) >= 1);
    assert_true(metrics_value(m, "process_start_time_seconds", NULL) > 1e9);
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),        cmocka_unit_test(test_exposition),
        cmocka_unit_test(test_series_bound), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
