/*
 * bench_stats.h - what every benchmark needs and nothing more: a clock,
 * percentiles, the load average, and timing a command (bench_stats.c). No
 * dependency beyond libc, so the sandbox benchmarks link it as well as the
 * gRPC ones (bench_common.h).
 */
#ifndef CASBOX_BENCH_STATS_H
#define CASBOX_BENCH_STATS_H

#include <stddef.h>

/* CLOCK_MONOTONIC in seconds. */
double bench_now(void);
/* Sorts v and returns the p-th percentile (0..100, nearest rank; p 50 is the
 * median, the mean of the middle two when n is even); 0 when n==0. */
double bench_percentile(double *v, size_t n, double p);
/* The 1-minute load average, or -1. */
double bench_loadavg(void);
/* fork + execv(argv[0], argv) with stdio on /dev/null and waitpid: the wall
 * time in microseconds, or -1 when it could not run or did not exit 0. */
double bench_spawn_us(char *const argv[]);

#endif
