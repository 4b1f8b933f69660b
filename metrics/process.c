/*
 * process.c - the standard process_* metrics (the names every Prometheus
 * client library uses), read from /proc/self at scrape time: CPU seconds,
 * resident and virtual memory, open and maximum fds, threads, start time.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics.h"

struct metrics_process_stat {
    double utime, stime; /* clock ticks */
    double threads;
    double start_ticks; /* after boot */
    double vsize;       /* bytes */
    double rss_pages;
};

/* /proc/self/stat: the fields after the command name, which may hold spaces
 * and parentheses, so parse from the last ')'. */
static int metrics_process_read_stat(struct metrics_process_stat *st)
{
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n;
    char *p, *save = NULL;
    int field = 2;

    if (f == NULL)
        return -errno;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL)
        return -EINVAL;
    memset(st, 0, sizeof(*st));
    for (char *tok = strtok_r(p + 1, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            st->utime = strtod(tok, NULL);
        else if (field == 15)
            st->stime = strtod(tok, NULL);
        else if (field == 20)
            st->threads = strtod(tok, NULL);
        else if (field == 22)
            st->start_ticks = strtod(tok, NULL);
        else if (field == 23)
            st->vsize = strtod(tok, NULL);
        else if (field == 24)
            st->rss_pages = strtod(tok, NULL);
    }
    return field >= 24 ? 0 : -EINVAL;
}

/* The boot time (seconds since the epoch), from /proc/stat's btime. */
static int metrics_process_boot_time(double *out)
{
    char line[256];
    FILE *f = fopen("/proc/stat", "re");
    int rc = -ENOENT;

    if (f == NULL)
        return -errno;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "btime ", 6) == 0) {
            *out = strtod(line + 6, NULL);
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static double metrics_process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    double n = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static void metrics_process_collect(void *ctx, struct metrics *m)
{
    struct metrics_process_stat st;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double page = (double)sysconf(_SC_PAGESIZE);
    double boot = 0;
    struct rlimit rl;

    (void)ctx;
    if (metrics_process_read_stat(&st) == 0 && ticks > 0) {
        metrics_counter_set(metrics_counter(m, "process_cpu_seconds_total",
                                            "Total user and system CPU time spent in seconds.",
                                            NULL),
                            NULL, (st.utime + st.stime) / ticks);
        metrics_gauge_set(metrics_gauge(m, "process_resident_memory_bytes",
                                        "Resident memory size in bytes.", NULL),
                          NULL, st.rss_pages * page);
        metrics_gauge_set(
            metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL),
            NULL, st.vsize);
        metrics_gauge_set(metrics_gauge(m, "process_threads", "Number of OS threads.", NULL), NULL,
                          st.threads);
        if (metrics_process_boot_time(&boot) == 0)
            metrics_gauge_set(
                metrics_gauge(m, "process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.", NULL),
                NULL, boot + st.start_ticks / ticks);
    }
    metrics_gauge_set(
        metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL), NULL,
        metrics_process_open_fds());
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_gauge_set(
            metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL),
            NULL, (double)rl.rlim_cur);
}

int metrics_process_register(struct metrics *m)
{
    return metrics_collector_add(m, metrics_process_collect, NULL);
}
