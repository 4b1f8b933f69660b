/*
 * page_overview.c - the overview (/) and the history (/history): running
 * actions with their stage and elapsed time, the queue, the worker, the
 * cache hit rate and action throughput of the last hour as inline SVG bar
 * charts, and the finished actions (the last 100 here, the whole bounded
 * history on /history) each with a stacked bar of its stage times.
 *
 * Everything comes from one snapshot of the board; every string that came
 * from a client (instance, mnemonic, target, messages) is escaped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "util/util.h"
#include "web_internal.h"

#define WEB_OVERVIEW_FINISHED 100
#define WEB_HISTORY_SHOWN     1000
#define WEB_REFRESH_S         5
#define WEB_OVERVIEW_WORKERS  200

static void web_action_link(struct util_buf *b, const struct web_action *a)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(&a->digest, hex);
    util_buf_printf(b, "<a href=\"/action/%s/%" PRId64, hex, a->digest.size);
    if (a->instance[0] != '\0') {
        /* the instance goes into a query string: only a safe subset is
         * linked as is, anything else is left to the page's lookup */
        bool plain = true;

        for (const char *p = a->instance; *p && plain; p++)
            plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '/' || *p == '-' || *p == '_' || *p == '.';
        if (plain)
            util_buf_printf(b, "?instance=%s", a->instance);
    }
    util_buf_printf(b, "\"><code>%.12s…/%" PRId64 "</code></a>", hex, a->digest.size);
}

static const char *web_stage_label(enum web_stage s)
{
    static const char *const labels[] = {"queued",  "executing",         "fetching inputs",
                                         "running", "uploading outputs", "done"};

    return (unsigned)s < WEB_STAGE_COUNT ? labels[s] : "unknown";
}

/* A running action's stage times so far: the stage it is in ends now. */
static void web_running_times(const struct web_action *a, uint64_t now, struct web_action_times *t)
{
    *t = a->times;
    if (a->stage == WEB_STAGE_QUEUED && t->worker_start == 0)
        t->worker_start = now;
    if (a->stage == WEB_STAGE_INPUT_FETCH && t->input_fetch_end == 0)
        t->input_fetch_end = now;
    if (a->stage == WEB_STAGE_RUNNING && t->execution_end == 0)
        t->execution_end = now;
    if (a->stage == WEB_STAGE_OUTPUT_UPLOAD && t->output_upload_end == 0)
        t->output_upload_end = now;
}

/* "queued 12 ms · inputs 0.3 s · running 2.1 s": each stage reached. */
static void web_running_spans(struct util_buf *b, const struct web_action_times *t)
{
    const char *names[] = {"queued", "inputs", "running", "outputs"};
    const uint64_t from[] = {t->queued, t->input_fetch_start, t->execution_start,
                             t->output_upload_start};
    const uint64_t to[] = {t->worker_start, t->input_fetch_end, t->execution_end,
                           t->output_upload_end};
    bool first = true;

    for (int i = 0; i < 4; i++) {
        if (from[i] == 0 || to[i] < from[i])
            continue;
        util_buf_printf(b, "%s<span class=\"span-%s\">%s ", first ? "" : " · ", names[i], names[i]);
        web_buf_duration(b, to[i] - from[i]);
        util_buf_str(b, "</span>");
        first = false;
    }
}

