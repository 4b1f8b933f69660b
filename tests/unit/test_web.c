/*
 * test_web.c - web/ without a socket: which page a path names (and the
 * clear errors for malformed digests and names), HTML escaping of
 * client-controlled text (entities, control bytes, invalid UTF-8), and the
 * board: the running list, the bounded history (oldest dropped), results
 * kept for finished actions, and the per-minute cache counts.
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

#include "web_internal.h"

#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_routes(void **state)
{
    struct web_route r;
    char detail[200];

    (void)state;
    assert_int_equal(web_route_parse("/", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_OVERVIEW);
    assert_int_equal(web_route_parse("/metrics", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_METRICS);
    assert_int_equal(web_route_parse("/history", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_HISTORY);
    assert_int_equal(web_route_parse("/action/" H64 "/42", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_ACTION);
    assert_int_equal(r.digest.size, 42);
    assert_int_equal(web_route_parse("/blob/" H64 "/0/out.txt", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_BLOB);
    assert_string_equal(r.name, "out.txt");
    assert_int_equal(web_route_parse("/dir/" H64 "/7", &r, detail, sizeof(detail)), 0);
    assert_int_equal(r.kind, WEB_ROUTE_DIR);

    assert_int_equal(web_route_parse("/nope", &r, detail, sizeof(detail)), -ENOENT);
    assert_int_equal(web_route_parse("/metricsx", &r, detail, sizeof(detail)), -ENOENT);
    assert_int_equal(web_route_parse("/action/abc/1", &r, detail, sizeof(detail)), -EINVAL);
    assert_non_null(strstr(detail, "64-digit"));
    assert_int_equal(web_route_parse("/action/" H64 "/-1", &r, detail, sizeof(detail)), -EINVAL);
    assert_non_null(strstr(detail, "size"));
    assert_int_equal(web_route_parse("/action/" H64 "/", &r, detail, sizeof(detail)), -EINVAL);
    assert_int_equal(
        web_route_parse("/action/" H64 "/1234567890123456789", &r, detail, sizeof(detail)),
        -EINVAL);
    assert_int_equal(web_route_parse("/action/" H64 "/1/x", &r, detail, sizeof(detail)), -EINVAL);
    assert_int_equal(web_route_parse("/blob/" H64 "/1/..", &r, detail, sizeof(detail)), -EINVAL);
    assert_int_equal(web_route_parse("/blob/" H64 "/1/a/b", &r, detail, sizeof(detail)), -EINVAL);
    assert_int_equal(web_route_parse("/blob/" H64 "/1/a\"b", &r, detail, sizeof(detail)), -EINVAL);
    assert_int_equal(
        web_route_parse(
            "/action/0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef/1", &r,
            detail, sizeof(detail)),
        -EINVAL);
}

static void test_escape(void **state)
{
    struct util_buf b = {0};
    const char in[] = "<a href='x'>&\"\x01\xff\xc3\xa9\n";

    (void)state;
    web_buf_html(&b, in, sizeof(in) - 1);
    assert_int_equal(b.err, 0);
    assert_string_equal(b.data, "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\\x01\\xff\xc3\xa9\n");
    util_buf_free(&b);
    /* a truncated UTF-8 sequence at the end is not passed through */
    web_buf_html(&b, "ok\xe2\x82", 4);
    assert_string_equal(b.data, "ok\\xe2\\x82");
    util_buf_free(&b);
}

static struct web_action action_n(int n)
{
    struct web_action a;

    memset(&a, 0, sizeof(a));
    a.digest.size = n;
    a.digest.hash[0] = (uint8_t)n;
    snprintf(a.mnemonic, sizeof(a.mnemonic), "M%d", n);
    a.times.queued = 1;
    return a;
}

