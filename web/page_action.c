/*
 * page_action.c - /action/<hash>/<size>: one action, to see why it failed
 * and to reproduce it. The Command (argv, environment, working directory,
 * platform, outputs), a link to the input root's listing, the result (exit
 * code, stdout and stderr inline up to inline_bytes, outputs with download
 * links), ExecutedActionMetadata as a timeline, the worker, and a
 * casbox-replay command line.
 *
 * The result comes from the board's history (the ExecuteResponse the slot
 * stored in the CAS, failed runs included), else from the ActionCache of
 * the instance in ?instance=. Messages are decoded only up to
 * max_message_bytes; stdout and stderr are read with pread up to the bound.
 * An action neither in the CAS nor in the history is a 404.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reapi/reapi.h"
#include "web_internal.h"

/* A Digest message's digest; -EINVAL when missing or malformed. */
int web_digest_from_proto(const Digest *pd, struct cas_digest *out)
{
    if (pd == NULL || pd->hash == NULL || strlen(pd->hash) != CAS_HASH_HEX || pd->size_bytes < 0)
        return -EINVAL;
    return cas_digest_parse(pd->hash, pd->size_bytes, out);
}

/* A blob decoded as desc, when present and not larger than the bound. */
int web_load_message(const struct web_options *opt, const struct cas_digest *d,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    void *buf = NULL;
    size_t len;
    int rc;

    *out = NULL;
    if ((uint64_t)d->size > opt->max_message_bytes)
        return -EFBIG;
    rc = cas_store_get(opt->store, d, &buf, &len);
    if (rc != 0)
        return rc;
    *out = protobuf_c_message_unpack(desc, NULL, len, buf);
    free(buf);
    return *out != NULL ? 0 : -EBADMSG;
}

static void web_digest_link(struct util_buf *b, const char *page, const Digest *pd,
                            const char *name)
{
    struct cas_digest d;
    char hex[CAS_HASH_HEX + 1];

    if (pd == NULL || web_digest_from_proto(pd, &d) != 0) {
        util_buf_str(b, "<span class=\"muted\">(no valid digest)</span>");
        return;
    }
    cas_digest_hex(&d, hex);
    util_buf_printf(b, "<a href=\"/%s/%s/%" PRId64, page, hex, d.size);
    if (name != NULL && name[0] != '\0')
        util_buf_printf(b, "/%s", name);
    util_buf_printf(b, "\"><code>%.12s…/%" PRId64 "</code></a>", hex, d.size);
}

/* A safe download name for path: its last component if made only of
 * [A-Za-z0-9._+-], else none. */
static void web_download_name(const char *path, char *out, size_t len)
{
    const char *base = strrchr(path, '/');

    base = base ? base + 1 : path;
    out[0] = '\0';
    if (strlen(base) >= len || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return;
    for (const char *p = base; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '+'))
            return;
    }
    snprintf(out, len, "%s", base);
}

static void web_platform(struct util_buf *b, const Platform *p)
{
    if (p == NULL || p->n_properties == 0) {
        util_buf_str(b, "<span class=\"muted\">(none)</span>");
        return;
    }
    for (size_t i = 0; i < p->n_properties; i++) {
        util_buf_str(b, "<code>");
        web_buf_html_str(b, p->properties[i]->name ? p->properties[i]->name : "");
        util_buf_str(b, "=");
        web_buf_html_str(b, p->properties[i]->value ? p->properties[i]->value : "");
        util_buf_str(b, "</code> ");
    }
}