static void web_overview_running(struct util_buf *b, const struct web_board_snapshot *s)
{
    uint64_t now = clock_real_us();
    size_t queued = 0;

    for (size_t i = 0; i < s->n_running; i++)
        queued += s->running[i].stage == WEB_STAGE_QUEUED;
    util_buf_printf(b, "<h2>Running (%zu)</h2>\n", s->total_running);
    if (s->n_running == 0) {
        util_buf_str(b, "<p class=\"muted\" id=\"running-none\">No action is running.</p>\n");
        return;
    }
    util_buf_str(b, "<table id=\"running\"><tr><th>action</th><th>mnemonic</th><th>target</th>"
                    "<th>worker</th><th>stage</th><th>elapsed</th><th>stages</th></tr>\n");
    for (size_t i = 0; i < s->n_running; i++) {
        const struct web_action *a = &s->running[i];
        struct web_action_times t;

        util_buf_str(b, "<tr><td>");
        web_action_link(b, a);
        util_buf_str(b, "</td><td>");
        web_buf_html_str(b, a->mnemonic[0] ? a->mnemonic : "-");
        util_buf_str(b, "</td><td>");
        web_buf_html_str(b, a->target);
        util_buf_str(b, "</td><td>");
        web_buf_html_str(b, a->worker);
        util_buf_printf(b, "</td><td class=\"stage\" data-stage=\"%s\">%s</td><td>",
                        web_stage_name(a->stage), web_stage_label(a->stage));
        web_buf_duration(b, a->times.queued && now > a->times.queued ? now - a->times.queued : 0);
        util_buf_str(b, "</td><td>");
        web_running_times(a, now, &t);
        web_buf_stage_bar(b, &t, 160, 0);
        util_buf_str(b, " ");
        web_running_spans(b, &t);
        util_buf_str(b, "</td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
    if (s->total_running > s->n_running)
        util_buf_printf(b, "<p class=\"muted\">%zu more not shown.</p>\n",
                        s->total_running - s->n_running);
    util_buf_printf(b, "<p>Queue: <span id=\"queued\">%zu</span> waiting for a slot.</p>\n",
                    queued);
}

/* 60 bars, one per minute; value(i) in [0, max]. */
static void web_chart(struct util_buf *b, const char *id, const char *title,
                      const struct web_board_snapshot *s, int kind)
{
    const unsigned w = 4, h = 60;
    double max = 0, v[WEB_RATE_MINUTES];

    for (size_t i = 0; i < WEB_RATE_MINUTES; i++) {
        const struct web_minute *m = &s->minutes[i];

        if (kind == 0) /* hit rate, percent */
            v[i] =
                m->hits + m->misses ? 100.0 * (double)m->hits / (double)(m->hits + m->misses) : -1;
        else
            v[i] = (double)m->finished;
        if (v[i] > max)
            max = v[i];
    }
    if (kind == 0)
        max = 100;
    util_buf_printf(b,
                    "<figure><svg id=\"%s\" width=\"%u\" height=\"%u\" role=\"img\">"
                    "<title>%s</title>",
                    id, w * WEB_RATE_MINUTES, h, title);
    for (size_t i = 0; i < WEB_RATE_MINUTES; i++) {
        double bh = v[i] > 0 && max > 0 ? (double)h * v[i] / max : 0;

        if (bh > 0)
            util_buf_printf(b,
                            "<rect x=\"%zu\" y=\"%.1f\" width=\"%u\" height=\"%.1f\" "
                            "fill=\"%s\"><title>%.0f</title></rect>",
                            i * w, h - bh, w - 1, bh, kind == 0 ? "#3bb273" : "#3b7de9", v[i]);
    }
    util_buf_printf(b,
                    "</svg><figcaption>%s (last hour, per minute; max %.0f)</figcaption>"
                    "</figure>\n",
                    title, max);
}

static void web_overview_finished(struct util_buf *b, const struct web_board_snapshot *s)
{
    uint64_t longest = 0;

    for (size_t i = 0; i < s->n_history; i++) {
        const struct web_action_times *t = &s->history[i].times;
        uint64_t span = t->worker_end > t->queued && t->queued ? t->worker_end - t->queued : 0;

        if (span > longest)
            longest = span;
    }
    if (s->n_history == 0) {
        util_buf_str(b,
                     "<p class=\"muted\" id=\"finished-none\">No action has finished yet.</p>\n");
        return;
    }
    util_buf_str(b, "<p class=\"muted\">Bars: <span style=\"color:#bbb\">■</span> queued "
                    "<span style=\"color:#e9a23b\">■</span> input fetch "
                    "<span style=\"color:#3b7de9\">■</span> execution "
                    "<span style=\"color:#3bb273\">■</span> output upload, "
                    "to the scale of the longest.</p>\n");
    util_buf_str(b, "<table id=\"finished\"><tr><th>action</th><th>mnemonic</th><th>target</th>"
                    "<th>outcome</th><th>exit</th><th>total</th><th>stages</th></tr>\n");
    for (size_t i = 0; i < s->n_history; i++) {
        const struct web_action *a = &s->history[i];
        bool ok = strcmp(a->outcome, "ok") == 0;

        util_buf_printf(b, "<tr class=\"%s\"><td>", ok ? "row-ok" : "row-fail");
        web_action_link(b, a);
        util_buf_str(b, "</td><td>");
        web_buf_html_str(b, a->mnemonic[0] ? a->mnemonic : "-");
        util_buf_str(b, "</td><td>");
        web_buf_html_str(b, a->target);
        util_buf_printf(b, "</td><td class=\"%s\">", ok ? "ok" : "fail");
        web_buf_html_str(b, a->outcome);
        util_buf_printf(b, "</td><td>%d</td><td>", a->exit_code);
        web_buf_duration(b, a->times.worker_end > a->times.queued && a->times.queued
                                ? a->times.worker_end - a->times.queued
                                : 0);
        util_buf_str(b, "</td><td>");
        web_buf_stage_bar(b, &a->times, 300, longest);
        util_buf_str(b, "</td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
}

/* A fleet's worker slots (at most WEB_OVERVIEW_WORKERS), or this host. */
static void web_overview_workers(struct util_buf *b, const struct web_options *opt,
                                 const struct web_board_snapshot *s)
{
    struct web_worker_row *rows;
    uint64_t now = clock_real_us();
    size_t n;

    util_buf_str(b, "<h2>Workers</h2>\n<table id=\"workers\"><tr><th>worker</th><th>state</th>");
    if (opt->fleet_workers == NULL) {
        util_buf_str(b, "<th>running</th></tr>\n<tr><td>");
        web_buf_html_str(b, opt->worker_name ? opt->worker_name : "");
        util_buf_printf(b, "</td><td>%s</td><td>%zu</td></tr>\n</table>\n",
                        s->total_running ? "busy" : "idle", s->total_running);
        return;
    }
    util_buf_str(b, "<th>action</th><th>platform</th><th>size class</th><th>ran</th>"
                    "<th>since</th></tr>\n");
    rows = calloc(WEB_OVERVIEW_WORKERS, sizeof(*rows));
    n = rows ? opt->fleet_workers(opt->fleet_workers_ctx, rows, WEB_OVERVIEW_WORKERS) : 0;
    for (size_t i = 0; i < n; i++) {
        const struct web_worker_row *r = &rows[i];

        util_buf_str(b, "<tr><td>");
        web_buf_html_str(b, r->id);
        util_buf_printf(b, "</td><td class=\"state\">%s</td><td><code>", r->state);
        web_buf_html_str(b, r->action);
        util_buf_str(b, "</code></td><td>");
        web_buf_html_str(b, r->platform);
        util_buf_printf(b, "</td><td>%" PRIu32 "</td><td>%" PRIu64 "</td><td>", r->size_class,
                        r->runs);
        web_buf_duration(b, now > r->since_us ? now - r->since_us : 0);
        util_buf_str(b, "</td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
    if (n == WEB_OVERVIEW_WORKERS)
        util_buf_printf(b,
                        "<p class=\"muted\">The first %d slots; <code>casbox fleet "
                        "status</code> lists them all.</p>\n",
                        WEB_OVERVIEW_WORKERS);
    if (n == 0)
        util_buf_str(b, "<p class=\"muted\" id=\"workers-none\">No worker has joined.</p>\n");
    free(rows);
}

int web_page_overview(const struct web_options *opt, struct util_buf *b, bool all_history)
{
    struct web_board_snapshot s;
    uint64_t hits = 0, lookups = 0;
    int rc;

    rc =
        web_board_snapshot(opt->board, all_history ? WEB_HISTORY_SHOWN : WEB_OVERVIEW_FINISHED, &s);
    if (rc != 0)
        return rc;
    web_page_begin(b, all_history ? "History" : "casboxd", WEB_REFRESH_S);
    if (!all_history) {
        web_overview_running(b, &s);
        web_overview_workers(b, opt, &s);
        for (size_t i = 0; i < WEB_RATE_MINUTES; i++) {
            hits += s.minutes[i].hits;
            lookups += s.minutes[i].hits + s.minutes[i].misses;
        }
        util_buf_str(b, "<h2>Last hour</h2>\n");
        if (lookups > 0)
            util_buf_printf(b,
                            "<p>Cache hit rate: <span id=\"hit-rate\">%.1f%%</span> of %" PRIu64
                            " lookups.</p>\n",
                            100.0 * (double)hits / (double)lookups, lookups);
        util_buf_str(b, "<div class=\"charts\">");
        web_chart(b, "chart-hit-rate", "cache hit rate %", &s, 0);
        web_chart(b, "chart-throughput", "actions finished", &s, 1);
        util_buf_str(b, "</div>\n");
        util_buf_printf(b, "<h2>Finished (last %d)</h2>\n", WEB_OVERVIEW_FINISHED);
    } else {
        util_buf_printf(b,
                        "<p>The newest %zu finished actions casboxd keeps "
                        "([http] history_size).</p>\n",
                        s.n_history);
    }
    web_overview_finished(b, &s);
    web_page_end(b);
    web_board_snapshot_free(&s);
    return b->err;
}
