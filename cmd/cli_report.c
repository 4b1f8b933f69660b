/*
 * cli_report.c - what a run comes to: the exit status of `casbox run`, the
 * one-line verdict on stderr when a limit decided the outcome, and the
 * --json report.
 *
 * The report is one JSON object (docs/casbox-run.1 lists the fields). It is
 * written by hand: a dozen scalars do not need a JSON library, only correct
 * string escaping.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_exit_status(const struct sandbox_result *res)
{
    switch (res->limit) {
    case SANDBOX_LIMIT_TIMEOUT:
        return CLI_EXIT_TIMEOUT;
    case SANDBOX_LIMIT_MEMORY:
        return CLI_EXIT_MEMORY;
    case SANDBOX_LIMIT_PIDS:
        return CLI_EXIT_PIDS;
    case SANDBOX_LIMIT_CPU:
        return CLI_EXIT_CPU;
    case SANDBOX_LIMIT_NONE:
    case SANDBOX_LIMIT_OUTPUT:
        break;
    }
    return res->exit_code;
}

/* Seconds with up to three decimals and no trailing zeros: "2", "0.5". */
static void report_seconds(char *buf, size_t len, uint64_t ms)
{
    int n = snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);

    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
}

void cli_verdict(const struct sandbox_result *res, const struct sandbox_spec *spec, char *buf,
                 size_t len)
{
    const struct sandbox_limits *l = &spec->limits;
    char secs[32];

    buf[0] = '\0';
    switch (res->limit) {
    case SANDBOX_LIMIT_NONE:
    case SANDBOX_LIMIT_OUTPUT:
        break;
    case SANDBOX_LIMIT_TIMEOUT:
        report_seconds(secs, sizeof(secs), l->timeout_ms);
        snprintf(buf, len, "killed after the timeout of %s s", secs);
        break;
    case SANDBOX_LIMIT_MEMORY:
        snprintf(buf, len, "killed: memory limit of %" PRIu64 " bytes exceeded", l->memory_bytes);
        break;
    case SANDBOX_LIMIT_PIDS:
        snprintf(buf, len, "process limit of %" PRIu64 " reached: a fork was refused", l->pids_max);
        break;
    case SANDBOX_LIMIT_CPU:
        snprintf(buf, len, "killed: CPU time limit of %" PRIu64 " s reached", l->cpu_seconds);
        break;
    }
}

/* --- JSON --- */

static void report_string(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f); /* UTF-8 passes through; other bytes too */
        }
    }
    fputc('"', f);
}

static void report_key(FILE *f, const char *key, bool *first)
{
    fputs(*first ? "\n  " : ",\n  ", f);
    *first = false;
    report_string(f, key);
    fputs(": ", f);
}

static void report_seconds_value(FILE *f, uint64_t us)
{
    fprintf(f, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
}

static void report_limits(FILE *f, const struct sandbox_limits *l)
{
    fputs("{\"timeout_seconds\": ", f);
    if (l->timeout_ms > 0)
        fprintf(f, "%" PRIu64 ".%03" PRIu64, l->timeout_ms / 1000, l->timeout_ms % 1000);
    else
        fputs("null", f);
    fprintf(f, ", \"memory_bytes\": ");
    if (l->memory_bytes > 0)
        fprintf(f, "%" PRIu64, l->memory_bytes);
    else
        fputs("null", f);
    fputs(", \"pids\": ", f);
    if (l->pids_max > 0)
        fprintf(f, "%" PRIu64, l->pids_max);
    else
        fputs("null", f);
    fputs(", \"cpu_seconds\": ", f);
    if (l->cpu_seconds > 0)
        fprintf(f, "%" PRIu64, l->cpu_seconds);
    else
        fputs("null", f);
    fputc('}', f);
}

static void report_body(FILE *f, const struct cli_report *r)
{
    const struct sandbox_result *res = r->res;
    bool first = true;

    fputc('{', f);
    report_key(f, "exit_status", &first);
    fprintf(f, "%d", r->exit_status);
    if (r->action != NULL) {
        report_key(f, "action", &first);
        report_string(f, r->action);
    }
    report_key(f, "argv", &first);
    fputc('[', f);
    for (size_t i = 0; r->spec->argv != NULL && r->spec->argv[i] != NULL; i++) {
        if (i > 0)
            fputs(", ", f);
        report_string(f, r->spec->argv[i]);
    }
    fputc(']', f);
    report_key(f, "ran", &first);
    fputs(res != NULL ? "true" : "false", f);
    report_key(f, "exit_code", &first);
    if (res != NULL && res->term_signal == 0)
        fprintf(f, "%d", res->exit_code);
    else
        fputs("null", f);
    report_key(f, "signal", &first);
    if (res != NULL && res->term_signal != 0)
        fprintf(f, "%d", res->term_signal);
    else
        fputs("null", f);
    report_key(f, "signal_name", &first);
    if (res != NULL && res->term_signal != 0 && sigabbrev_np(res->term_signal) != NULL)
        fprintf(f, "\"SIG%s\"", sigabbrev_np(res->term_signal));
    else
        fputs("null", f);
    report_key(f, "limit", &first);
    if (res != NULL && res->limit != SANDBOX_LIMIT_NONE)
        report_string(f, sandbox_limit_name(res->limit));
    else
        fputs("null", f);
    report_key(f, "error", &first);
    if (r->error != NULL && r->error[0] != '\0')
        report_string(f, r->error);
    else if (res != NULL && res->error[0] != '\0')
        report_string(f, res->error);
    else
        fputs("null", f);
    report_key(f, "wall_seconds", &first);
    report_seconds_value(f, res != NULL ? res->wall_us : 0);
    report_key(f, "user_cpu_seconds", &first);
    report_seconds_value(f, res != NULL ? res->user_us : 0);
    report_key(f, "system_cpu_seconds", &first);
    report_seconds_value(f, res != NULL ? res->sys_us : 0);
    report_key(f, "cpu_seconds", &first);
    report_seconds_value(f, res != NULL ? res->user_us + res->sys_us : 0);
    report_key(f, "peak_memory_bytes", &first);
    fprintf(f, "%" PRIu64, res != NULL ? res->max_rss_bytes : 0);
    report_key(f, "limits", &first);
    report_limits(f, &r->spec->limits);
    report_key(f, "memory_limit_method", &first);
    report_string(
        f, sandbox_limit_method_name(res != NULL ? res->memory_method : SANDBOX_METHOD_NONE));
    report_key(f, "pids_limit_method", &first);
    report_string(f,
                  sandbox_limit_method_name(res != NULL ? res->pids_method : SANDBOX_METHOD_NONE));
    report_key(f, "outputs", &first);
    fputc('[', f);
    for (size_t i = 0; i < r->n_outputs; i++) {
        fputs(i > 0 ? ", {\"path\": " : "{\"path\": ", f);
        report_string(f, r->outputs[i]);
        fprintf(f, ", \"copied\": %s}", r->copied != NULL && r->copied[i] ? "true" : "false");
    }
    fputs("]\n}\n", f);
}

int cli_report_write(const char *path, const struct cli_report *r, char *err, size_t err_len)
{
    FILE *f;
    int fd, rc = 0;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "--json %s: %s", path, strerror(errno));
        return rc;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        rc = -errno;
        close(fd);
        snprintf(err, err_len, "--json %s: %s", path, strerror(-rc));
        return rc;
    }
    report_body(f, r);
    if (ferror(f))
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        snprintf(err, err_len, "--json %s: %s", path, strerror(-rc));
    return rc;
}
