/*
 * util.h - the helpers every casbox library may use and none of them owns:
 * one-line logging, the two clocks, growing arrays and text buffers,
 * file-system helpers.
 *
 * util/ depends on nothing of ours (only libc), so that any library, the
 * daemon and the command-line front ends can share one copy of each helper
 * instead of growing their own (docs/architecture.md, "The dependency rule").
 */
#ifndef CASBOX_UTIL_H
#define CASBOX_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* --- logging (log.c) ---
 *
 * Every record carries a timestamp, a level and, where there is one, the
 * action digest or resource it concerns. LOG_E/LOG_W/LOG_I/LOG_D take printf
 * arguments; LOG_ERRNO_* add ": strerror(-err)" for a negative errno and
 * return err, so that logging and returning an error is one expression:
 *
 *     return LOG_ERRNO_W(rc, "cannot open %s", path);
 */
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
/* Writes "fmt...: strerror(-err)" at level and returns err (a negative errno). */
int log_errno(enum log_level level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define LOG_ERRNO_E(err, ...) log_errno(LOG_LEVEL_ERROR, (err), __VA_ARGS__)
#define LOG_ERRNO_W(err, ...) log_errno(LOG_LEVEL_WARN, (err), __VA_ARGS__)

/* --- clocks ---
 * Microseconds: monotonic for durations, real time for the timestamps
 * clients see (ExecutedActionMetadata). */
static inline uint64_t clock_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t clock_real_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --- arrays (array.c) --- */

/* Grows *arr (elements of size elem, *cap of them) so that it holds at least
 * n + 1. 0 or -ENOMEM (*arr and *cap unchanged). */
int array_reserve(void **arr, size_t *cap, size_t n, size_t elem);

/* --- text buffers (buf.c) ---
 * A growing, NUL-terminated buffer; an allocation failure sticks in err
 * (-ENOMEM) and later appends do nothing. Start from {0}. */
struct util_buf {
    char *data;
    size_t len, cap;
    int err;
};
void util_buf_put(struct util_buf *b, const char *s, size_t n);
void util_buf_str(struct util_buf *b, const char *s);
void util_buf_printf(struct util_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void util_buf_free(struct util_buf *b);

/* --- files (file.c) ---
 *
 * util_mkdir_p and util_write_all allocate nothing and call only system
 * calls, so a sandbox child between clone and exec may use them. */

/* mkdir -p: makes path and its missing parents with mode (before umask).
 * Existing ones are fine, whatever they are (the caller opens path next and
 * finds out). -ENAMETOOLONG when path has PATH_MAX bytes or more. */
int util_mkdir_p(const char *path, mode_t mode);

/* Writes all len bytes of buf to fd, retrying after EINTR and short writes.
 * 0, a negative errno, or -EIO when write makes no progress. */
int util_write_all(int fd, const void *buf, size_t len);

/* Removes path and everything below it without following symlinks,
 * making directories readable and writable as needed (an action may leave
 * mode 000 files or read-only directories). A mount point inside is left
 * as it is, its mode included (another filesystem's files are never
 * removed), and makes the call -EXDEV. Removes what it can and returns the
 * first error. Deep trees are removed with a bounded number of open fds
 * (deeper levels are moved up first). -ENOENT when path does not exist. */
int util_remove_tree(const char *path);

#endif
