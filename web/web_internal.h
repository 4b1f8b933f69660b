/*
 * web_internal.h - what the files of web/ share: the board's snapshot for
 * the pages (board.c), the HTML buffer and escaping (html.c), and the page
 * renderers (page_*.c) the server (server.c) calls.
 */
#ifndef CASBOX_WEB_INTERNAL_H
#define CASBOX_WEB_INTERNAL_H

#include <stdarg.h>

#include "reapi/reapi.h"
#include "util/util.h"
#include "web.h"

#define WEB_RATE_MINUTES  60  /* the overview's charts: the last hour, per minute */
#define WEB_RUNNING_SHOWN 200 /* running actions listed on the overview */

/* One minute of the last hour. */
struct web_minute {
    uint64_t minute; /* minutes since the epoch */
    uint64_t hits, misses;
    uint64_t finished, failed;
};

/* A copy of the board for one page, taken under its lock. */
struct web_board_snapshot {
    struct web_action *running; /* at most WEB_RUNNING_SHOWN, oldest first */
    size_t n_running;
    size_t total_running;
    struct web_action *history; /* newest first */
    size_t n_history;
    struct web_minute minutes[WEB_RATE_MINUTES]; /* oldest first, ending at now */
};

int web_board_snapshot(struct web_board *b, size_t max_history, struct web_board_snapshot *out);
void web_board_snapshot_free(struct web_board_snapshot *s);

/* Pages are built in a struct util_buf (util.h). */
/* Escapes &<>"' (every byte of user-controlled text goes through here);
 * bytes that are not printable ASCII or UTF-8 text are shown as \xNN. */
void web_buf_html(struct util_buf *b, const char *s, size_t n);
void web_buf_html_str(struct util_buf *b, const char *s);
void util_buf_free(struct util_buf *b);

/* The page's head (title escaped, refresh seconds 0: none) and its end. */
void web_page_begin(struct util_buf *b, const char *title, unsigned refresh);
void web_page_end(struct util_buf *b);
/* "1.2 ms", "3.4 s", "2 min" */
void web_buf_duration(struct util_buf *b, uint64_t us);
void web_buf_bytes(struct util_buf *b, uint64_t bytes);
/* A stacked bar of the stage times (queued, input fetch, execution, output
 * upload) as inline SVG, width px for total_us (0: the action's own span). */
void web_buf_stage_bar(struct util_buf *b, const struct web_action_times *t, unsigned width,
                       uint64_t total_us);

/* Pages: status is the HTTP status to answer with. */
int web_page_overview(const struct web_options *opt, struct util_buf *b, bool all_history);
int web_page_action(const struct web_options *opt, const struct cas_digest *d, const char *instance,
                    struct util_buf *b, unsigned *status);
int web_page_dir(const struct web_options *opt, const struct cas_digest *d, struct util_buf *b,
                 unsigned *status);
/* Shared by the pages (page_action.c). */
int web_digest_from_proto(const Build__Bazel__Remote__Execution__V2__Digest *pd,
                          struct cas_digest *out);
/* A blob decoded as desc when present and at most max_message_bytes:
 * -ENOENT, -EFBIG, -EBADMSG. */
int web_load_message(const struct web_options *opt, const struct cas_digest *d,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);
void web_page_error(struct util_buf *b, unsigned status, const char *title, const char *detail);

#endif
