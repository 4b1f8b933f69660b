/*
 * casbox_run_bench.c - start-to-exit time of `casbox run -- true`, the whole
 * command as a user types it, against plain `true`, `unshare -Urmpf
 * --mount-proc true` and `bwrap --unshare-all --ro-bind / / true`, measured
 * in the same run; and the floor of casbox run's design (casbox_ns_floor,
 * ns_floor.c: the same clone, namespaces and id maps, a vfork of `true`, and
 * nothing else), fork-like and with the address space shared, so that the
 * ratio can be read against what the kernel alone costs on this machine.
 *
 *   casbox_run_bench [ROUNDS]     (default 200)
 *
 * casbox and casbox_ns_floor are found beside this executable (build/bin/)
 * or at $CASBOX and $CASBOX_NS_FLOOR. Each
 * round runs every contender once, in turn, so that the noise of a shared
 * machine spreads over all of them; medians, 90th percentiles and ratios are
 * printed. The target is casbox run at or under half of bwrap's time. A
 * benchmark only prints: it fails only when a contender fails to run.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"

enum { C_TRUE, C_UNSHARE, C_BWRAP, C_FLOOR, C_FLOOR_VM, C_CASBOX, C_COUNT };

static const char *const bench_names[C_COUNT] = {
    "true",
    "unshare -Urmpf --mount-proc true",
    "bwrap --unshare-all --ro-bind / / true",
    "floor: namespaces + id maps + vfork",
    "floor, address space shared (CLONE_VM)",
    "casbox run -- true",
};

/* $ENV_NAME, else NAME beside this executable. */
static int bench_sibling_path(char *buf, size_t len, const char *env_name, const char *name)
{
    const char *env = getenv(env_name);
    ssize_t n;
    char *slash;

    if (env != NULL && env[0] != '\0') {
        snprintf(buf, len, "%s", env);
        return access(buf, X_OK) == 0 ? 0 : -errno;
    }
    n = readlink("/proc/self/exe", buf, len - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    slash = strrchr(buf, '/');
    if (slash == NULL || (size_t)(slash - buf) + 2 + strlen(name) > len)
        return -ENAMETOOLONG;
    snprintf(slash + 1, len - (size_t)(slash + 1 - buf), "%s", name);
    return access(buf, X_OK) == 0 ? 0 : -errno;
}

int main(int argc, char **argv)
{
    char casbox[PATH_MAX], floor[PATH_MAX];
    char *cmds[C_COUNT][12] = {
        {"/bin/true", NULL},
        {"/usr/bin/unshare", "-Urmpf", "--mount-proc", "/bin/true", NULL},
        {"/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "/bin/true", NULL},
        {floor, "--", "/bin/true", NULL},
        {floor, "--vm", "--", "/bin/true", NULL},
        {casbox, "run", "--", "/bin/true", NULL},
    };
    bool present[C_COUNT];
    double *t[C_COUNT], med[C_COUNT], load[3] = {0, 0, 0};
    long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    int rc = 0;

    if (rounds <= 0 || rounds > 1000000) {
        fprintf(stderr, "usage: %s [ROUNDS]\n", argv[0]);
        return 2;
    }
    if (bench_sibling_path(casbox, sizeof(casbox), "CASBOX", "casbox") != 0) {
        fprintf(stderr, "casbox_run_bench: no casbox binary beside this one: set CASBOX\n");
        return 1;
    }
    if (bench_sibling_path(floor, sizeof(floor), "CASBOX_NS_FLOOR", "casbox_ns_floor") != 0)
        floor[0] = '\0'; /* left out below */
    for (int c = 0; c < C_COUNT; c++) {
        present[c] = access(cmds[c][0], X_OK) == 0;
        t[c] = calloc((size_t)rounds, sizeof(double));
        if (t[c] == NULL)
            return 1;
        if (present[c] && bench_spawn_us(cmds[c]) < 0) {
            fprintf(stderr, "casbox_run_bench: '%s' does not run here; left out\n", bench_names[c]);
            present[c] = false;
        }
    }
    if (!present[C_CASBOX]) {
        fprintf(stderr, "casbox_run_bench: %s run -- /bin/true failed\n", casbox);
        return 1;
    }
    for (long r = 0; r < rounds && rc == 0; r++) {
        for (int c = 0; c < C_COUNT; c++) {
            if (!present[c])
                continue;
            t[c][r] = bench_spawn_us(cmds[c]);
            if (t[c][r] < 0) {
                fprintf(stderr, "casbox_run_bench: '%s' failed in round %ld\n", bench_names[c], r);
                rc = 1;
            }
        }
    }
    if (rc != 0)
        return rc;
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("casbox run start-to-exit, %ld rounds interleaved (load average %.2f)\n", rounds,
           load[0]);
    printf("%-40s %12s %12s %10s %10s\n", "contender", "median ms", "p90 ms", "vs true",
           "vs bwrap");
    for (int c = 0; c < C_COUNT; c++)
        if (present[c])
            med[c] = bench_percentile(t[c], (size_t)rounds, 50);
    for (int c = 0; c < C_COUNT; c++) {
        if (!present[c]) {
            printf("%-40s %12s\n", bench_names[c], "(not installed)");
            continue;
        }
        printf("%-40s %12.3f %12.3f %9.2fx", bench_names[c], med[c] / 1000,
               bench_percentile(t[c], (size_t)rounds, 90) / 1000, med[c] / med[C_TRUE]);
        if (present[C_BWRAP])
            printf(" %9.2fx", med[c] / med[C_BWRAP]);
        putchar('\n');
    }
    if (present[C_BWRAP])
        printf("casbox run / bwrap = %.2f (target: at or under 0.50)\n",
               med[C_CASBOX] / med[C_BWRAP]);
    if (present[C_BWRAP] && present[C_FLOOR])
        printf("the floor of the same design / bwrap = %.2f\n", med[C_FLOOR] / med[C_BWRAP]);
    for (int c = 0; c < C_COUNT; c++)
        free(t[c]);
    return 0;
}