static void test_board(void **state)
{
    struct web_board *b;
    struct web_board_snapshot s;
    struct web_action a, found;
    uint64_t hits = 0, misses = 0, finished = 0;

    (void)state;
    assert_int_equal(web_board_new(3, &b), 0);
    for (int i = 1; i <= 5; i++) {
        a = action_n(i);
        assert_int_equal(web_board_begin(b, &a), 0);
    }
    web_board_stage(b, "", &a.digest, WEB_STAGE_EXECUTING);
    assert_int_equal(web_board_snapshot(b, 10, &s), 0);
    assert_int_equal(s.n_running, 5);
    assert_string_equal(s.running[0].mnemonic, "M1"); /* oldest first */
    assert_int_equal(s.running[4].stage, WEB_STAGE_EXECUTING);
    assert_int_equal(s.n_history, 0);
    web_board_snapshot_free(&s);

    for (int i = 1; i <= 5; i++) {
        a = action_n(i);
        snprintf(a.outcome, sizeof(a.outcome), "%s", i == 2 ? "exit_nonzero" : "ok");
        a.exit_code = i == 2 ? 3 : 0;
        web_board_result(b, &a);
        web_board_finish(b, "", &a.digest, NULL);
    }
    web_board_finish(b, "", &a.digest, NULL); /* twice: nothing */
    web_board_note_cache(b, true);
    web_board_note_cache(b, false);
    web_board_note_cache(b, false);
    assert_int_equal(web_board_snapshot(b, 10, &s), 0);
    assert_int_equal(s.n_running, 0);
    assert_int_equal(s.n_history, 3);                 /* history_size */
    assert_string_equal(s.history[0].mnemonic, "M5"); /* newest first */
    assert_string_equal(s.history[2].mnemonic, "M3");
    for (int i = 0; i < WEB_RATE_MINUTES; i++) {
        hits += s.minutes[i].hits;
        misses += s.minutes[i].misses;
        finished += s.minutes[i].finished;
    }
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 2);
    assert_int_equal(finished, 5);
    web_board_snapshot_free(&s);
    a = action_n(2);
    assert_int_equal(web_board_find(b, &a.digest, &found), -ENOENT); /* dropped */
    a = action_n(4);
    assert_int_equal(web_board_find(b, &a.digest, &found), 0);
    assert_string_equal(found.outcome, "ok");
    assert_int_equal(found.stage, WEB_STAGE_DONE);
    web_board_free(b);
}

/* A running action's steps: each stamps the end of the last and the start
 * of the next, and the counts by stage follow. */
static void test_board_stages(void **state)
{
    struct web_board *b;
    struct web_board_snapshot s;
    struct web_action a = action_n(7), other = action_n(8);
    uint64_t counts[WEB_STAGE_COUNT];
    const struct web_action_times *t;

    (void)state;
    assert_int_equal(web_board_new(3, &b), 0);
    assert_int_equal(web_board_begin(b, &a), 0);
    assert_int_equal(web_board_begin(b, &other), 0);
    web_board_stage(b, "", &a.digest, WEB_STAGE_EXECUTING);
    web_board_stage(b, "", &a.digest, WEB_STAGE_INPUT_FETCH);
    web_board_stage(b, "", &a.digest, WEB_STAGE_RUNNING);
    web_board_count_stages(b, counts);
    assert_int_equal(counts[WEB_STAGE_QUEUED], 1);
    assert_int_equal(counts[WEB_STAGE_RUNNING], 1);
    assert_int_equal(counts[WEB_STAGE_EXECUTING] + counts[WEB_STAGE_INPUT_FETCH], 0);
    assert_int_equal(web_board_snapshot(b, 10, &s), 0);
    assert_int_equal(s.n_running, 2);
    t = &s.running[0].times;
    assert_int_equal(s.running[0].stage, WEB_STAGE_RUNNING);
    assert_true(t->worker_start != 0 && t->input_fetch_start >= t->worker_start);
    assert_true(t->input_fetch_end >= t->input_fetch_start && t->execution_start != 0);
    assert_int_equal(t->execution_end, 0); /* still running */
    assert_int_equal(s.running[1].times.worker_start, 0);
    web_board_snapshot_free(&s);
    web_board_stage(b, "", &a.digest, WEB_STAGE_OUTPUT_UPLOAD);
    assert_int_equal(web_board_snapshot(b, 10, &s), 0);
    assert_true(s.running[0].times.execution_end >= s.running[0].times.execution_start);
    assert_true(s.running[0].times.output_upload_start != 0);
    web_board_snapshot_free(&s);
    assert_string_equal(web_stage_name(WEB_STAGE_OUTPUT_UPLOAD), "output_upload");
    assert_string_equal(web_stage_name(WEB_STAGE_COUNT), "unknown");
    web_board_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_board),
        cmocka_unit_test(test_board_stages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
