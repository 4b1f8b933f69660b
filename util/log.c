/*
 * log.c - timestamped one-line log records on stderr.
 *
 * The level threshold is the only state: process-wide by nature (stderr is),
 * set at start-up and on SIGHUP, read with atomic loads.
 */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static enum log_level log_threshold = LOG_LEVEL_INFO;

void log_set_level(enum log_level level)
{
    __atomic_store_n(&log_threshold, level, __ATOMIC_RELAXED);
}

bool log_enabled(enum log_level level)
{
    return level <= __atomic_load_n(&log_threshold, __ATOMIC_RELAXED);
}

int log_parse_level(const char *name, enum log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(name, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    static const char tags[] = "EWID";
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level > __atomic_load_n(&log_threshold, __ATOMIC_RELAXED))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 tags[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    /* One write per record so lines from different threads never interleave. */
    n = strlen(line);
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

int log_errno(enum log_level level, int err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_enabled(level))
        return err;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, "%s: %s", msg, strerror(err < 0 ? -err : err));
    return err;
}