static void web_command(struct util_buf *b, const Command *cmd)
{
    util_buf_str(b, "<h2>Command</h2>\n<table id=\"command\"><tr><th>arguments</th><td><pre "
                    "id=\"argv\">");
    for (size_t i = 0; i < cmd->n_arguments; i++) {
        web_buf_html_str(b, cmd->arguments[i]);
        util_buf_str(b, i + 1 < cmd->n_arguments ? "\n" : "");
    }
    util_buf_str(b, "</pre></td></tr>\n<tr><th>environment</th><td><pre id=\"env\">");
    for (size_t i = 0; i < cmd->n_environment_variables; i++) {
        web_buf_html_str(b, cmd->environment_variables[i]->name);
        util_buf_str(b, "=");
        web_buf_html_str(b, cmd->environment_variables[i]->value);
        util_buf_str(b, "\n");
    }
    util_buf_str(b, "</pre></td></tr>\n<tr><th>working directory</th><td><code>");
    web_buf_html_str(b, cmd->working_directory && cmd->working_directory[0] ? cmd->working_directory
                                                                            : "(input root)");
    util_buf_str(b, "</code></td></tr>\n<tr><th>platform</th><td>");
    web_platform(b, cmd->platform);
    util_buf_str(b, "</td></tr>\n<tr><th>outputs</th><td>");
    for (size_t i = 0; i < cmd->n_output_paths; i++) {
        util_buf_str(b, "<code>");
        web_buf_html_str(b, cmd->output_paths[i]);
        util_buf_str(b, "</code> ");
    }
    for (size_t i = 0; i < cmd->n_output_files; i++) {
        util_buf_str(b, "<code>");
        web_buf_html_str(b, cmd->output_files[i]);
        util_buf_str(b, "</code> ");
    }
    for (size_t i = 0; i < cmd->n_output_directories; i++) {
        util_buf_str(b, "<code>");
        web_buf_html_str(b, cmd->output_directories[i]);
        util_buf_str(b, "/</code> ");
    }
    util_buf_str(b, "</td></tr></table>\n");
}

