/*
 * html.c - building pages: HTML escaping of everything
 * that comes from a client or an action (argv, env, paths, stdout), the
 * common head with the stylesheet, and the small formatting helpers
 * (durations, sizes, the stacked bar of stage times) the pages share.
 *
 * Escaping is the one place text enters a page: web_buf_html turns &<>"'
 * into entities and any byte that is not printable ASCII, newline, tab or
 * part of valid UTF-8 into a visible \xNN, so a page is always valid text.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web_internal.h"

/* Length of the valid UTF-8 sequence of 2..4 bytes at s, or 0. */
static size_t web_utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;

    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

void web_buf_html(struct util_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;

    while (i < n) {
        unsigned char c = u[i];
        const char *ent = NULL;
        size_t ulen;
        char hex[8];

        if (c == '&')
            ent = "&amp;";
        else if (c == '<')
            ent = "&lt;";
        else if (c == '>')
            ent = "&gt;";
        else if (c == '"')
            ent = "&quot;";
        else if (c == '\'')
            ent = "&#39;";
        else if ((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t') {
            run++;
            i++;
            continue;
        } else if (c >= 0x80 && (ulen = web_utf8_len(u + i, n - i)) > 0) {
            run += ulen;
            i += ulen;
            continue;
        }
        util_buf_put(b, s + i - run, run);
        run = 0;
        if (ent == NULL) {
            snprintf(hex, sizeof(hex), "\\x%02x", c);
            ent = hex;
        }
        util_buf_str(b, ent);
        i++;
    }
    util_buf_put(b, s + i - run, run);
}

void web_buf_html_str(struct util_buf *b, const char *s)
{
    web_buf_html(b, s, strlen(s));
}

static const char web_css[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}"
    "tr:nth-child(even){background:#f4f4f4}code,pre{font:12px/1.3 monospace}"
    "pre{background:#f7f7f7;border:1px solid #ddd;padding:6px;max-height:30em;overflow:auto;"
    "white-space:pre-wrap}"
    ".ok{color:#070}.fail{color:#b00;font-weight:bold}.muted{color:#777}"
    "nav a{margin-right:1em}.charts svg{margin-right:2em;border:1px solid #ddd}";

void web_page_begin(struct util_buf *b, const char *title, unsigned refresh)
{
    util_buf_str(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    if (refresh > 0)
        util_buf_printf(b, "<meta http-equiv=\"refresh\" content=\"%u\">", refresh);
    util_buf_str(b, "<title>");
    web_buf_html_str(b, title);
    util_buf_printf(b, " - casboxd</title><style>%s</style></head><body>\n", web_css);
    util_buf_str(b, "<nav><a href=\"/\">overview</a><a href=\"/history\">history</a>"
                    "<a href=\"/metrics\">metrics</a></nav>\n<h1>");
    web_buf_html_str(b, title);
    util_buf_str(b, "</h1>\n");
}

void web_page_end(struct util_buf *b)
{
    util_buf_str(b, "</body></html>\n");
}

void web_page_error(struct util_buf *b, unsigned status, const char *title, const char *detail)
{
    char t[128];

    snprintf(t, sizeof(t), "%u %s", status, title);
    web_page_begin(b, t, 0);
    util_buf_str(b, "<p id=\"error\">");
    web_buf_html_str(b, detail);
    util_buf_str(b, "</p>\n");
    web_page_end(b);
}

void web_buf_duration(struct util_buf *b, uint64_t us)
{
    if (us < 1000)
        util_buf_printf(b, "%llu µs", (unsigned long long)us);
    else if (us < 1000000)
        util_buf_printf(b, "%.1f ms", us / 1e3);
    else if (us < 120000000)
        util_buf_printf(b, "%.2f s", us / 1e6);
    else
        util_buf_printf(b, "%.1f min", us / 6e7);
}

void web_buf_bytes(struct util_buf *b, uint64_t bytes)
{
    if (bytes < 1024)
        util_buf_printf(b, "%llu B", (unsigned long long)bytes);
    else if (bytes < 1024 * 1024)
        util_buf_printf(b, "%.1f KiB", bytes / 1024.0);
    else if (bytes < 1024ull * 1024 * 1024)
        util_buf_printf(b, "%.1f MiB", bytes / 1048576.0);
    else
        util_buf_printf(b, "%.2f GiB", bytes / 1073741824.0);
}

static uint64_t web_span(uint64_t from, uint64_t to)
{
    return from != 0 && to > from ? to - from : 0;
}

void web_buf_stage_bar(struct util_buf *b, const struct web_action_times *t, unsigned width,
                       uint64_t total_us)
{
    static const char *const names[] = {"queued", "input fetch", "execution", "output upload"};
    static const char *const colors[] = {"#bbb", "#e9a23b", "#3b7de9", "#3bb273"};
    uint64_t spans[4] = {
        web_span(t->queued, t->worker_start),
        web_span(t->input_fetch_start, t->input_fetch_end),
        web_span(t->execution_start, t->execution_end),
        web_span(t->output_upload_start, t->output_upload_end),
    };
    double x = 0;

    if (total_us == 0)
        total_us = spans[0] + spans[1] + spans[2] + spans[3];
    util_buf_printf(b, "<svg class=\"bar\" width=\"%u\" height=\"12\" role=\"img\">", width);
    for (int i = 0; i < 4 && total_us > 0; i++) {
        double w = (double)width * (double)spans[i] / (double)total_us;

        if (w + x > width)
            w = width - x;
        if (w <= 0)
            continue;
        util_buf_printf(b, "<rect x=\"%.1f\" width=\"%.1f\" height=\"12\" fill=\"%s\"><title>%s ",
                        x, w, colors[i], names[i]);
        web_buf_duration(b, spans[i]);
        util_buf_str(b, "</title></rect>");
        x += w;
    }
    util_buf_str(b, "</svg>");
}
