/*
 * log.h - one-line log records to stderr (the journal under systemd).
 *
 * Every record carries a timestamp, a level and, where there is one, the
 * action digest or resource it concerns. LOG_E/LOG_W/LOG_I/LOG_D take printf
 * arguments; PLOG_* append strerror(-err) for a negative errno.
 */
#ifndef CASBOX_LOG_H
#define CASBOX_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Sets the threshold; records above it are dropped. Called once at start-up. */
void log_set_level(enum log_level level);
int log_parse_level(const char *name, enum log_level *out);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Would a record of this level be written? (To skip work done only for it.) */
bool log_enabled(enum log_level level);

#define LOG_E(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_W(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_I(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_D(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