/* stdout or stderr: inline bytes, else the blob's first inline_bytes. */
static void web_stdio(const struct web_options *opt, struct util_buf *b, const char *id,
                      ProtobufCBinaryData raw, const Digest *pd)
{
    struct cas_digest d;
    char *buf = NULL;
    size_t n = 0;
    uint64_t total = raw.len;
    int fd = -1;

    util_buf_printf(b, "<h3>%s</h3>\n", id);
    if (raw.len == 0 && pd != NULL && web_digest_from_proto(pd, &d) == 0) {
        total = (uint64_t)d.size;
        n = total < opt->inline_bytes ? (size_t)total : (size_t)opt->inline_bytes;
        fd = cas_store_open_blob(opt->store, &d);
        buf = fd >= 0 ? malloc(n ? n : 1) : NULL;
        if (buf != NULL) {
            ssize_t got = pread(fd, buf, n, 0);

            n = got > 0 ? (size_t)got : 0;
        } else {
            n = 0;
        }
        if (fd < 0) {
            util_buf_str(b, "<p class=\"muted\">(no longer in the CAS)</p>\n");
            goto out;
        }
    } else {
        n = raw.len < opt->inline_bytes ? raw.len : (size_t)opt->inline_bytes;
    }
    if (total == 0) {
        util_buf_printf(b, "<p class=\"muted\" id=\"%s-empty\">(empty)</p>\n", id);
        goto out;
    }
    util_buf_printf(b, "<pre id=\"%s\">", id);
    web_buf_html(b, buf ? buf : (const char *)raw.data, n);
    util_buf_str(b, "</pre>\n");
    if (total > n) {
        util_buf_printf(b, "<p class=\"muted\">%" PRIu64 " more bytes: ", total - n);
        web_digest_link(b, "blob", pd, id);
        util_buf_str(b, "</p>\n");
    } else if (pd != NULL && raw.len == 0) {
        util_buf_str(b, "<p class=\"muted\">blob: ");
        web_digest_link(b, "blob", pd, id);
        util_buf_str(b, "</p>\n");
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
}

static void web_outputs(struct util_buf *b, const ActionResult *r)
{
    char name[256];

    util_buf_str(b, "<h3>outputs</h3>\n<table id=\"outputs\"><tr><th>path</th><th>size</th>"
                    "<th>blob</th></tr>\n");
    for (size_t i = 0; i < r->n_output_files; i++) {
        const OutputFile *f = r->output_files[i];

        web_download_name(f->path ? f->path : "", name, sizeof(name));
        util_buf_str(b, "<tr><td><code>");
        web_buf_html_str(b, f->path ? f->path : "");
        util_buf_printf(b, "%s</code></td><td>", f->is_executable ? " (executable)" : "");
        web_buf_bytes(b, f->digest ? (uint64_t)f->digest->size_bytes : 0);
        util_buf_str(b, "</td><td class=\"output-link\">");
        web_digest_link(b, "blob", f->digest, name);
        util_buf_str(b, "</td></tr>\n");
    }
    for (size_t i = 0; i < r->n_output_directories; i++) {
        const OutputDirectory *dir = r->output_directories[i];

        util_buf_str(b, "<tr><td><code>");
        web_buf_html_str(b, dir->path ? dir->path : "");
        util_buf_str(b, "/</code></td><td>Tree</td><td>");
        web_digest_link(b, "blob", dir->tree_digest, NULL);
        util_buf_str(b, "</td></tr>\n");
    }
    for (size_t i = 0; i < r->n_output_symlinks; i++) {
        const OutputSymlink *l = r->output_symlinks[i];

        util_buf_str(b, "<tr><td><code>");
        web_buf_html_str(b, l->path ? l->path : "");
        util_buf_str(b, "</code></td><td>symlink</td><td><code>→ ");
        web_buf_html_str(b, l->target ? l->target : "");
        util_buf_str(b, "</code></td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
}

static uint64_t web_ts_us(const Google__Protobuf__Timestamp *t)
{
    return t ? (uint64_t)t->seconds * 1000000u + (uint64_t)t->nanos / 1000u : 0;
}

static void web_timeline(struct util_buf *b, const ExecutedActionMetadata *m)
{
    struct web_action_times t = {
        .queued = web_ts_us(m->queued_timestamp),
        .worker_start = web_ts_us(m->worker_start_timestamp),
        .input_fetch_start = web_ts_us(m->input_fetch_start_timestamp),
        .input_fetch_end = web_ts_us(m->input_fetch_completed_timestamp),
        .execution_start = web_ts_us(m->execution_start_timestamp),
        .execution_end = web_ts_us(m->execution_completed_timestamp),
        .output_upload_start = web_ts_us(m->output_upload_start_timestamp),
        .output_upload_end = web_ts_us(m->output_upload_completed_timestamp),
        .worker_end = web_ts_us(m->worker_completed_timestamp),
    };
    const struct {
        const char *name;
        uint64_t at;
    } rows[] = {
        {"queued", t.queued},
        {"worker start", t.worker_start},
        {"input fetch start", t.input_fetch_start},
        {"input fetch completed", t.input_fetch_end},
        {"execution start", t.execution_start},
        {"execution completed", t.execution_end},
        {"output upload start", t.output_upload_start},
        {"output upload completed", t.output_upload_end},
        {"worker completed", t.worker_end},
    };

    util_buf_str(b, "<h2>Timeline</h2>\n<p>worker: <code id=\"worker\">");
    web_buf_html_str(b, m->worker ? m->worker : "");
    util_buf_str(b, "</code></p>\n<p>");
    web_buf_stage_bar(b, &t, 600, 0);
    util_buf_str(b, "</p>\n<table id=\"timeline\"><tr><th>event</th><th>after queued</th></tr>\n");
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        util_buf_printf(b, "<tr><td>%s</td><td>", rows[i].name);
        if (rows[i].at == 0 || t.queued == 0 || rows[i].at < t.queued)
            util_buf_str(b, "-");
        else
            web_buf_duration(b, rows[i].at - t.queued);
        util_buf_str(b, "</td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
}

static void web_result(const struct web_options *opt, struct util_buf *b, const ActionResult *r,
                       const char *status_message)
{
    util_buf_printf(b,
                    "<h2>Result</h2>\n<p>exit code: <span id=\"exit-code\" class=\"%s\">%d</span>"
                    "</p>\n",
                    r->exit_code == 0 ? "ok" : "fail", r->exit_code);
    if (status_message != NULL && status_message[0] != '\0') {
        util_buf_str(b, "<p>status: <span id=\"status\" class=\"fail\">");
        web_buf_html_str(b, status_message);
        util_buf_str(b, "</span></p>\n");
    }
    web_stdio(opt, b, "stderr", r->stderr_raw, r->stderr_digest);
    web_stdio(opt, b, "stdout", r->stdout_raw, r->stdout_digest);
    web_outputs(b, r);
    if (r->execution_metadata != NULL)
        web_timeline(b, r->execution_metadata);
}

/* The result and the status message: from the history's ExecuteResponse,
 * else from the ActionCache. */
static int web_find_result(const struct web_options *opt, const struct cas_digest *d,
                           const char *instance, const struct web_action *hist, bool has_hist,
                           ExecuteResponse **resp, ActionResult **cached)
{
    void *buf = NULL;
    size_t len;
    int rc;

    *resp = NULL;
    *cached = NULL;
    if (has_hist && hist->response.size >= 0 &&
        web_load_message(opt, &hist->response,
                         &build__bazel__remote__execution__v2__execute_response__descriptor,
                         (ProtobufCMessage **)resp) == 0 &&
        (*resp)->result != NULL)
        return 0;
    rc = cas_ac_get(opt->store, has_hist ? hist->instance : instance, d, &buf, &len);
    if (rc != 0)
        return rc;
    *cached = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, buf);
    free(buf);
    return *cached != NULL ? 0 : -EBADMSG;
}

int web_page_action(const struct web_options *opt, const struct cas_digest *d, const char *instance,
                    struct util_buf *b, unsigned *status)
{
    Action *action = NULL;
    Command *cmd = NULL;
    ExecuteResponse *resp = NULL;
    ActionResult *cached = NULL;
    struct web_action hist;
    bool has_hist = web_board_find(opt->board, d, &hist) == 0;
    char hex[CAS_HASH_HEX + 1], title[128];
    int rc;

    cas_digest_hex(d, hex);
    rc = web_load_message(opt, d, &build__bazel__remote__execution__v2__action__descriptor,
                          (ProtobufCMessage **)&action);
    if (rc != 0 && !has_hist) {
        *status = rc == -ENOENT ? 404 : 422;
        web_page_error(b, *status, rc == -ENOENT ? "Unknown action" : "Not an action",
                       rc == -ENOENT  ? "No action with this digest is in the CAS or the history."
                       : rc == -EFBIG ? "The blob is too large to be an Action "
                                        "([http] max_message_bytes)."
                                      : "The blob with this digest is not an Action message.");
        return b->err;
    }
    *status = 200;
    snprintf(title, sizeof(title), "Action %.16s…/%" PRId64, hex, d->size);
    web_page_begin(b, title, 0);
    util_buf_printf(b, "<p>digest: <code id=\"digest\">%s/%" PRId64 "</code>", hex, d->size);
    if (has_hist) {
        util_buf_str(b, " · mnemonic: <code>");
        web_buf_html_str(b, hist.mnemonic[0] ? hist.mnemonic : "-");
        util_buf_str(b, "</code> · target: <code>");
        web_buf_html_str(b, hist.target);
        util_buf_printf(b, "</code> · outcome: <span id=\"outcome\" class=\"%s\">",
                        strcmp(hist.outcome, "ok") == 0 ? "ok" : "fail");
        web_buf_html_str(b, hist.outcome);
        util_buf_str(b, "</span>");
    }
    util_buf_str(b, "</p>\n");
    if (action == NULL) {
        util_buf_str(b, "<p class=\"muted\">The Action is no longer in the CAS.</p>\n");
    } else {
        util_buf_str(b, "<p>input root: ");
        web_digest_link(b, "dir", action->input_root_digest, NULL);
        util_buf_printf(b, " · timeout: %" PRId64 " s · do_not_cache: %s · platform: ",
                        action->timeout ? action->timeout->seconds : 0,
                        action->do_not_cache ? "yes" : "no");
        web_platform(b, action->platform);
        util_buf_str(b, "</p>\n");
        if (action->command_digest != NULL) {
            struct cas_digest cd;

            if (web_digest_from_proto(action->command_digest, &cd) == 0 &&
                web_load_message(opt, &cd,
                                 &build__bazel__remote__execution__v2__command__descriptor,
                                 (ProtobufCMessage **)&cmd) == 0)
                web_command(b, cmd);
            else
                util_buf_str(b, "<p class=\"muted\">The Command is not in the CAS.</p>\n");
        }
    }
    if (web_find_result(opt, d, instance, &hist, has_hist, &resp, &cached) == 0)
        web_result(
            opt, b, resp ? resp->result : cached,
            resp ? (resp->status && resp->status->code ? resp->status->message : resp->message)
                 : NULL);
    else
        util_buf_str(b, "<h2>Result</h2><p class=\"muted\" id=\"no-result\">No result: the action "
                        "has not finished here, or its result is gone.</p>\n");
    util_buf_str(b, "<h2>Reproduce</h2>\n<pre id=\"replay\">casbox run --action ");
    util_buf_printf(b, "%s/%" PRId64 " --remote ", hex, d->size);
    web_buf_html_str(b, opt->grpc_url ? opt->grpc_url : "grpc://HOST:PORT");
    if (has_hist && hist.instance[0] != '\0') {
        util_buf_str(b, " --instance '");
        web_buf_html_str(b, hist.instance);
        util_buf_str(b, "'");
    }
    util_buf_str(b, "</pre>\n");
    web_page_end(b);
    if (action != NULL)
        protobuf_c_message_free_unpacked(&action->base, NULL);
    if (cmd != NULL)
        protobuf_c_message_free_unpacked(&cmd->base, NULL);
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (cached != NULL)
        protobuf_c_message_free_unpacked(&cached->base, NULL);
    return b->err;
}
